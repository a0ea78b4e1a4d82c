"""Bad model folders get one line too: a pretrained folder to train from, or a run folder to predict with, broken
in the ways they break in practice (a corrupt config.json, truncated or garbled weights, a missing tokenizer, a
head that does not fit the labels, another task's run). Every case: exit 2, one line naming the folder, no
traceback, and no run folder left behind.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def corrupt_config(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "bert", "hidden_size": 32,')


def unknown_architecture(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "no-such-architecture"}))


def truncated_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def garbage_weights(folder: Path) -> None:
    (folder / "model.safetensors").write_bytes(b"\x00\x01 not a safetensors file" * 10)


def no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)


def head_of_another_size(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {str(i): f"l{i}" for i in range(5)}
    config["label2id"] = {f"l{i}": i for i in range(5)}
    (folder / "config.json").write_text(json.dumps(config))


BREAKS: dict[str, Callable[[Path], None]] = {
    "corrupt config.json": corrupt_config,
    "unknown architecture": unknown_architecture,
    "truncated weights": truncated_weights,
    "garbage weights": garbage_weights,
    "no tokenizer": no_tokenizer,
}


def one_line(code: int, err: str, folder: Path) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(folder) in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("broken", BREAKS)
def test_a_broken_pretrained_folder_is_one_line_and_leaves_no_run(broken, tiny_model, tiny_data, tmp_path, cli):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    BREAKS[broken](folder)
    out = tmp_path / "run"
    code, _, err = cli("train", str(tiny_data["train_csv"]), "--model", str(folder), "-o", str(out), "--epochs", "1")
    one_line(code, err, folder)
    assert not out.exists() and not out.with_name("run.partial").exists()


RUN_BREAKS = {**BREAKS, "head of another size": head_of_another_size}


@pytest.mark.parametrize("broken", RUN_BREAKS)
def test_a_broken_run_folder_is_one_line_for_predict_and_evaluate(broken, tiny_run, tiny_data, tmp_path, cli):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run, folder)
    RUN_BREAKS[broken](folder)
    for command in (["predict", str(folder), str(tiny_data["test_csv"])],
                    ["evaluate", str(folder), str(tiny_data["test_csv"])]):  # fmt: skip
        code, _, err = cli(*command)
        one_line(code, err, folder)


def test_a_run_of_another_task_is_refused_by_what_cannot_use_it(tiny_run, cli):
    code, _, err = cli("chat", str(tiny_run))
    assert code == 2 and "a classification run; chat needs a run trained with --task generate" in err


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6))
def test_flipped_bytes_in_the_weights_header_are_one_line_or_load(flips, tiny_run, tiny_data, tmp_path_factory, cli):
    folder = tmp_path_factory.mktemp("flipped") / "run"
    shutil.copytree(tiny_run, folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    for at, value in flips:
        data[at] = value
    weights.write_bytes(bytes(data))
    code, _, err = cli("predict", str(folder), str(tiny_data["test_csv"]), "-o", str(folder / "p.jsonl"))
    if code != 0:  # a flip inside a float's bytes still loads; a broken header must be one line
        one_line(code, err, folder)
