"""The task units' own pieces: detection rules, label cells, tuned thresholds, the regression scale, the registry."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tunesmith.config import METRICS, DataConfig, RunConfig
from tunesmith.data.readers import Table
from tunesmith.data.validate import examples
from tunesmith.errors import DataError
from tunesmith.tasks import NAMES, TASKS, get
from tunesmith.tasks.multilabel import label_set, multilabel_metrics, tune_thresholds
from tunesmith.tasks.regress import Scale, fold_scale

SRC = Path(__file__).resolve().parents[2] / "src" / "tunesmith"


def table(**columns) -> Table:
    return Table("f.jsonl", {k: list(v) for k, v in columns.items()})


def detected(t: Table, **data) -> str:
    return next(name for name in NAMES if get(name).detect(t, DataConfig(**data)))


def test_detection_follows_the_columns_and_the_label_values():
    texts = [f"t{i}" for i in range(8)]
    assert detected(table(text=texts, label=["a", "b"] * 4)) == "classification"
    assert detected(table(text=texts, label=[1, 2, 3, 4] * 2)) == "classification", "few integers are classes"
    assert detected(table(text=texts, score=[0.5, 1.25, 3.0, 4.8] * 2)) == "regression"
    assert detected(table(text=texts, label=["0.5", "2", "3.75", "1"] * 2)) == "regression"
    many = table(text=[f"t{i}" for i in range(150)], label=list(range(150)))
    assert detected(many) == "regression", "more distinct integers than a classifier should have"
    assert detected(table(text=texts, labels=[["a"], [], ["a", "b"], ["b"]] * 2)) == "multilabel"
    assert detected(table(text=texts, label=["a|b", "a"] * 4), label_separator="|") == "multilabel"
    assert detected(table(prompt=texts, response=texts)) == "generate"
    assert detected(table(question=texts, answer=texts, label=["a", "b"] * 4)) == "classification", "a labeled pair"


def test_label_sets_read_lists_json_separators_and_empty_cells():
    parse = label_set("|")
    t = table(labels=[["b", "a", "a"], '["x", "y"]', "p | q", "", None, np.array(["z"])])
    assert [parse(t, i, v, "labels") for i, v in enumerate(t.columns["labels"])] == [
        ["a", "b"], ["x", "y"], ["p", "q"], [], [], ["z"]
    ]  # fmt: skip
    with pytest.raises(DataError, match=r"row 1.*not a JSON list|not a JSON list.*row 1"):
        parse(table(labels=["[oops"]), 0, "[oops", "labels")


def test_sentence_pairs_are_found_by_their_usual_names_and_kept_apart():
    ex = examples(table(sentence1=["a", "b"], sentence2=["c", "d"], label=["x", "y"]), None, None)
    assert (ex.text_column, ex.pair_column, ex.pairs) == ("sentence1", "sentence2", ["c", "d"])
    plain = examples(table(text=["a"], sentence2=["c"], label=["x"]), None, None)
    assert plain.pairs is None


def test_thresholds_tuned_on_a_planted_set_recover_the_planted_thresholds():
    rng = np.random.default_rng(0)
    planted = np.array([0.2, 0.5, 0.8, 0.35])
    probs = rng.uniform(size=(2000, 4))
    gold = (probs >= planted).astype(float)
    tuned = tune_thresholds(probs, gold)
    np.testing.assert_allclose(tuned, planted, atol=2e-3)
    assert multilabel_metrics(probs, gold, tuned, ("a", "b", "c", "d"))["macro_f1"] == 1.0
    at_half = multilabel_metrics(probs, gold, np.full(4, 0.5), ("a", "b", "c", "d"))["macro_f1"]
    assert at_half < 1.0, "0.5 is right only for the planted 0.5"
    no_positives = tune_thresholds(probs[:, :1], np.zeros((2000, 1)))
    assert no_positives[0] == 0.5, "nothing to tune on"
    rare = gold.copy()
    rare[:, 2:] = 0
    rare[:4, 2:] = 1  # four positives each: too few to trust a threshold of their own
    pooled = tune_thresholds(probs, rare)
    np.testing.assert_allclose(pooled[:2], planted[:2], atol=2e-3)
    assert pooled[2] == pooled[3] and 0 < pooled[2] < 1, "the rare labels share one pooled threshold"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=40))
def test_the_regression_scale_round_trips(values):
    scale = Scale.of(values)
    back = [v * scale.std + scale.mean for v in scale.standardise(values)]
    np.testing.assert_allclose(back, values, rtol=1e-9, atol=1e-6)
    assert scale.std > 0


def test_folding_the_scale_makes_the_layer_output_the_labels_units(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    layer = torch.nn.Linear(5, 1)
    save_file({"head.weight": layer.weight.detach().clone(), "head.bias": layer.bias.detach().clone()},
              str(tmp_path / "m.safetensors"))  # fmt: skip
    scale = Scale(mean=12.5, std=3.0)
    fold_scale(tmp_path / "m.safetensors", "head", scale)
    folded = torch.nn.Linear(5, 1)
    tensors = load_file(str(tmp_path / "m.safetensors"))
    folded.load_state_dict({"weight": tensors["head.weight"], "bias": tensors["head.bias"]})
    x = torch.randn(7, 5)
    torch.testing.assert_close(folded(x), layer(x) * 3.0 + 12.5)


def test_every_registered_task_is_whole():
    for name in NAMES:
        task = get(name)
        assert task.name == name
        assert set(task.metrics) <= set(METRICS) and task.defaults["eval.metric"] in task.metrics
        assert set(task.defaults) <= {"model.name", "model.max_length", "eval.metric"}
        cfg = RunConfig().with_values({"train_data": "x.csv"}).for_task(name)
        assert cfg.task.type == name and cfg.eval.metric == task.defaults["eval.metric"]
    assert list(TASKS)[-1] == "classification", "the fallback is asked last"


def test_importing_the_registry_and_config_loads_no_torch():
    code = "import sys, tunesmith.config, tunesmith.tasks; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


TASK_TESTS = re.compile(r"""(==|!=|\bin\b)\s*\(?["'](classification|generate|multilabel|regression|tagging)["']""")


def test_no_task_is_named_in_a_test_outside_the_registry():
    """Nothing outside tasks/ asks which task it is: no comparison with a task's name anywhere else."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if "tasks" in path.relative_to(SRC).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if TASK_TESTS.search(code) or "can_generate()" in code or ".task.type ==" in code:
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
    assert TASK_TESTS.search('if run.task == "generate":') and TASK_TESTS.search("x in ('regression', 'a')")
