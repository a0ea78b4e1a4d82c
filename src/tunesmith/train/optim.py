"""Parameter groups and learning-rate schedules. Knows nothing about data.

No weight decay on biases and normalisation weights (decaying a LayerNorm gain towards 0 fights
the normalisation); the head may learn at its own rate (head_lr), since it starts from random.
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedModel, get_scheduler

from tunesmith.config import TrainConfig
from tunesmith.model.heads import head_parameter_names


def no_decay_names(model: torch.nn.Module) -> set[str]:
    """Biases and the weights of normalisation layers (LayerNorm, RMSNorm, ...)."""
    names = set()
    for module_name, module in model.named_modules():
        is_norm = "norm" in type(module).__name__.lower()
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if is_norm or name == "bias":
                names.add(full)
    return names


def parameter_groups(model: PreTrainedModel, cfg: TrainConfig) -> list[dict]:
    """Up to four groups: (backbone | head) x (decay | no decay); frozen parameters are left out."""
    head = head_parameter_names(model)
    no_decay = no_decay_names(model)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((name in head, name not in no_decay), []).append(p)
    head_lr = cfg.head_lr if cfg.head_lr is not None else cfg.lr
    return [
        {
            "params": params,
            "lr": head_lr if is_head else cfg.lr,
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "name": f"{'head' if is_head else 'backbone'}{'' if decay else '/no_decay'}",
        }
        for (is_head, decay), params in sorted(groups.items())
    ]


def build_optimizer(model: PreTrainedModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters."""
    return torch.optim.AdamW(parameter_groups(model, cfg), lr=cfg.lr)


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Optimiser steps of linear warmup."""
    return math.ceil(cfg.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warmup from 0, then linear or cosine decay to 0 (or constant), per optimiser step."""
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.schedule]
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup_steps(cfg, total_steps), num_training_steps=total_steps
    )
