"""Strategies, table-driven: which parameters get gradients, which stay θ̂ bit for bit, and the math beside them."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import load_file

import tunesmith
from tunesmith.config import StrategyConfig, TrainConfig
from tunesmith.data.labels import LabelSpace
from tunesmith.losses import l2sp_penalty
from tunesmith.model.pretrained import resolve
from tunesmith.model.strategies import apply_strategy, layout
from tunesmith.report import parameter_drift
from tunesmith.tasks import get
from tunesmith.train.optim import parameter_groups

HEAD = {"classifier.weight", "classifier.bias"}


def is_bias(name):
    return name.endswith(".bias")


def block(name):
    match = re.match(r"bert\.encoder\.layer\.(\d+)\.", name)
    return int(match.group(1)) if match else None


# (strategy, which parameter names must train); every other parameter must be frozen.
ROWS = [
    ("full", lambda n: True),
    ("head", lambda n: n in HEAD),
    ("top-1", lambda n: n in HEAD or block(n) == 1 or n.startswith("bert.pooler.")),
    ("top-2", lambda n: not n.startswith("bert.embeddings.")),
    ("bitfit", lambda n: n in HEAD or is_bias(n)),
    ("lora", lambda n: ".lora_" in n or ".modules_to_save." in n),
]


@pytest.fixture(scope="module")
def model_factory(tiny_model):
    def make(strategy: str):
        torch.manual_seed(0)
        model = get("classification").new_model(resolve(tiny_model), LabelSpace(("a", "b", "c")))
        return apply_strategy(model, StrategyConfig(name=strategy))

    return make


@pytest.mark.parametrize(("strategy", "trains"), ROWS, ids=[r[0] for r in ROWS])
def test_exactly_the_chosen_parameters_get_gradients(model_factory, strategy, trains):
    model = model_factory(strategy)
    batch = {"input_ids": torch.randint(1, 1000, (4, 9)), "attention_mask": torch.ones(4, 9, dtype=torch.long)}
    model(**batch, labels=torch.tensor([0, 1, 2, 0])).loss.backward()
    for name, p in model.named_parameters():
        expected = trains(name)
        assert p.requires_grad == expected, name
        assert (p.grad is not None) == expected, name


SAVED = {**dict(ROWS), "lora": lambda n: n in HEAD or n.endswith((".query.weight", ".value.weight"))}
"""Which saved (merged) weights may differ from θ̂ after training."""


@pytest.mark.parametrize(("strategy", "trains"), SAVED.items(), ids=list(SAVED))
def test_frozen_parameters_stay_bit_identical_after_training(tiny_model, tiny_data, tmp_path, strategy, trains):
    result = tunesmith.finetune(
        str(tiny_data["train_csv"]),
        tiny_model,
        str(tmp_path / strategy),
        epochs=1,
        lr=1e-2,
        strategy=strategy,
        quiet=True,
    )
    pretrained = load_file(f"{tiny_model}/model.safetensors")
    finetuned = load_file(str(result.path / "model.safetensors"))
    drift = json.loads((result.path / "drift.json").read_text())["parameters"]
    for name, value in finetuned.items():
        if name in HEAD:
            continue
        before = pretrained[name.removeprefix("bert.")]
        if trains(name):
            assert drift[name]["moved"] > 0, f"{name} should have trained"
        else:
            assert torch.equal(value, before), f"{name} moved but is frozen under {strategy}"
            assert drift[name] == {"relative": 0.0, "max_abs": 0.0, "moved": 0.0, "numel": value.numel()}


def test_random_init_starts_elsewhere_and_drift_is_from_that_start(tiny_model, tiny_data, tmp_path):
    result = tunesmith.finetune(
        str(tiny_data["train_csv"]),
        tiny_model,
        str(tmp_path / "r"),
        epochs=1,
        init="random",
        quiet=True,
        strategy="head",
    )
    pretrained = load_file(f"{tiny_model}/model.safetensors")
    finetuned = load_file(str(result.path / "model.safetensors"))
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(finetuned[name], pretrained[name.removeprefix("bert.")]), "not θ̂"
    drift = json.loads((result.path / "drift.json").read_text())
    assert drift["totals"]["embeddings"]["relative"] == 0.0 and drift["totals"]["head"]["relative"] > 0


def test_drift_of_an_untrained_model_is_exactly_zero_and_the_cli_prints_it(model_factory, tiny_run, cli):
    model = model_factory("full")
    drift = parameter_drift(
        model, dict(model.named_parameters()), {k: v.clone() for k, v in model.state_dict().items()}
    )
    assert all(v["relative"] == 0 and v["max_abs"] == 0 and v["moved"] == 0 for v in drift["groups"].values())
    assert list(drift["groups"]) == ["embeddings", "block 0", "block 1", "backbone", "head"]
    assert drift["totals"]["all"]["numel"] == sum(p.numel() for p in model.parameters())
    code, out, _ = cli("drift", tiny_run)
    assert code == 0 and "block 1" in out and "total: all" in out and "█" in out


def test_drift_recomputes_from_the_pretrained_model(tiny_run):
    from tunesmith.runs import read_run
    from tunesmith.train.run import recompute_drift

    saved = json.loads((tiny_run / "drift.json").read_text())
    assert recompute_drift(read_run(tiny_run)) == saved


def test_l2sp_gradient_matches_its_closed_form():
    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    anchors = [p.detach() + torch.randn_like(p) for p in params]
    l2sp_penalty(params, anchors, alpha=0.3).backward()
    for p, a in zip(params, anchors, strict=True):
        assert torch.allclose(p.grad, 0.3 * (p.detach() - a), atol=1e-7)


def test_l2sp_replaces_weight_decay_in_the_backbone_only(model_factory):
    groups = parameter_groups(model_factory("full"), TrainConfig(weight_decay=0.1), l2sp=True)
    decay = {g["name"]: g["weight_decay"] for g in groups}
    assert decay["head"] == 0.1 and all(v == 0.0 for k, v in decay.items() if not k.startswith("head"))


def test_layer_wise_rates_follow_the_formula(model_factory):
    model = model_factory("full")
    groups = parameter_groups(model, TrainConfig(lr=1.0, head_lr=3.0, layer_lr_decay=0.5))
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        index = block(name)
        expected = (
            3.0
            if name in HEAD
            else 0.5**2
            if name.startswith("bert.embeddings.")
            else 0.5 ** (1 - index)
            if index is not None
            else 1.0
        )
        assert lr_of[id(p)] == pytest.approx(expected), name


def test_layout_finds_blocks_and_embeddings(model_factory):
    lay = layout(model_factory("full"))
    assert len(lay.blocks) == 2 and all(n.startswith("bert.embeddings.") for n in lay.embeddings)
    assert lay.group("bert.encoder.layer.1.output.dense.weight") == "block 1"
    assert lay.group("bert.pooler.dense.weight") == "backbone" and lay.group("classifier.bias") == "head"


def test_unknown_strategy_is_refused_before_any_work(tiny_data, tmp_path, cli):
    code, _, err = cli("train", tiny_data["train_csv"], "--strategy", "lorax", "-o", tmp_path / "x")
    assert code == 2 and "strategy 'lorax' is unknown" in err and not list(tmp_path.iterdir())
    code, _, err = cli("train", tiny_data["train_csv"], "--strategy", "top-x", "-o", tmp_path / "x")
    assert code == 2 and "write top-K" in err


def test_lora_merged_model_predicts_as_the_adapter_model(tiny_model, tiny_data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    result = tunesmith.finetune(
        str(tiny_data["train_csv"]),
        tiny_model,
        str(tmp_path / "lora"),
        epochs=2,
        lr=1e-2,
        strategy="lora",
        save_adapter=True,
        quiet=True,
        lora_r=4,
    )
    assert not list(result.path.glob("adapter_*")), "the run folder root holds the merged model only"
    merged = AutoModelForSequenceClassification.from_pretrained(result.path).eval()
    base = get("classification").new_model(resolve(tiny_model), LabelSpace(("billing", "feedback", "technical")))
    adapted = PeftModel.from_pretrained(base, result.path / "adapter").eval()
    tok = AutoTokenizer.from_pretrained(result.path)
    batch = tok(["my invoice is wrong", "the app crashes at login", "love it"], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert torch.allclose(merged(**batch).logits, adapted(**batch).logits, atol=1e-5)
    assert tunesmith.load(result.path).predict("my invoice")["label"] in {"billing", "feedback", "technical"}


def test_gradual_unfreezing_opens_one_more_block_each_epoch(model_factory):
    from tunesmith.model.strategies import gradual_unfreezing

    model = model_factory("full")
    open_for = gradual_unfreezing(model)
    lay = layout(model)

    def trainable():
        return {lay.group(n) for n, p in model.named_parameters() if p.requires_grad}

    expected = [
        {"head"},
        {"head", "backbone", "block 1"},
        {"head", "backbone", "block 1", "block 0"},
        {"head", "backbone", "block 1", "block 0", "embeddings"},
    ]
    for epoch, groups in enumerate(expected):
        open_for(epoch)
        assert trainable() == groups, epoch


def test_gradual_unfreezing_in_a_run_leaves_the_embeddings_at_theta_hat(tiny_model, tiny_data, tmp_path):
    result = tunesmith.finetune(
        str(tiny_data["train_csv"]), tiny_model, str(tmp_path / "g"), epochs=3, lr=1e-2, unfreeze="gradual", quiet=True,
        eval_split=0.0,  # the last epoch's weights, not an earlier best checkpoint in which block 0 was still frozen
    )  # fmt: skip
    groups = json.loads((result.path / "drift.json").read_text())["groups"]
    assert groups["embeddings"]["moved"] == 0.0  # opened only in epoch 4
    assert groups["block 0"]["moved"] > 0 and groups["block 1"]["moved"] > 0 and groups["head"]["moved"] > 0


def test_compare_trains_each_strategy_and_writes_one_table(tiny_model, tiny_data, tmp_path, cli):
    out = tmp_path / "cmp"
    code, stdout, err = cli(
        "compare",
        tiny_data["train_csv"],
        "--model",
        tiny_model,
        "--strategies",
        "full,head,top-1,random-init",
        "-o",
        out,
        "--epochs",
        "1",
        "--test-data",
        tiny_data["test_csv"],
    )
    assert code == 0, err
    rows = json.loads((out / "compare.json").read_text())
    assert [r["strategy"] for r in rows] == ["full", "head", "top-1", "random-init"]
    by = {r["strategy"]: r for r in rows}
    assert (
        by["head"]["trainable_parameters"]
        < by["top-1"]["trainable_parameters"]
        < by["full"]["trainable_parameters"]
        == by["full"]["total_parameters"]
    )
    assert by["head"]["mean_backbone_drift"] == 0.0 < by["full"]["mean_backbone_drift"]
    assert all(r["peak_rss_mib"] > 100 and r["train_seconds"] > 0 and 0 <= r["test_macro_f1"] <= 1 for r in rows)
    assert (out / "compare.md").read_text().startswith("| strategy | eval macro_f1 | test accuracy")
    assert "| top-1 |" in stdout
    code, _, err = cli("compare", tiny_data["train_csv"], "--strategies", "full,sparse", "-o", tmp_path / "x")
    assert code == 2 and "unknown strategy 'sparse'" in err and not (tmp_path / "x").exists()
