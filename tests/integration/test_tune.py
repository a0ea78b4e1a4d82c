"""tunesmith tune on the tiny BERT: a study, best/, resume after SIGKILL, pruning, budgets, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tunesmith
from conftest import make_pairs, write_rows
from tunesmith.tune import TuneResult

optuna = pytest.importorskip("optuna")  # the tune extra

SPACE = "lr=3e-3:3e-2,epochs=1:2,batch_size=8,strategy=full|lora|l2sp"
"""Every strategy (so lora_r and l2sp are sampled when theirs is), epochs short enough for a quick file."""
HOPELESS = "lr=1e-9,head_lr=1e-9,epochs=2,batch_size=16,strategy=full"
"""Every value fixed: a trial that cannot learn, the same each time."""


def study_of(out: Path) -> optuna.Study:
    return optuna.load_study(study_name="tunesmith", storage=f"sqlite:///{out / 'study.db'}")


def finished(study: optuna.Study) -> list[tuple[dict, float]]:
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return [(t.user_attrs["params"], t.value) for t in study.get_trials(states=done)]


@pytest.fixture
def args(tiny_model, tiny_data):
    def make(out: Path, *more: str, held_out: bool = True) -> list[str]:
        held = ["--eval-data", str(tiny_data["test_csv"])] if held_out else ["--eval-split", "0"]
        return ["tune", str(tiny_data["train_csv"]), *held, "--model", tiny_model, "-o", str(out), *more]

    return make


@pytest.fixture(scope="module")
def uninterrupted(tiny_model, tiny_data, tmp_path_factory) -> tuple[Path, TuneResult]:
    out = tmp_path_factory.mktemp("tune") / "whole"
    result = tunesmith.tune(
        str(tiny_data["train_csv"]), out, trials=3, space=SPACE, model=tiny_model,
        eval_data=str(tiny_data["test_csv"]), quiet=True,
    )  # fmt: skip
    return out, result


def test_a_study_of_three_trials_writes_its_database_best_and_reports(uninterrupted, tiny_data):
    out, result = uninterrupted
    trials = study_of(out).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    values = [t.value for t in trials]
    assert result.best["value"] == max(values) and result.best["number"] == values.index(max(values))
    for t in trials:  # a strategy's own parameter is sampled exactly when the trial uses that strategy
        params = t.user_attrs["params"]
        assert ("lora_r" in params) == (params["strategy"] == "lora")
        assert ("l2sp" in params) == (params["strategy"] == "l2sp")
        assert 3e-3 <= params["lr"] <= 3e-2 and params["batch_size"] == 8
    # --keep best: only the best trial keeps its folder; best/ is a copy of it
    assert sorted(p.name for p in (out / "trials").iterdir()) == [f"trial-{result.best['number']:04d}"]
    best_info = json.loads((out / "best" / "tunesmith.json").read_text())
    assert best_info["best"]["value"] == result.best["value"]
    from transformers import pipeline

    texts = ["I was charged twice, please refund my card", "the app crashes at login"]
    predicted = pipeline("text-classification", model=str(out / "best"))(texts)
    assert {p["label"] for p in predicted} <= {"billing", "technical", "feedback"}
    listed = json.loads((out / "tune.json").read_text())
    assert [r["number"] for r in listed["trials"]] == [0, 1, 2]
    assert [r["value"] for r in listed["trials"]] == values
    assert all(r["fit_seconds"] > 0 and r["params"] for r in listed["trials"])
    assert listed["pareto"]["fit_seconds"] and listed["pareto"]["mean_backbone_drift"]  # strategies vary
    table = (out / "tune.md").read_text()
    assert all(f"| {n} | COMPLETE | {v:.4f} |" in table for n, v in enumerate(values))


def test_resume_after_sigkill_reruns_only_the_killed_trial_and_matches_the_uninterrupted_study(
    uninterrupted, args, cli, tmp_path
):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "tunesmith", *args(out, "--trials", "3", "--space", SPACE)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = out / "trials" / "trial-0001"
    deadline = time.monotonic() + 120
    while not (second.exists() or second.with_name("trial-0001.partial").exists()):
        assert proc.poll() is None and time.monotonic() < deadline, "the study ended before its second trial"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = study_of(out).get_trials()
    assert [t.state.name for t in before] == ["COMPLETE", "RUNNING"]

    code, _, err = cli(*args(out, "--trials", "3", "--resume", "--space", SPACE))
    assert code == 0, err
    after = study_of(out).get_trials()
    assert [t.state.name for t in after] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert after[0].datetime_start == before[0].datetime_start  # the finished trial was not run again
    assert after[2].user_attrs["params"] == after[1].user_attrs["params"]  # the killed one was asked again
    assert finished(study_of(out)) == finished(study_of(uninterrupted[0]))
    assert not (out / "trials" / "trial-0001").exists() and not second.with_name("trial-0001.partial").exists()
    assert json.loads((out / "tune.json").read_text())["best"]["value"] == uninterrupted[1].best["value"]


def test_a_trial_far_below_the_others_is_pruned_at_its_first_evaluation(args, cli, tmp_path):
    out = tmp_path / "pruned"
    code, _, err = cli(*args(out, "--trials", "1", "--space", HOPELESS, "--keep", "all"))
    assert code == 0, err
    study = study_of(out)
    first = study.trials[0].intermediate_values
    assert sorted(first) == [1, 2]
    for _ in range(3):  # a prepared study: three finished trials far ahead at every evaluation
        good = {1: 0.99, 2: 0.99}
        study.add_trial(optuna.trial.create_trial(value=0.99, intermediate_values=good, user_attrs={"params": {}}))
    code, _, err = cli(*args(out, "--trials", "5", "--resume", "--space", HOPELESS, "--keep", "all"))
    assert code == 0, err
    pruned = study_of(out).trials[4]
    assert pruned.state.name == "PRUNED"
    assert pruned.intermediate_values == {1: first[1]}  # stopped after its first of two epochs, deterministically
    assert not (out / "trials" / "trial-0004").exists() and not (out / "trials" / "trial-0004.partial").exists()
    assert pruned.user_attrs["fit_seconds"] < study_of(out).trials[0].user_attrs["fit_seconds"]
    assert "| 4 | PRUNED |" in (out / "tune.md").read_text()


def test_a_budget_too_small_for_one_trial_is_one_line_and_leaves_a_resumable_study(args, cli, tmp_path):
    out = tmp_path / "short"
    code, _, err = cli(*args(out, "--time-budget", "0.05s", "--space", HOPELESS))
    assert code == 2 and err.count("\n") == 1 and "too small for one trial" in err, err
    assert not (out / "best").exists()
    assert [t.state.name for t in study_of(out).trials] in ([], ["FAIL"])
    code, _, err = cli(*args(out, "--time-budget", "10m", "--trials", "1", "--resume", "--space", HOPELESS))
    assert code == 0, err
    assert [t.state.name for t in study_of(out).trials][-1] == "COMPLETE" and (out / "best").is_dir()


def test_jobs_run_worker_processes_on_the_same_study(args, cli, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # two "GPUs": the workers still train on the CPU
    out = tmp_path / "jobs"
    code, _, err = cli(*args(out, "--trials", "2", "--jobs", "2", "--space", "lr=1e-3,epochs=1,batch_size=16"))
    assert code == 0, err
    states = [t.state.name for t in study_of(out).trials]
    assert states.count("COMPLETE") >= 2 and set(states) == {"COMPLETE"}
    assert (out / "best" / "model.safetensors").is_file()


BAD = [
    (["--space", "lr=1e-3:1e-5"], "low end 0.001 is above the high end"),
    (["--space", "dropout=0.1"], "unknown parameter 'dropout'"),
    (["--space", "lora_r=4|8"], "applies to strategy lora"),
    (["--time-budget", "30x"], "--time-budget '30x'"),
    (["--trials", "2", "no held-out data"], "held-out data"),
    (["--trials", "2", "--jobs", "2"], "needs its own GPU"),
    ([], "pass --trials N, --time-budget"),
]


@pytest.mark.parametrize(("more", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_input_is_one_line_exit_2_and_no_folder(args, cli, tmp_path, monkeypatch, more, message):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    held_out = "no held-out data" not in more
    code, _, err = cli(*args(tmp_path / "out", *[m for m in more if m != "no held-out data"], held_out=held_out))
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_lora_without_peft_is_refused(args, cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # importlib.util.find_spec("peft") is None now
    code, _, err = cli(*args(tmp_path / "out", "--trials", "2", "--space", "strategy=full|lora"))
    assert code == 2 and err.count("\n") == 1 and "needs peft" in err, err


def test_a_study_of_other_data_or_task_or_an_existing_folder_is_refused(uninterrupted, args, cli, tiny_data, tmp_path):
    out = uninterrupted[0]
    other_data = args(out, "--trials", "9", "--resume")
    other_data[1] = str(tiny_data["train_jsonl"])  # the same rows, other bytes
    generate = write_rows(tmp_path / "pairs.jsonl", make_pairs(30))
    other_task = args(out, "--trials", "9", "--resume")
    other_task[1:4] = [str(generate), "--eval-data", str(generate)]
    for command, message in [
        (other_data, "a study of other data (by sha256)"),
        (other_task, "a study of task classification, not generate"),
        (args(out, "--trials", "9"), "already exists; pass --resume"),
        (args(tmp_path / "none", "--trials", "9", "--resume"), "nothing to resume"),
    ]:
        code, _, err = cli(*command)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert len(study_of(out).trials) == 3  # refused before anything was written
