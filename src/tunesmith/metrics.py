"""Scores accumulated batch by batch; the single-label one is a confusion matrix and a running loss sum.

No list of logits or predictions is kept for classification, so scoring a file takes the same memory
whatever its length. Knows nothing about training; the scores from a confusion matrix match scikit-learn's
precision_recall_fscore_support (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from tunesmith.backends import Forward, iter_logits
from tunesmith.data.chunks import Documents
from tunesmith.data.labels import LabelSpace
from tunesmith.losses import classification_loss
from tunesmith.model.aggregate import Aggregator, document_logits


class Score(Protocol):
    """A running score: batches folded in, metrics out."""

    def add(self, logits: torch.Tensor, gold: torch.Tensor) -> None:
        """Fold one batch in (fp32 logits and targets, on the CPU)."""
        ...

    def result(self) -> dict[str, Any]:
        """The metrics so far, "loss" (mean per item) and "n" among them."""
        ...


@dataclass
class ClassificationScore:
    """Running confusion matrix (rows: true, columns: predicted) and summed loss."""

    labels: LabelSpace
    confusion: np.ndarray = field(init=False)
    loss_sum: float = 0.0

    def __post_init__(self) -> None:
        self.confusion = np.zeros((len(self.labels), len(self.labels)), dtype=np.int64)

    def add(self, logits: torch.Tensor, gold: torch.Tensor) -> None:
        """Fold one batch in."""
        self.loss_sum += classification_loss(logits, gold).item()
        np.add.at(self.confusion, (gold.cpu().numpy(), logits.argmax(-1).cpu().numpy()), 1)

    def result(self) -> dict[str, Any]:
        """Loss, accuracy, macro / weighted F1, per-class precision / recall / F1 / support, confusion matrix."""
        return classification_metrics(self.confusion, self.labels, self.loss_sum)


def prf(tp: np.ndarray, predicted: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class from counts; 0 where undefined, as scikit-learn's zero_division=0."""
    tp = tp.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1


def per_label(names: Sequence[str], precision: np.ndarray, recall: np.ndarray, f1: np.ndarray, support: np.ndarray):
    """{name: {precision, recall, f1, support}}, as the report tables read it."""
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(names)
    }  # fmt: skip


def classification_metrics(confusion: np.ndarray, labels: LabelSpace, loss_sum: float | None = None) -> dict[str, Any]:
    """Scores from a confusion matrix; a class never predicted (or never present) scores 0, as zero_division=0."""
    support = confusion.sum(1)
    precision, recall, f1 = prf(np.diag(confusion), confusion.sum(0), support)
    n = int(confusion.sum())
    return {
        "loss": (loss_sum / n) if loss_sum is not None and n else float("nan"),
        "accuracy": float(np.diag(confusion).sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / max(support.sum(), 1)),
        "n": n,
        "per_class": per_label(labels.names, precision, recall, f1, support),
        "confusion_matrix": confusion.tolist(),
    }


@torch.inference_mode()
def score_forward(
    score: Score,
    forward: Forward,
    docs: Documents,
    targets: Sequence[Any],
    batch_size: int,
    pad_id: int,
    combine: Aggregator | None = None,
) -> Score:
    """Fold a forward's outputs on encoded texts (or pairs, or chunked documents) into a running score; the
    caller sets eval mode. One window per text streams batch by batch; chunks are combined per document first.
    """
    if docs.chunked:
        logits, _ = document_logits(forward, docs, batch_size, pad_id, combine)
        score.add(logits, torch.as_tensor(list(targets)))
        return score
    for rows, logits in iter_logits(forward, docs.ids, batch_size, pad_id, docs.types):
        score.add(logits, torch.as_tensor([targets[i] for i in rows]))
    return score
