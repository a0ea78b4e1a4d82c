"""Tagging data: CoNLL rows (data/readers.py) as checked sentences of tokens and IOB2 tags, and sentences as
sub-word windows for a token-classification model.

IOB1 tags are turned into IOB2. The first sub-word of each word carries the word's tag and the rest are masked
(IGNORE), as transformers' run_ner does; with all_subwords, continuation pieces get the word's I- tag, never a
copied B- (which inflates entity F1: transformers#14043). A sentence longer than the window is cut into
overlapping windows, each word owned by the window where it is most central. Knows nothing about models.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.config import DataConfig
from tunesmith.data.batching import epoch_generator, grouped_batches, pad
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import Table, find_column
from tunesmith.data.validate import data_fingerprints, sha256_of
from tunesmith.errors import ConfigError, DataError

TOKEN_NAMES = ("tokens", "words")
TAG_NAMES = ("tags", "ner_tags", "labels", "label")
IGNORE = -100
TAG = re.compile(r"^(O|[BI]-.+)$")


def iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (I- starts an entity unless it continues one of its type) as IOB2 (every entity starts with B-).

    Valid IOB2 comes back unchanged; a stray I- after O or another type becomes B-, as seqeval reads it.
    """
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word) of each entity of an IOB2 sequence."""
    found: list[tuple[str, int, int]] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            found.append((tag[2:], i, i + 1))
        elif tag.startswith("I-") and found and found[-1][0] == tag[2:] and found[-1][2] == i:
            found[-1] = (found[-1][0], found[-1][1], i + 1)
    return found


@dataclass
class Sentences:
    """Validated sentences: tokens, their IOB2 tags, and where each came from."""

    file: str
    tokens: list[list[str]]
    tags: list[list[str]] | None
    rows: list[int]
    lines: list[int] | None
    token_column: str
    tag_column: str | None

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, indices: list[int]) -> Sentences:
        """A subset, keeping where each sentence came from."""
        return Sentences(
            self.file, [self.tokens[i] for i in indices], [self.tags[i] for i in indices] if self.tags else None,
            [self.rows[i] for i in indices], [self.lines[i] for i in indices] if self.lines else None,
            self.token_column, self.tag_column,
        )  # fmt: skip

    def tag_ids(self, space: LabelSpace) -> list[list[int]]:
        """Ids of the tags; one outside the space is a DataError naming the sentence."""
        assert self.tags is not None
        out = []
        for i, tags in enumerate(self.tags):
            ids = [space.index(t) for t in tags]
            if None in ids:
                bad = tags[ids.index(None)]
                raise DataError(
                    self.file,
                    f"tag '{bad}' was never seen in training (known: {', '.join(space.names)})",
                    row=self.rows[i],
                    line=self.lines[i] if self.lines else None,
                    column=self.tag_column,
                )
            out.append(ids)  # type: ignore[arg-type]
        return out


def sentences(table: Table, token_column: str | None, tag_column: str | None, need_tags: bool = True) -> Sentences:
    """Find the columns, then check every row: a non-empty list of tokens and, with tags, as many IOB tags."""
    tok_col = find_column(table, token_column, TOKEN_NAMES, "tokens", "--text-column")
    tag_col = find_column(table, tag_column, TAG_NAMES, "tags", "--label-column") if need_tags else None
    tokens, tags = [], [] if tag_col else None
    for i, value in enumerate(table.columns[tok_col]):
        where = table.where(i)
        words = _strings(table, i, value, tok_col, "tokens")
        if not words:
            raise DataError(table.path, "a sentence with no tokens", column=tok_col, **where)
        tokens.append(words)
        if tags is not None:
            assert tag_col is not None
            row = _strings(table, i, table.columns[tag_col][i], tag_col, "tags")
            if len(row) != len(words):
                raise DataError(table.path, f"{len(words)} tokens but {len(row)} tags", column=tag_col, **where)
            bad = next((t for t in row if not TAG.match(t)), None)
            if bad is not None:
                raise DataError(table.path, f"tag {bad!r} is not IOB (O, B-TYPE or I-TYPE)", column=tag_col, **where)
            tags.append(iob2(row))
    rows = [table.first_row + i + 1 for i in range(len(table))]
    return Sentences(table.path, tokens, tags, rows, table.lines, tok_col, tag_col)


def _strings(table: Table, i: int, value: Any, column: str, what: str) -> list[str]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(table.path, f"expected a list of {what} (strings), got {str(value)[:40]!r}", column=column,
                        **table.where(i))  # fmt: skip
    return [v.strip() for v in value]


def tag_space(tags: list[list[str]], given: Sequence[str] | None, file: str) -> LabelSpace:
    """O first, then each type's B- and I- tags in order of type (or --labels as given)."""
    seen = {t for row in tags for t in row}
    if given:
        unknown = sorted(seen - set(given))
        if unknown:
            raise DataError(file, f"tag '{unknown[0]}' is not in --labels ({', '.join(given)})")
        return LabelSpace(tuple(given))
    types = sorted({t[2:] for t in seen if t != "O"})
    if not types:
        raise DataError(file, "every tag is O: tagging needs at least one entity type")
    return LabelSpace(("O", *(f"{p}-{t}" for t in types for p in "BI")))


@dataclass
class TaggedData:
    """Everything training needs from D for tagging."""

    train: Sentences
    eval: Sentences | None
    labels: LabelSpace
    eval_from: str | None
    test: Sentences | None = None

    def fingerprints(self, cfg: DataConfig) -> dict[str, Any]:
        """Paths, sha256s, sentence counts and columns of the data files."""

        def info(s: Sentences | None) -> dict[str, Any] | None:
            return s and {"rows": len(s), "text_column": s.token_column, "label_column": s.tag_column}

        found = data_fingerprints(cfg, self.eval_from, info(self.train), info(self.eval))
        if self.test is not None and cfg.test_data is not None:
            found["test"] = {"path": cfg.test_data, "sha256": sha256_of(cfg.test_data), **info(self.test)}
        return found


@dataclass
class Window:
    """One model input: a span of a sentence's sub-words with the tokenizer's special tokens around it."""

    ids: list[int]
    labels: list[int]
    """Tag ids where the loss looks (the first piece of each owned word; every piece with all-subwords)."""
    sentence: int
    words: list[int]
    """The words this window owns (tags them), in order."""
    firsts: list[int]
    """Where each owned word's first piece sits in ids."""


class Encoder:
    """Words -> windows of sub-word ids, each word owned by the window where its first piece is most central."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, all_subwords: bool = False) -> None:
        if not tokenizer.is_fast:
            raise ConfigError("tagging needs a fast tokenizer (it maps sub-words to words); this model has none")
        full = tokenizer("a", add_special_tokens=True)["input_ids"]
        bare = tokenizer("a", add_special_tokens=False)["input_ids"]
        at = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        self.prefix, self.suffix = full[:at], full[at + len(bare) :]
        self.budget = max_length - len(self.prefix) - len(self.suffix)
        if self.budget < 4:
            raise ConfigError(f"model.max_length {max_length} leaves no room for words beside the special tokens")
        self.stride = self.budget // 2
        """Consecutive windows overlap by half: every word has one where it sits at least a quarter in."""
        self.tokenizer, self.all_subwords = tokenizer, all_subwords

    def encode(self, tokens: list[list[str]], tag_ids: list[list[int]] | None = None,
               space: LabelSpace | None = None) -> list[Window]:  # fmt: skip
        """Every sentence's windows, in sentence order (without tags: for prediction)."""
        windows: list[Window] = []
        for start in range(0, len(tokens), 2048):
            enc = self.tokenizer(tokens[start : start + 2048], is_split_into_words=True, add_special_tokens=False)
            for k in range(len(enc["input_ids"])):
                s = start + k
                gold = tag_ids[s] if tag_ids is not None else None
                windows.extend(self._windows(s, enc["input_ids"][k], enc.word_ids(k), gold, space))
        return windows

    def _windows(self, sentence: int, ids: list[int], word_ids: list[int | None], gold: list[int] | None,
                 space: LabelSpace | None) -> list[Window]:  # fmt: skip
        n = len(ids)
        bounds = [(0, n)]
        if n > self.budget:
            step = self.budget - self.stride
            bounds = [(s, min(s + self.budget, n)) for s in range(0, max(n - self.stride, 1), step)]
        first: dict[int, int] = {}
        for pos, w in enumerate(word_ids):
            if w is not None and w not in first:
                first[w] = pos
        owner = {w: max(range(len(bounds)), key=lambda b: _centrality(p, bounds[b])) for w, p in first.items()}
        lead = len(self.prefix)
        out = []
        for b, (lo, hi) in enumerate(bounds):
            labels = [IGNORE] * (hi - lo)
            words, firsts = [], []
            for pos in range(lo, hi):
                w = word_ids[pos]
                if w is None or owner[w] != b:
                    continue
                if first[w] == pos:
                    words.append(w)
                    firsts.append(lead + pos - lo)
                    labels[pos - lo] = gold[w] if gold is not None else IGNORE
                elif self.all_subwords and gold is not None and space is not None:
                    labels[pos - lo] = _inside(gold[w], space)
            padded = [IGNORE] * lead + labels + [IGNORE] * len(self.suffix)
            out.append(Window(self.prefix + ids[lo:hi] + self.suffix, padded, sentence, words, firsts))
        return out


def _centrality(pos: int, bound: tuple[int, int]) -> int:
    lo, hi = bound
    return min(pos - lo, hi - 1 - pos) if lo <= pos < hi else -1


def _inside(tag_id: int, space: LabelSpace) -> int:
    """The I- tag of a B- tag (a continuation piece never begins an entity); others unchanged."""
    name = space.names[tag_id]
    return space.label2id.get("I-" + name[2:], tag_id) if name.startswith("B-") else tag_id


class TagSet:
    """Windows with their token labels: what fit() draws its micro-batches from."""

    unit = "tokens"
    """The loss is a mean over labeled tokens (first pieces, or every piece with label_all_subwords)."""

    def __init__(self, windows: list[Window], batch_size: int, window: int, seed: int, pad_id: int) -> None:
        self.windows, self.batch_size, self.window, self.seed, self.pad_id = windows, batch_size, window, seed, pad_id

    def __len__(self) -> int:
        return len(self.windows)

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's order depends only on (seed, epoch)."""
        lengths = [len(w.ids) for w in self.windows]
        return grouped_batches(lengths, self.batch_size, self.window, epoch_generator(self.seed, epoch))

    def items(self, rows: list[int]) -> int:
        """Labeled tokens in these rows."""
        return sum(sum(lab != IGNORE for lab in self.windows[i].labels) for i in rows)

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Right-padded ids, mask and labels (IGNORE on padding)."""
        ids, mask = pad([self.windows[i].ids for i in rows], self.pad_id)
        labels, _ = pad([self.windows[i].labels for i in rows], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
