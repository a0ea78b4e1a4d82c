"""Row-level checks that turn a Table into clean (text, label) columns, or one DataError.

What a label cell holds (a class, a set of classes, a number) is the task's: it passes a LabelKind.
Knows nothing about tokenizers or models.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.config import DataConfig
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import LABEL_NAMES, TEXT_NAMES, Table, find_column, is_missing, read_table, reuse_column
from tunesmith.errors import ConfigError, DataError


@dataclass
class Examples:
    """Validated texts with their labels (as strings), and where each came from."""

    file: str
    texts: list[str]
    labels: list[Any] | None
    """As the task's LabelKind parsed them: a class name, a list of class names, a number."""
    rows: list[int]
    lines: list[int] | None
    text_column: str
    label_column: str | None
    pairs: list[str] | None = None
    """The second text of each sentence pair, when the file has a pair column."""
    pair_column: str | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, indices: list[int]) -> Examples:
        """A subset, keeping where each row came from (for errors about held-out rows)."""
        return Examples(
            self.file,
            [self.texts[i] for i in indices],
            [self.labels[i] for i in indices] if self.labels is not None else None,
            [self.rows[i] for i in indices],
            [self.lines[i] for i in indices] if self.lines else None,
            self.text_column,
            self.label_column,
            [self.pairs[i] for i in indices] if self.pairs is not None else None,
            self.pair_column,
        )

    def label_ids(self, space: LabelSpace) -> list[int]:
        """Ids of the labels; one outside the space (say, only in the eval file) is a DataError."""
        assert self.labels is not None
        ids = []
        for i, lab in enumerate(self.labels):
            idx = space.index(lab)
            if idx is None:
                raise DataError(
                    self.file,
                    f"label '{lab}' was never seen in training (known: {', '.join(space.names)})",
                    row=self.rows[i],
                    line=self.lines[i] if self.lines else None,
                    column=self.label_column,
                )
            ids.append(idx)
        return ids


LabelCell = Callable[[Table, int, Any, str], Any]
"""(table, row index, cell, column) -> the label, or one DataError naming the row and column."""


def examples(
    table: Table,
    text_column: str | None,
    label_column: str | None,
    need_labels: bool = True,
    parse: LabelCell | None = None,
    pair_column: str | None = None,
) -> Examples:
    """Find the columns, then check every row: text (and pair) present and a string, label as parse wants.

    Without --text-column, a usual pair of column names (PAIRS) makes each row a sentence pair.
    """
    parse = parse or label_cell
    if text_column is None and pair_column is None:
        lower = {c.lower(): c for c in table.columns}
        text_column, pair_column = next(((lower[a], lower[b]) for a, b in PAIRS if a in lower and b in lower),
                                        (None, None))  # fmt: skip
    text_col = find_column(table, text_column, TEXT_NAMES, "text", "--text-column")
    pair_col = find_column(table, pair_column, (), "text pair", "--text-pair-column") if pair_column else None
    label_col = None
    if need_labels or label_column is not None:
        label_col = find_column(table, label_column, LABEL_NAMES, "label", "--label-column")
    texts = [text_value(table, i, v, text_col) for i, v in enumerate(table.columns[text_col])]
    pairs = [text_value(table, i, v, pair_col) for i, v in enumerate(table.columns[pair_col])] if pair_col else None
    labels = None
    if label_col is not None:
        labels = [parse(table, i, v, label_col) for i, v in enumerate(table.columns[label_col])]
    return Examples(
        table.path,
        texts,
        labels,
        [table.first_row + i + 1 for i in range(len(table))],
        table.lines,
        text_col,
        label_col,
        pairs,
        pair_col,
    )


PAIRS = (
    ("text", "text_pair"),
    ("sentence1", "sentence2"),
    ("premise", "hypothesis"),
    ("question", "answer"),
    ("query", "passage"),
    ("text_a", "text_b"),
)
"""Usual (text, text pair) column names of sentence-pair sets, tried in order."""


def text_value(table: Table, i: int, value: Any, column: str) -> str:
    """A cell that must hold text: present and a string, else one DataError naming the row and column."""
    if is_missing(value):
        raise DataError(table.path, "empty text", column=column, **table.where(i))
    if not isinstance(value, str):
        raise DataError(
            table.path,
            f"expected text, got {type(value).__name__} {str(value)[:40]!r}",
            column=column,
            **table.where(i),
        )
    return value


def label_cell(table: Table, i: int, value: Any, column: str) -> str:
    """Labels become strings: integers (and integral floats such as 1.0 from Parquet) print without a point."""
    if is_missing(value):
        raise DataError(table.path, "missing label", column=column, **table.where(i))
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DataError(table.path, f"label {value} is not a class", column=column, **table.where(i))
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    raise DataError(
        table.path,
        f"expected one label, got {type(value).__name__} {str(value)[:40]!r}",
        column=column,
        **table.where(i),
    )


def stratified_split(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, eval) row indices holding out ``fraction`` of each class.

    Each class keeps at least one row in training, so a rare class never appears only in the
    evaluation set (where it could not be learned).
    """
    rng = random.Random(seed)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    train, held = [], []
    for lab in sorted(by_class):
        rows = by_class[lab]
        rng.shuffle(rows)
        n_eval = min(round(len(rows) * fraction), len(rows) - 1)
        held.extend(rows[:n_eval])
        train.extend(rows[n_eval:])
    return sorted(train), sorted(held)


@dataclass(frozen=True)
class LabelKind:
    """How a task reads label cells and turns them into what its loss compares the logits with."""

    parse: LabelCell
    space: Callable[[list[Any], Sequence[str] | None, str], LabelSpace | None]
    """(training labels, --labels, file) -> the label space (None: the task has none, as regression)."""
    targets: Callable[[Examples, LabelSpace | None], list[Any]]
    """Examples -> targets (class ids, multi-hot rows, numbers); a label outside the space is a DataError."""
    strata: Callable[[list[Any]], list[str]] | None = None
    """What the held-out split keeps the proportions of; None: a plain seeded sample."""


CLASSES = LabelKind(
    label_cell,
    lambda labels, given, file: LabelSpace.from_labels(labels, given, file),
    lambda ex, space: ex.label_ids(space),
    lambda labels: labels,
)
"""One class per text."""


@dataclass
class LabeledData:
    """Everything training needs from D, checked: examples, label space, targets, and where they came from."""

    train: Examples
    eval: Examples | None
    labels: LabelSpace | None
    train_targets: list[Any]
    eval_targets: list[Any] | None
    eval_from: str | None
    """eval_data, split (held out of train_data), or None (no evaluation)."""
    test: Examples | None = None
    """test_data: scored at every evaluation, chooses nothing."""
    test_targets: list[Any] | None = None

    def fingerprints(self, cfg: DataConfig) -> dict[str, Any]:
        """Paths, sha256s, row counts and columns of the data files, as tunesmith.json records them."""

        def info(ex: Examples | None) -> dict[str, Any] | None:
            if ex is None:
                return None
            pair = {"text_pair_column": ex.pair_column} if ex.pair_column else {}  # absent: older runs resume
            return {"rows": len(ex), "text_column": ex.text_column, **pair, "label_column": ex.label_column}

        found = data_fingerprints(cfg, self.eval_from, info(self.train), info(self.eval))
        if self.test is not None and cfg.test_data is not None:
            found["test"] = {"path": cfg.test_data, "sha256": sha256_of(cfg.test_data), **info(self.test)}
        return found


def data_fingerprints(
    cfg: DataConfig, eval_from: str | None, train: dict[str, Any] | None, held: dict[str, Any] | None
) -> dict[str, Any]:
    """Each data file's path and sha256, with what was read from it (rows, columns); the eval entry points at
    the training file when the evaluation set was split from it.
    """
    eval_path = cfg.eval_data or (cfg.train_data if eval_from == "split" else None)

    def one(read: dict[str, Any] | None, path: str | None) -> dict[str, Any] | None:
        return None if read is None or path is None else {"path": path, "sha256": sha256_of(path), **read}

    return {"train": one(train, cfg.train_data), "eval": one(held, eval_path), "eval_from": eval_from}


def load_labeled(cfg: DataConfig, seed: int, kind: LabelKind = CLASSES) -> LabeledData:
    """Read and check the training (and evaluation, test) data; every problem is one DataError."""
    if cfg.train_data is None:
        raise ConfigError("no training data: pass a file (tunesmith train DATA) or set data.train_data")

    def read(path: str, known: Examples | None = None) -> Examples:
        """A file's examples; after the training file's, its columns are tried first (when this file has them)."""
        table = read_table(path, cfg.encoding)
        text, label, pair = cfg.text_column, cfg.label_column, cfg.text_pair_column
        if known is not None:
            text = reuse_column(table, text, known.text_column)
            label = reuse_column(table, label, known.label_column)
            pair = reuse_column(table, pair, known.pair_column)
        found = examples(table, text, label, parse=kind.parse, pair_column=pair)
        if known is not None and (found.pairs is None) != (known.pairs is None):
            have = "has" if found.pairs is not None else "has no"
            raise DataError(path, f"{have} a text pair column, unlike the training file; name them with "
                            "--text-column and --text-pair-column")  # fmt: skip
        return found

    train = read(cfg.train_data)
    held, eval_from = None, None
    if cfg.eval_data is not None:
        held, eval_from = read(cfg.eval_data, train), "eval_data"
    elif cfg.eval_split > 0:
        assert train.labels is not None
        if kind.strata is not None:
            keep, out = stratified_split(kind.strata(train.labels), cfg.eval_split, seed)
        else:
            keep, out = random_split(len(train), cfg.eval_split, seed)
        if out:
            train, held, eval_from = train.take(keep), train.take(out), "split"
    assert train.labels is not None
    labels = kind.space(train.labels, cfg.labels, train.file)
    test = None
    if cfg.test_data is not None:
        test = read(cfg.test_data, train)
    return LabeledData(
        train, held, labels, kind.targets(train, labels),
        kind.targets(held, labels) if held is not None else None, eval_from,
        test, kind.targets(test, labels) if test is not None else None,
    )  # fmt: skip


def random_split(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded (train, eval) row indices holding out ``fraction`` of n rows (at least one stays in training)."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_eval = min(round(n * fraction), n - 1)
    return sorted(order[n_eval:]), sorted(order[:n_eval])


def sha256_of(path: str | Path) -> str:
    """Fingerprint of a data file, or of every file in a folder (names and bytes, in sorted order)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
