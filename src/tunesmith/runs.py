"""The run folder: written whole into a temporary sibling and renamed on success, then read back.

A run folder is a transformers model folder (config.json, model.safetensors, tokenizer files)
plus tunesmith.json, metrics.jsonl and eval.json. Knows nothing about training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.labels import LabelSpace
from tunesmith.errors import ConfigError, ModelError

RUN_FILE = "tunesmith.json"


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse, before any work is done, to replace an existing folder unless asked to."""
    if target.exists() and not overwrite:
        raise ConfigError(f"{target}: already exists; pass --overwrite to replace it, or choose another --output")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target}: exists and is not a folder")


@contextlib.contextmanager
def staged(target: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary folder beside target; rename it onto target only if the block succeeds."""
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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


def sha256_of(path: str | Path) -> str:
    """Fingerprint of a data file, or of every file in a folder (names and bytes, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass
class RunInfo:
    """What tunesmith.json says about a run folder."""

    path: Path
    task: str
    labels: LabelSpace
    config: dict[str, Any]
    raw: dict[str, Any]

    @property
    def text_column(self) -> str | None:
        """The text column of the training file (given or found), tried first in files to score."""
        return (self.raw.get("data", {}).get("train") or {}).get("text_column")

    @property
    def label_column(self) -> str | None:
        """The label column of the training file (given or found), tried first in files to score."""
        return (self.raw.get("data", {}).get("train") or {}).get("label_column")

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
        return RunInfo(path, raw["task"], LabelSpace.from_dict(raw["labels"]), raw["config"], raw)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{file}: unreadable ({e})") from None
