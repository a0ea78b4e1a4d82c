"""What a study searches: the parameter table, `--space` parsing, a trial's sample and its config fields.

Knows nothing about studies beyond the three suggest_* calls of an optuna trial, nor about training.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.errors import ConfigError


@dataclass(frozen=True)
class Param:
    """One searchable parameter: the config field it sets, its kind and its default range or choices."""

    field: str | None
    kind: type
    default: tuple[Any, Any] | list[Any]
    """(low, high) for a range, [a, b, ...] for choices."""
    log: bool = False
    when: str | None = None
    """Searched only in trials of this strategy (and then always, with this default unless --space sets it)."""


SPACE: dict[str, Param] = {
    # Rates that suit fine-tuning span orders of magnitude with model size (train/defaults.py: 1e-4 for
    # MiniLM, 1e-5 for large encoders), so both rates are searched on a log scale.
    "lr": Param("train.lr", float, (1e-5, 1e-3), log=True),
    # The head starts random and is tiny: defaults.py gives it 10x lr; this range is lr's, shifted by 10x.
    "head_lr": Param("train.head_lr", float, (1e-4, 1e-2), log=True),
    # defaults.py's epoch budget is 3-20 with early stopping; trials have no early stop unless eval.patience,
    # so the range stops at 10 to keep one trial's cost bounded, and starts at 2 so a decay can follow warmup.
    "epochs": Param("train.epochs", int, (2, 10)),
    # Choices, not a range: batch size is rarely worth tuning finer than a factor of 2.
    "batch_size": Param("train.batch_size", int, [8, 16, 32]),
    "warmup_ratio": Param("train.warmup_ratio", float, (0.0, 0.2)),
    "weight_decay": Param("train.weight_decay", float, (0.0, 0.1)),
    # l2sp is strategy full with strategy.l2sp > 0 (the pull toward θ̂ replaces backbone weight decay).
    "strategy": Param(None, str, ["full", "lora", "l2sp"]),
    "lora_r": Param("strategy.lora_r", int, [4, 8, 16], when="lora"),
    # ALPHA of (ALPHA/2)·‖θ − θ̂‖²: compare's 0.01 sits in the middle of this log range.
    "l2sp": Param("strategy.l2sp", float, (1e-3, 1e-1), log=True, when="l2sp"),
}
"""The default search space, in the order trials sample it (strategy before what depends on it)."""
STRATEGIES = ("full", "lora", "l2sp", "head", "bitfit")
"""Strategies a study may choose between; top-K is accepted too."""


def parse_space(text: str | None) -> dict[str, dict[str, Any]]:
    """The search space: SPACE when text is None, else exactly the parameters listed ("lr=1e-5:1e-3,
    batch_size=8|16,epochs=3": a range, choices, or one value that fixes it); the others keep the base config's
    value. lora_r and l2sp come with their strategy at SPACE's default unless listed. Every value is checked
    here, so a typo costs a line instead of a failed trial an hour in.
    """
    given: dict[str, dict[str, Any]] = {}
    if text is None:
        given = {name: _spec(p.default, p.log) for name, p in SPACE.items() if p.when is None}
    for item in [s.strip() for s in (text or "").split(",") if s.strip()]:
        name, sep, value = (s.strip() for s in item.partition("="))
        if name not in SPACE:
            close = difflib.get_close_matches(name, SPACE, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; searchable: {', '.join(SPACE)}"
            raise ConfigError(f"--space {item}: unknown parameter '{name}'{hint}")
        if not sep or not value or name in given:
            raise ConfigError(f"--space {item}: write each parameter once, as name=low:high, name=a|b or name=value")
        given[name] = _parse_spec(name, value)
    strategies = given.get("strategy", {}).get("choices", [])
    for name, p in SPACE.items():
        if p.when and p.when in strategies and name not in given:
            given[name] = _spec(p.default, p.log)
        if p.when and name in given and p.when not in strategies:
            raise ConfigError(f"--space {name}: applies to strategy {p.when}, which the space does not include")
    if "lora" in strategies and find_spec("peft") is None:
        raise ConfigError("strategy lora (in the search space) needs peft, which is not installed: pip install peft")
    return {name: given[name] for name in SPACE if name in given}


def _spec(default: tuple[Any, Any] | list[Any], log: bool) -> dict[str, Any]:
    if isinstance(default, list):
        return {"choices": list(default)}
    return (
        {"low": default[0], "high": default[1], "log": log} if default[0] != default[1] else {"choices": [default[0]]}
    )


def _parse_spec(name: str, text: str) -> dict[str, Any]:
    """A range (low:high), choices (a|b) or one value, each value parsed and checked as its config field would be."""
    p = SPACE[name]
    low, sep, high = text.partition(":")
    values = [low, high] if sep else text.split("|")
    try:
        parsed = [p.kind(v.strip()) for v in values]
    except ValueError:
        raise ConfigError(f"--space {name}={text}: {p.kind.__name__} values expected") from None
    for value in parsed:
        if name == "strategy" and value not in STRATEGIES and not re.fullmatch(r"top-[1-9]\d*", value):
            raise ConfigError(f"--space strategy: unknown strategy '{value}'; use {', '.join(STRATEGIES)} or top-K")
        try:  # the config's own checks (lr > 0, warmup in [0, 1), ...), not a second copy of them
            RunConfig().with_values(config_values({name: value, "strategy": p.when} if p.when else {name: value}))
        except ConfigError as e:
            raise ConfigError(f"--space {name}={text}: {e}") from None
    if not sep:
        return {"choices": parsed}
    if name == "strategy":
        raise ConfigError(f"--space strategy={text}: strategies are choices (full|lora), not a range")
    if parsed[0] > parsed[1]:
        raise ConfigError(f"--space {name}={text}: the low end {parsed[0]} is above the high end {parsed[1]}")
    if p.log and parsed[0] <= 0:
        raise ConfigError(f"--space {name}={text}: searched on a log scale, so the low end must be above 0")
    return _spec((parsed[0], parsed[1]), p.log)


def config_values(params: dict[str, Any]) -> dict[str, Any]:
    """Config fields for a trial's parameters; strategy l2sp is full with strategy.l2sp = the sampled ALPHA."""
    from tunesmith.compare import variant

    values: dict[str, Any] = {}
    if params.get("strategy") is not None:
        values = {"strategy.name": "full", "strategy.l2sp": 0.0, **variant(params["strategy"])}
    values.update({SPACE[name].field: v for name, v in params.items() if SPACE[name].field})
    return values


def sample(trial: Any, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A trial's parameters, fixed ones included; a fixed one is no optuna parameter (it varies nothing)."""
    params: dict[str, Any] = {}
    for name, spec in space.items():
        p = SPACE[name]
        if p.when and params.get("strategy") != p.when:
            continue
        if len(spec.get("choices", ())) == 1:
            params[name] = spec["choices"][0]
        elif "choices" in spec:
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif p.kind is int:
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], log=spec["log"])
        else:
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec["log"])
    return params
