"""Read CSV / TSV / JSONL / JSON / Parquet files and saved HF datasets into Tables.

Knows nothing about labels, tokenizers or models: it turns bytes into named columns and says
exactly where a file is malformed. Files are read as a stream of row chunks (iter_tables), so
evaluation and prediction run in memory that does not grow with the file; training reads whole.
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

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
    ".conll": "conll",
    ".iob": "conll",
    ".iob2": "conll",
    ".bio": "conll",
}
TEXT_NAMES = ("text", "sentence", "content", "body", "message", "email", "review", "document")
LABEL_NAMES = ("label", "labels", "category", "class", "target", "score", "rating", "value")

# A single CSV field may legitimately be a long document; the csv module's default limit is 128 KiB.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class Table:
    """Columns of a data file's rows (or of one chunk of them), with the line each row started on."""

    path: str
    columns: dict[str, list[Any]]
    lines: list[int] | None = None
    format: str = ""
    first_row: int = 0
    """Rows of the file before this chunk."""

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def where(self, index: int) -> dict[str, int | None]:
        """DataError keyword arguments locating the row at 0-based ``index`` of this chunk."""
        return {"row": self.first_row + index + 1, "line": self.lines[index] if self.lines else None}


CHUNK_ROWS = 8192


def detect_format(path: Path) -> str:
    """File format from the extension; a folder is a saved HF dataset."""
    if path.is_dir():
        return "hf"
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None and looks_conll(path):  # CoNLL sets often come as eng.train, eng.testa
        return "conll"
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise DataError(
            str(path),
            f"unknown format '{path.suffix or '(no extension)'}'; use one of {known} "
            "or a folder saved by datasets' save_to_disk",
        )
    return fmt


def read_table(path: str | Path, encoding: str = "utf-8") -> Table:
    """The whole file as one Table; every failure is a one-line DataError."""
    chunks = list(iter_tables(path, encoding))
    columns: dict[str, list[Any]] = {}
    for n, chunk in enumerate(chunks):
        before = sum(len(c) for c in chunks[:n])
        for key in chunk.columns:
            columns.setdefault(key, [None] * before)
        for key, col in columns.items():
            col.extend(chunk.columns.get(key, [None] * len(chunk)))
    lines = [x for c in chunks for x in c.lines] if all(c.lines for c in chunks) else None
    return Table(chunks[0].path, columns, lines, chunks[0].format)


def iter_tables(path: str | Path, encoding: str = "utf-8", chunk_rows: int | None = None) -> Iterator[Table]:
    """The file's rows in order, chunk_rows (default CHUNK_ROWS) at a time; '-' reads lines of text from stdin."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    if str(path) == "-":
        yield from _chunks("-", "text", _text_rows(sys.stdin, "-"), chunk_rows)
        return
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), "no such file or folder")
    fmt = detect_format(path)
    if fmt == "hf":
        yield from _hf_chunks(path, chunk_rows)
    elif fmt == "parquet":
        yield from _parquet_chunks(path, chunk_rows)
    else:
        yield from _text_file_chunks(path, fmt, encoding, chunk_rows)


def _text_file_chunks(path: Path, fmt: str, encoding: str, chunk_rows: int) -> Iterator[Table]:
    # utf-8-sig drops the BOM that Excel writes; decoding errors surface mid-stream and are located exactly.
    effective = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
    try:
        handle = open(path, encoding=effective, newline="")  # noqa: SIM115 - closed below
    except LookupError:
        raise DataError(str(path), f"unknown encoding '{encoding}'") from None
    with handle:
        try:
            if _blank(handle):
                raise DataError(str(path), "the file is empty")
            if fmt in ("csv", "tsv"):
                rows = _csv_rows(handle, str(path), fmt)
            else:
                readers = {"jsonl": _jsonl_rows, "json": _json_rows, "text": _text_rows, "conll": _conll_rows}
                rows = readers[fmt](handle, str(path))
            yield from _chunks(str(path), fmt, rows, chunk_rows)
        except UnicodeDecodeError:
            raise _decode_error(path, encoding) from None


def _blank(handle: TextIO) -> bool:
    """Whether the file holds only whitespace; reads no further than its first visible character."""
    while block := handle.read(1 << 16):
        if block.strip():
            handle.seek(0)
            return False
    return True


def _decode_error(path: Path, encoding: str) -> DataError:
    """Locate the first undecodable byte by line (only on the error path, so the rescan costs nothing normally)."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as e:
                return DataError(
                    str(path),
                    f"byte 0x{raw[e.start]:02x} is not valid {encoding}; pass --encoding "
                    "(for example latin-1 or cp1252) if the file uses another encoding",
                    line=n,
                )
    return DataError(str(path), f"not valid {encoding}; pass --encoding if the file uses another encoding")


Row = tuple[dict[str, Any], int | None]
"""A record and the line it started on."""


def _chunks(path: str, fmt: str, rows: Iterable[Row], chunk_rows: int) -> Iterator[Table]:
    """Group records into Tables; every chunk has every column seen so far (absent values are None)."""
    keys: dict[str, None] = {}
    batch: list[Row] = []
    done = 0
    for row in rows:
        batch.append(row)
        if len(batch) == chunk_rows:
            yield _table(path, fmt, batch, keys, done)
            done += len(batch)
            batch = []
    if batch or not done:
        if not batch:
            raise DataError(
                path,
                "the file has a header but no rows"
                if fmt in ("csv", "tsv")
                else "the file holds no records"
                if fmt != "text"
                else "no text lines",
            )
        yield _table(path, fmt, batch, keys, done)


def _table(path: str, fmt: str, batch: list[Row], keys: dict[str, None], first_row: int) -> Table:
    for record, _ in batch:
        keys.update(dict.fromkeys(record))
    columns = {k: [record.get(k) for record, _ in batch] for k in keys}
    lines = [line for _, line in batch]
    return Table(path, columns, lines if all(x is not None for x in lines) else None, fmt, first_row)


def _csv_rows(handle: TextIO, path: str, fmt: str) -> Iterator[Row]:
    # TSV files conventionally have no quoting (GLUE's SST-2 has bare quote characters inside sentences).
    if fmt == "tsv":
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True)
    else:
        reader = csv.reader(handle, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except csv.Error as e:
        raise DataError(path, f"malformed header ({e})", line=1) from None
    if not any(header):
        raise DataError(path, "the header line is empty; the first line must name the columns", line=1)
    if len(set(header)) != len(header):
        dup = next(h for h in header if header.count(h) > 1)
        raise DataError(path, f"the header names column '{dup}' twice", line=1)
    start, count = reader.line_num + 1, 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(path, f"malformed {fmt.upper()} row ({e})", line=start, row=count + 1) from None
        if not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
            start = reader.line_num + 1  # blank lines carry no record
            continue
        if len(row) != len(header):
            raise DataError(
                path, f"expected {len(header)} fields as in the header, found {len(row)}", line=start, row=count + 1
            )
        count += 1
        yield dict(zip(header, row, strict=True)), start
        start = reader.line_num + 1


def _record(path: str, value: Any, row: int, line: int | None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(path, f"expected a JSON object per record, got {type(value).__name__}", row=row, line=line)
    return value


def _jsonl_rows(handle: TextIO, path: str) -> Iterator[Row]:
    count = 0
    for n, raw in enumerate(handle, start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            raise DataError(path, f"not valid JSON ({e.msg})", line=n, row=count + 1) from None
        count += 1
        yield _record(path, value, count, n), n


def _json_rows(handle: TextIO, path: str) -> Iterator[Row]:
    """A JSON document cannot be streamed record by record with the standard library: it is read whole."""
    try:
        data = json.load(handle)
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON ({e.msg})", line=e.lineno) from None
    except RecursionError:
        raise DataError(path, "JSON nested too deeply") from None
    if isinstance(data, dict):
        # {"data": [...]} is a common wrapper; a dict of equal-length lists is a column layout.
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(data) == 1 and lists:
            data = lists[0]
        elif lists and len(lists) == len(data) and len({len(v) for v in lists}) == 1:
            data = [dict(zip(data, values, strict=True)) for values in zip(*data.values(), strict=True)]
    if not isinstance(data, list):
        raise DataError(path, "expected a JSON list of records")
    for i, value in enumerate(data):
        yield _record(path, value, i + 1, None), None


CONLL_TAG = re.compile(r"^(O|[BIES]-\S+)$")


def looks_conll(path: Path, lines: int = 50) -> bool:
    """Whether a file of unknown extension reads as CoNLL: its first lines are blank, -DOCSTART-, or a token and
    more fields whose last is an IOB tag.
    """
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            seen = [line.split() for line, _ in zip(f, range(lines), strict=False)]
    except OSError:
        return False
    fields = [f for f in seen if f and f[0] != "-DOCSTART-"]
    return bool(fields) and all(len(f) >= 2 and CONLL_TAG.match(f[-1]) for f in fields)


def _conll_rows(handle: TextIO, path: str) -> Iterator[Row]:
    """CoNLL as it comes: a token per line, its tag in the last column (space- or tab-separated), blank or
    whitespace-only lines between sentences, -DOCSTART- lines skipped; a row is a sentence (tokens, tags).
    """
    tokens: list[str] = []
    tags: list[str] = []
    start = None
    for n, raw in enumerate(handle, start=1):
        line = raw.rstrip("\r\n")
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields if f.strip()]
        if not fields or fields[0] == "-DOCSTART-":
            if tokens:
                yield {"tokens": tokens, "tags": tags}, start
            tokens, tags, start = [], [], None
            continue
        if len(fields) < 2:
            raise DataError(path, f"expected a token and its tag on the line, got {line.strip()[:40]!r}", line=n)
        start = start or n
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        yield {"tokens": tokens, "tags": tags}, start


def _text_rows(handle: TextIO, path: str) -> Iterator[Row]:
    for n, raw in enumerate(handle, start=1):
        text = raw.rstrip("\r\n")
        if text.strip():
            yield {"text": text}, n


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[Table]:
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
        batches = source.iter_batches(batch_size=chunk_rows)
        first = next(batches, None)
    except Exception as e:  # pyarrow raises several unrelated types for a bad file
        raise DataError(str(path), f"not a readable Parquet file ({str(e).splitlines()[0]})") from None
    if first is None or source.metadata.num_rows == 0:
        raise DataError(str(path), "the file holds no rows")
    done = 0
    for batch in (first, *batches):
        yield Table(str(path), batch.to_pydict(), None, "parquet", done)
        done += batch.num_rows


def _hf_chunks(path: Path, chunk_rows: int) -> Iterator[Table]:
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:  # not a dataset folder, or a DatasetDict, or a version mismatch
        raise DataError(str(path), f"not a folder saved by datasets' save_to_disk ({str(e).splitlines()[0]})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(str(path), f"holds several splits ({', '.join(ds)}); pass the folder of one split")
    if len(ds) == 0:
        raise DataError(str(path), "the dataset holds no rows")
    for start in range(0, len(ds), chunk_rows):
        yield Table(str(path), ds[start : start + chunk_rows], None, "hf", start)


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


def reuse_column(table: Table, given: str | None, known: str | None) -> str | None:
    """The column to read a role from: the one given, else the training file's (known) when this table has it;
    None lets find_column's usual names decide.
    """
    return given or (known if known in table.columns else None)


def is_missing(value: Any) -> bool:
    """None, NaN and blank strings count as missing."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()
