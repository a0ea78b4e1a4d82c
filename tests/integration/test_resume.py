"""Runs that survive: SIGKILL at any point then resume gives the same bytes; signals, NaN, full disks.

The killed runs are subprocesses that kill themselves at an exact moment (a given micro-batch,
or inside an evaluation) through a wrapper around the loss or the evaluation function: the
product has no test hooks.
"""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

import tunesmith
from conftest import make_rows
from tunesmith.errors import ConfigError, DiskError, NonFiniteError

# 96 rows, batch 8, grad_accum 2 -> 12 micro-batches = 6 steps per epoch, 3 epochs = 18 steps.
OPTIONS = dict(
    epochs=3, batch_size=8, grad_accum=2, lr=2e-3, every_steps=4, save_every=2, quiet=True, seed=11, warmup_ratio=0.2
)

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import tunesmith
    import tunesmith.tasks.classify as classify
    import tunesmith.tasks.generate as generate
    import tunesmith.tasks.sequence as sequence

    args = json.loads(sys.argv[1])
    kill = args.pop("kill")
    calls = {"loss": 0, "eval": 0, "step": 0}

    def killing(name, fn):
        def wrapper(*a, **k):
            calls[name] += 1
            if kill and kill[0] == name and calls[name] == kill[1]:
                os.kill(os.getpid(), getattr(signal, kill[2]))
            return fn(*a, **k)
        return wrapper

    classify.classification_loss = killing("loss", classify.classification_loss)
    sequence.score_forward = killing("eval", sequence.score_forward)
    generate.causal_lm_loss = killing("loss", generate.causal_lm_loss)
    generate.lm_loss = killing("eval", generate.lm_loss)
    import tunesmith.train.loop as loop
    loop.step_scale = killing("step", loop.step_scale)  # once per micro-batch, whatever the task's loss
    argv = args.pop("argv", None)
    if args.pop("resume_cmd", False):
        argv = ["resume", args["output"], "-q"]
    if argv:
        from tunesmith.cli import main
        sys.argv = ["tunesmith", *argv]
        main()
    else:
        tunesmith.finetune(**args)
""")


def launch(kill, resume_cmd=False, **args):
    """Run a training subprocess that kills itself at kill = (loss|eval, nth call, signal name)."""
    payload = json.dumps({**args, "kill": kill, "resume_cmd": resume_cmd})
    return subprocess.run([sys.executable, "-c", SCRIPT, payload], capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def small(tiny_model, tmp_path_factory):
    from conftest import make_rows, write_rows

    folder = tmp_path_factory.mktemp("resume")
    data = write_rows(folder / "train.csv", make_rows(96, seed=5))
    evald = write_rows(folder / "eval.csv", make_rows(24, seed=6))
    reference = folder / "reference"
    tunesmith.finetune(str(data), tiny_model, str(reference), eval_data=str(evald), **OPTIONS)
    return {"data": str(data), "eval": str(evald), "model": tiny_model, "reference": reference, "folder": folder}


def args_for(small, out):
    return dict(train_data=small["data"], model=small["model"], output=str(out), eval_data=small["eval"], **OPTIONS)


def test_sigkill_anywhere_then_resume_gives_identical_bytes(small):
    out = small["folder"] / "killed"
    args = args_for(small, out)
    # Two micro-batches per step, evaluations at steps 4, 8, 12, 16, 18, checkpoints every 2 steps.
    # 1st run: killed in micro-batch 8, the second half of step 4 (mid-accumulation; newest checkpoint: step 2).
    # 2nd run, from step 2: killed inside its 2nd evaluation, at step 8 (newest checkpoint: step 6).
    # 3rd run, from step 6: killed in its 8th micro-batch, the second half of step 10.
    kills = [("loss", 8, "SIGKILL"), ("eval", 2, "SIGKILL"), ("loss", 8, "SIGKILL")]
    newest = ["step-00000002", "step-00000006", "step-00000008"]
    for n, kill in enumerate(kills):
        done = launch(kill, resume=n > 0, **args)
        assert done.returncode == -signal.SIGKILL, done.stderr
        partial = out.with_name(out.name + ".partial")
        assert not out.exists() and partial.is_dir()
        steps = sorted(p.name for p in (partial / "checkpoints").iterdir())
        assert steps[-1] == newest[n], steps
    done = launch(None, resume=True, **args)
    assert done.returncode == 0, done.stderr
    ours = (out / "model.safetensors").read_bytes()
    assert ours == (small["reference"] / "model.safetensors").read_bytes()
    assert not out.with_name(out.name + ".partial").exists()
    assert not (out / "checkpoints").exists()
    ref_lines = (small["reference"] / "metrics.jsonl").read_text().splitlines()
    our_lines = (out / "metrics.jsonl").read_text().splitlines()

    def strip(lines):  # wall-clock fields differ between runs
        clock = ("time", "samples_per_s", "seconds")
        return [{k: v for k, v in json.loads(x).items() if k not in clock} for x in lines]

    assert strip(our_lines) == strip(ref_lines), "metrics.jsonl continues exactly where the checkpoint was"


def test_sigterm_saves_a_checkpoint_and_resume_command_finishes(small):
    out = small["folder"] / "termed"
    done = launch(("loss", 9, "SIGTERM"), resume_cmd=False, **args_for(small, out))
    assert done.returncode == 1, done.stderr  # the Python API raises Interrupted, whose message says how to resume
    assert "stopped by signal 15 at step 5" in done.stderr and "tunesmith resume" in done.stderr
    partial = out.with_name(out.name + ".partial")
    assert (partial / "checkpoints" / "step-00000005").is_dir()
    done = launch(None, resume_cmd=True, output=str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == (small["reference"] / "model.safetensors").read_bytes()


def test_cli_exit_codes_for_signals(small, tmp_path):
    for sig, code in (("SIGINT", 130), ("SIGTERM", 143)):
        argv = [
            "train",
            small["data"],
            "--model",
            small["model"],
            "-o",
            str(tmp_path / sig),
            "--eval-data",
            small["eval"],
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "-q",
        ]
        payload = json.dumps({"kill": ["loss", 3, sig], "argv": argv})
        done = subprocess.run([sys.executable, "-c", SCRIPT, payload], capture_output=True, text=True, timeout=300)
        assert done.returncode == code, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert f"stopped by signal {code - 128} at step 3" in last and "Traceback" not in done.stderr
        assert last.endswith(f"checkpoint saved, continue with: tunesmith resume {tmp_path / sig}")
        assert (tmp_path / f"{sig}.partial" / "checkpoints" / "step-00000003").is_dir()


def test_resume_refuses_other_config_or_data_unless_forced(small, tmp_path):
    out, data = tmp_path / "r", tmp_path / "train.csv"
    data.write_text(Path(small["data"]).read_text())
    done = launch(("loss", 9, "SIGKILL"), **{**args_for(small, out), "train_data": str(data)})
    assert done.returncode == -signal.SIGKILL
    args = {**args_for(small, out), "train_data": str(data), "resume": True}
    with pytest.raises(ConfigError) as err:
        tunesmith.finetune(**{**args, "lr": 1e-3})
    assert str(err.value) == (
        f"refusing to resume {out}.partial: config train.lr is 0.002 in the interrupted run, "
        "0.001 now; pass --force to resume anyway"
    )
    moved = tmp_path / "moved.csv"
    moved.write_text(data.read_text())
    data.write_text(data.read_text().replace("invoice", "bill", 1))
    with pytest.raises(
        ConfigError, match=r"data train.sha256 is '[0-9a-f]{12}…' in the interrupted run, '[0-9a-f]{12}…' now"
    ):
        tunesmith.finetune(**args)
    assert out.with_name("r.partial").is_dir(), "a refused resume leaves the interrupted run alone"
    result = tunesmith.finetune(**{**args, "train_data": str(moved)})  # same bytes elsewhere: fine
    assert (result.path / "model.safetensors").read_bytes() == (small["reference"] / "model.safetensors").read_bytes()


def test_resume_with_force_accepts_a_changed_config(small, tmp_path):
    out = tmp_path / "f"
    assert launch(("loss", 9, "SIGKILL"), **args_for(small, out)).returncode == -signal.SIGKILL
    result = tunesmith.finetune(**{**args_for(small, out), "lr": 1e-3, "resume": True, "force": True})
    assert result.path == out and (out / "model.safetensors").exists()
    assert json.loads((out / "tunesmith.json").read_text())["config"]["train"]["lr"] == 1e-3


def test_interrupted_run_blocks_a_fresh_start_and_checkpoints_are_pruned(small, tmp_path):
    out = tmp_path / "p"
    done = launch(("loss", 25, "SIGKILL"), **{**args_for(small, out), "keep_checkpoints": 2})
    assert done.returncode == -signal.SIGKILL
    partial = out.with_name("p.partial")
    assert sorted(p.name for p in (partial / "checkpoints").iterdir()) == ["step-00000010", "step-00000012"]
    files = {p.name for p in (partial / "checkpoints" / "step-00000012").iterdir()}
    assert files == {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json"}, "no pickle"
    with pytest.raises(ConfigError, match="an interrupted run is there; pass --resume"):
        tunesmith.finetune(**args_for(small, out))
    with pytest.raises(ConfigError, match="nothing to resume"):
        tunesmith.finetune(**{**args_for(small, tmp_path / "never"), "resume": True})


def nan_at(monkeypatch, call):
    import tunesmith.tasks.classify as tasks

    real, calls = tasks.classification_loss, {"n": 0}

    def loss(logits, labels):
        calls["n"] += 1
        value = real(logits, labels)
        return value * float("nan") if calls["n"] == call else value

    monkeypatch.setattr(tasks, "classification_loss", loss)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(small, tmp_path, monkeypatch):
    nan_at(monkeypatch, 11)  # micro-batch 11 belongs to step 6
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteError) as err:
        tunesmith.finetune(**args_for(small, out))
    message = str(err.value)
    assert message.startswith("step 6: the loss or a gradient is NaN or infinite")
    assert "learning rate too high" in message and "bf16 overflow" in message
    assert "continue from its step-00000004 checkpoint: tunesmith resume" in message
    assert not out.exists() and (tmp_path / "nan.partial" / "checkpoints" / "step-00000004").is_dir()


def test_nonfinite_skip_finishes_and_counts(small, tmp_path, monkeypatch):
    nan_at(monkeypatch, 11)
    result = tunesmith.finetune(**{**args_for(small, tmp_path / "skip"), "on_nonfinite": "skip"})
    assert result.skipped_steps == 1
    assert json.loads((result.path / "tunesmith.json").read_text())["skipped_steps"] == 1
    weights = load_file(str(result.path / "model.safetensors"))
    assert all(bool(t.isfinite().all()) for t in weights.values())


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_earlier_ones(small, tmp_path, monkeypatch):
    import tunesmith.train.checkpoint as ckpt

    real, calls = ckpt.save_model, {"n": 0}

    def full(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(ckpt, "save_model", full)
    out = tmp_path / "full"
    out.mkdir()
    (out / "model.safetensors").write_text("the previous run")
    with pytest.raises(DiskError) as err:
        tunesmith.finetune(**{**args_for(small, out), "overwrite": True})
    message = str(err.value)
    assert "could not write checkpoint" in message and "No space left on device" in message
    assert "earlier checkpoints are intact (step-00000002, step-00000004)" in message and "\n" not in message
    assert (out / "model.safetensors").read_text() == "the previous run", "the existing run folder is untouched"
    kept = tmp_path / "full.partial" / "checkpoints"
    assert sorted(p.name for p in kept.iterdir()) == ["step-00000002", "step-00000004"], "no half-written one"
    assert json.loads((kept / "step-00000004" / "state.json").read_text())["fit"]["step"] == 4


def test_unwritable_output_folder_is_one_line(small, tmp_path, monkeypatch):
    import tunesmith.runs as runs

    def refuse(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(runs.Path, "mkdir", refuse)
    with pytest.raises(DiskError, match=r"cannot create .*ro.partial: Permission denied"):
        tunesmith.finetune(**args_for(small, tmp_path / "ro"))


def test_killed_before_the_first_checkpoint_resumes_from_the_start(small, tmp_path):
    out = tmp_path / "early"
    assert launch(("loss", 2, "SIGKILL"), **args_for(small, out)).returncode == -signal.SIGKILL
    partial = tmp_path / "early.partial"
    assert partial.is_dir() and not (partial / "checkpoints").exists()
    (partial / "metrics.jsonl").write_text('{"step": 99, "loss": 1.0}\n')  # what a lost attempt might have logged
    result = tunesmith.finetune(**{**args_for(small, out), "resume": True})
    assert (result.path / "model.safetensors").read_bytes() == (small["reference"] / "model.safetensors").read_bytes()
    assert '"step": 99' not in (result.path / "metrics.jsonl").read_text()


def test_time_based_checkpoints(small, tmp_path):
    out = tmp_path / "timed"
    args = {**args_for(small, out), "save_every": None, "save_every_minutes": 1e-9, "keep_checkpoints": 3}
    assert launch(("loss", 12, "SIGKILL"), **args).returncode == -signal.SIGKILL
    kept = sorted(p.name for p in (tmp_path / "timed.partial" / "checkpoints").iterdir())
    assert kept == ["step-00000003", "step-00000004", "step-00000005"], "a checkpoint after every step, 3 kept"


def test_generate_run_killed_mid_step_resumes_to_identical_bytes(tiny_llama, tmp_path):
    from conftest import make_pairs, write_rows

    data = write_rows(tmp_path / "pairs.jsonl", make_pairs(48, seed=4))
    args = dict(
        train_data=str(data),
        model=tiny_llama,
        epochs=2,
        batch_size=4,
        grad_accum=2,
        lr=5e-3,
        save_every=2,
        every_steps=3,
        packing=True,
        max_length=96,
        quiet=True,
        generate_samples=4,
        max_new_tokens=6,
    )
    reference = tunesmith.finetune(**args, output=str(tmp_path / "ref"))
    out = tmp_path / "killed"
    assert launch(("loss", 7, "SIGKILL"), **args, output=str(out)).returncode == -signal.SIGKILL
    assert launch(("eval", 3, "SIGKILL"), resume=True, **args, output=str(out)).returncode == -signal.SIGKILL
    done = launch(None, resume=True, **args, output=str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == (reference.path / "model.safetensors").read_bytes()
    ours, theirs = (json.loads((p / "eval.json").read_text()) for p in (out, reference.path))
    assert ours["before"] == theirs["before"] and ours["loss"] == theirs["loss"]


@pytest.mark.parametrize("extra", [{"strategy": "lora"}, {"unfreeze": "gradual", "l2sp": 0.1}], ids=["lora", "gradual"])
def test_other_strategies_resume_to_identical_bytes(small, tmp_path, extra):
    reference = tunesmith.finetune(**{**args_for(small, tmp_path / "ref"), **extra})
    out = tmp_path / "killed"
    assert launch(("loss", 20, "SIGKILL"), **{**args_for(small, out), **extra}).returncode == -signal.SIGKILL
    done = launch(None, resume=True, **{**args_for(small, out), **extra})
    assert done.returncode == 0, done.stderr
    assert (out / "model.safetensors").read_bytes() == (reference.path / "model.safetensors").read_bytes()


CHUNKED = {"max_length": 16, "long_documents": "chunk", "aggregate": "attention"}


@pytest.mark.parametrize("task", ["multilabel", "regression", "tagging", "chunked"])
def test_every_task_killed_mid_run_resumes_to_identical_bytes(task, tiny_model, tmp_path):
    """The other tasks' runs (thresholds tuned, the scale folded in at the end) resume exactly too; so does a
    classifier reading its texts as chunks of 16 tokens, with the attention that aggregates them."""
    from conftest import make_multilabel_rows, make_regression_rows, make_tagged_rows, write_rows

    make, ext = {"multilabel": (make_multilabel_rows, ".jsonl"), "regression": (make_regression_rows, ".csv"),
                 "tagging": (make_tagged_rows, ".jsonl"), "chunked": (make_rows, ".csv")}[task]  # fmt: skip
    data, held = write_rows(tmp_path / f"train{ext}", make(96, 5)), write_rows(tmp_path / f"eval{ext}", make(24, 6))
    extra = CHUNKED if task == "chunked" else {}
    args = dict(train_data=str(data), model=tiny_model, eval_data=str(held), **OPTIONS, **extra)
    reference = tunesmith.finetune(**args, output=str(tmp_path / "ref"))
    out = tmp_path / "killed"
    assert launch(("step", 21, "SIGKILL"), **args, output=str(out)).returncode == -signal.SIGKILL
    done = launch(None, resume=True, **args, output=str(out))
    assert done.returncode == 0, done.stderr
    files = ("model.safetensors", "config.json", "eval.json", *(("aggregate.safetensors",) if extra else ()))
    for name in files:
        assert (out / name).read_bytes() == (reference.path / name).read_bytes(), name
