"""Each default rule as a pure function of (task, parameter count, strategy, steps per epoch), by table."""

from __future__ import annotations

import pytest

from tunesmith.config import RunConfig
from tunesmith.train import defaults


@pytest.mark.parametrize(
    ("task", "parameters", "strategy", "lr", "source"),
    [
        ("classification", 22_700_000, "full", 1e-4, "encoders under 50M"),  # MiniLM
        ("classification", 109_000_000, "full", 3e-5, "encoders under 200M"),  # BERT-base
        ("classification", 355_000_000, "full", 1e-5, "encoders of 200M or more"),  # RoBERTa-large
        ("classification", 22_700_000, "lora", 5e-4, "x5 for lora"),
        ("classification", 22_700_000, "bitfit", 5e-4, "x5 for bitfit"),
        ("classification", 22_700_000, "top-k", 1e-4, "encoders under 50M"),
        ("generate", 134_500_000, "full", 1e-4, "causal LMs under 300M"),  # SmolLM2-135M
        ("generate", 1_700_000_000, "full", 3e-5, "causal LMs under 3,000M"),
        ("generate", 7_000_000_000, "full", 1e-5, "causal LMs of 3,000M or more"),
        ("generate", 7_000_000_000, "lora", 5e-5, "x5 for lora"),
        ("generate", 134_500_000, "lora", 5e-4, "x5 for lora"),
    ],
)
def test_learning_rate_by_task_size_and_strategy(task, parameters, strategy, lr, source):
    chosen = defaults.learning_rate(task, parameters, strategy)
    assert chosen.value == pytest.approx(lr)
    assert source in chosen.source


def test_adapter_rate_is_capped():
    assert defaults.learning_rate("classification", 1_000_000, "lora").value == pytest.approx(5e-4)
    assert defaults.ADAPTER_FACTOR * 1e-4 <= 1e-3  # the cap binds only above 2e-4 base rates
    assert defaults.learning_rate("classification", 10, "lora").value <= 1e-3


@pytest.mark.parametrize(("task", "lr", "head_lr"), [("classification", 1e-4, 1e-3), ("generate", 1e-4, 1e-4)])
def test_head_rate(task, lr, head_lr):
    assert defaults.head_learning_rate(task, lr).value == pytest.approx(head_lr)


@pytest.mark.parametrize(
    ("steps_per_epoch", "epochs"),
    [
        (1, 10),  # a handful of rows: capped at 10 passes
        (6, 10),  # 96 pairs at batch 16
        (61, 10),  # ceil(600 / 61)
        (70, 9),
        (85, 8),  # 1,350 rows at batch 16: 3 epochs were 255 steps, short of convergence
        (200, 3),
        (250, 3),  # ceil(600 / 250) = 3
        (4_000, 3),  # a large file keeps the classic 3 passes
        (0, 10),  # no full batch (cannot happen in a run, but the rule must not divide by zero)
    ],
)
def test_epoch_budget(steps_per_epoch, epochs):
    assert defaults.epoch_budget(steps_per_epoch).value == epochs


@pytest.mark.parametrize(("rows", "select"), [(0, "last"), (50, "last"), (499, "last"), (500, "best"), (6000, "best")])
def test_selection_by_held_out_size(rows, select):
    assert defaults.selection(rows).value == select


def test_patience_only_with_the_budget_and_the_best_checkpoint():
    assert defaults.patience(True, "best").value == defaults.PATIENCE == 3
    assert defaults.patience(False, "best").value == 0
    assert defaults.patience(True, "last").value == 0


def test_resolve_fills_only_unset_fields_and_records_why():
    cfg = RunConfig().for_task("classification")
    resolved, record = defaults.resolve(cfg, 22_700_000, 85, eval_rows=600)
    assert (resolved.train.lr, resolved.train.head_lr) == (pytest.approx(1e-4), pytest.approx(1e-3))
    assert (resolved.train.epochs, resolved.eval.select, resolved.eval.patience) == (8, "best", 3)
    small, _ = defaults.resolve(cfg, 22_700_000, 85, eval_rows=150)
    assert (small.eval.select, small.eval.patience) == ("last", 0)
    assert record["train.lr"] == {"value": resolved.train.lr, "source": "default for encoders under 50M parameters"}

    explicit = cfg.with_values({"train.lr": 2e-5, "train.epochs": 4})
    resolved, record = defaults.resolve(explicit, 22_700_000, 85, eval_rows=600)
    assert (resolved.train.lr, resolved.train.head_lr, resolved.train.epochs) == (2e-5, pytest.approx(2e-4), 4)
    assert resolved.eval.patience == 0  # a fixed epoch count is kept: no early stopping unless asked
    assert record["train.lr"]["source"] == record["train.epochs"]["source"] == "set by the user"
    assert "10x lr" in record["train.head_lr"]["source"]


def test_explicit_patience_wins_over_the_rule():
    cfg = RunConfig().for_task("classification").with_values({"eval.patience": 1})
    resolved, record = defaults.resolve(cfg, 22_700_000, 10, eval_rows=20)
    assert resolved.eval.patience == 1 and record["eval.patience"]["source"] == "set by the user"
