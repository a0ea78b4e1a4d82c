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


def weighted_classification_loss(weights: torch.Tensor) -> LossFn:
    """Summed cross-entropy with class weights: each sample counts w[y]. Its normaliser is Σ w[y] over the step
    (EncodedSet.items), as torch's weighted mean, not the sample count.
    """

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, weight=weights.to(logits.device), reduction="sum")

    return loss


def focal_loss(gamma: float, weights: torch.Tensor | None = None) -> LossFn:
    """Summed focal loss (Lin et al., 2017): w[y]·(1 − p_y)^gamma · −log p_y; gamma 0 is cross-entropy."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits.float(), dim=-1).gather(1, labels[:, None]).squeeze(1)
        per = -((1 - logp.exp()) ** gamma) * logp
        if weights is not None:
            per = per * weights.to(logits.device)[labels]
        return per.sum()

    return loss


def multilabel_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of every label of every sample, summed: a sample's loss is the sum over its labels,
    and step_scale divides by the samples (torch's mean would also divide by the label count, shrinking each
    label's gradient by it).
    """
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="sum")


def multilabel(pos_weight: torch.Tensor | None = None, gamma: float | None = None) -> LossFn:
    """multilabel_loss with positives weighted per label (BCE's pos_weight), or its focal form."""

    def loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weight = pos_weight.to(logits.device) if pos_weight is not None else None
        per = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), pos_weight=weight, reduction="none")
        if gamma is not None:
            p = torch.sigmoid(logits.float())
            right = labels * p + (1 - labels) * (1 - p)
            per = per * (1 - right) ** gamma
        return per.sum()

    return loss


def mse_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed squared error of a one-output head against (standardised) targets."""
    return F.mse_loss(logits.float()[:, 0], labels.float(), reduction="sum")


def huber_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed Huber loss (delta 1 sd of the standardised targets): squared near, linear far."""
    return F.huber_loss(logits.float()[:, 0], labels.float(), reduction="sum", delta=1.0)


LOSSES: dict[str, LossFn] = {"mse": mse_loss, "huber": huber_loss}
"""Regression's losses by train.loss name."""


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over every labeled token (IGNORE, -100, elsewhere), in fp32: tagging's loss, and
    the causal LM's once its batches have shifted the labels.
    """
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum")


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed −log Pr(y_t | x, y_<t) over target tokens, in fp32 even under bf16 autocast.

    ``labels[:, j]`` is the token the logits at position j predict (the batches shift them, see
    data/tokens.py); IGNORE (-100) on prompt, template and padding positions, so only targets,
    EOS included, are scored. The sum, not the mean: step_scale divides by the step's target tokens.
    """
    return token_cross_entropy(logits, labels)


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
