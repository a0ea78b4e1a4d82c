"""Every task, table-driven: detection, training, save -> load -> predict, pipeline and ONNX parity, strategies.

Adding a task is one row of CASES (and of STRATEGY_ROWS' expectations, which follow from the Task's values).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tunesmith
from conftest import (
    make_multilabel_rows,
    make_pair_rows,
    make_pairs,
    make_regression_rows,
    make_rows,
    make_tagged_rows,
    write_rows,
)
from tunesmith.config import StrategyConfig
from tunesmith.model.heads import head_parameter_names
from tunesmith.model.pretrained import resolve
from tunesmith.model.strategies import apply_strategy
from tunesmith.tasks import NAMES, get


@dataclass(frozen=True)
class Case:
    task: str
    model: str
    """The fixture giving the pretrained folder."""
    make: Any
    ext: str
    options: dict[str, Any]
    sample: list[Any]
    """Inputs for predict."""
    rows: int = 120


CASES = {
    "classification": Case("classification", "tiny_model", make_rows, ".csv", {}, ["my invoice", "login error"], 240),
    "pairs": Case(
        "classification", "tiny_model", make_pair_rows, ".csv", {}, [("my invoice", "refund please"), ("a", "b")]
    ),
    "multilabel": Case("multilabel", "tiny_model", make_multilabel_rows, ".jsonl", {}, ["invoice crash", "the app"]),
    "regression": Case("regression", "tiny_model", make_regression_rows, ".csv", {}, ["refund refund", "the app"]),
    "tagging": Case("tagging", "tiny_model", make_tagged_rows, ".jsonl", {}, ["my invoice refund today", "login"]),
    "generate": Case("generate", "tiny_llama", make_pairs, ".jsonl", {"max_length": 96}, ["my invoice"]),
}
SEQUENCE = [name for name, case in CASES.items() if case.task not in ("generate", "tagging")]
ENCODERS = [name for name, case in CASES.items() if case.task != "generate"]


def test_every_registered_task_has_a_case():
    assert {c.task for c in CASES.values()} == set(NAMES)


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """One small trained run per case, with its training and evaluation files."""
    made = {}
    for name, case in CASES.items():
        folder = tmp_path_factory.mktemp(name)
        train = write_rows(folder / f"train{case.ext}", case.make(case.rows, 1))
        held = write_rows(folder / f"eval{case.ext}", case.make(40, 2))
        model = request.getfixturevalue(case.model)
        options = {"epochs": 10, "batch_size": 16, "lr": 1e-3, "quiet": True, **case.options}
        if case.task == "generate":
            options["generate_samples"] = 2
            options["max_new_tokens"] = 8
        tunesmith.finetune(str(train), model, str(folder / "run"), eval_data=str(held), **options)
        made[name] = {"run": folder / "run", "train": train, "eval": held}
    return made


LEARNED = {"classification": ("macro_f1", 0.9), "multilabel": ("micro_f1", 0.8), "regression": ("pearson", 0.8),
           "tagging": ("micro_f1", 0.8)}  # fmt: skip


@pytest.mark.parametrize("name", LEARNED)
def test_the_tiny_model_learns_each_keyword_task(name, runs):
    metric, floor = LEARNED[name]
    value = json.loads((runs[name]["run"] / "eval.json").read_text())[metric]
    assert value > floor, f"{name}: {metric} {value:.3f}"


@pytest.mark.parametrize("name", CASES)
def test_the_task_is_detected_from_the_file_and_check_says_why(name, runs, cli):
    case = CASES[name]
    info = json.loads((runs[name]["run"] / "tunesmith.json").read_text())
    assert info["task"] == case.task and info["task_chosen"].startswith("detected:")
    code, out, err = cli("check", str(runs[name]["train"]))
    assert code == 0, err
    assert out.startswith(f"task: {case.task} (detected: ")


@pytest.mark.parametrize("name", SEQUENCE)
def test_saved_run_scores_as_in_process_and_predicts_like_transformers(name, runs):
    """eval.json is scored in the training process on the saved weights; the reloaded folder must give the same
    metrics on the same file, and plain transformers (its pipeline) the same outputs as the predictor."""
    from transformers import pipeline

    run, held = runs[name]["run"], runs[name]["eval"]
    saved = json.loads((run / "eval.json").read_text())
    again = tunesmith.evaluate(run, held)
    numbers = {k: v for k, v in saved.items() if isinstance(v, float) and k != "loss"}
    assert numbers, "metrics to compare"
    for key, value in numbers.items():
        assert again[key] == pytest.approx(value, abs=1e-5), key

    predictor = tunesmith.load(run)
    case = CASES[name]
    records = predictor.predict(case.sample)
    assert len(records) == len(case.sample)
    inputs = [{"text": s[0], "text_pair": s[1]} if isinstance(s, tuple) else s for s in case.sample]
    pipe = pipeline("text-classification", model=str(run), top_k=None)
    for rec, out in zip(records, pipe(inputs, truncation=True), strict=True):
        theirs = {d["label"]: d["score"] for d in out}
        ours = rec["scores"] if "scores" in rec else {"value": rec["value"]}
        assert theirs.keys() == ours.keys()
        for label, value in ours.items():
            assert theirs[label] == pytest.approx(value, abs=1e-5)


def test_multilabel_thresholds_travel_in_config_json_and_predictions_use_them(runs):
    run = runs["multilabel"]["run"]
    info = json.loads((run / "tunesmith.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["thresholds"] == info["thresholds"] == json.loads((run / "eval.json").read_text())["thresholds"]
    predictor = tunesmith.load(run)
    for rec in predictor.predict(["invoice crash design", "the app", "refund please"]):
        assert rec["labels"] == sorted(
            (n for n, p in rec["scores"].items() if p >= info["thresholds"][n]), key=lambda n: -rec["scores"][n]
        )
    metrics = tunesmith.evaluate(run, runs["multilabel"]["eval"])
    assert metrics["thresholds_from"] == "saved" and "micro_f1" in metrics["at_0.5"]


def test_regression_predicts_in_the_labels_units(runs):
    run = runs["regression"]["run"]
    scale = json.loads((run / "tunesmith.json").read_text())["target_scale"]
    assert 2.0 < scale["mean"] < 3.0 and scale["std"] > 1.0, "the labels' 0-5 range, not standardised"
    values = [r["value"] for r in tunesmith.load(run).predict(["the app", "refund invoice charged payment price"])]
    assert all(-2.0 < v < 8.0 for v in values)
    metrics = tunesmith.evaluate(run, runs["regression"]["eval"])
    assert metrics["rmse"] == pytest.approx(metrics["mse"] ** 0.5) and -1 <= metrics["spearman"] <= 1


@pytest.mark.parametrize("name", CASES)
def test_cli_predict_and_evaluate_work_for_every_task(name, runs, cli, tmp_path):
    run, held = runs[name]["run"], runs[name]["eval"]
    options = ["--max-new-tokens", "4"] if CASES[name].task == "generate" else []
    out_file = tmp_path / "out.jsonl"
    code, _, err = cli("predict", str(run), str(held), "-o", str(out_file), *options)
    assert code == 0, err
    assert len(out_file.read_text().splitlines()) == 40
    code, out, err = cli("evaluate", str(run), str(held), *options)
    assert code == 0, err
    assert "40" in out


def outputs(predictor, sample) -> np.ndarray:
    """What a predictor's numbers are: a sequence model's logits, a tagger's per-word tag probabilities."""
    if hasattr(predictor, "logits"):
        return predictor.logits(sample).numpy()
    return np.concatenate([np.asarray(scores) for _, scores in predictor.tag([s.split() for s in sample])])


@pytest.mark.parametrize("name", ENCODERS)
def test_onnx_export_predicts_as_torch(name, runs):
    pytest.importorskip("onnxruntime")
    from tunesmith.export import export_onnx

    run = runs[name]["run"]
    export_onnx(run)
    sample = CASES[name].sample * 3
    expected = outputs(tunesmith.load(run), sample)
    np.testing.assert_allclose(outputs(tunesmith.load(run, backend="onnx"), sample), expected, atol=1e-5)


def test_tagging_spans_match_the_token_classification_pipeline(runs):
    """The run folder works in transformers' pipeline with aggregation "first", with the same entities."""
    from transformers import pipeline

    run = runs["tagging"]["run"]
    texts = ["my invoice refund was charged twice", "login error, then a crash and a timeout!", "the app"]
    ours = tunesmith.load(run).predict(texts)
    pipe = pipeline("token-classification", model=str(run), aggregation_strategy="first")
    for rec, theirs in zip(ours, pipe(texts), strict=True):
        assert [(e["type"], e["start"], e["end"]) for e in rec["entities"]] == [
            (e["entity_group"], e["start"], e["end"]) for e in theirs
        ]
    assert any(rec["entities"] for rec in ours), "the tiny model learns the keyword entities"
    words = tunesmith.load(run).predict([["my", "invoice", "refund", "today"]])[0]
    raw = tunesmith.load(run).predict("my invoice refund today")
    assert len(words["tags"]) == 4
    assert [(e["type"], e["text"]) for e in words["entities"]] == [(e["type"], e["text"]) for e in raw["entities"]]


# task x strategy: which parameters get gradients (head: the task's new head; lora: adapters, plus a new head)
STRATEGY_ROWS = [(name, s) for name in CASES for s in ("full", "head", "lora")]


@pytest.mark.parametrize(("name", "strategy"), STRATEGY_ROWS, ids=[f"{n}-{s}" for n, s in STRATEGY_ROWS])
def test_exactly_the_strategy_parameters_get_gradients(name, strategy, request):
    from tunesmith.data.labels import LabelSpace

    case = CASES[name]
    task = get(case.task)
    labels = {"classification": LabelSpace(("a", "b", "c")), "multilabel": LabelSpace(("a", "b", "c")),
              "tagging": LabelSpace(("O", "B-X", "I-X"))}.get(case.task)  # fmt: skip
    torch.manual_seed(0)
    model = task.new_model(resolve(request.getfixturevalue(case.model)), labels)
    heads = head_parameter_names(model)
    if strategy == "head" and not task.new_head:
        assert not heads, "a causal LM's head is its (tied) embeddings: the head strategy has nothing to train"
        return
    model = apply_strategy(model, StrategyConfig(name=strategy), task.peft_task_type, task.new_head)
    ids = torch.randint(5, 500, (2, 7))
    model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.float().square().mean().backward()
    for param_name, p in model.named_parameters():
        if strategy == "full":
            expect = True
        elif strategy == "head":
            expect = param_name in heads
        else:
            expect = ".lora_" in param_name or (task.new_head and ".modules_to_save." in param_name)
        assert (p.grad is not None) == expect, f"{param_name}: grad {p.grad is not None}, expected {expect}"
