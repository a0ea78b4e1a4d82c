"""Which parameters train: decided once, before the loop, by a short registry name.

A new strategy is one function here plus one registry entry; the loop never changes. The split
into backbone (``model.base_model``) and head (everything else) is transformers' own; inside
the backbone, ``layout`` finds the embeddings and the stack of transformer blocks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from tunesmith.config import StrategyConfig
from tunesmith.errors import ConfigError
from tunesmith.model.heads import head_parameter_names


@dataclass(frozen=True)
class Layout:
    """Where each parameter sits: embeddings, block i (0 = lowest), other backbone, or head."""

    embeddings: frozenset[str]
    blocks: tuple[frozenset[str], ...]
    head: frozenset[str]

    def group(self, name: str) -> str:
        """Embeddings | block N | head | backbone (parameters of the backbone above or beside the blocks)."""
        if name in self.head:
            return "head"
        if name in self.embeddings:
            return "embeddings"
        for i, block in enumerate(self.blocks):
            if name in block:
                return f"block {i}"
        return "backbone"

    def block_index(self, name: str) -> int | None:
        """Index of the block holding the parameter, or None."""
        for i, block in enumerate(self.blocks):
            if name in block:
                return i
        return None


def layout(model: PreTrainedModel) -> Layout:
    """Find the blocks (the backbone's longest ModuleList of identical layers) and the embeddings."""
    base = model.base_model
    prefix = model.base_model_prefix + "." if hasattr(model, model.base_model_prefix) else ""
    stacks = [
        (name, m)
        for name, m in base.named_modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) > 0 and len({type(x) for x in m}) == 1
    ]
    if not stacks:
        raise ConfigError(f"{type(model).__name__}: found no stack of transformer blocks for layer-wise strategies")
    stack_name, stack = max(stacks, key=lambda item: len(item[1]))
    blocks = tuple(
        frozenset(f"{prefix}{stack_name}.{i}.{n}" for n, _ in block.named_parameters()) for i, block in enumerate(stack)
    )
    embedding_module = getattr(base, "embeddings", None) or base.get_input_embeddings()
    embedding_ids = {id(p) for p in embedding_module.parameters()}
    embeddings = frozenset(n for n, p in model.named_parameters() if id(p) in embedding_ids)
    return Layout(embeddings, blocks, frozenset(head_parameter_names(model)))


def _only(model: PreTrainedModel, keep: Callable[[str], bool]) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(keep(name))


def full(model: PreTrainedModel, cfg: StrategyConfig) -> None:
    """Every parameter trains: plain full fine-tuning from θ̂."""
    _only(model, lambda name: True)


def head(model: PreTrainedModel, cfg: StrategyConfig) -> None:
    """Linear probing: only the task head trains; the backbone stays θ̂ bit for bit."""
    heads = head_parameter_names(model)
    _only(model, lambda name: name in heads)


def top_k(model: PreTrainedModel, cfg: StrategyConfig) -> None:
    """The top train_layers blocks, what sits above them (pooler, final norm) and the head train."""
    lay = layout(model)
    if cfg.train_layers > len(lay.blocks):
        raise ConfigError(f"strategy top-{cfg.train_layers}: the model has only {len(lay.blocks)} blocks")
    lowest = len(lay.blocks) - cfg.train_layers

    def keep(name: str) -> bool:
        index = lay.block_index(name)
        return name not in lay.embeddings and (index is None or index >= lowest)

    _only(model, keep)


def bitfit(model: PreTrainedModel, cfg: StrategyConfig) -> None:
    """BitFit (Ben Zaken et al., 2022): only bias terms of the backbone, and the whole head, train."""
    heads = head_parameter_names(model)
    _only(model, lambda name: name in heads or re.search(r"(^|\.)bias$", name) is not None)


STRATEGIES: dict[str, Callable[[PreTrainedModel, StrategyConfig], None]] = {
    "full": full,
    "head": head,
    "top-k": top_k,
    "bitfit": bitfit,
}


def check_strategy(cfg: StrategyConfig) -> None:
    """An unknown strategy name is an error before any work starts."""
    if cfg.name not in STRATEGIES:
        raise ConfigError(f"strategy '{cfg.name}' is unknown; choose one of: {', '.join(STRATEGIES)}, top-K")


def apply_strategy(model: PreTrainedModel, cfg: StrategyConfig) -> None:
    """Set requires_grad on every parameter according to the chosen strategy."""
    check_strategy(cfg)
    STRATEGIES[cfg.name](model, cfg)
