"""Metrics per task, accumulated batch by batch: no list of every logit is kept.

Knows nothing about training or files; scikit-learn computes the scores from the predicted
and true ids (one small integer each per row).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from tunesmith.data.labels import LabelSpace
from tunesmith.losses import classification_loss
from tunesmith.predict import iter_logits
from tunesmith.runs import read_run


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: LabelSpace, loss_sum: float | None = None
) -> dict[str, Any]:
    """Loss, accuracy, macro / weighted F1, per-class precision / recall / F1 / support, confusion matrix."""
    ids = list(range(len(labels)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    total = max(len(y_true), 1)
    return {
        "loss": (loss_sum / total) if loss_sum is not None else float("nan"),
        "accuracy": float((y_true == y_pred).mean()) if len(y_true) else 0.0,
        "macro_f1": float(f.mean()),
        "weighted_f1": float((f * s).sum() / max(s.sum(), 1)),
        "n": int(len(y_true)),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(labels.names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


@torch.no_grad()
def evaluate_encoded(
    model: torch.nn.Module,
    ids: Sequence[Sequence[int]],
    label_ids: Sequence[int],
    labels: LabelSpace,
    batch_size: int,
    pad_id: int,
) -> dict[str, Any]:
    """Metrics of a model on encoded texts; the loss is the mean cross-entropy per text."""
    was_training = model.training
    model.eval()
    y_pred = np.empty(len(ids), dtype=np.int64)
    loss_sum = 0.0
    for rows, logits in iter_logits(model, ids, batch_size, pad_id):
        gold = torch.as_tensor([label_ids[i] for i in rows], device=logits.device)
        loss_sum += classification_loss(logits, gold).item()
        y_pred[rows] = logits.argmax(-1).cpu().numpy()
    model.train(was_training)
    return classification_metrics(label_ids, y_pred, labels, loss_sum)


def evaluate_run(
    run: str | Path,
    data: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    encoding: str = "utf-8",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Metrics of a run folder's model on a labeled file; labels unknown to the run are a DataError."""
    from tunesmith.data.encode import encode_texts
    from tunesmith.data.readers import read_table
    from tunesmith.data.validate import examples
    from tunesmith.predict import Predictor

    predictor = Predictor.from_run(run, batch_size)
    trained = read_run(run)
    table = read_table(data, encoding)
    # The training file's column names when this file has them too; else found by name as usual.
    ex = examples(
        table,
        text_column or (trained.text_column if trained.text_column in table.columns else None),
        label_column or (trained.label_column if trained.label_column in table.columns else None),
    )
    ids = encode_texts(predictor.tokenizer, ex.texts, predictor.max_length)
    return evaluate_encoded(
        predictor.model,
        ids,
        ex.label_ids(predictor.labels),
        predictor.labels,
        batch_size,
        predictor.tokenizer.pad_token_id,
    )
