"""Which parameters train: decided once, before the loop, by a short registry name.

A new strategy is one function here plus one registry entry; the loop never changes.
"""

from __future__ import annotations

from collections.abc import Callable

from transformers import PreTrainedModel

from tunesmith.config import StrategyConfig
from tunesmith.errors import ConfigError


def full(model: PreTrainedModel, cfg: StrategyConfig) -> None:
    """Every parameter trains: plain full fine-tuning from θ̂."""
    for p in model.parameters():
        p.requires_grad_(True)


STRATEGIES: dict[str, Callable[[PreTrainedModel, StrategyConfig], None]] = {"full": full}


def apply_strategy(model: PreTrainedModel, cfg: StrategyConfig) -> None:
    """Set requires_grad on every parameter according to the chosen strategy."""
    if cfg.name not in STRATEGIES:
        raise ConfigError(f"strategy.name '{cfg.name}' is unknown; choose one of: {', '.join(STRATEGIES)}")
    STRATEGIES[cfg.name](model, cfg)
