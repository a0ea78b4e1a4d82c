"""Which parameters train: decided once, before the loop, by a short registry name.

A new strategy is one function here plus one registry entry; the loop never changes. The split
into backbone (``model.base_model``) and head (everything else) is transformers' own; inside
the backbone, ``layout`` finds the embeddings and the stack of transformer blocks.
"""

from __future__ import annotations

import re
import warnings
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


def layout(model: torch.nn.Module) -> Layout:
    """Find the blocks (the backbone's longest ModuleList of identical layers) and the embeddings.

    Parameters are matched by identity, so names are those of ``model`` even when peft wraps it.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = inner.base_model
    stacks = [
        m
        for m in base.modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) > 0 and len({type(x) for x in m}) == 1
    ]
    if not stacks:
        raise ConfigError(f"{type(inner).__name__}: found no stack of transformer blocks for layer-wise strategies")
    stack = max(stacks, key=len)
    names = {id(p): n for n, p in model.named_parameters()}
    blocks = tuple(frozenset(names[id(p)] for p in block.parameters() if id(p) in names) for block in stack)
    embedding_module = getattr(base, "embeddings", None) or base.get_input_embeddings()
    embeddings = frozenset(names[id(p)] for p in embedding_module.parameters() if id(p) in names)
    return Layout(embeddings, blocks, frozenset(head_parameter_names(model)))


def _only(model: PreTrainedModel, keep: Callable[[str], bool]) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(keep(name))


def full(model: PreTrainedModel, cfg: StrategyConfig) -> PreTrainedModel:
    """Every parameter trains: plain full fine-tuning from θ̂."""
    _only(model, lambda name: True)
    return model


def head(model: PreTrainedModel, cfg: StrategyConfig) -> PreTrainedModel:
    """Linear probing: only the task head trains; the backbone stays θ̂ bit for bit."""
    heads = head_parameter_names(model)
    _only(model, lambda name: name in heads)
    return model


def top_k(model: PreTrainedModel, cfg: StrategyConfig) -> PreTrainedModel:
    """The top train_layers blocks, what sits above them (pooler, final norm) and the head train."""
    lay = layout(model)
    if cfg.train_layers > len(lay.blocks):
        raise ConfigError(f"strategy top-{cfg.train_layers}: the model has only {len(lay.blocks)} blocks")
    lowest = len(lay.blocks) - cfg.train_layers

    def keep(name: str) -> bool:
        index = lay.block_index(name)
        return name not in lay.embeddings and (index is None or index >= lowest)

    _only(model, keep)
    return model


def bitfit(model: PreTrainedModel, cfg: StrategyConfig) -> PreTrainedModel:
    """BitFit (Ben Zaken et al., 2022): only bias terms of the backbone, and the whole head, train."""
    heads = head_parameter_names(model)
    _only(model, lambda name: name in heads or re.search(r"(^|\.)bias$", name) is not None)
    return model


def lora(
    model: PreTrainedModel, cfg: StrategyConfig, task_type: str = "SEQ_CLS", new_head: bool = True
) -> torch.nn.Module:
    """LoRA (Hu et al., 2021) through peft: low-rank adapters on the target modules; a new task head trains fully.

    task_type is peft's TaskType name, as the task says (tasks/*.py). A pretrained head (a causal LM's own,
    often tied to the embeddings) is left alone, as is usual. The run folder gets the merged model
    (merge_and_unload), so it loads in plain transformers.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    inner_heads = {name.split(".")[0] for name in head_parameter_names(model)}
    config = LoraConfig(
        task_type=TaskType[task_type],
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.lora_targets,
        modules_to_save=sorted(inner_heads) if new_head else None,
    )
    try:
        with warnings.catch_warnings():  # peft calls a transformers method deprecated in v5; nothing for users to do
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(model, config)
    except ValueError as e:  # peft names the target modules it could not find
        raise ConfigError(f"strategy lora: {str(e).splitlines()[0]} (set strategy.lora_targets)") from None


STRATEGIES: dict[str, Callable[[PreTrainedModel, StrategyConfig], torch.nn.Module]] = {
    "full": full,
    "head": head,
    "top-k": top_k,
    "bitfit": bitfit,
    "lora": lora,
}


def check_strategy(cfg: StrategyConfig) -> None:
    """An unknown strategy name is an error before any work starts."""
    if cfg.name not in STRATEGIES:
        raise ConfigError(f"strategy '{cfg.name}' is unknown; choose one of: {', '.join(STRATEGIES)}, top-K")


def apply_strategy(
    model: PreTrainedModel, cfg: StrategyConfig, task_type: str = "SEQ_CLS", new_head: bool = True
) -> torch.nn.Module:
    """Set requires_grad on every parameter as the strategy says; returns the model (lora wraps it, and needs
    the task's peft task_type and whether its head is new).
    """
    check_strategy(cfg)
    if cfg.name == "lora":
        return lora(model, cfg, task_type, new_head)
    return STRATEGIES[cfg.name](model, cfg)


def is_adapter(model: torch.nn.Module) -> bool:
    """Whether peft wraps the model (its weights are saved merged)."""
    return hasattr(model, "merge_and_unload")


def gradual_unfreezing(model: torch.nn.Module) -> Callable[[int], None]:
    """ULMFiT's schedule, as a function of the epoch (0-based), over what the strategy made trainable.

    Epoch 0 trains the head; epoch e also the top e blocks, with what sits above them (pooler,
    final norm) from epoch 1; the embeddings open once every block is open.
    """
    lay = layout(model)
    allowed = {name for name, p in model.named_parameters() if p.requires_grad}
    params = dict(model.named_parameters())

    def open_for(epoch: int) -> None:
        lowest = len(lay.blocks) - epoch
        for name in allowed:
            group = lay.group(name)
            index = lay.block_index(name)
            params[name].requires_grad_(
                group == "head"
                or (group == "backbone" and epoch >= 1)
                or (index is not None and index >= lowest)
                or (group == "embeddings" and epoch > len(lay.blocks))
            )

    return open_for
