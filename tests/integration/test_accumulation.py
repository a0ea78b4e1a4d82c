"""k micro-batches of b samples must give the same update as one batch of k*b, even when they differ in size."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from transformers import BertConfig, BertForSequenceClassification

from tunesmith.config import EvalConfig, TrainConfig
from tunesmith.data.batching import collate
from tunesmith.losses import classification_loss
from tunesmith.train.loop import Hooks, fit
from tunesmith.train.optim import build_optimizer, build_scheduler


class FixedBatches:
    """Always the same micro-batches, so only the accumulation differs between runs."""

    def __init__(self, ids, labels, batches):
        self.ids, self.labels, self._batches = ids, labels, batches

    def batches(self, epoch):
        return self._batches

    def collate(self, rows):
        return collate([self.ids[i] for i in rows], 0, [self.labels[i] for i in rows])

    def items(self, rows):
        return len(rows)


class NoReport:
    def advance(self, step, total):
        pass

    def log(self, record):
        pass


def train_once(batches, grad_accum):
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    accelerator = Accelerator()
    model = BertForSequenceClassification(config).to(accelerator.device)  # fit moves batches there, not the model
    gen = torch.Generator().manual_seed(1)
    ids = [torch.randint(1, 60, (int(n),), generator=gen).tolist() for n in torch.randint(3, 12, (12,), generator=gen)]
    labels = torch.randint(0, 3, (12,), generator=gen).tolist()
    cfg = TrainConfig(
        epochs=1, grad_accum=grad_accum, lr=1e-2, warmup_ratio=0.0, schedule="constant", max_grad_norm=0.5, log_every=1
    )
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 1)
    fit(
        model,
        classification_loss,
        FixedBatches(ids, labels, batches),
        opt,
        sched,
        accelerator,
        cfg,
        EvalConfig(),
        Hooks(NoReport()),
    )
    return {k: v.cpu() for k, v in model.state_dict().items()}


def test_accumulated_micro_batches_equal_one_big_batch():
    whole = train_once([list(range(12))], grad_accum=1)
    even = train_once([list(range(6)), list(range(6, 12))], grad_accum=2)
    uneven = train_once([list(range(9)), list(range(9, 11)), [11]], grad_accum=3)
    before = train_once([], grad_accum=1)
    for key in whole:
        assert torch.allclose(whole[key], even[key], atol=1e-6), key
        assert torch.allclose(whole[key], uneven[key], atol=1e-6), key
    assert not torch.equal(whole["classifier.weight"], before["classifier.weight"]), "a step was taken"
