"""What runs θ̃ at inference: a Forward (a padded batch in, fp32 logits out), by torch or by ONNX Runtime.

Prediction (predict.py) and export (export.py) both stand on this module and on nothing of each other's.
Knows nothing about tasks, files or training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch

from tunesmith.data.batching import collate, sorted_batches
from tunesmith.errors import ConfigError, ModelError

Forward = Callable[[dict[str, torch.Tensor]], torch.Tensor]
"""collate()'s CPU tensors (input_ids, attention_mask, token_type_ids for pairs) in, fp32 logits on the CPU out."""

ONNX_DIR = "onnx"
QUANTIZED = ("int8", "int8-dynamic")
"""The int8 versions export --quantize writes (export.QUANTIZE says how each is made)."""
FILES = {"onnx": "model.onnx", **{f"onnx-{name}": f"model.{name}.onnx" for name in QUANTIZED}}
"""The file each ONNX backend runs, under RUN/onnx/."""
BACKENDS = ("torch", *FILES)


def check_backend(backend: str) -> None:
    """An unknown backend name is one line, before anything loads."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (dropout off) for the block, then back in the mode it was in, even on an error."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def torch_forward(model: torch.nn.Module) -> Forward:
    """A torch model as a Forward: the batch moves to the model's device, the logits come back."""
    device = next(model.parameters()).device

    def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()

    return forward


def as_forward(model: torch.nn.Module | Forward) -> tuple[torch.nn.Module | None, Forward]:
    """A torch model (put in eval mode) and its Forward, or (None, the Forward an ONNX backend already is)."""
    if isinstance(model, torch.nn.Module):
        return model.eval(), torch_forward(model)
    return None, model


def iter_logits(
    forward: Forward,
    ids: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    types: Sequence[Sequence[int]] | None = None,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(row indices, fp32 logits on the CPU) per batch, longest texts first, so padding stays small."""
    for rows in sorted_batches([len(s) for s in ids], batch_size):
        yield rows, forward(collate([ids[i] for i in rows], pad_id, types=types and [types[i] for i in rows]))


def require_onnx() -> None:
    """One line instead of an ImportError deep inside export or predict when the extra is not installed."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as e:
        raise ConfigError(
            f"ONNX needs the onnx and onnxruntime packages ({e.name} is missing): pip install 'tunesmith[onnx]'"
        ) from None


def onnx_forward(run_dir: str | Path, backend: str = "onnx") -> Forward:
    """The Forward of a run's exported file for backend onnx or onnx-int8, run by ONNX Runtime on the CPU."""
    require_onnx()
    path = Path(run_dir) / ONNX_DIR / FILES[backend]
    if not path.is_file():
        flag = f" --quantize {backend.removeprefix('onnx-')}" if backend != "onnx" else ""
        raise ModelError(f"{path}: not exported; run: tunesmith export {run_dir} --format onnx{flag}")
    return session_forward(path)


def session_forward(path: Path) -> Forward:
    """An InferenceSession over one .onnx file as a Forward: torch tensors in and out, numpy in between."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        feeds = {k: v.numpy() for k, v in batch.items() if k in names}
        if "token_type_ids" in names and "token_type_ids" not in feeds:  # one segment: the zeros torch uses
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return torch.from_numpy(session.run(["logits"], feeds)[0]).float()

    return forward
