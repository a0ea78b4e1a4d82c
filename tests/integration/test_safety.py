"""Safe loading: pickle weights are refused (and even when allowed, cannot run code), remote code
stays off, and nothing from configs or data can steer a write outside the run folder."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

import tunesmith
from conftest import make_rows, write_rows
from tunesmith.errors import ModelError


class WritesAFile:
    """Unpickling this calls open(marker, 'w'): a stand-in for any code an attacker could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def pickle_model(tiny_model, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned.txt"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"weights": WritesAFile(marker)}, protocol=2))
    return folder, marker


def test_pickle_weights_are_refused_and_run_no_code(pickle_model, tiny_data, tmp_path, cli):
    folder, marker = pickle_model
    code, _, err = cli("train", tiny_data["train_csv"], "--model", folder, "-o", tmp_path / "r", "-q")
    assert code == 2 and "weights only as pickle (pytorch_model.bin)" in err and "--allow-pickle" in err
    assert not marker.exists() and not (tmp_path / "r").exists() and not (tmp_path / "r.partial").exists()


def test_allowed_pickle_still_loads_with_weights_only(pickle_model, tiny_data, tmp_path, cli):
    folder, marker = pickle_model
    code, _, err = cli("train", tiny_data["train_csv"], "--model", folder, "-o", tmp_path / "r", "-q", "--allow-pickle")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "could not load" in err
    assert not marker.exists(), "weights_only=True refused the code in the pickle"


def test_remote_code_stays_off(tiny_model, tiny_data, tmp_path):
    folder = tmp_path / "remote"
    shutil.copytree(tiny_model, folder)
    marker = tmp_path / "imported.txt"
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="evil",
        auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"},
    )
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="could not load"):
        tunesmith.finetune(str(tiny_data["train_csv"]), str(folder), str(tmp_path / "r"), quiet=True)
    assert not marker.exists()


def test_labels_and_columns_never_become_paths(tiny_model, tmp_path):
    rows = [
        {"../../escape": r["text"], "label": "../" + r["label"] if i % 2 else "/tmp/" + r["label"]}
        for i, r in enumerate(make_rows(40))
    ]
    data = write_rows(tmp_path / "data" / "d.csv", rows)
    before = {p for p in tmp_path.rglob("*")}
    result = tunesmith.finetune(
        str(data), tiny_model, str(tmp_path / "out" / "run"), text_column="../../escape", epochs=1, quiet=True
    )
    created = {p for p in tmp_path.rglob("*")} - before
    assert all(p == tmp_path / "out" or tmp_path / "out" / "run" in [p, *p.parents] for p in created), created
    assert {p.name for p in result.path.iterdir()} <= {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "vocab.txt",
        "tunesmith.json",
        "metrics.jsonl",
        "eval.json",
        "drift.json",
    }
    assert not Path("/tmp/billing").exists()


def test_allowed_pickle_of_plain_tensors_trains(tiny_model, tiny_data, tmp_path):
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "plain"
    shutil.copytree(tiny_model, folder)
    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="weights only as pickle"):
        tunesmith.finetune(str(tiny_data["train_csv"]), str(folder), str(tmp_path / "a"), quiet=True)
    result = tunesmith.finetune(
        str(tiny_data["train_csv"]), str(folder), str(tmp_path / "b"), quiet=True, epochs=1, allow_pickle=True
    )
    assert (result.path / "model.safetensors").exists() and not list(result.path.glob("*.bin"))
