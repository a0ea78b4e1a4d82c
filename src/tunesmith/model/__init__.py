"""θ̂ and F_θ: the pretrained network, the task head on it, and what trains."""
