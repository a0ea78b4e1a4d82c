"""argmin: the recipe (run.py), the loop (loop.py), and what it optimises with (optim.py)."""
