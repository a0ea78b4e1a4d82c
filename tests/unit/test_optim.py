from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tunesmith.config import TrainConfig
from tunesmith.train.optim import build_optimizer, build_scheduler, parameter_groups, warmup_steps


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return BertForSequenceClassification(
        BertConfig(
            vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, num_labels=3
        )
    )


def test_no_decay_on_bias_and_layernorm_and_head_has_its_own_lr(model):
    groups = {g["name"]: g for g in parameter_groups(model, TrainConfig(lr=1e-4, head_lr=1e-3, weight_decay=0.1))}
    names = {id(p): n for n, p in model.named_parameters()}
    member = {g: {names[id(p)] for p in grp["params"]} for g, grp in groups.items()}
    assert member["head"] == {"classifier.weight"} and member["head/no_decay"] == {"classifier.bias"}
    no_decay = member["backbone/no_decay"]
    assert all(n.endswith("bias") or "LayerNorm" in n for n in no_decay)
    assert "bert.embeddings.LayerNorm.weight" in no_decay and "bert.pooler.dense.bias" in no_decay
    assert "bert.embeddings.word_embeddings.weight" in member["backbone"]
    assert groups["backbone"]["weight_decay"] == 0.1 and groups["backbone/no_decay"]["weight_decay"] == 0.0
    assert groups["head"]["lr"] == 1e-3 and groups["backbone"]["lr"] == 1e-4
    every = set().union(*member.values())
    assert every == set(names.values()), "every trainable parameter is in exactly one group"
    assert sum(len(m) for m in member.values()) == len(every)


def test_frozen_parameters_are_left_out(model):
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    try:
        params = [p for g in parameter_groups(model, TrainConfig()) for p in g["params"]]
        assert all(p is not model.bert.embeddings.word_embeddings.weight for p in params)
    finally:
        model.bert.embeddings.word_embeddings.weight.requires_grad_(True)


def lrs(model, cfg, total):
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, total)
    out = []
    for _ in range(total):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_linear_warmup_then_linear_decay(model):
    cfg = TrainConfig(lr=1.0, warmup_ratio=0.2, schedule="linear")
    assert warmup_steps(cfg, 10) == 2
    assert lrs(model, cfg, 10) == pytest.approx([0.0, 0.5, 1.0, 7 / 8, 6 / 8, 5 / 8, 4 / 8, 3 / 8, 2 / 8, 1 / 8])


def test_cosine_and_constant(model):
    cos = lrs(model, TrainConfig(lr=1.0, warmup_ratio=0.0, schedule="cosine"), 4)
    assert cos == pytest.approx([1.0, 0.8535534, 0.5, 0.1464466])
    assert lrs(model, TrainConfig(lr=1.0, warmup_ratio=0.5, schedule="constant"), 4) == pytest.approx([0, 0.5, 1, 1])
