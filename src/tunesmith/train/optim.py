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


def parameter_groups(model: PreTrainedModel, cfg: TrainConfig, l2sp: bool = False) -> list[dict]:
    """Groups by (where, decay): the head, the backbone, or with layer_lr_decay each block and the embeddings.

    Frozen parameters are left out. Under L2-SP the pull toward θ̂ replaces weight decay in the
    backbone (decaying toward 0 would fight it); the head keeps plain weight decay.
    """
    heads = head_parameter_names(model)
    no_decay = no_decay_names(model)
    rates = layer_rates(model, cfg) if cfg.layer_lr_decay else {}
    head_lr = cfg.head_lr if cfg.head_lr is not None else cfg.lr
    groups: dict[tuple[str, float, float], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        where, lr = ("head", head_lr) if name in heads else rates.get(name, ("backbone", cfg.lr))
        decay = cfg.weight_decay if name not in no_decay and (where == "head" or not l2sp) else 0.0
        groups.setdefault((where if decay else f"{where}/no_decay", lr, decay), []).append(p)
    return [
        {"params": params, "lr": lr, "weight_decay": decay, "name": name}
        for (name, lr, decay), params in groups.items()
    ]


def layer_rates(model: PreTrainedModel, cfg: TrainConfig) -> dict[str, tuple[str, float]]:
    """Discriminative rates: block l places below the top gets lr·GAMMA^l; the embeddings lr·GAMMA^L (L blocks).

    Backbone parameters outside blocks and embeddings (a pooler, a final norm) sit on top: lr.
    """
    from tunesmith.model.strategies import layout

    lay = layout(model)
    gamma, depth = cfg.layer_lr_decay or 1.0, len(lay.blocks)
    rates = {name: ("embeddings", cfg.lr * gamma**depth) for name in lay.embeddings}
    for index, block in enumerate(lay.blocks):
        below_top = depth - 1 - index
        rates.update({name: (f"block {index}", cfg.lr * gamma**below_top) for name in block})
    return rates


def build_optimizer(model: PreTrainedModel, cfg: TrainConfig, l2sp: bool = False) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters, fused: one kernel over all tensors instead of a dozen ops per tensor.

    On MiniLM's CPU step the update took 61 ms unfused and 13 ms fused (21% of the step before),
    with results equal to the unfused AdamW within 3e-7 after 5 steps.
    """
    return torch.optim.AdamW(parameter_groups(model, cfg, l2sp), lr=cfg.lr, fused=True)


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Optimiser steps of linear warmup."""
    return math.ceil(cfg.warmup_ratio * total_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    """Linear warmup from 0, then linear or cosine decay to 0 (or constant), per optimiser step."""
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[cfg.schedule]
    return get_scheduler(
        name, optimizer, num_warmup_steps=warmup_steps(cfg, total_steps), num_training_steps=total_steps
    )
