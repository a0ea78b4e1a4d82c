"""Atomic save and exact resume of the whole training state. Knows nothing about data or tasks.

A checkpoint is a folder ``checkpoints/step-00000123/`` holding only safetensors and JSON, never
pickle: the model (model.safetensors), the optimizer's tensors (optimizer.safetensors), the torch
RNG states (rng.safetensors), and state.json (loop position, best metric, early-stopping counter,
optimizer hyperparameters, scheduler counters, python and numpy RNG states, metrics.jsonl offset).
It is written into a temporary sibling, every file fsynced, then renamed: a folder named
``step-*`` is always complete, whatever killed the process.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from tunesmith.errors import DiskError
from tunesmith.train.loop import FitState

FOLDER = "checkpoints"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    folder = root / FOLDER
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint, if any."""
    found = checkpoint_dirs(root)
    return found[-1] if found else None


def save(root: Path, state: FitState, model: torch.nn.Module, optimizer: Any, scheduler: Any, keep: int) -> Path:
    """Write the training state atomically, then drop all but the newest ``keep`` checkpoints."""
    final = root / FOLDER / f"step-{state.step:08d}"
    tmp = root / FOLDER / f".step-{state.step:08d}.tmp"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_model(model, str(tmp / "model.safetensors"))  # handles tied weights, unlike save_file
        opt = optimizer.state_dict()
        save_file(_flatten_state(opt["state"]), str(tmp / "optimizer.safetensors"))
        save_file(_torch_rng(), str(tmp / "rng.safetensors"))
        meta = {
            "fit": asdict(state),
            "optimizer": {"param_groups": opt["param_groups"], "scalars": _scalars(opt["state"])},
            "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
            "rng": {"python": _py_rng(), "numpy": _np_rng()},
        }
        (tmp / "state.json").write_text(json.dumps(meta))
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(final.parent)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        older = [p.name for p in checkpoint_dirs(root)]
        kept = f"; earlier checkpoints are intact ({', '.join(older)})" if older else ""
        raise DiskError(f"could not write checkpoint {final}: {e.strerror or e}{kept}") from None
    for old in checkpoint_dirs(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load(path: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> FitState:
    """Restore model, optimizer, scheduler and every RNG from a checkpoint; return the loop state."""
    meta = json.loads((path / "state.json").read_text())
    load_model(model, str(path / "model.safetensors"))
    tensors = load_file(str(path / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["optimizer"]["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    scheduler.load_state_dict({**scheduler.state_dict(), **meta["scheduler"]})
    _restore_rng(load_file(str(path / "rng.safetensors")), meta["rng"])
    return FitState(**meta["fit"])


def _flatten_state(state: dict[int, dict[str, Any]]) -> dict[str, torch.Tensor]:
    # clone(): safetensors refuses tensors that share memory, and AdamW's 'step' may be a 0-d view.
    return {
        f"{i}.{k}": v.detach().cpu().clone().contiguous()
        for i, s in state.items()
        for k, v in s.items()
        if torch.is_tensor(v)
    }


def _scalars(state: dict[int, dict[str, Any]]) -> dict[str, Any]:
    return {f"{i}.{k}": v for i, s in state.items() for k, v in s.items() if not torch.is_tensor(v)}


def _torch_rng() -> dict[str, torch.Tensor]:
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return rng


def _py_rng() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _np_rng() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _restore_rng(tensors: dict[str, torch.Tensor], saved: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    n = saved["numpy"]
    np.random.set_state((n["name"], np.array(n["keys"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached"]))


def _fsync(path: Path) -> None:
    """Flush a file or a folder entry to the disk, so a crash right after the rename loses nothing."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[Callable[[], int | None]]:
    """Turn the first SIGINT / SIGTERM into a request, answered at the next step boundary.

    Yields a function returning the signal number once one arrived. A second signal is not
    caught (the default handlers are back), so a stuck run can still be killed.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None  # handlers can only be installed from the main thread
        return

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        print(
            f"signal {signum}: finishing this step, then saving a checkpoint (send it again to abort)",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
