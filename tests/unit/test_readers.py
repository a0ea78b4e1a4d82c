from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tunesmith.data.readers import TEXT_NAMES, find_column, read_table
from tunesmith.errors import DataError

SST2 = 'sentence\tlabel\nit \'s a " charming " journey . \t1\nunflinchingly bleak \t0\n'


def test_csv_with_bom_crlf_quotes_and_multiline_fields(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes('\ufefftext,label\r\n"hello, world",a\r\n"two\nlines",b\r\n'.encode())
    t = read_table(p)
    assert t.columns == {"text": ["hello, world", "two\nlines"], "label": ["a", "b"]}
    assert t.lines == [2, 3] and t.format == "csv"


def test_tsv_is_read_without_quote_processing(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_text(SST2)
    t = read_table(p)
    assert t.columns["sentence"][0] == 'it \'s a " charming " journey . '
    assert t.columns["label"] == ["1", "0"]


def test_jsonl_json_parquet_and_saved_dataset(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "cols.json").write_text(json.dumps({"text": ["a", "b"], "label": [1, 0]}))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    for name in ("a.jsonl", "a.json", "cols.json", "a.parquet", "saved"):
        t = read_table(tmp_path / name)
        assert t.columns["text"] == ["a", "b"] and t.columns["label"] == [1, 0], name


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("e.csv", b"", "the file is empty"),
        ("h.csv", b"text,label\n", "has a header but no rows"),
        ("d.csv", b"text,text\na,b\n", "names column 'text' twice"),
        ("r.csv", b"text,label\na,b\nc\n", "line 3 (row 2): expected 2 fields"),
        ("q.csv", b'text,label\n"a,b\n', "q.csv"),
        ("j.jsonl", b'{"text": "a"}\n{"text": \n', "line 2 (row 2): not valid JSON"),
        ("n.jsonl", b'{"text": "a"}\n[1, 2]\n', "line 2 (row 2): expected a JSON object"),
        ("s.json", b'"just a string"', "expected a JSON list of records"),
        ("b.csv", b"text,label\n\xff\xfe,a\n", "line 2: byte 0xff is not valid utf-8"),
        ("p.parquet", b"PAR1 not really", "not a readable Parquet file"),
        ("x.docx", b"whatever", "unknown format '.docx'"),
    ],
)
def test_malformed_files_are_one_data_error(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError) as err:
        read_table(tmp_path / name)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_folder_that_is_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not a folder saved by datasets"):
        read_table(tmp_path)


def test_column_detection_by_usual_names_and_suggestions(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("ID,Body,Category\n1,hi,x\n")
    t = read_table(p)
    assert find_column(t, None, TEXT_NAMES, "text", "--text-column") == "Body"
    with pytest.raises(DataError, match="did you mean 'Body'"):
        find_column(t, "body_text", TEXT_NAMES, "text", "--text-column")
    p.write_text("id,txt\n1,hi\n")
    with pytest.raises(DataError, match="no text column found.*--text-column"):
        find_column(read_table(p), None, TEXT_NAMES, "text", "--text-column")


def test_encoding_option(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes("text,label\ncafé,a\n".encode("cp1252"))
    assert read_table(p, encoding="cp1252").columns["text"] == ["café"]
    with pytest.raises(DataError, match="unknown encoding 'klingon'"):
        read_table(p, encoding="klingon")


def test_chunks_keep_row_and_line_numbers(tmp_path):
    from tunesmith.data.readers import iter_tables

    p = tmp_path / "a.csv"
    p.write_text("text,label\n" + "".join(f'"row\n{i}",x\n' for i in range(5)) + ",x\n")
    chunks = []
    with pytest.raises(DataError) as err:
        for chunk in iter_tables(p, chunk_rows=2):
            chunks.append(chunk)
            from tunesmith.data.validate import examples

            examples(chunk, None, None)
    assert [c.first_row for c in chunks] == [0, 2, 4]
    assert chunks[1].lines == [6, 8] and chunks[1].columns["text"] == ["row\n2", "row\n3"]
    assert "line 12 (row 6), column 'text': empty text" in str(err.value)
    whole = read_table(p)
    assert len(whole) == 6 and whole.lines == [2, 4, 6, 8, 10, 12]


def test_jsonl_columns_appearing_late_are_filled(tmp_path):
    from tunesmith.data.readers import iter_tables

    p = tmp_path / "a.jsonl"
    p.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c", "label": 1}\n')
    assert read_table(p).columns == {"text": ["a", "b", "c"], "label": [None, None, 1]}
    assert [c.columns for c in iter_tables(p, chunk_rows=2)][1] == {"text": ["c"], "label": [1]}
