"""Long documents as overlapping windows of tokens (chunks), each with the span of characters it reads.

Stands on the fast tokenizer's own overflow machinery (return_overflowing_tokens with stride): every window
gets the special tokens the model expects, consecutive windows share `stride` tokens, and the offsets say which
characters each window covers. A pair keeps its first text whole in every window (cut to at most half of the
room when it is long) and windows the second, the long one: a question stays beside each passage it is asked of.

Knows the tokenizer and batching, nothing about models or losses: how the chunks' outputs become the document's
is the caller's function (model/aggregate.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.data.batching import collate, epoch_generator
from tunesmith.errors import ConfigError

MODES = ("truncate", "chunk")
AUTO_SHARE = 0.05
"""--long-documents unset: chunk when more than this share of the training texts is longer than max_length."""


@dataclass(frozen=True)
class Chunking:
    """How documents longer than the window are read: windows of `window` tokens overlapping by `stride`, at
    most `max_chunks` per document (spread evenly over a longer one: its start, its end and between).
    """

    window: int
    stride: int
    max_chunks: int

    def check(self) -> None:
        """A stride of half the window or more, or no chunk at all, is one line (exit 2)."""
        if self.max_chunks < 1:
            raise ConfigError(f"--max-chunks must be at least 1, got {self.max_chunks}")
        if not 0 <= self.stride < self.window // 2:
            raise ConfigError(f"--chunk-stride must be at least 0 and under half the window "
                              f"({self.window} tokens: under {self.window // 2}), got {self.stride}")  # fmt: skip


@dataclass
class Documents:
    """Encoded documents as chunks: ids (and segment ids) per chunk, whose document each is, what it reads."""

    ids: list[list[int]]
    types: list[list[int]] | None
    owner: list[int]
    """The document of each chunk, in order: a document's chunks are consecutive."""
    n: int
    """Documents (a document always has at least one chunk)."""
    spans: list[tuple[int, int]] | None = None
    """Per chunk, [start, end) of the characters it reads, in the text that is chunked (a pair's second)."""
    total: list[int] | None = None
    """Per document, the windows it would take without max_chunks (more than its chunks when capped)."""

    @property
    def chunked(self) -> bool:
        """Whether some document has more than one chunk (else the chunks are the documents, in order)."""
        return len(self.ids) != self.n

    def counts(self) -> list[int]:
        """Chunks per document."""
        return np.bincount(np.asarray(self.owner, dtype=np.int64), minlength=self.n).tolist()


def token_lengths(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], pairs: Sequence[str] | None = None, chunk: int = 4096
) -> np.ndarray:
    """Tokens of each text (or pair) untruncated, special tokens included: what a window must hold."""
    out: list[int] = []
    for start in range(0, len(texts), chunk):
        second = list(pairs[start : start + chunk]) if pairs is not None else None
        enc = tokenizer(list(texts[start : start + chunk]), second, return_attention_mask=False,
                        return_token_type_ids=False, verbose=False)  # fmt: skip
        out.extend(len(ids) for ids in enc["input_ids"])
    return np.asarray(out, dtype=np.int64)


def length_summary(lengths: np.ndarray, max_length: int) -> str:
    """`check`'s and the run's line about text lengths in tokens."""
    if not len(lengths):
        return "no texts"
    over = int((lengths > max_length).sum())
    median, p95 = int(np.median(lengths)), int(np.percentile(lengths, 95))
    return (f"length in tokens: median {median}, 95th percentile {p95}, longest {int(lengths.max())}; "
            f"{over} of {len(lengths)} ({over / len(lengths):.0%}) over max_length {max_length}")  # fmt: skip


def choose_mode(given: str | None, lengths: np.ndarray, max_length: int, fast: bool) -> tuple[str, str]:
    """Truncate or chunk, and why: as given, or chunk when more than AUTO_SHARE of the texts are too long."""
    over = int((lengths > max_length).sum())
    share = over / max(len(lengths), 1)
    said = f"{over} of {len(lengths)} training texts ({share:.0%}) are longer than {max_length} tokens"
    if given is not None:
        return given, f"{said}; --long-documents {given}"
    if share <= AUTO_SHARE:
        return "truncate", f"{said}: truncated (chunked above {AUTO_SHARE:.0%})"
    if not fast:
        return "truncate", f"{said}: truncated, since this tokenizer cannot give offsets to chunk with"
    return "chunk", f"{said}: chunked (above {AUTO_SHARE:.0%})"


def need_offsets(tokenizer: PreTrainedTokenizerBase, model: str) -> None:
    """Chunks need the character offsets only a fast (Rust) tokenizer returns: one line otherwise."""
    if not tokenizer.is_fast:
        raise ConfigError(f"{model}: its tokenizer ({type(tokenizer).__name__}) cannot return character offsets, "
                          "which --long-documents chunk and --explain need; use --long-documents truncate")  # fmt: skip


def encode_documents(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    pairs: Sequence[str] | None = None,
    chunking: Chunking | None = None,
    offsets: bool = False,
    chunk: int = 4096,
) -> Documents:
    """Documents as chunks (with chunking) or as one truncated window each; with offsets, what each chunk reads.

    Without chunking a pair is the tokenizer's own pair encoding truncated longest_first: the longer text loses
    tokens first, so a short question keeps all of its own beside a long passage. Slices of `chunk` texts keep
    the fast tokenizer's batch path (parallel in Rust) without one huge intermediate for a million-row file.
    """
    segments = pairs is not None and "token_type_ids" in tokenizer.model_input_names
    docs = Documents([], [] if segments else None, [], len(texts), [] if offsets or chunking else None,
                     [] if chunking else None)  # fmt: skip
    for start in range(0, len(texts), chunk):
        first = list(texts[start : start + chunk])
        second = list(pairs[start : start + chunk]) if pairs is not None else None
        if chunking is not None and second is not None:
            first = _cut_first(tokenizer, first, chunking)
        if second is None:
            truncation: bool | str = True
        else:  # chunks window the second text only; a truncated pair loses tokens from the longer text first
            truncation = "only_second" if chunking else "longest_first"
        enc = tokenizer(
            first,
            second,
            truncation=truncation,
            max_length=max_length,
            stride=chunking.stride if chunking else 0,
            return_overflowing_tokens=chunking is not None,
            return_offsets_mapping=docs.spans is not None,
            return_attention_mask=False,
            return_token_type_ids=segments,
        )
        mapping = enc["overflow_to_sample_mapping"] if chunking else range(len(first))
        windows: dict[int, list[int]] = {}
        for k, doc in enumerate(mapping):
            windows.setdefault(doc, []).append(k)
        for doc, ks in windows.items():
            if docs.total is not None:
                docs.total.append(len(ks))
            for k in spread(ks, chunking.max_chunks) if chunking else ks:
                docs.ids.append(enc["input_ids"][k])
                if docs.types is not None:
                    docs.types.append(enc["token_type_ids"][k])
                docs.owner.append(start + doc)
                if docs.spans is not None:
                    docs.spans.append(_span(enc, k, 1 if second is not None else 0))
    return docs


def spread(items: list[int], most: int) -> list[int]:
    """At most `most` of the items, evenly spaced from the first to the last (all of them when they fit)."""
    if len(items) <= most:
        return items
    if most == 1:
        return items[:1]
    picks = np.linspace(0, len(items) - 1, most).round().astype(int)
    return [items[i] for i in picks]


def _cut_first(tokenizer: PreTrainedTokenizerBase, first: list[str], chunking: Chunking) -> list[str]:
    """A pair's first texts cut (at a token boundary) to at most half the room the window leaves after stride."""
    room = (chunking.window - tokenizer.num_special_tokens_to_add(pair=True) - chunking.stride) // 2
    enc = tokenizer(first, add_special_tokens=False, return_offsets_mapping=True, return_attention_mask=False)
    return [text if len(spans) <= room else text[: spans[room - 1][1]]
            for text, spans in zip(first, enc["offset_mapping"], strict=True)]  # fmt: skip


def _span(enc: Any, k: int, sequence: int) -> tuple[int, int]:
    """[start, end) of the characters chunk k reads of the given sequence (0: the text, 1: a pair's second)."""
    spans = [span for span, seq in zip(enc["offset_mapping"][k], enc.sequence_ids(k), strict=True) if seq == sequence]
    return (spans[0][0], spans[-1][1]) if spans else (0, 0)


Combine = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
"""(chunk logits, each chunk's document in the batch, documents) -> one row of logits per document."""


class DocumentSet:
    """Training documents as chunks: what fit() draws micro-batches from when texts are chunked.

    A micro-batch holds whole documents, up to batch_size chunks (a document with more is alone), so memory is
    bounded by chunks, not documents; the loss is each document's, normalised by documents (or their weights).
    """

    unit = "samples"

    def __init__(
        self,
        docs: Documents,
        labels: Sequence[Any],
        batch_size: int,
        window: int,
        seed: int,
        pad_id: int,
        combine: Combine,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.docs, self.labels, self.weights, self.combine = docs, labels, weights, combine
        self.batch_size, self.window, self.seed, self.pad_id = batch_size, window, seed, pad_id
        self.chunks: list[list[int]] = [[] for _ in range(docs.n)]
        for c, doc in enumerate(docs.owner):
            self.chunks[doc].append(c)

    def __len__(self) -> int:
        return self.docs.n

    def batches(self, epoch: int) -> list[list[int]]:
        """Shuffled documents, sorted by chunk count within windows, packed into micro-batches of at most
        batch_size chunks, then shuffled: a pure function of (seed, epoch), so a resumed run rebuilds it.
        """
        generator = epoch_generator(self.seed, epoch)
        order = torch.randperm(self.docs.n, generator=generator).tolist()
        span = self.batch_size * self.window
        batches: list[list[int]] = []
        for start in range(0, len(order), span):
            group = sorted(order[start : start + span], key=lambda d: -len(self.chunks[d]))
            current: list[int] = []
            size = 0
            for doc in group:
                n = len(self.chunks[doc])
                if current and size + n > self.batch_size:
                    batches.append(current)
                    current, size = [], 0
                current.append(doc)
                size += n
            if current:
                batches.append(current)
        perm = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in perm]

    def items(self, rows: list[int]) -> float:
        """Documents in these rows (or their summed class weights): what the summed loss is normalised by."""
        return len(rows) if self.weights is None else sum(self.weights[i] for i in rows)

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """The rows' chunks padded, which row each chunk belongs to (owner), and the rows' targets."""
        chunks = [c for doc in rows for c in self.chunks[doc]]
        types = [self.docs.types[c] for c in chunks] if self.docs.types is not None else None
        batch = collate([self.docs.ids[c] for c in chunks], self.pad_id, [self.labels[d] for d in rows], types)
        batch["owner"] = torch.as_tensor([i for i, doc in enumerate(rows) for _ in self.chunks[doc]])
        return batch

    def forward(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Every chunk through the model in one call, then combined into one row of logits per document."""
        owner = batch.pop("owner")
        return self.combine(model(**batch).logits, owner, int(owner[-1]) + 1)
