"""Generation data: column detection, Alpaca input, chat records, the task chosen from the columns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import write_rows
from tunesmith.config import DataConfig, RunConfig
from tunesmith.data.readers import read_table
from tunesmith.data.sft import conversations, load_sft
from tunesmith.errors import ConfigError, DataError
from tunesmith.tasks import detect_task


@pytest.mark.parametrize(
    ("row", "user", "reply"),
    [
        ({"prompt": "p", "response": "r"}, "p", "r"),
        ({"instruction": "do", "input": "this", "output": "done"}, "do\n\nthis", "done"),
        ({"instruction": "do", "input": "", "output": "done"}, "do", "done"),
        ({"question": "q?", "answer": "a"}, "q?", "a"),
        ({"input": "x", "output": "y"}, "x", "y"),
    ],
)
def test_usual_column_pairs(tmp_path, row, user, reply):
    table = read_table(write_rows(tmp_path / "d.jsonl", [row]))
    assert conversations(table, None, None).items == [
        [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
    ]


def test_columns_can_be_named(tmp_path):
    table = read_table(write_rows(tmp_path / "d.csv", [{"ask": "p", "say": "r", "prompt": "not this"}]))
    assert conversations(table, "ask", "say").items[0][1]["content"] == "r"
    with pytest.raises(DataError, match="no response column 'sya'; did you mean 'say'"):
        conversations(table, "ask", "sya")


def test_chat_records_and_sharegpt_roles(tmp_path):
    path = tmp_path / "chat.jsonl"
    conv = [{"role": "system", "content": "s"}, {"role": "human", "content": "u"}, {"role": "gpt", "content": "a"}]
    path.write_text(json.dumps({"messages": conv}) + "\n")
    assert [m["role"] for m in conversations(read_table(path), None, None).items[0]] == ["system", "user", "assistant"]


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ("just text", "expected a non-empty list"),
        ([{"role": "user"}], "message 1: expected an object with role and content"),
        ([{"role": "user", "content": 3}], "content must be text"),
        ([{"role": "user", "content": "only a question"}], "no assistant message"),
    ],
)
def test_bad_chat_records_name_the_row(tmp_path, messages, message):
    path = tmp_path / "chat.jsonl"
    good = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    path.write_text(json.dumps({"messages": good}) + "\n" + json.dumps({"messages": messages}) + "\n")
    with pytest.raises(DataError, match=message) as e:
        conversations(read_table(path), None, None)
    assert e.value.row == 2 and e.value.column == "messages"


def test_task_follows_the_columns(tmp_path):
    pairs = write_rows(tmp_path / "p.jsonl", [{"prompt": "p", "response": "r"}] * 3)
    labeled = write_rows(tmp_path / "l.jsonl", [{"text": "t", "label": "a"}] * 3)
    gen = detect_task(RunConfig().with_values({"train_data": str(pairs)}))
    assert (gen.task.type, gen.model.name, gen.model.max_length, gen.eval.metric) == (
        "generate",
        "smollm2",
        512,
        "loss",
    )
    cls = detect_task(RunConfig().with_values({"train_data": str(labeled)}))
    assert (cls.task.type, cls.model.name, cls.model.max_length, cls.eval.metric) == (
        "classification",
        "minilm",
        128,
        "macro_f1",
    )
    with pytest.raises(ConfigError, match="does not apply to generate"):
        detect_task(RunConfig().with_values({"train_data": str(pairs), "eval.metric": "macro_f1"}))


def test_split_holds_out_a_seeded_fraction(tmp_path):
    path = write_rows(tmp_path / "p.jsonl", [{"prompt": f"p{i}", "response": "r"} for i in range(50)])
    a, b = load_sft(DataConfig(str(path), eval_split=0.2), 3), load_sft(DataConfig(str(path), eval_split=0.2), 3)
    assert len(a.eval) == 10 and len(a.train) == 40 and a.eval.items == b.eval.items
    assert not {r for r in a.eval.rows} & {r for r in a.train.rows}


def test_gguf_paths_resolve_to_their_folder_and_file(tmp_path):
    from tunesmith.errors import ModelError
    from tunesmith.model.pretrained import resolve

    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    source = resolve(str(tmp_path / "m.gguf"))
    assert (source.location, source.gguf_file, source.kind) == (str(tmp_path), "m.gguf", "gguf")
    with pytest.raises(ModelError, match="no such GGUF file"):
        resolve(str(tmp_path / "missing.gguf"))
    smol = resolve("smollm2")
    assert smol.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf" and (Path(smol.location) / smol.gguf_file).is_file()
