"""multilabel: any number of labels per text, none included. Sigmoid per label, binary cross-entropy, and a
decision threshold per label tuned on the evaluation data.

A clause may carry several unfair-clause categories or none; at 0.5 a rare label is seldom predicted at all
(the issue's HF recipe scored micro-F1 0.00), so each label's threshold is the one that maximises its F1 on
the held-out set, saved in tunesmith.json and config.json; metrics at the plain 0.5 are reported beside them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.config import DataConfig, RunConfig
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import LABEL_NAMES, Table, is_missing
from tunesmith.data.validate import Examples, LabeledData, LabelKind, load_labeled
from tunesmith.errors import ConfigError, DataError
from tunesmith.losses import multilabel, multilabel_loss
from tunesmith.metrics import per_label, prf
from tunesmith.report import console, metrics_table
from tunesmith.runs import RunInfo
from tunesmith.tasks import sequence
from tunesmith.tasks.base import Recipe, Task, kept_line, saved_title

PLAIN = 0.5
"""The threshold every label would have without tuning, reported beside the tuned ones."""


def label_set(separator: str | None):  # noqa: ANN201 (a LabelCell)
    """A LabelCell reading a list cell (JSONL, Parquet), a JSON list in a text cell, or separator-joined names;
    a missing or empty cell is the empty set (a text with no label is valid).
    """

    def parse(table: Table, i: int, value: Any, column: str) -> list[str]:
        if isinstance(value, str) and value.strip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise DataError(table.path, f"label cell {value[:40]!r} is not a JSON list", column=column,
                                **table.where(i)) from None  # fmt: skip
        if not isinstance(value, (str, list, tuple, np.ndarray)) and is_missing(value):
            return []
        if isinstance(value, str):
            if not value.strip():
                return []
            parts = value.split(separator) if separator else [value]
            return sorted({p.strip() for p in parts if p.strip()})
        if isinstance(value, (list, tuple, np.ndarray)):
            names = []
            for item in value:
                if isinstance(item, (list, dict)) or is_missing(item):
                    raise DataError(table.path, f"label list holds {item!r}; expected label names", column=column,
                                    **table.where(i))  # fmt: skip
                names.append(str(int(item)) if isinstance(item, float) and item.is_integer() else str(item).strip())
            return sorted(set(names))
        raise DataError(table.path, f"expected a list of labels, got {type(value).__name__} {str(value)[:40]!r}",
                        column=column, **table.where(i))  # fmt: skip

    return parse


def _space(labels: list[list[str]], given: Any, file: str) -> LabelSpace:
    seen = {name for row in labels for name in row}
    if given:
        unknown = sorted(seen - set(given))
        if unknown:
            row = next(i for i, r in enumerate(labels) if unknown[0] in r) + 1
            raise DataError(file, f"label '{unknown[0]}' is not in --labels ({', '.join(given)})", row=row)
        return LabelSpace(tuple(given))
    if not seen:
        raise DataError(file, "no row has a label; multilabel needs at least one label name")
    return LabelSpace(tuple(sorted(seen)))


def _targets(ex: Examples, space: LabelSpace | None) -> list[list[float]]:
    assert space is not None and ex.labels is not None
    out = []
    for i, names in enumerate(ex.labels):
        row = [0.0] * len(space)
        for name in names:
            idx = space.index(name)
            if idx is None:
                raise DataError(
                    ex.file,
                    f"label '{name}' was never seen in training (known: {', '.join(space.names)})",
                    row=ex.rows[i],
                    line=ex.lines[i] if ex.lines else None,
                    column=ex.label_column,
                )
            row[idx] = 1.0
        out.append(row)
    return out


def kind(cfg: DataConfig) -> LabelKind:
    """Label sets, split at random (a stratum per label set would leave most sets with one row)."""
    return LabelKind(label_set(cfg.label_separator), _space, _targets)


MIN_POSITIVES = 5
"""A label with fewer held-out positives gets the threshold pooled over such labels, not its own: on GoEmotions
(28 labels, 200 held-out rows) labels with one or two positives tuned to whatever those rows said and
micro-F1 fell below 0.5's (bench/RESULTS.md)."""


def tune_thresholds(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per label, the threshold maximising its F1 on these rows (predicted positive when p >= threshold).

    The threshold sits halfway between the lowest probability predicted positive and the highest below it, so
    a threshold planted in separable data is recovered within half the gap. Labels with fewer than
    MIN_POSITIVES positive rows share one threshold, the one maximising F1 over all their (row, label) pairs
    pooled; with no positive at all, PLAIN stays.
    """
    thresholds = np.full(probs.shape[1], PLAIN)
    positives = gold.sum(0)
    for j in np.flatnonzero(positives >= MIN_POSITIVES):
        thresholds[j] = _best_cut(probs[:, j], gold[:, j])
    rare = np.flatnonzero(positives < MIN_POSITIVES)
    if len(rare) and gold[:, rare].sum() > 0:
        thresholds[rare] = _best_cut(probs[:, rare].ravel(), gold[:, rare].ravel())
    return thresholds


def _best_cut(p: np.ndarray, g: np.ndarray) -> float:
    """The F1-maximising threshold of one score column against its gold 0/1 column."""
    order = np.argsort(-p, kind="stable")
    p, g = p[order], g[order]
    tp = np.cumsum(g)
    k = np.arange(1, len(p) + 1)
    last = np.r_[p[1:] != p[:-1], True]  # only cut between distinct probabilities
    f1 = np.where(last, 2 * tp / (k + g.sum()), -1.0)
    best = int(np.argmax(f1))
    below = p[best + 1] if best + 1 < len(p) else 0.0
    return float((p[best] + below) / 2)


def multilabel_metrics(probs: np.ndarray, gold: np.ndarray, thresholds: np.ndarray, names: tuple[str, ...]):  # noqa: ANN201
    """Micro / macro / samples F1, subset accuracy and per-label P/R/F1/support at these thresholds."""
    pred = probs >= thresholds
    truth = gold > 0.5
    tp = (pred & truth).sum(0)
    precision, recall, f1 = prf(tp, pred.sum(0), truth.sum(0))
    micro_p, micro_r, micro_f1 = prf(np.array([tp.sum()]), np.array([pred.sum()]), np.array([truth.sum()]))
    row_tp, row_pred, row_true = (pred & truth).sum(1), pred.sum(1), truth.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):  # a row with neither predicted nor gold labels is right
        samples = np.where(row_pred + row_true > 0, 2 * row_tp / (row_pred + row_true), 1.0)
    n = len(probs)
    return {
        "micro_f1": float(micro_f1[0]),
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        "samples_f1": float(samples.mean()) if n else 0.0,
        "subset_accuracy": float((pred == truth).all(1).mean()) if n else 0.0,
        "micro_precision": float(micro_p[0]),
        "micro_recall": float(micro_r[0]),
        "per_class": per_label(names, precision, recall, f1, truth.sum(0)),
    }


@dataclass
class LabelSets:
    """Readout of a multi-label model: every label's probability, the labels at or above their thresholds."""

    labels: LabelSpace
    thresholds: np.ndarray | None = None
    """Saved per-label thresholds; None while training (each evaluation tunes its own)."""
    separator: str = "|"
    kind: LabelKind = field(default_factory=lambda: LabelKind(label_set(None), _space, _targets))

    def records(self, logits: torch.Tensor, top_k: int | None) -> list[dict[str, Any]]:
        """Per text: the labels at or above their thresholds, and every label's probability."""
        if top_k is not None and not 1 <= top_k <= len(self.labels):
            raise ConfigError(f"--top-k must be between 1 and {len(self.labels)} (the number of labels), got {top_k}")
        names, cut = self.labels.names, self._cut()
        out = []
        for row in torch.sigmoid(logits).numpy():
            order = np.argsort(-row, kind="stable")[: top_k or len(row)]
            chosen = [names[i] for i in np.argsort(-row, kind="stable") if row[i] >= cut[i]]
            out.append({"labels": chosen, "scores": {names[i]: float(row[i]) for i in order}})
        return out

    def _cut(self) -> np.ndarray:
        return self.thresholds if self.thresholds is not None else np.full(len(self.labels), PLAIN)

    def csv_columns(self, top_k: int | None) -> list[str]:
        """The chosen labels joined by the separator, then each label's probability."""
        extra = [f"{c}_{i}" for i in range(1, top_k + 1) for c in ("label", "score")] if top_k else []
        return ["labels", *(extra or [f"p({n})" for n in self.labels.names])]

    def csv_cells(self, record: dict[str, Any], top_k: int | None) -> list[str]:
        """Probabilities printed with 6 decimals, in csv_columns' order."""
        if top_k:
            extra = [x for name, p in record["scores"].items() for x in (name, f"{p:.6f}")]
        else:
            extra = [f"{record['scores'][n]:.6f}" for n in self.labels.names]
        return [self.separator.join(record["labels"]), *extra]

    def score(self) -> MultiLabelScore:
        """Keeps every row's probabilities: tuning a threshold needs them all."""
        return MultiLabelScore(self.labels, self.thresholds)


@dataclass
class MultiLabelScore:
    """Probabilities and gold rows of every scored text, and the summed loss."""

    labels: LabelSpace
    thresholds: np.ndarray | None
    probs: list[np.ndarray] = field(default_factory=list)
    gold: list[np.ndarray] = field(default_factory=list)
    loss_sum: float = 0.0

    def add(self, logits: torch.Tensor, gold: torch.Tensor) -> None:
        """Fold one batch in."""
        self.loss_sum += multilabel_loss(logits, gold).item()
        self.probs.append(torch.sigmoid(logits).numpy())
        self.gold.append(gold.float().numpy())

    def result(self) -> dict[str, Any]:
        """Metrics at the saved thresholds (or, while training, at thresholds tuned on these rows), and at 0.5."""
        k = len(self.labels)
        probs = np.concatenate(self.probs) if self.probs else np.zeros((0, k))
        gold = np.concatenate(self.gold) if self.gold else np.zeros((0, k))
        tuned = self.thresholds is None
        cut = tune_thresholds(probs, gold) if tuned else self.thresholds
        n = len(probs)
        plain = multilabel_metrics(probs, gold, np.full(k, PLAIN), self.labels.names)
        plain.pop("per_class")
        return {
            "loss": self.loss_sum / n if n else float("nan"),
            **multilabel_metrics(probs, gold, cut, self.labels.names),
            "n": n,
            "thresholds": dict(zip(self.labels.names, map(float, cut), strict=True)),
            "thresholds_from": "tuned on these rows" if tuned else "saved",
            "at_0.5": plain,
        }


def _detect(table: Table, cfg: DataConfig) -> str | None:
    """A label column of lists, or --label-separator given."""
    if cfg.label_separator:
        return "--label-separator given"
    lower = {c.lower(): c for c in table.columns}
    column = cfg.label_column or next((lower[n] for n in LABEL_NAMES if n in lower), None)
    cells = table.columns.get(column, []) if column else []
    if any(isinstance(v, (list, tuple, np.ndarray)) for v in cells):
        return f"column '{column}' holds lists of labels"
    return None


def _load_data(cfg: RunConfig) -> LabeledData:
    return load_labeled(cfg.data, cfg.train.seed, kind(cfg.data))


def _head_config(labels: LabelSpace | None) -> dict[str, Any]:
    assert labels is not None
    return {"num_labels": len(labels), "id2label": labels.id2label, "label2id": labels.label2id,
            "problem_type": "multi_label_classification"}  # fmt: skip


def _recipe(cfg: RunConfig, data: LabeledData, tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> Recipe:
    """Binary cross-entropy per label; each evaluation tunes thresholds on the held-out rows."""
    assert data.labels is not None
    readout = LabelSets(data.labels)
    none = sum(not row for row in data.train.labels or [])
    what = f"{len(data.labels)} labels ({none} of {len(data.train)} texts with none)"
    positives = np.asarray(data.train_targets, dtype=np.float64).sum(0)
    n = len(data.train_targets)
    spec = cfg.train.class_weights
    if spec == "balanced":  # BCE's pos_weight: a label's positives weigh as much as its negatives
        pos_weight = (n - positives) / np.maximum(positives, 1)
    else:
        pos_weight = sequence.class_weights(spec, data.labels, positives, n)
    focal = cfg.train.focal_gamma if cfg.train.loss == "focal" else None
    if pos_weight is None and focal is None:
        loss = multilabel_loss
    else:
        loss = multilabel(torch.as_tensor(pos_weight, dtype=torch.float32) if pos_weight is not None else None, focal)
    made = sequence.recipe(cfg, data, tokenizer, model, readout, loss, what)

    def after(model: torch.nn.Module, partial: Path, best: dict[str, Any], before: dict[str, Any]):
        if not best:  # no held-out data: nothing to tune on; 0.5 it is
            plain = dict.fromkeys(data.labels.names, PLAIN)
            return best, {"thresholds": plain, "thresholds_from": "0.5 (no evaluation data)"}
        # Tuned again on the saved weights as predict computes them (fp32, no autocast): a threshold between
        # two close probabilities must separate them at inference, not only under training's bf16.
        assert made.evaluate is not None
        best = {**best, **made.evaluate(model)}
        thresholds = best["thresholds"]
        config = partial / "config.json"  # the thresholds travel with the model
        saved = json.loads(config.read_text())
        config.write_text(json.dumps({**saved, "thresholds": thresholds}, indent=2) + "\n")
        if not cfg.quiet:
            console.print(f"per-label thresholds tuned on the {data.eval_from} rows: " +
                          ", ".join(f"{n} {t:.2f}" for n, t in thresholds.items()))  # fmt: skip
        return best, {"thresholds": thresholds, "thresholds_from": f"tuned on {data.eval_from}"}

    made.after = after
    made.record = {"labels": data.labels.to_dict(), "label_separator": cfg.data.label_separator}
    if pos_weight is not None:
        made.record["pos_weight"] = dict(zip(data.labels.names, map(float, pos_weight), strict=True))
    return made


def _describe(data: LabeledData) -> list[str]:
    assert data.labels is not None and data.train.labels is not None
    counts = Counter(name for row in data.train.labels for name in row)
    empty = sum(not row for row in data.train.labels)
    lines = [
        sequence.describe_columns(data),
        "labels: " + ", ".join(f"{n} ({counts[n]})" for n in data.labels.names) + f"; {empty} texts with none",
    ]
    if data.eval is not None:
        lines.append(f"{data.eval.file}: {len(data.eval)} rows, every label known")
    return lines


def _print(metrics: dict[str, Any], title: str, out: Any = None) -> None:
    shown = {**metrics, "accuracy": metrics["subset_accuracy"], "weighted_f1": metrics["samples_f1"]}
    table = metrics_table(shown, title)
    (out or console).print(table)
    plain = metrics["at_0.5"]
    (out or console).print(
        f"thresholds ({metrics['thresholds_from']}): micro-F1 {metrics['micro_f1']:.4f}, macro-F1 "
        f"{metrics['macro_f1']:.4f}; at 0.5: micro-F1 {plain['micro_f1']:.4f}, macro-F1 {plain['macro_f1']:.4f}"
    )


def _summary(metrics: dict[str, Any] | None, best: dict[str, Any], cfg: RunConfig) -> str:
    if not metrics:
        return "no evaluation data: saved the final model (thresholds 0.5)"
    _print(metrics, saved_title(best))
    return kept_line(best, cfg)


def _show(metrics: dict[str, Any], title: str) -> None:
    from rich.console import Console

    _print(metrics, f"{title} ({metrics['n']} rows)", Console())
    print(f"micro-F1 {metrics['micro_f1']:.4f}  macro-F1 {metrics['macro_f1']:.4f}  "
          f"subset accuracy {metrics['subset_accuracy']:.4f}  loss {metrics['loss']:.4f}")  # fmt: skip


def _readout(run: RunInfo) -> LabelSets:
    assert run.labels is not None
    saved = run.raw.get("thresholds") or {}
    thresholds = np.array([float(saved.get(n, PLAIN)) for n in run.labels.names])
    separator = run.raw.get("label_separator")
    return LabelSets(run.labels, thresholds, separator or "|", LabelKind(label_set(separator), _space, _targets))


TASK = Task(
    name="multilabel",
    about="any number of labels per text (none included), with per-label thresholds",
    model_class="AutoModelForSequenceClassification",
    peft_task_type="SEQ_CLS",
    new_head=True,
    backbone="encoder",
    defaults={"model.name": "minilm", "model.max_length": 128, "eval.metric": "macro_f1"},
    metrics=("macro_f1", "micro_f1", "samples_f1", "subset_accuracy", "loss"),
    detect=_detect,
    load_data=_load_data,
    head_config=_head_config,
    recipe=_recipe,
    describe=_describe,
    summary=_summary,
    open_run=sequence.opener("AutoModelForSequenceClassification", _readout),
    show=_show,
    headline=("micro_f1", "macro_f1"),
    backends=("torch", "onnx", "onnx-int8", "onnx-int8-dynamic"),
    losses=("bce", "focal"),
    chunks=True,
    lengths=sequence.lengths,
)
