"""Bad data at scale: hundreds of malformed or odd files, each ending in a clean load or one error line.

Every generated file goes through `tunesmith train` with a model folder that does not exist: data
is read and validated first, so a file that loads fails only later, on the model, with its own
one-line error. Either way: exit code 2, one line, no traceback, and no folder left behind.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tunesmith.cli import main

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
CELL = st.one_of(
    TEXT,
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.just(""),
    st.just("   "),
    st.just("x" * 200_000),
)
NAMES = st.sampled_from(["text", "label", "sentence", "category", "body", "id", "Text", "LABEL", "", "text "])


@st.composite
def delimited(draw) -> tuple[str, bytes]:
    """CSV/TSV with the usual columns, then damaged in one of many ways."""
    ext = draw(st.sampled_from([".csv", ".tsv"]))
    header = draw(st.lists(NAMES, min_size=1, max_size=4))
    sep = draw(st.sampled_from([",", "\t", ";", "|"]))  # the wrong one, sometimes
    rows = draw(
        st.lists(
            st.lists(CELL.map(lambda v: "" if v is None else str(v)), min_size=len(header), max_size=len(header)),
            max_size=6,
        )
    )
    lines = [sep.join(header)] + [sep.join(r) for r in rows]
    damage = draw(st.sampled_from(["none", "bom", "crlf", "quote", "ragged", "empty", "header", "nul", "latin1"]))
    text = ("\r\n" if damage == "crlf" else "\n").join(lines)
    if damage == "bom":
        text = "\ufeff" + text
    if damage == "quote":
        text = text.replace(sep, sep + '"', 1)
    if damage == "ragged" and rows:
        text += "\n" + sep.join(["x"] * (len(header) + 2))
    if damage == "empty":
        text = ""
    if damage == "header":
        text = lines[0]
    if damage == "nul":
        text = text.replace(sep, "\0", 1)
    data = text.encode("latin-1", "replace") if damage == "latin1" else text.encode("utf-8")
    return ext, data


@st.composite
def json_like(draw) -> tuple[str, bytes]:
    """JSONL or JSON records with odd values: nested objects, lists, nulls, mixed types."""
    value = st.recursive(
        CELL.filter(lambda v: not (isinstance(v, float) and v != v)),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
        max_leaves=5,
    )
    records = draw(st.lists(st.one_of(st.dictionaries(NAMES, value, max_size=4), value), max_size=6))
    if draw(st.booleans()):
        body = "\n".join(json.dumps(r, allow_nan=True) for r in records)
        if draw(st.booleans()):
            body += "\n{broken"
        return ".jsonl", body.encode()
    return ".json", json.dumps(records if draw(st.booleans()) else {"data": records}, allow_nan=True).encode()


@st.composite
def parquet(draw) -> tuple[str, bytes]:
    """Parquet with an unexpected schema: odd names, numeric text, list labels, nulls."""
    n = draw(st.integers(0, 5))
    columns = {}
    for name in draw(st.lists(NAMES, min_size=1, max_size=3, unique=True)):
        kind = draw(st.sampled_from(["str", "int", "float", "list", "struct"]))
        make = {
            "str": TEXT,
            "int": st.integers(-3, 3),
            "float": st.floats(allow_nan=True),
            "list": st.lists(st.integers(0, 2), max_size=2),
            "struct": st.fixed_dictionaries({"a": st.integers(-9, 9)}),
        }
        columns[name] = draw(st.lists(st.one_of(st.none(), make[kind]), min_size=n, max_size=n))
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink)
    return ".parquet", sink.getvalue()


@st.composite
def wellformed(draw) -> tuple[str, bytes]:
    """Properly written files with odd content (quotes, commas, newlines, any script): these should load."""
    import csv

    texts = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=30).filter(str.strip)
    rows = draw(st.lists(st.tuples(texts, st.sampled_from(["a", "b", "7", "Ünï cødé"])), min_size=2, max_size=8))
    ext = draw(st.sampled_from([".csv", ".tsv", ".jsonl"]))
    if ext == ".jsonl":
        return ext, "".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows).encode()
    sink = io.StringIO()
    writer = csv.writer(
        sink,
        delimiter="," if ext == ".csv" else "\t",
        quoting=csv.QUOTE_MINIMAL if ext == ".csv" else csv.QUOTE_NONE,
        escapechar="\\",
    )
    writer.writerow(["text", "label"])
    writer.writerows((t.replace("\t", " ").replace("\n", " ") if ext == ".tsv" else t, lab) for t, lab in rows)
    return ext, draw(st.sampled_from(["", "\ufeff"])).encode() + sink.getvalue().encode()


FILES = st.one_of(
    wellformed(),
    delimited(),
    json_like(),
    parquet(),
    st.tuples(
        st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt", ".xml"]), st.binary(max_size=300)
    ),
)


def run_cli(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    argv = sys.argv
    sys.argv = ["tunesmith", *args]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = argv
    return code, err.getvalue()


@settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
@given(file=FILES)
def test_every_odd_file_is_a_clean_load_or_one_line(file, tmp_path_factory):
    ext, data = file
    folder = tmp_path_factory.mktemp("fuzz")
    path = folder / f"data{ext}"
    path.write_bytes(data)
    code, err = run_cli("train", str(path), "--model", str(folder / "no-model"), "-o", str(folder / "run"), "-q")
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    loaded = "no-model: no such model folder" in err
    event("loaded" if loaded else "data error: " + err.split(": ")[-1][:30])  # see --hypothesis-show-statistics
    assert loaded or str(path) in err, f"a data error names the file: {err}"
    assert sorted(p.name for p in folder.iterdir()) == [path.name], "no run folder left behind"


def test_odd_but_valid_files_load(tmp_path):
    """The same code path accepts what is merely unusual: BOM, CRLF, one row per class, huge fields."""
    cases = {
        "bom.csv": "\ufefftext,label\r\nhello,a\r\nworld,b\r\n".encode(),
        "huge.csv": ("text,label\n" + "y" * 300_000 + ",a\nshort,b\n").encode(),
        "mixed.jsonl": b'{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n{"text": "c", "label": 2}\n',
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        code, err = run_cli("train", str(path), "--model", str(tmp_path / "none"), "-o", str(tmp_path / "r"), "-q")
        assert code == 2 and "no such model folder" in err, (name, err)
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == sorted(cases)
