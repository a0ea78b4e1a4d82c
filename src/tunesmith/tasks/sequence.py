"""What the sequence tasks share (one output per text: classification, multi-label, regression).

The text encoder, the training set, held-out scoring, the predictor and `check`'s description are the same
for all of them; what differs is the task's Readout (label cells, targets, loss, scores, records).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.backends import eval_mode, torch_forward
from tunesmith.config import RunConfig
from tunesmith.data.batching import EncodedSet
from tunesmith.data.chunks import (
    Chunking,
    DocumentSet,
    choose_mode,
    encode_documents,
    length_summary,
    need_offsets,
    token_lengths,
)
from tunesmith.data.labels import LabelSpace
from tunesmith.data.validate import Examples, LabeledData
from tunesmith.errors import ConfigError, DataError
from tunesmith.losses import LossFn
from tunesmith.metrics import score_forward
from tunesmith.model.aggregate import Aggregator, attach, from_run
from tunesmith.predict import Predictor, Readout
from tunesmith.runs import RunInfo
from tunesmith.tasks.base import Recipe, Scorer

DEFAULT_MAX_CHUNKS = 16
DEFAULT_AGGREGATE = "max"
"""--aggregate unset: max, best of the three on the buried-signal set of bench/RESULTS.md's long section."""


@dataclass
class LongDocuments:
    """How a run reads texts longer than its window, decided once from the training texts; tunesmith.json keeps
    it as "long_documents", so evaluate, predict and export read texts exactly as training did.
    """

    chunking: Chunking | None
    """None: truncate."""
    aggregate: str | None
    why: str
    lengths: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """tunesmith.json's long_documents."""
        c = self.chunking
        mode = {"mode": "chunk", "window": c.window, "stride": c.stride, "max_chunks": c.max_chunks,
                "aggregate": self.aggregate} if c else {"mode": "truncate"}  # fmt: skip
        return {**mode, "why": self.why, "lengths": self.lengths}

    @classmethod
    def of_run(cls, run: RunInfo) -> LongDocuments:
        """A run's setting (runs from before chunking existed truncate)."""
        saved = run.raw.get("long_documents") or {"mode": "truncate", "why": "as trained"}
        if saved["mode"] != "chunk":
            return cls(None, None, saved["why"])
        chunking = Chunking(saved["window"], saved["stride"], saved["max_chunks"])
        return cls(chunking, saved["aggregate"], saved["why"])

    def line(self) -> str:
        """What the run's start line says about long texts."""
        if self.chunking is None:
            return self.why
        c = self.chunking
        return (f"{self.why}: windows of {c.window} tokens overlapping by {c.stride}, at most {c.max_chunks} per "
                f"text, combined by {self.aggregate}")  # fmt: skip


def long_documents(cfg: RunConfig, data: LabeledData, tokenizer: PreTrainedTokenizerBase) -> LongDocuments:
    """Truncate or chunk (as given, or by how many training texts are too long); every text empty once
    tokenised is one line naming the file.
    """
    m = cfg.model
    assert m.max_length is not None
    stride = m.chunk_stride if m.chunk_stride is not None else m.max_length // 4
    chunking = Chunking(m.max_length, stride, m.max_chunks if m.max_chunks is not None else DEFAULT_MAX_CHUNKS)
    chunking.check()  # a bad --chunk-stride or --max-chunks is refused under truncate too
    lengths = token_lengths(tokenizer, data.train.texts, data.train.pairs)
    if len(lengths) and lengths.max() <= tokenizer.num_special_tokens_to_add(pair=data.train.pairs is not None):
        raise DataError(data.train.file, f"every text is empty once tokenised by {m.name}'s tokenizer "
                        f"(column '{data.train.text_column}')")  # fmt: skip
    mode, why = choose_mode(m.long_documents, lengths, m.max_length, tokenizer.is_fast)
    summary = {"median": int(np.median(lengths)), "p95": int(np.percentile(lengths, 95)),
               "over": int((lengths > m.max_length).sum()), "of": len(lengths)}  # fmt: skip
    if mode == "truncate":
        return LongDocuments(None, None, why, summary)
    need_offsets(tokenizer, str(m.name))
    return LongDocuments(chunking, m.aggregate or DEFAULT_AGGREGATE, why, summary)


def encoded_set(
    cfg: RunConfig,
    data: LabeledData,
    tokenizer: PreTrainedTokenizerBase,
    long: LongDocuments,
    combine: Aggregator | None,
    weights: Sequence[float] | None = None,
) -> EncodedSet | DocumentSet:
    """The training texts (or pairs), tokenised once, with their targets (and per-sample weights): one window
    each, or with chunking documents of windows.
    """
    t = cfg.train
    assert cfg.model.max_length is not None
    chunking = long.chunking if combine is not None else None
    docs = encode_documents(tokenizer, data.train.texts, cfg.model.max_length, data.train.pairs, chunking)
    if chunking is not None:
        return DocumentSet(docs, data.train_targets, t.batch_size, t.group_window, t.seed, tokenizer.pad_token_id,
                           combine, weights)  # fmt: skip
    return EncodedSet(docs.ids, data.train_targets, t.batch_size, t.group_window, t.seed, tokenizer.pad_token_id,
                      docs.types, weights)  # fmt: skip


def scorer(
    cfg: RunConfig,
    tokenizer: PreTrainedTokenizerBase,
    readout: Readout,
    ex: Examples | None,
    targets: Any,
    long: LongDocuments,
    combine: Aggregator | None,
) -> Scorer | None:
    """The readout's metrics of the model as it is now on a held-out set (None without one)."""
    if ex is None:
        return None
    assert cfg.model.max_length is not None
    docs = encode_documents(tokenizer, ex.texts, cfg.model.max_length, ex.pairs, long.chunking)
    pad_id = tokenizer.pad_token_id

    def score(model: torch.nn.Module) -> dict[str, Any]:
        with eval_mode(model):
            running = score_forward(readout.score(), torch_forward(model), docs, targets, cfg.eval.batch_size,
                                    pad_id, combine)  # fmt: skip
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
    model: torch.nn.Module,
    readout: Readout,
    loss_fn: LossFn,
    what: str,
    weights: Sequence[float] | None = None,
) -> Recipe:
    """The Recipe of a sequence task: its training set, loss and held-out scorers, reading long texts as
    long_documents() decides (with chunks, the model gets the aggregation: attention's parameters train).
    """
    long = long_documents(cfg, data, tokenizer)
    combine = None
    if long.chunking is not None and long.aggregate is not None:
        combine = attach(model, long.aggregate, int(model.config.num_labels))
    made = Recipe(
        encoded_set(cfg, data, tokenizer, long, combine, weights),
        loss_fn,
        scorer(cfg, tokenizer, readout, data.eval, data.eval_targets, long, combine),
        f"{what}; {long.line()}",
        test=scorer(cfg, tokenizer, readout, data.test, data.test_targets, long, combine),
    )
    made.long_documents = long.to_dict()
    return made


def opener(model_class: str, readout: Callable[[RunInfo], Readout]) -> Callable[[RunInfo, int | None, str], Predictor]:
    """Task.open_run for a sequence task: a Predictor with the task's readout."""

    def open_run(run: RunInfo, batch_size: int | None, backend: str) -> Predictor:
        long = LongDocuments.of_run(run)
        combine = None
        if long.chunking is not None and long.aggregate is not None:
            combine = from_run(run.path, long.aggregate, len(run.labels) if run.labels else 1)
        return Predictor.of_run(run, readout(run), model_class, batch_size or 64, backend, long.chunking, combine)

    return open_run


def lengths(cfg: RunConfig, data: LabeledData) -> str:
    """`check`'s line on the training texts' lengths in the chosen model's tokens (its tokenizer alone loads)."""
    from tunesmith.model.pretrained import load_tokenizer, resolve

    assert cfg.model.max_length is not None
    tokenizer = load_tokenizer(resolve(str(cfg.model.name)), cfg.model.trust_remote_code)
    found = token_lengths(tokenizer, data.train.texts, data.train.pairs)
    mode, _ = choose_mode(cfg.model.long_documents, found, cfg.model.max_length, tokenizer.is_fast)
    return f"{cfg.model.name}: {length_summary(found, cfg.model.max_length)}; train would {mode} them"


def describe_columns(data: LabeledData) -> str:
    """`check`'s first line for a labeled file."""
    pair = f", text pair column '{data.train.pair_column}'" if data.train.pair_column else ""
    return (
        f"{data.train.file}: {len(data.train)} rows; text column '{data.train.text_column}'{pair}, "
        f"label column '{data.train.label_column}'"
    )
