"""Metrics per task, accumulated batch by batch: a confusion matrix and a running loss sum.

No list of logits or predictions is kept, so scoring a file takes the same memory whatever its
length. Knows nothing about training; the scores from a confusion matrix match scikit-learn's
precision_recall_fscore_support (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.data.labels import LabelSpace
from tunesmith.losses import classification_loss
from tunesmith.predict import iter_logits, torch_forward


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


def classification_metrics(confusion: np.ndarray, labels: LabelSpace, loss_sum: float | None = None) -> dict[str, Any]:
    """Scores from a confusion matrix; a class never predicted (or never present) scores 0, as zero_division=0."""
    tp = np.diag(confusion).astype(float)
    support = confusion.sum(1)
    predicted = confusion.sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    n = int(confusion.sum())
    return {
        "loss": (loss_sum / n) if loss_sum is not None and n else float("nan"),
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()),
        "weighted_f1": float((f1 * support).sum() / max(support.sum(), 1)),
        "n": n,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels.names)
        },
        "confusion_matrix": confusion.tolist(),
    }


@torch.no_grad()
def score_encoded(
    score: ClassificationScore,
    model: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    label_ids: Sequence[int],
    batch_size: int,
    pad_id: int,
) -> ClassificationScore:
    """Fold a model's predictions on encoded texts into a running score."""
    was_training = model.training
    model.eval()
    for rows, logits in iter_logits(torch_forward(model), ids, batch_size, pad_id):
        score.add(logits, torch.as_tensor([label_ids[i] for i in rows], device=logits.device))
    model.train(was_training)
    return score


def evaluate_encoded(
    model: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    label_ids: Sequence[int],
    labels: LabelSpace,
    batch_size: int,
    pad_id: int,
) -> dict[str, Any]:
    """Metrics of a model on encoded texts; the loss is the mean cross-entropy per text."""
    return score_encoded(ClassificationScore(labels), model, ids, label_ids, batch_size, pad_id).result()


def evaluate_run(
    run: str | Path,
    data: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    encoding: str = "utf-8",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Metrics of a run folder's model on a labeled file, read chunk by chunk (memory does not grow with it)."""
    from tunesmith.data.encode import encode_texts
    from tunesmith.data.readers import iter_tables
    from tunesmith.data.validate import examples
    from tunesmith.predict import Predictor

    predictor = Predictor.from_run(run, batch_size)
    score = ClassificationScore(predictor.labels)
    columns = (text_column, label_column)
    for n, chunk in enumerate(iter_tables(data, encoding)):
        if n == 0:  # the training file's column names when this file has them too; else found by name
            columns = (text_column or predictor.column(chunk, "text"), label_column or predictor.column(chunk, "label"))
        ex = examples(chunk, *columns)
        columns = (ex.text_column, ex.label_column)
        ids = encode_texts(predictor.tokenizer, ex.texts, predictor.max_length)
        score_encoded(
            score, predictor.model, ids, ex.label_ids(predictor.labels), batch_size, predictor.tokenizer.pad_token_id
        )
    return score.result()
