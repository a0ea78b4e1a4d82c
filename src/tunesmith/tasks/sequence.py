"""What the sequence tasks share (one output per text: classification, multi-label, regression).

The text encoder, the training set, held-out scoring, the predictor and `check`'s description are the same
for all of them; what differs is the task's Readout (label cells, targets, loss, scores, records).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.backends import eval_mode, torch_forward
from tunesmith.config import RunConfig
from tunesmith.data.batching import EncodedSet
from tunesmith.data.encode import encode_texts
from tunesmith.data.validate import Examples, LabeledData
from tunesmith.losses import LossFn
from tunesmith.metrics import score_forward
from tunesmith.predict import Predictor, Readout
from tunesmith.runs import RunInfo
from tunesmith.tasks.base import Recipe, Scorer


def encoded_set(cfg: RunConfig, data: LabeledData, tokenizer: PreTrainedTokenizerBase, **extra: Any) -> EncodedSet:
    """The training texts, tokenised once, with their targets."""
    ids = encode_texts(tokenizer, data.train.texts, cfg.model.max_length)
    t = cfg.train
    return EncodedSet(ids, data.train_targets, t.batch_size, t.group_window, t.seed, tokenizer.pad_token_id, **extra)


def scorer(
    cfg: RunConfig, tokenizer: PreTrainedTokenizerBase, readout: Readout, ex: Examples | None, targets: Any
) -> Scorer | None:
    """The readout's metrics of the model as it is now on a held-out set (None without one)."""
    if ex is None:
        return None
    ids = encode_texts(tokenizer, ex.texts, cfg.model.max_length)

    def score(model: torch.nn.Module) -> dict[str, Any]:
        with eval_mode(model):
            forward = torch_forward(model)
            return score_forward(readout.score(), forward, ids, targets, cfg.eval.batch_size, tokenizer.pad_token_id)\
                .result()  # fmt: skip

    return score


def recipe(
    cfg: RunConfig,
    data: LabeledData,
    tokenizer: PreTrainedTokenizerBase,
    readout: Readout,
    loss_fn: LossFn,
    what: str,
    **extra: Any,
) -> Recipe:
    """The Recipe of a sequence task: its training set, loss and held-out scorers."""
    return Recipe(
        encoded_set(cfg, data, tokenizer, **extra),
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
    return (
        f"{data.train.file}: {len(data.train) + (len(data.eval) if data.eval_from == 'split' else 0)} rows; "
        f"text column '{data.train.text_column}', label column '{data.train.label_column}'"
    )
