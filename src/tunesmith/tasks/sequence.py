"""What the sequence tasks share (one output per text: classification, multi-label, regression).

The text encoder, the training set, held-out scoring, the predictor and `check`'s description are the same
for all of them; what differs is the task's Readout (label cells, targets, loss, scores, records).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.backends import eval_mode, torch_forward
from tunesmith.config import RunConfig
from tunesmith.data.batching import EncodedSet
from tunesmith.data.encode import encode
from tunesmith.data.labels import LabelSpace
from tunesmith.data.validate import Examples, LabeledData
from tunesmith.errors import ConfigError
from tunesmith.losses import LossFn
from tunesmith.metrics import score_forward
from tunesmith.predict import Predictor, Readout
from tunesmith.runs import RunInfo
from tunesmith.tasks.base import Recipe, Scorer


def encoded_set(
    cfg: RunConfig, data: LabeledData, tokenizer: PreTrainedTokenizerBase, weights: Sequence[float] | None = None
) -> EncodedSet:
    """The training texts (or pairs), tokenised once, with their targets (and per-sample weights)."""
    ids, types = encode(tokenizer, data.train.texts, cfg.model.max_length, data.train.pairs)
    t = cfg.train
    return EncodedSet(ids, data.train_targets, t.batch_size, t.group_window, t.seed, tokenizer.pad_token_id, types,
                      weights)  # fmt: skip


def scorer(
    cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, readout: Readout, ex: Examples | None, targets: Any
) -> Scorer | None:
    """The readout's metrics of the model as it is now on a held-out set (None without one)."""
    if ex is None:
        return None
    ids, types = encode(tokenizer, ex.texts, cfg.model.max_length, ex.pairs)
    pad_id = tokenizer.pad_token_id

    def score(model: torch.nn.Module) -> dict[str, Any]:
        with eval_mode(model):
            running = score_forward(readout.score(), torch_forward(model), ids, targets, cfg.eval.batch_size,
                                    pad_id, types)  # fmt: skip
        return running.result()

    return score


def class_weights(spec: str | None, labels: LabelSpace, counts: Sequence[float], total: int) -> np.ndarray | None:
    """--class-weights as one weight per label: balanced (total / (labels · count), scikit-learn's rule), none,
    or name=weight pairs (unnamed labels weigh 1). counts are each label's training rows (positives).
    """
    if spec in (None, "none"):
        return None
    if spec == "balanced":
        counts = np.maximum(np.asarray(counts, dtype=np.float64), 1)
        return total / (len(labels) * counts)
    weights = np.ones(len(labels))
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        idx = labels.index(name.strip())
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or idx is None or not weight > 0:
            known = ", ".join(labels.names)
            raise ConfigError(f"--class-weights: expected balanced, none or label=weight pairs with labels of "
                              f"the training data ({known}) and positive weights, got '{item}'")  # fmt: skip
        weights[idx] = weight
    return weights


def recipe(
    cfg: RunConfig,
    data: LabeledData,
    tokenizer: PreTrainedTokenizerBase,
    readout: Readout,
    loss_fn: LossFn,
    what: str,
    weights: Sequence[float] | None = None,
) -> Recipe:
    """The Recipe of a sequence task: its training set, loss and held-out scorers."""
    return Recipe(
        encoded_set(cfg, data, tokenizer, weights),
        loss_fn,
        scorer(cfg, tokenizer, readout, data.eval, data.eval_targets),
        what,
        test=scorer(cfg, tokenizer, readout, data.test, data.test_targets),
    )


def opener(model_class: str, readout: Callable[[RunInfo], Readout]) -> Callable[[RunInfo, int | None, str], Predictor]:
    """Task.open_run for a sequence task: a Predictor with the task's readout."""

    def open_run(run: RunInfo, batch_size: int | None, backend: str) -> Predictor:
        return Predictor.of_run(run, readout(run), model_class, batch_size or 64, backend)

    return open_run


def describe_columns(data: LabeledData) -> str:
    """`check`'s first line for a labeled file."""
    pair = f", text pair column '{data.train.pair_column}'" if data.train.pair_column else ""
    return (
        f"{data.train.file}: {len(data.train)} rows; text column '{data.train.text_column}'{pair}, "
        f"label column '{data.train.label_column}'"
    )
