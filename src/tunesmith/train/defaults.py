"""The defaults that depend on the run: learning rates by model size, the step budget, early stopping.

Each rule is a pure function of (task, parameter count, strategy, steps per epoch) that returns the value
and the reason, so tunesmith.json can say why a run used what it used; an explicit setting always wins
and is recorded as such. bench/defaults.py (bench/DEFAULTS.md) is the evidence behind the numbers.
Knows nothing about data files or models beyond those counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tunesmith.config import RunConfig

ENCODER_RATES = ((50e6, 1e-4), (200e6, 3e-5), (math.inf, 1e-5))
"""(parameters below, peak lr) for classification: small encoders such as MiniLM (22.7M) take 1e-4, BERT-base
sized ones 3e-5, large ones 1e-5. At 5e-5 MiniLM was still far from converged after 3 epochs (issue 12)."""
CAUSAL_RATES = ((300e6, 1e-4), (3e9, 3e-5), (math.inf, 1e-5))
"""(parameters below, peak lr) for full fine-tuning of a causal LM (SmolLM2-135M: 1e-4)."""
RATES = {"encoder": (ENCODER_RATES, "encoders"), "causal": (CAUSAL_RATES, "causal LMs")}
"""The table for each kind of backbone a task names (Task.backbone)."""
ADAPTER_FACTOR = 5.0
"""LoRA and BitFit move few parameters, each of which must move further: 5x the full rate, at most 1e-3."""
HEAD_FACTOR = 10.0
"""A classification head starts random and has a few thousand weights: it learns at 10x the backbone's rate."""
TARGET_STEPS = 600
"""Optimiser steps the epoch budget aims for; a 1,350-row file at batch 16 is 85 steps an epoch, so 3 epochs
(255 steps) stopped short of convergence while 100 rows were only 21 steps."""
MIN_EPOCHS, MAX_EPOCHS = 3, 10
"""The budget never goes below 3 passes (large files) nor above 10 (small ones): on a 500-row SST-2 slice,
10 epochs at 1e-4 scored 0.784 and 3 epochs 0.772 (3e-5: 0.792 and 0.647)."""
PATIENCE = 3
"""Evaluations without improvement before a run with the epoch budget stops, where held-out data can tell."""
MEASURABLE_ROWS = 500
"""Held-out rows from which 'best' and early stopping can be trusted: accuracy's standard error is about 1.8
points at 500 rows (p = 0.8), 5.7 at 50, while consecutive epochs differ by a point or two."""


@dataclass(frozen=True)
class Chosen:
    """A value and the reason it was chosen."""

    value: Any
    source: str


def learning_rate(task: str, parameters: int, strategy: str) -> Chosen:
    """Peak learning rate of the backbone."""
    from tunesmith.tasks import get

    table, kind = RATES[get(task).backbone]
    limit, lr = next((limit, lr) for limit, lr in table if parameters < limit)
    size = f"under {limit / 1e6:,.0f}M parameters" if limit < math.inf else f"of {table[-2][0] / 1e6:,.0f}M or more"
    why = f"default for {kind} {size}"
    if strategy in ("lora", "bitfit"):
        lr, why = min(lr * ADAPTER_FACTOR, 1e-3), f"{why}, x{ADAPTER_FACTOR:g} for {strategy} (at most 1e-3)"
    return Chosen(lr, why)


def head_learning_rate(task: str, lr: float) -> Chosen:
    """Peak learning rate of the task head."""
    from tunesmith.tasks import get

    if not get(task).new_head:
        return Chosen(lr, "lr: the head is pretrained (a causal LM's own)")
    return Chosen(lr * HEAD_FACTOR, f"{HEAD_FACTOR:g}x lr: the {task} head starts from random")


def epoch_budget(steps_per_epoch: int) -> Chosen:
    """Passes over the data: about TARGET_STEPS optimiser steps, within [MIN_EPOCHS, MAX_EPOCHS]."""
    epochs = min(max(math.ceil(TARGET_STEPS / max(steps_per_epoch, 1)), MIN_EPOCHS), MAX_EPOCHS)
    return Chosen(
        epochs,
        f"about {TARGET_STEPS} optimiser steps at {steps_per_epoch} per epoch, within {MIN_EPOCHS}-{MAX_EPOCHS} "
        "epochs; early stopping may end it sooner",
    )


def selection(eval_rows: int) -> Chosen:
    """Best checkpoint by held-out metric where the held-out set can tell epochs apart, else the last weights."""
    if eval_rows >= MEASURABLE_ROWS:
        return Chosen("best", f"{eval_rows} held-out rows tell epochs apart (at least {MEASURABLE_ROWS})")
    return Chosen("last", f"{eval_rows} held-out rows are too few to tell epochs apart (under {MEASURABLE_ROWS})")


def patience(epochs_chosen: bool, select: str) -> Chosen:
    """Early stopping: on when the epoch count is the budget and the best checkpoint is kept, else off."""
    if not epochs_chosen:
        return Chosen(0, "never: train.epochs was set, so every epoch runs")
    if select != "best":
        return Chosen(0, "never: the last weights are kept, so the whole budget runs")
    return Chosen(PATIENCE, f"{PATIENCE} evaluations without improvement end the epoch budget")


def resolve(
    cfg: RunConfig, parameters: int, steps_per_epoch: int, eval_rows: int, bf16: bool = False, device: str = "cpu"
) -> tuple[RunConfig, dict[str, dict[str, Any]]]:
    """The config with every unset default filled in, and {field: {value, source}} for tunesmith.json.

    precision auto stays auto in the config (the accelerator resolves it, given bf16: whether it chose bf16);
    the record says what it meant on this device.
    """
    chosen: dict[str, Chosen] = {}
    if cfg.train.lr is None:
        chosen["train.lr"] = learning_rate(cfg.task.type, parameters, cfg.strategy.name)
    lr = cfg.train.lr if cfg.train.lr is not None else chosen["train.lr"].value
    if cfg.train.head_lr is None:
        chosen["train.head_lr"] = head_learning_rate(cfg.task.type, lr)
    if cfg.train.epochs is None:
        chosen["train.epochs"] = epoch_budget(steps_per_epoch)
    if cfg.eval.select is None:
        chosen["eval.select"] = selection(eval_rows)
    select = cfg.eval.select or chosen["eval.select"].value
    if cfg.eval.patience is None:
        chosen["eval.patience"] = patience("train.epochs" in chosen, select)
    resolved = cfg.with_values({k: c.value for k, c in chosen.items()}, where="default")
    record = {k: {"value": c.value, "source": c.source} for k, c in chosen.items()}
    if cfg.train.precision == "auto":
        native = "bf16 runs natively" if bf16 else "no native bf16"
        record["train.precision"] = {"value": "bf16" if bf16 else "fp32", "source": f"auto: {native} on {device}"}
    for key in ("train.lr", "train.head_lr", "train.epochs", "eval.select", "eval.patience"):
        if key not in chosen:
            section, name = key.split(".")
            record[key] = {"value": getattr(getattr(cfg, section), name), "source": "set by the user"}
    return resolved, record
