"""classification: one label per text (or sentence pair). Softmax head, cross-entropy, the confusion matrix.

The fallback task: any file with a text and a label column that no other task claims.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.config import DataConfig, RunConfig
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import Table
from tunesmith.data.validate import CLASSES, LabeledData, LabelKind, load_labeled
from tunesmith.errors import ConfigError
from tunesmith.losses import classification_loss, focal_loss, weighted_classification_loss
from tunesmith.metrics import ClassificationScore
from tunesmith.report import print_metrics
from tunesmith.runs import RunInfo
from tunesmith.tasks import sequence
from tunesmith.tasks.base import Recipe, Task, kept_line, saved_title


@dataclass
class Classes:
    """Readout of a single-label classifier: softmax probabilities, the most likely label."""

    labels: LabelSpace
    kind: LabelKind = CLASSES

    def records(self, logits: torch.Tensor, top_k: int | None) -> list[dict[str, Any]]:
        """The most likely label and its probability, then the top_k (default: all) labels' probabilities."""
        if top_k is not None and not 1 <= top_k <= len(self.labels):
            raise ConfigError(f"--top-k must be between 1 and {len(self.labels)} (the number of labels), got {top_k}")
        names = self.labels.names
        out = []
        for row in torch.softmax(logits, dim=-1).numpy():
            order = np.argsort(-row, kind="stable")[: top_k or len(row)]
            best = int(order[0])
            out.append({"label": names[best], "score": float(row[best]),
                        "scores": {names[i]: float(row[i]) for i in order}})  # fmt: skip
        return out

    def csv_columns(self, top_k: int | None) -> list[str]:
        """One column per label's probability; with top_k, label_i / score_i pairs instead."""
        extra = [f"{c}_{i}" for i in range(1, top_k + 1) for c in ("label", "score")] if top_k else []
        return ["label", "score", *(extra or [f"p({n})" for n in self.labels.names])]

    def csv_cells(self, record: dict[str, Any], top_k: int | None) -> list[str]:
        """Probabilities printed with 6 decimals, in csv_columns' order."""
        if top_k:
            extra = [x for name, p in record["scores"].items() for x in (name, f"{p:.6f}")]
        else:
            extra = [f"{record['scores'][n]:.6f}" for n in self.labels.names]
        return [record["label"], f"{record['score']:.6f}", *extra]

    def score(self) -> ClassificationScore:
        """A confusion matrix: no list of predictions is kept."""
        return ClassificationScore(self.labels)


def _detect(table: Table, cfg: DataConfig) -> str | None:
    """Any labeled file (the registry asks this task last)."""
    return "a text and a label column"


def _load_data(cfg: RunConfig) -> LabeledData:
    return load_labeled(cfg.data, cfg.train.seed, CLASSES)


def _head_config(labels: LabelSpace | None) -> dict[str, Any]:
    assert labels is not None
    return {"num_labels": len(labels), "id2label": labels.id2label, "label2id": labels.label2id,
            "problem_type": "single_label_classification"}  # fmt: skip


def _recipe(cfg: RunConfig, data: LabeledData, tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> Recipe:
    """Labels by cross-entropy (class-weighted, or focal, when asked); evaluation by the confusion matrix."""
    assert data.labels is not None
    counts = np.bincount(data.train_targets, minlength=len(data.labels))
    weights = sequence.class_weights(cfg.train.class_weights, data.labels, counts, len(data.train_targets))
    w = torch.as_tensor(weights, dtype=torch.float32) if weights is not None else None
    if cfg.train.loss == "focal":
        loss = focal_loss(cfg.train.focal_gamma, w)
    else:
        loss = weighted_classification_loss(w) if w is not None else classification_loss
    row_weights = [float(weights[y]) for y in data.train_targets] if weights is not None else None
    what = f"{len(data.labels)} labels"
    made = sequence.recipe(cfg, data, tokenizer, model, Classes(data.labels), loss, what, row_weights)
    made.record = {"labels": data.labels.to_dict()}
    if weights is not None:
        made.record["class_weights"] = dict(zip(data.labels.names, map(float, weights), strict=True))
    return made


def _describe(data: LabeledData) -> list[str]:
    assert data.labels is not None
    counts = Counter(data.train.labels)
    lines = [sequence.describe_columns(data), "labels: " + ", ".join(f"{n} ({counts[n]})" for n in data.labels.names)]
    if data.eval is not None:
        lines.append(f"{data.eval.file}: {len(data.eval)} rows, every label known")
    return lines


def _summary(metrics: dict[str, Any] | None, best: dict[str, Any], cfg: RunConfig) -> str:
    if not metrics:
        return "no evaluation data: saved the final model"
    print_metrics(metrics, saved_title(best))
    return kept_line(best, cfg)


def _show(metrics: dict[str, Any], title: str) -> None:
    from rich.console import Console

    print_metrics(metrics, f"{title} ({metrics['n']} rows)", Console())
    print(f"macro-F1 {metrics['macro_f1']:.4f}  accuracy {metrics['accuracy']:.4f}  loss {metrics['loss']:.4f}")


def _readout(run: RunInfo) -> Classes:
    assert run.labels is not None
    return Classes(run.labels)


TASK = Task(
    name="classification",
    about="one label per text",
    model_class="AutoModelForSequenceClassification",
    peft_task_type="SEQ_CLS",
    new_head=True,
    backbone="encoder",
    defaults={"model.name": "minilm", "model.max_length": 128, "eval.metric": "macro_f1"},
    metrics=("macro_f1", "weighted_f1", "accuracy", "loss"),
    detect=_detect,
    load_data=_load_data,
    head_config=_head_config,
    recipe=_recipe,
    describe=_describe,
    summary=_summary,
    open_run=sequence.opener("AutoModelForSequenceClassification", _readout),
    show=_show,
    headline=("accuracy", "macro_f1"),
    backends=("torch", "onnx", "onnx-int8", "onnx-int8-dynamic"),
    losses=("ce", "focal"),
    chunks=True,
    lengths=sequence.lengths,
)
