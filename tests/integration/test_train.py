"""End to end on a tiny random BERT: training lowers the loss, the run folder is complete and loads anywhere."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import tunesmith

RUN_FILES = {
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "tunesmith.json",
    "metrics.jsonl",
    "eval.json",
}


def test_run_folder_has_its_files(tiny_run):
    names = {p.name for p in tiny_run.iterdir()}
    assert RUN_FILES <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names), "weights must be safetensors only"
    assert not list(tiny_run.parent.glob(".tiny.tmp-*")), "the staging folder was renamed away"


def test_tunesmith_json_records_the_run(tiny_run, tiny_data, tiny_model):
    info = json.loads((tiny_run / "tunesmith.json").read_text())
    assert info["task"] == "classification"
    assert info["labels"]["names"] == ["billing", "feedback", "technical"]  # sorted, stable
    assert info["config"]["train"]["epochs"] == 10 and info["config"]["train"]["lr"] == 1e-3
    assert info["pretrained"]["kind"] == "local" and info["pretrained"]["name"] == tiny_model
    train = info["data"]["train"]
    assert train["rows"] == 240 and len(train["sha256"]) == 64 and train["text_column"] == "text"
    assert info["data"]["eval"]["rows"] == 60 and info["data"]["eval_from"] == "eval_data"
    assert {"torch", "transformers", "accelerate"} <= set(info["versions"])
    config = json.loads((tiny_run / "config.json").read_text())
    assert config["id2label"] == {"0": "billing", "1": "feedback", "2": "technical"}


def test_loss_falls_and_metrics_are_logged(tiny_run):
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_macro_f1" in r]
    assert {"step", "epoch", "loss", "lr", "samples_per_s"} <= set(train[0])
    assert len(evals) == 10, "one evaluation per epoch"
    assert train[-1]["loss"] < 0.5 * train[0]["loss"]
    best = json.loads((tiny_run / "tunesmith.json").read_text())["best"]
    assert best["value"] == max(r["eval_macro_f1"] for r in evals)
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert saved["macro_f1"] == best["value"] and saved["n"] == 60
    assert saved["macro_f1"] > 0.9, "the keyword task is learnable by the tiny model"


def test_saved_model_predicts_the_same_after_reload_and_through_pipeline(tiny_run):
    texts = ["my invoice was charged twice", "login error after install", "i love the design", "the app"]
    first = tunesmith.load(tiny_run).predict_proba(texts)
    again = tunesmith.load(tiny_run).predict_proba(texts)
    assert np.array_equal(first, again)
    assert np.allclose(first.sum(1), 1, atol=1e-6)
    pipe = pipeline("text-classification", model=str(tiny_run), top_k=None)
    for row, out in zip(first, pipe(texts, truncation=True), strict=True):
        by_label = {d["label"]: d["score"] for d in out}
        ours = dict(zip(tunesmith.load(tiny_run).labels.names, row, strict=True))
        for label, p in ours.items():
            assert by_label[label] == pytest.approx(p, abs=1e-5)


def test_predict_records_are_in_input_order(tiny_run):
    predictor = tunesmith.load(tiny_run, batch_size=2)
    texts = ["short", "a much longer text about an invoice and a refund for my card payment", "error", "wish"]
    batched = predictor.predict(texts)
    one_by_one = [predictor.predict(t) for t in texts]
    assert [r["label"] for r in batched] == [r["label"] for r in one_by_one]
    for a, b in zip(batched, one_by_one, strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-5)
    top1 = predictor.predict(texts, top_k=1)
    assert all(len(r["scores"]) == 1 for r in top1)


def test_same_seed_gives_bit_identical_weights(tiny_model, tiny_data, tmp_path):
    def train(out):
        tunesmith.finetune(
            str(tiny_data["train_jsonl"]), tiny_model, str(out), epochs=1, batch_size=8, quiet=True, seed=7
        )
        return load_file(str(out / "model.safetensors"))

    a, b = train(tmp_path / "a"), train(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = tunesmith.finetune(
        str(tiny_data["train_jsonl"]), tiny_model, str(tmp_path / "c"), epochs=1, batch_size=8, quiet=True, seed=8
    )
    other = load_file(str(c.path / "model.safetensors"))
    assert not all(torch.equal(a[k], other[k]) for k in a), "another seed must give other weights"


def test_forward_equals_plain_transformers(tiny_model):
    from transformers import set_seed

    from tunesmith.data.labels import LabelSpace
    from tunesmith.model.pretrained import resolve
    from tunesmith.tasks import get

    labels = LabelSpace(("a", "b"))
    set_seed(3)
    ours = get("classification").new_model(resolve(tiny_model), labels).eval()
    set_seed(3)
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    batch = tok(["hello there", "a second, longer sentence"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(ours(**batch).logits, plain(**batch).logits)
    assert ours.config.id2label == {0: "a", 1: "b"}


def test_eval_split_is_stratified_and_early_stopping_stops(tiny_model, tiny_data, tmp_path):
    result = tunesmith.finetune(
        str(tiny_data["train_csv"]),
        tiny_model,
        str(tmp_path / "r"),
        epochs=6,
        batch_size=16,
        lr=1e-5,
        quiet=True,
        eval_split=0.25,
        every_steps=3,
        patience=1,
        metric="loss",
        warmup_ratio=0.0,
    )
    info = json.loads((result.path / "tunesmith.json").read_text())
    assert info["data"]["eval_from"] == "split"
    assert info["data"]["train"]["rows"] == 180 and info["data"]["eval"]["rows"] == 60
    assert result.metrics["per_class"]["billing"]["support"] == 20  # a quarter of each class
    evals = [json.loads(x) for x in (result.path / "metrics.jsonl").read_text().splitlines() if "eval_loss" in x]
    assert all(r["step"] % 3 == 0 for r in evals)
    # With a tiny lr the eval loss creeps; either it stops early or it improves every time.
    losses = [r["eval_loss"] for r in evals]
    assert result.stopped_early == any(b >= a for a, b in zip(losses, losses[1:], strict=False))


def test_bf16_trains_where_supported(tiny_model, tiny_data, tmp_path):
    from tunesmith.train.run import bf16_supported

    if not bf16_supported():
        with pytest.raises(tunesmith.ConfigError, match="bf16"):
            tunesmith.finetune(str(tiny_data["train_csv"]), tiny_model, str(tmp_path / "x"), precision="bf16")
        assert not (tmp_path / "x").exists()
        return
    result = tunesmith.finetune(
        str(tiny_data["train_csv"]), tiny_model, str(tmp_path / "b"), epochs=1, quiet=True, precision="bf16"
    )
    assert result.metrics["n"] == 24
    weights = load_file(str(result.path / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values()), "autocast: the weights stay fp32"


def test_bf16_unsupported_is_one_clear_error(tiny_model, tiny_data, tmp_path, monkeypatch):
    import tunesmith.train.run as run_module

    monkeypatch.setattr(run_module, "bf16_supported", lambda: False)
    with pytest.raises(tunesmith.ConfigError, match="no bf16 support"):
        tunesmith.finetune(str(tiny_data["train_csv"]), tiny_model, str(tmp_path / "x"), precision="bf16")
    assert not (tmp_path / "x").exists()


def test_tunesmith_json_is_a_config_that_reruns_the_run(cli, tiny_run, tmp_path):
    info = json.loads((tiny_run / "tunesmith.json").read_text())
    assert info["seed"] == info["config"]["train"]["seed"] == 42
    assert {"python", "torch", "transformers", "accelerate", "tokenizers", "safetensors", "numpy"} <= set(
        info["versions"]
    )
    assert isinstance(info["command"], list) and info["cwd"]
    assert info["git"] is None or len(info["git"]["commit"]) == 40
    code, _, err = cli("train", "--config", tiny_run / "tunesmith.json", "-o", tmp_path / "again", "-q")
    assert code == 0, err
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tiny_run / "model.safetensors").read_bytes()
