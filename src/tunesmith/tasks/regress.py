"""regression: a number per text (or sentence pair): one linear output, MSE (or Huber) on standardised targets.

Targets are standardised with the training set's mean and standard deviation, so one learning rate fits
scores of 0-5 and prices in the thousands alike; the scale is folded into the saved head's last layer, so the
run folder (and transformers' pipeline, its ONNX export) predicts in the user's units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from tunesmith.config import DataConfig, RunConfig
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import LABEL_NAMES, Table, is_missing
from tunesmith.data.validate import LabeledData, LabelKind, load_labeled
from tunesmith.errors import ConfigError, DataError
from tunesmith.losses import LOSSES
from tunesmith.model.aggregate import fold_input
from tunesmith.model.heads import head_parameter_names
from tunesmith.report import console
from tunesmith.runs import RunInfo
from tunesmith.tasks import sequence
from tunesmith.tasks.base import Recipe, Task, kept_line

MANY_INTEGERS = 100
"""Integer labels with more distinct values than this are read as numbers, not classes (without --task)."""


def _number(table: Table, i: int, value: Any, column: str) -> float:
    if is_missing(value):
        raise DataError(table.path, "missing label", column=column, **table.where(i))
    if isinstance(value, bool):
        raise DataError(table.path, f"label {value} is not a number", column=column, **table.where(i))
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise DataError(table.path, f"label {str(value)[:40]!r} is not a number (regression)", column=column,
                        **table.where(i)) from None  # fmt: skip
    if not math.isfinite(number):
        raise DataError(table.path, f"label {value} is not a finite number", column=column, **table.where(i))
    return number


NUMBERS = LabelKind(_number, lambda labels, given, file: None, lambda ex, space: list(ex.labels or []))
"""A number per text; held-out rows drawn at random."""


@dataclass(frozen=True)
class Scale:
    """Targets are (y - mean) / std while training; the saved head outputs y."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def of(cls, values: list[float]) -> Scale:
        """The training targets' mean and standard deviation (1 when they are all equal)."""
        array = np.asarray(values, dtype=np.float64)
        std = float(array.std())
        return cls(float(array.mean()), std if std > 0 else 1.0)

    def standardise(self, values: list[float]) -> list[float]:
        """What the loss compares the output with."""
        return [(v - self.mean) / self.std for v in values]

    def to_dict(self) -> dict[str, float]:
        """As tunesmith.json records it."""
        return {"mean": self.mean, "std": self.std}


@dataclass
class RegressionScore:
    """Predictions and gold values (Pearson and Spearman need all of them) and the summed loss."""

    output: Scale
    """Maps the head's output to the user's units: the training scale while training, identity once saved."""
    loss_scale: float
    """The training targets' std: the loss is in standardised units whichever scale the output has."""
    pred: list[np.ndarray] = field(default_factory=list)
    gold: list[np.ndarray] = field(default_factory=list)

    def add(self, logits: torch.Tensor, gold: torch.Tensor) -> None:
        """Fold one batch in."""
        self.pred.append(logits[:, 0].double().numpy() * self.output.std + self.output.mean)
        self.gold.append(gold.double().numpy())

    def result(self) -> dict[str, Any]:
        """Loss (MSE in standardised units), MSE, RMSE, MAE in the user's units, Pearson and Spearman."""
        from scipy.stats import pearsonr, spearmanr

        pred = np.concatenate(self.pred) if self.pred else np.zeros(0)
        gold = np.concatenate(self.gold) if self.gold else np.zeros(0)
        n = len(pred)
        err = pred - gold
        constant = n < 2 or np.ptp(pred) == 0 or np.ptp(gold) == 0  # correlation undefined: 0, as no signal
        return {
            "loss": float(np.mean((err / self.loss_scale) ** 2)) if n else float("nan"),
            "mse": float(np.mean(err**2)) if n else float("nan"),
            "rmse": float(np.sqrt(np.mean(err**2))) if n else float("nan"),
            "mae": float(np.mean(np.abs(err))) if n else float("nan"),
            "pearson": 0.0 if constant else float(pearsonr(pred, gold).statistic),
            "spearman": 0.0 if constant else float(spearmanr(pred, gold).statistic),
            "n": n,
        }


@dataclass
class Numbers:
    """Readout of a regressor: the number, in the user's units."""

    output: Scale
    loss_scale: float
    labels: LabelSpace | None = None
    kind: LabelKind = NUMBERS

    def records(self, logits: torch.Tensor, top_k: int | None) -> list[dict[str, Any]]:
        """Per text: {"value": the prediction}."""
        if top_k is not None:
            raise ConfigError("--top-k applies to runs with labels; a regression run predicts one number")
        values = logits[:, 0].double().numpy() * self.output.std + self.output.mean if len(logits) else []
        return [{"value": float(v)} for v in values]

    def csv_columns(self, top_k: int | None) -> list[str]:
        """The value alone."""
        return ["value"]

    def csv_cells(self, record: dict[str, Any], top_k: int | None) -> list[str]:
        """The value with 6 significant digits."""
        return [f"{record['value']:.6g}"]

    def score(self) -> RegressionScore:
        """Keeps every prediction: rank correlation needs them all."""
        return RegressionScore(self.output, self.loss_scale)


def _is_number(value: Any) -> float | None:
    if isinstance(value, bool) or is_missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _detect(table: Table, cfg: DataConfig) -> str | None:
    """Every label a number, and some not whole or more than MANY_INTEGERS distinct ones."""
    lower = {c.lower(): c for c in table.columns}
    column = cfg.label_column or next((lower[n] for n in LABEL_NAMES if n in lower), None)
    if column not in table.columns:
        return None
    numbers = [_is_number(v) for v in table.columns[column]]
    if not numbers or any(x is None for x in numbers):
        return None
    distinct = set(numbers)
    if any(not float(x).is_integer() for x in distinct):
        return f"the labels of column '{column}' are numbers with decimals ({len(distinct)} distinct in the first rows)"
    if len(distinct) > MANY_INTEGERS:
        return f"the labels of column '{column}' are {len(distinct)} distinct integers (over {MANY_INTEGERS})"
    return None


def _load_data(cfg: RunConfig) -> LabeledData:
    return load_labeled(cfg.data, cfg.train.seed, NUMBERS)


def _head_config(labels: LabelSpace | None) -> dict[str, Any]:
    return {"num_labels": 1, "problem_type": "regression", "id2label": {0: "value"}, "label2id": {"value": 0}}


def output_layer(model: torch.nn.Module) -> str:
    """The name of the head's last linear layer (one output): where the scale is folded in."""
    heads = head_parameter_names(model)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == 1 and f"{name}.weight" in heads:
            return name
    raise ConfigError("regression: the model's head has no single-output linear layer to hold the target scale")


def fold_scale(file: Path, layer: str, scale: Scale) -> None:
    """Y = std·(w·h + b) + mean = (std·w)·h + (std·b + mean): the saved layer outputs the user's units."""
    tensors = load_file(str(file))
    tensors[f"{layer}.weight"] = tensors[f"{layer}.weight"] * scale.std
    bias = f"{layer}.bias"
    tensors[bias] = tensors[bias] * scale.std + scale.mean
    save_file(tensors, str(file), metadata={"format": "pt"})


def _recipe(cfg: RunConfig, data: LabeledData, tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> Recipe:
    """MSE (or Huber) on standardised targets; evaluation in the user's units."""
    scale = Scale.of(data.train_targets)
    readout = Numbers(scale, scale.std)
    standard = LabeledData(data.train, data.eval, None, scale.standardise(data.train_targets), data.eval_targets,
                           data.eval_from, data.test, data.test_targets)  # fmt: skip
    loss = LOSSES[cfg.train.loss or "mse"]
    what = f"numbers (mean {scale.mean:.4g}, sd {scale.std:.4g})"
    layer = output_layer(model)  # before chunk attention (whose last layer is one output too) joins the head
    made = sequence.recipe(cfg, standard, tokenizer, model, readout, loss, what)

    def after(model: torch.nn.Module, partial: Path, best: dict[str, Any], before: dict[str, Any]):
        if best and made.evaluate is not None:  # the saved weights as predict computes them (fp32, no autocast)
            best = {**best, **made.evaluate(model)}
        fold_scale(partial / "model.safetensors", layer, scale)
        fold_input(partial, scale.std, scale.mean)  # chunk attention then reads the logits in the labels' units
        if not cfg.quiet:
            console.print(f"target scale folded into {layer}: predictions come out in the labels' units")
        return best, {}

    made.after = after
    made.record = {"target_scale": scale.to_dict()}
    return made


def _describe(data: LabeledData) -> list[str]:
    values = np.asarray(data.train.labels, dtype=np.float64)
    return [sequence.describe_columns(data),
            f"numbers: mean {values.mean():.4g}, sd {values.std():.4g}, min {values.min():.4g}, "
            f"max {values.max():.4g}, {len(set(values.tolist()))} distinct"]  # fmt: skip


def _line(metrics: dict[str, Any]) -> str:
    return (f"Pearson {metrics['pearson']:.4f}  Spearman {metrics['spearman']:.4f}  RMSE {metrics['rmse']:.4g}  "
            f"MAE {metrics['mae']:.4g}")  # fmt: skip


def _summary(metrics: dict[str, Any] | None, best: dict[str, Any], cfg: RunConfig) -> str:
    if not metrics:
        return "no evaluation data: saved the final model"
    return f"{_line(metrics)}; {kept_line(best, cfg)}"


def _show(metrics: dict[str, Any], title: str) -> None:
    print(f"{title} ({metrics['n']} rows): {_line(metrics)}  loss {metrics['loss']:.4f}")


def _check(cfg: RunConfig) -> None:
    if cfg.train.class_weights is not None:
        raise ConfigError("--class-weights applies to runs with labels; a regression run has none")


def _readout(run: RunInfo) -> Numbers:
    saved = run.raw.get("target_scale") or {}
    return Numbers(Scale(), float(saved.get("std", 1.0)))  # the saved head already outputs the labels' units


TASK = Task(
    name="regression",
    about="a number per text, e.g. a similarity score or a rating",
    model_class="AutoModelForSequenceClassification",
    peft_task_type="SEQ_CLS",
    new_head=True,
    backbone="encoder",
    defaults={"model.name": "minilm", "model.max_length": 128, "eval.metric": "pearson"},
    metrics=("pearson", "spearman", "rmse", "mae", "loss"),
    detect=_detect,
    load_data=_load_data,
    head_config=_head_config,
    recipe=_recipe,
    describe=_describe,
    summary=_summary,
    open_run=sequence.opener("AutoModelForSequenceClassification", _readout),
    show=_show,
    headline=("pearson", "spearman", "rmse"),
    backends=("torch", "onnx", "onnx-int8", "onnx-int8-dynamic"),
    losses=("mse", "huber"),
    check=_check,
    chunks=True,
    lengths=sequence.lengths,
)
