"""The commands of the README, and every bad input ending in one line, exit code 2, and no run folder."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_rows, write_rows


def test_train_with_config_and_set_then_evaluate_and_predict(cli, tiny_model, tiny_data, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  name: {tiny_model}\ntrain:\n  epochs: 1\n  lr: 1.0e-3\n")
    out = tmp_path / "run"
    code, _, err = cli(
        "train",
        tiny_data["train_csv"],
        "--config",
        config,
        "--set",
        "train.lr=3e-3",
        "--set",
        "train.epochs=2",
        "--batch-size",
        "32",
        "--seed",
        "5",
        "--output",
        out,
        "--quiet",
    )
    assert code == 0, err
    saved = json.loads((out / "tunesmith.json").read_text())["config"]
    assert saved["train"]["lr"] == 3e-3 and saved["train"]["epochs"] == 2  # --set wins over the file
    assert saved["train"]["batch_size"] == 32 and saved["train"]["seed"] == 5 and saved["quiet"] is True
    assert err == "", "--quiet prints nothing on success"

    code, stdout, _ = cli("evaluate", out, tiny_data["test_csv"], "-o", tmp_path / "m.json")
    assert code == 0
    assert "macro-F1" in stdout and "confusion matrix" in stdout
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 60

    code, _, err = cli("predict", out, tiny_data["test_csv"], "-o", tmp_path / "p.csv")
    assert code == 0 and "wrote 60 predictions" in err
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 60 and rows[0].keys() >= {"text", "label", "score", "p(billing)", "p(technical)"}
    texts = [r["text"] for r in csv.DictReader(tiny_data["test_csv"].open())]
    assert [r["text"] for r in rows] == texts, "output in input order"

    code, _, _ = cli("predict", out, tiny_data["test_jsonl"], "-o", tmp_path / "p.jsonl", "--top-k", "2")
    recs = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert code == 0 and len(recs) == 60 and all(len(r["scores"]) == 2 for r in recs)

    code, stdout, _ = cli("predict", out, "-", stdin="I was charged twice for May\nthe app crashes on login\n")
    lines = [json.loads(x) for x in stdout.splitlines()]
    assert code == 0 and [x["text"] for x in lines] == ["I was charged twice for May", "the app crashes on login"]
    assert all(x["label"] in {"billing", "feedback", "technical"} for x in lines)


def test_existing_output_is_refused_unless_overwrite(cli, tiny_run, tiny_model, tiny_data):
    before = (tiny_run / "model.safetensors").stat().st_mtime_ns
    code, _, err = cli("train", tiny_data["train_csv"], "--model", tiny_model, "-o", tiny_run, "-q")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (tiny_run / "model.safetensors").stat().st_mtime_ns == before


def test_overwrite_replaces_a_run_folder(cli, tiny_model, tiny_data, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    code, _, err = cli(
        "train", tiny_data["train_csv"], "--model", tiny_model, "-o", out, "--overwrite", "--epochs", "1", "-q"
    )
    assert code == 0, err
    assert not (out / "stale.txt").exists() and (out / "model.safetensors").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["r"], "no staging or backup folder left behind"


def test_info_prints_architecture_and_counts(cli, tiny_model):
    code, out, _ = cli("info", tiny_model)
    assert code == 0
    assert "BertModel" in out and "trainable" in out and "embeddings" in out and "BertTokenizer" in out


def test_demo_data_is_written(cli, tmp_path):
    code, _, _ = cli("demo-data", tmp_path)
    assert code == 0
    train = [json.loads(x) for x in (tmp_path / "train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (tmp_path / "test.jsonl").read_text().splitlines()]
    labels = {"billing inquiry", "technical support", "product feedback"}
    assert len(train) + len(test) >= 600 and len(test) >= 150
    assert {r["label"] for r in train} == labels == {r["label"] for r in test}
    assert not {r["text"] for r in train} & {r["text"] for r in test}, "no test email is also in training"
    words = sorted(len(r["text"].split()) for r in train + test)
    assert words[0] < 15 and words[-1] > 120, "from one line to several paragraphs"
    assert len((tmp_path / "new_emails.txt").read_text().splitlines()) == 3


def _bad_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(name, extra CLI args, text the one-line error must contain)."""
    good = write_rows(tmp / "good.csv", make_rows(30))
    (tmp / "notes.xlsx").write_text("x")
    write_rows(tmp / "typo.csv", [{"txet": r["text"], "label": r["label"]} for r in make_rows(6)])
    write_rows(tmp / "blank.csv", [*make_rows(4), {"text": "   ", "label": "billing"}])
    write_rows(tmp / "nolabel.csv", [*make_rows(4), {"text": "hello", "label": ""}])
    write_rows(tmp / "one.csv", [{"text": f"t {i}", "label": "billing"} for i in range(5)])
    write_rows(tmp / "unseen.csv", [{"text": "a new thing", "label": "legal"}])
    (tmp / "latin.csv").write_bytes("text,label\ncafé bill,billing\nok,technical\n".encode("latin-1"))
    (tmp / "ragged.csv").write_text("text,label\nfine,billing\ntoo,many,fields\n")
    (tmp / "quote.csv").write_text('text,label\n"unclosed quote,billing\nok,technical\n')
    (tmp / "notamodel").mkdir()
    g = str(good)
    return [
        ("missing file", [str(tmp / "nope.csv")], "nope.csv: no such file"),
        ("unknown format", [str(tmp / "notes.xlsx")], "unknown format '.xlsx'"),
        ("misspelled column", [str(tmp / "typo.csv")], "did you mean 'txet'"),
        ("given column absent", [g, "--text-column", "txt"], "no text column 'txt'; did you mean 'text'"),
        ("empty text", [str(tmp / "blank.csv")], "line 6 (row 5), column 'text': empty text"),
        ("missing label", [str(tmp / "nolabel.csv")], "line 6 (row 5), column 'label': missing label"),
        ("one class", [str(tmp / "one.csv")], "needs at least two"),
        (
            "unseen eval label",
            [g, "--eval-data", str(tmp / "unseen.csv")],
            "unseen.csv, line 2 (row 1), column 'label'",
        ),
        ("not utf-8", [str(tmp / "latin.csv")], "line 2: byte 0xe9 is not valid utf-8; pass --encoding"),
        ("ragged row", [str(tmp / "ragged.csv")], "line 3 (row 2): expected 2 fields"),
        ("unbalanced quote", [str(tmp / "quote.csv")], "quote.csv"),
        ("unknown --set key", [g, "--set", "train.lrr=1"], "unknown key 'train.lrr'; did you mean 'lr'"),
        ("bad --set value", [g, "--set", "train.epochs=many"], "epochs: expected int, got 'many'"),
        ("bad value range", [g, "--set", "train.lr=-1"], "train.lr must be positive"),
        ("not a model folder", [g, "--model", str(tmp / "notamodel")], "not a transformers model folder"),
        (
            "offline hub id",
            [g, "--model", "some-org/some-model"],
            "some-org/some-model: could not load from the Hugging Face hub",
        ),
        ("unknown label in --labels", [g, "--labels", "billing,technical"], "label 'feedback' is not in --labels"),
    ]


def test_bad_input_is_one_line_exit_2_and_no_output(cli, tmp_path, tiny_model):
    out = tmp_path / "out"
    for name, args, expected in _bad_cases(tmp_path):
        model = [] if "--model" in args else ["--model", tiny_model]
        code, stdout, err = cli("train", *args, *model, "-o", out, "-q")
        assert code == 2, f"{name}: exit {code}\n{err}"
        assert len(err.strip().splitlines()) == 1, f"{name}: not one line:\n{err}"
        assert err.startswith("error: ") and expected in err, f"{name}: {err}"
        assert "Traceback" not in err
        assert not out.exists() and not list(tmp_path.glob(".out.*")), f"{name}: left an output folder"


def test_non_utf8_file_trains_with_encoding(cli, tmp_path, tiny_model):
    rows = "text,label\n" + "".join(f"café {i} invoice,billing\nerror {i} crash,technical\n" for i in range(10))
    (tmp_path / "latin.csv").write_bytes(rows.encode("latin-1"))
    code, _, err = cli(
        "train",
        tmp_path / "latin.csv",
        "--encoding",
        "latin-1",
        "--model",
        tiny_model,
        "-o",
        tmp_path / "r",
        "--epochs",
        "1",
        "-q",
    )
    assert code == 0, err


def test_bad_run_folder_and_bad_predict_input(cli, tmp_path, tiny_run):
    code, _, err = cli("predict", tmp_path, "-")
    assert code == 2 and "not a tunesmith run folder" in err
    code, _, err = cli("evaluate", tiny_run, tmp_path / "missing.csv")
    assert code == 2 and "missing.csv: no such file" in err
    code, _, err = cli("predict", tiny_run, "-", "--top-k", "9", stdin="hello\n")
    assert code == 2 and "--top-k must be between 1 and 3" in err


@pytest.mark.parametrize("entry", [["-m", "tunesmith"], ["-c", "from tunesmith.cli import main; main()"]])
def test_entry_points_in_a_subprocess(entry, tiny_run):
    done = subprocess.run(
        [sys.executable, *entry, "predict", str(tiny_run), "-"],
        input="my invoice is wrong\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["label"] in {"billing", "feedback", "technical"}
    bad = subprocess.run([sys.executable, *entry, "train", "nope.csv"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: nope.csv: no such file or folder"


def test_evaluate_and_predict_stream_in_chunks_with_the_same_results(cli, tiny_run, tiny_data, tmp_path, monkeypatch):
    import tunesmith
    import tunesmith.data.readers as readers

    whole = tunesmith.evaluate(tiny_run, tiny_data["test_csv"])
    assert cli("predict", tiny_run, tiny_data["test_csv"], "-o", tmp_path / "whole.csv")[0] == 0
    monkeypatch.setattr(readers, "CHUNK_ROWS", 7)  # 60 rows -> 9 chunks
    chunked = tunesmith.evaluate(tiny_run, tiny_data["test_csv"])
    assert chunked["confusion_matrix"] == whole["confusion_matrix"]
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-6)
    assert cli("predict", tiny_run, tiny_data["test_csv"], "-o", tmp_path / "chunked.csv")[0] == 0
    a = list(csv.DictReader((tmp_path / "whole.csv").open()))
    b = list(csv.DictReader((tmp_path / "chunked.csv").open()))
    assert [(r["text"], r["label"]) for r in a] == [(r["text"], r["label"]) for r in b]
    # other batch shapes change float rounding in the last digits, nothing more
    assert all(float(x["score"]) == pytest.approx(float(y["score"]), abs=1e-5) for x, y in zip(a, b, strict=True))
    assert not list(tmp_path.glob(".*.tmp"))
