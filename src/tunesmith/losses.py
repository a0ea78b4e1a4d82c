"""L: pure loss functions and the one place where losses are normalised over an optimiser step.

A loss function returns the SUM over the items of a micro-batch; ``step_scale`` turns sums into
the mean over every item of the optimiser step, so that k micro-batches of b samples give exactly
the gradient of one batch of k*b (a per-micro-batch mean would weight a short last batch wrongly).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(logits, labels) -> summed loss over the micro-batch."""


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy; computed in fp32 even under bf16 autocast, where log-softmax loses precision."""
    return F.cross_entropy(logits.float(), labels, reduction="sum")


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed −log Pr(y_t | x, y_<t) over target tokens, in fp32 even under bf16 autocast.

    ``labels[:, j]`` is the token the logits at position j predict (the batches shift them, see
    data/tokens.py); IGNORE (-100) on prompt, template and padding positions, so only targets,
    EOS included, are scored. The sum, not the mean: step_scale divides by the step's target tokens.
    """
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")


def step_scale(items_in_step: int, num_processes: int = 1) -> float:
    """Factor turning a process's summed loss into its share of the step's mean loss.

    ``items_in_step`` counts items across all micro-batches and all processes. DDP averages
    gradients over processes, so each process's sum is multiplied back by their number.
    """
    return num_processes / items_in_step


def l2sp_penalty(params: list[torch.Tensor], anchors: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """(alpha/2)·‖θ − θ̂‖² over the given parameters (Li et al., 2018): the pull toward the pretrained θ̂.

    Its gradient is alpha·(θ − θ̂). Added once per optimiser step, not per micro-batch.
    """
    return (alpha / 2) * sum(((p - a) ** 2).sum() for p, a in zip(params, anchors, strict=True))
