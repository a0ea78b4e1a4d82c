"""The defaults in a real run (tiny BERT): what tunesmith.json records, test_data, the time cap, under-training."""

from __future__ import annotations

import json

import pytest

import tunesmith


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def default_run(tiny_model, tiny_data, tmp_path_factory):
    """No options but the data, the model and test_data: every rule applies."""
    out = tmp_path_factory.mktemp("defaults") / "run"
    return tunesmith.finetune(
        str(tiny_data["train_csv"]), tiny_model, str(out), test_data=str(tiny_data["test_csv"]), quiet=True
    )


def test_unset_fields_are_chosen_by_rule_and_recorded(default_run):
    info = json.loads((default_run.path / "tunesmith.json").read_text())
    chosen, train = info["defaults"], info["config"]["train"]
    # The tiny BERT is far under 50M parameters; 216 training rows at batch 16 are 14 steps an epoch; 24 held
    # out rows are too few to pick a best epoch, so the last weights are kept and the whole budget runs.
    assert chosen["train.lr"] == {"value": 1e-4, "source": "default for encoders under 50M parameters"}
    assert chosen["train.head_lr"]["value"] == pytest.approx(1e-3) and "random" in chosen["train.head_lr"]["source"]
    assert chosen["train.epochs"]["value"] == 10 and "14 per epoch" in chosen["train.epochs"]["source"]
    assert chosen["eval.select"]["value"] == "last" and "24 held-out rows" in chosen["eval.select"]["source"]
    assert chosen["eval.patience"]["value"] == 0
    assert (train["lr"], train["epochs"]) == (1e-4, 10) and info["config"]["eval"]["patience"] == 0
    evals = [r for r in records(default_run.path) if "eval_macro_f1" in r]
    assert info["stop_reason"] is None and len(evals) == 10
    assert info["best"]["step"] == evals[-1]["step"] and info["best"]["select"] == "last"


def test_test_data_is_scored_at_every_evaluation_and_chooses_nothing(default_run, tiny_data):
    evals = [r for r in records(default_run.path) if "eval_macro_f1" in r]
    assert all({"test_accuracy", "test_macro_f1", "seconds"} <= set(r) for r in evals)
    seconds = [r["seconds"] for r in evals]
    assert seconds == sorted(seconds) and seconds[0] > 0
    best = json.loads((default_run.path / "tunesmith.json").read_text())["best"]
    at_best = next(r for r in evals if r["step"] == best["step"])
    saved = json.loads((default_run.path / "eval.json").read_text())
    assert saved["test"]["accuracy"] == at_best["test_accuracy"]  # the test scores of the saved weights
    assert tunesmith.evaluate(default_run.path, tiny_data["test_csv"])["accuracy"] == pytest.approx(
        saved["test"]["accuracy"]
    )


def test_time_cap_stops_and_keeps_an_evaluated_model(tiny_model, tiny_data, tmp_path):
    result = tunesmith.finetune(
        str(tiny_data["train_csv"]), tiny_model, str(tmp_path / "t"), epochs=50, max_minutes=1e-4, quiet=True
    )
    info = json.loads((result.path / "tunesmith.json").read_text())
    assert result.stopped_early and info["stop_reason"] == "time"
    assert info["best"]["step"] == 1, "out of time after the first step, which is evaluated before the stop"
    assert (result.path / "model.safetensors").is_file()


def test_under_trained_run_says_so(tiny_model, tiny_data, tmp_path, capsys):
    result = tunesmith.finetune(
        str(tiny_data["train_csv"]), tiny_model, str(tmp_path / "u"), epochs=2, lr=1e-3, metric="loss"
    )
    evals = [r["eval_loss"] for r in records(result.path) if "eval_loss" in r]
    assert len(evals) == 2 and evals[1] < evals[0], "the premise: still improving at the last evaluation"
    assert result.under_trained
    assert json.loads((result.path / "tunesmith.json").read_text())["under_trained"] is True
    out = " ".join(capsys.readouterr().err.split())  # the console is stderr; rich wraps long lines
    assert "under-trained?" in out and "--epochs 4" in out and "tunesmith.json" in out


def test_under_trained_means_metric_and_loss_were_still_improving(default_run):
    # Under select last the kept weights are always the last; the note follows the metric and held-out loss
    # (both best at the last evaluation), not what was kept.
    evals = [r for r in records(default_run.path) if "eval_macro_f1" in r]
    f1, loss = [r["eval_macro_f1"] for r in evals], [r["eval_loss"] for r in evals]
    assert default_run.under_trained == (f1[-1] > max(f1[:-1]) and loss[-1] < min(loss[:-1]))


def test_best_selection_and_patience_stop_a_run(tiny_model, tiny_data, tmp_path):
    result = tunesmith.finetune(
        str(tiny_data["train_csv"]), tiny_model, str(tmp_path / "p"), select="best", patience=1, metric="loss",
        epochs=30, lr=3e-3, quiet=True,
    )  # fmt: skip
    info = json.loads((result.path / "tunesmith.json").read_text())
    losses = [r["eval_loss"] for r in records(result.path) if "eval_loss" in r]
    assert result.stopped_early and info["stop_reason"] == "patience" and len(losses) < 30
    assert info["best"]["value"] == min(losses) and info["best"]["select"] == "best"
    assert not result.under_trained
