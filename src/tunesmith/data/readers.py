"""Read CSV / TSV / JSONL / JSON / Parquet files and saved HF datasets into a Table.

Knows nothing about labels, tokenizers or models: it turns bytes into named columns and
says exactly where a file is malformed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import DataError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
}
TEXT_NAMES = ("text", "sentence", "content", "body", "message", "email", "review", "document")
LABEL_NAMES = ("label", "labels", "category", "class", "target")

# A single CSV field may legitimately be a long document; the csv module's default limit is 128 KiB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class Table:
    """Columns of one data file, with the line each row started on where the format has lines."""

    path: str
    columns: dict[str, list[Any]]
    lines: list[int] | None = None
    format: str = ""

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def where(self, index: int) -> dict[str, int | None]:
        """DataError keyword arguments locating the row at 0-based ``index``."""
        return {"row": index + 1, "line": self.lines[index] if self.lines else None}

    def take(self, indices: list[int]) -> Table:
        """A new table with the given rows, keeping their original line numbers."""
        return Table(
            self.path,
            {k: [v[i] for i in indices] for k, v in self.columns.items()},
            [self.lines[i] for i in indices] if self.lines else None,
            self.format,
        )


def detect_format(path: Path) -> str:
    """File format from the extension; a folder is a saved HF dataset."""
    if path.is_dir():
        return "hf"
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise DataError(
            str(path),
            f"unknown format '{path.suffix or '(no extension)'}'; use one of {known} "
            "or a folder saved by datasets' save_to_disk",
        )
    return fmt


def read_table(path: str | Path, encoding: str = "utf-8") -> Table:
    """Read any supported file into a Table; every failure is a one-line DataError."""
    path = Path(path)
    if str(path) == "-":
        return _read_text_lines("-", sys.stdin.read())
    if not path.exists():
        raise DataError(str(path), "no such file or folder")
    fmt = detect_format(path)
    if fmt == "hf":
        return _read_hf(path)
    if fmt == "parquet":
        return _read_parquet(path)
    text = _decode(path, encoding)
    if text.startswith("\ufeff"):  # a UTF-8 BOM, as Excel writes it
        text = text[1:]
    if not text.strip():
        raise DataError(str(path), "the file is empty")
    if fmt in ("csv", "tsv"):
        table = _read_csv(str(path), text, fmt)
    else:
        table = {"jsonl": _read_jsonl, "json": _read_json, "text": _read_text_lines}[fmt](str(path), text)
    table.format = fmt
    return table


def _decode(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(
            str(path),
            f"byte 0x{data[e.start]:02x} is not valid {encoding}; "
            "pass --encoding (for example latin-1 or cp1252) if the file uses another encoding",
            line=line,
        ) from None
    except LookupError:
        raise DataError(str(path), f"unknown encoding '{encoding}'") from None


def _read_csv(path: str, text: str, fmt: str) -> Table:
    # TSV files conventionally have no quoting (GLUE's SST-2 has bare quote characters inside sentences).
    if fmt == "tsv":
        reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    else:
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except csv.Error as e:
        raise DataError(path, f"malformed header ({e})", line=1) from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(path, "the header line is empty; the first line must name the columns", line=1)
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(path, f"the header names column '{dup}' twice", line=1)
    columns: dict[str, list[Any]] = {h: [] for h in header}
    lines: list[int] = []
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise DataError(path, f"malformed {fmt.upper()} row ({e})", line=start, row=len(lines) + 1) from None
        if not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
            start = reader.line_num + 1  # blank lines carry no record
            continue
        if len(row) != len(header):
            raise DataError(
                path,
                f"expected {len(header)} fields as in the header, found {len(row)}",
                line=start,
                row=len(lines) + 1,
            )
        for name, value in zip(header, row, strict=True):
            columns[name].append(value)
        lines.append(start)
        start = reader.line_num + 1
    if not lines:
        raise DataError(path, "the file has a header but no rows")
    return Table(path, columns, lines)


def _records_to_table(path: str, records: list[Any], lines: list[int] | None) -> Table:
    columns: dict[str, list[Any]] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(
                path,
                f"expected a JSON object per record, got {type(rec).__name__}",
                row=i + 1,
                line=lines[i] if lines else None,
            )
        for key in rec:
            if key not in columns:
                columns[key] = [None] * i
        for key, col in columns.items():
            col.append(rec.get(key))
    if not records:
        raise DataError(path, "the file holds no records")
    return Table(path, columns, lines)


def _read_jsonl(path: str, text: str) -> Table:
    records, lines = [], []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            records.append(json.loads(raw))
        except json.JSONDecodeError as e:
            raise DataError(path, f"not valid JSON ({e.msg})", line=n, row=len(records) + 1) from None
        lines.append(n)
    return _records_to_table(path, records, lines)


def _read_json(path: str, text: str) -> Table:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg})", line=e.lineno) from None
    if isinstance(data, dict):
        # {"data": [...]} is a common wrapper; a dict of equal-length lists is a column layout.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(data) == 1 and lists:
            data = lists[0]
        elif lists and len(lists) == len(data) and len({len(v) for v in lists}) == 1:
            return Table(path, {k: list(v) for k, v in data.items()})
    if not isinstance(data, list):
        raise DataError(path, "expected a JSON list of records")
    return _records_to_table(path, data, None)


def _read_text_lines(path: str, text: str) -> Table:
    lines, texts = [], []
    for n, raw in enumerate(text.splitlines(), start=1):
        if raw.strip():
            texts.append(raw)
            lines.append(n)
    if not texts:
        raise DataError(path, "no text lines")
    return Table(path, {"text": texts}, lines, "text")


def _read_parquet(path: Path) -> Table:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataError(str(path), f"not a readable Parquet file ({str(e).splitlines()[0]})") from None
    if table.num_rows == 0:
        raise DataError(str(path), "the file holds no rows")
    return Table(str(path), {name: table.column(name).to_pylist() for name in table.column_names}, format="parquet")


def _read_hf(path: Path) -> Table:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # not a dataset folder, or a DatasetDict, or a version mismatch
        raise DataError(str(path), f"not a folder saved by datasets' save_to_disk ({str(e).splitlines()[0]})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(str(path), f"holds several splits ({', '.join(ds)}); pass the folder of one split")
    return Table(str(path), ds.to_dict(), format="hf")


def find_column(table: Table, given: str | None, candidates: tuple[str, ...], role: str, flag: str) -> str:
    """The column for a role: the one given, else the first usual name present (case-insensitive)."""
    import difflib

    names = list(table.columns)
    if given is not None:
        if given in table.columns:
            return given
        lowered = {n.lower(): n for n in names}
        close = [lowered[c] for c in difflib.get_close_matches(given.lower(), list(lowered), n=2, cutoff=0.5)]
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise DataError(table.path, f"no {role} column '{given}'{hint} (columns: {', '.join(names)})")
    lower = {n.lower(): n for n in names}
    for cand in candidates:
        if cand in lower:
            return lower[cand]
    close = difflib.get_close_matches(candidates[0], [n.lower() for n in names], n=1, cutoff=0.6)
    hint = f"; did you mean '{lower[close[0]]}'? " if close else "; "
    raise DataError(
        table.path,
        f"no {role} column found{hint}name it with {flag} "
        f"(columns: {', '.join(names)}; usual names: {', '.join(candidates)})",
    )


def is_missing(value: Any) -> bool:
    """None, NaN and blank strings count as missing."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()
