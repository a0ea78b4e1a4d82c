"""k micro-batches of b samples must give the same update as one batch of k*b, even when they differ in size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from transformers import BertConfig, BertForSequenceClassification

from tunesmith.config import EvalConfig, TrainConfig
from tunesmith.data.batching import EncodedSet, collate
from tunesmith.data.chunks import Documents, DocumentSet
from tunesmith.losses import (
    classification_loss,
    focal_loss,
    mse_loss,
    multilabel,
    multilabel_loss,
    step_scale,
    weighted_classification_loss,
)
from tunesmith.model.aggregate import AGGREGATIONS, attach
from tunesmith.train.loop import Hooks, fit
from tunesmith.train.optim import build_optimizer, build_scheduler


class FixedBatches:
    """Always the same micro-batches, so only the accumulation differs between runs; EncodedSet's normaliser."""

    def __init__(self, ids, labels, batches, weights=None):
        self.ids, self.labels, self._batches, self.weights = ids, labels, batches, weights

    def batches(self, epoch):
        return self._batches

    def collate(self, rows):
        return collate([self.ids[i] for i in rows], 0, [self.labels[i] for i in rows])

    def items(self, rows):
        return EncodedSet.items(self, rows)


WEIGHTS = torch.tensor([3.0, 0.5, 1.25])
# (name, loss, targets of the 12 rows from a generator, per-row weights for the normaliser or None, outputs)
LOSSES = {
    "cross-entropy": (classification_loss, lambda g: torch.randint(0, 3, (12,), generator=g).tolist(), False, 3),
    "class-weighted": (
        weighted_classification_loss(WEIGHTS),
        lambda g: torch.randint(0, 3, (12,), generator=g).tolist(),
        True,
        3,
    ),
    "focal-weighted": (focal_loss(2.0, WEIGHTS), lambda g: torch.randint(0, 3, (12,), generator=g).tolist(), True, 3),
    "multilabel-pos-weight": (
        multilabel(WEIGHTS),
        lambda g: torch.randint(0, 2, (12, 3), generator=g).float().tolist(),
        False,
        3,
    ),
    "mse": (mse_loss, lambda g: torch.randn(12, generator=g).tolist(), False, 1),
}


class NoReport:
    def advance(self, step, total):
        pass

    def log(self, record):
        pass


def train_once(batches, grad_accum, loss="cross-entropy"):
    loss_fn, make_targets, weighted, outputs = LOSSES[loss]
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=outputs,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    accelerator = Accelerator()
    model = BertForSequenceClassification(config).to(accelerator.device)  # fit moves batches there, not the model
    gen = torch.Generator().manual_seed(1)
    ids = [torch.randint(1, 60, (int(n),), generator=gen).tolist() for n in torch.randint(3, 12, (12,), generator=gen)]
    labels = make_targets(gen)
    weights = [float(WEIGHTS[y]) for y in labels] if weighted else None
    cfg = TrainConfig(
        epochs=1, grad_accum=grad_accum, lr=1e-2, warmup_ratio=0.0, schedule="constant", max_grad_norm=0.5, log_every=1
    )
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, 1)
    fit(
        model,
        loss_fn,
        FixedBatches(ids, labels, batches, weights),
        opt,
        sched,
        accelerator,
        cfg,
        EvalConfig(),
        Hooks(NoReport()),
    )
    return {k: v.cpu() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("loss", LOSSES)
def test_accumulated_micro_batches_equal_one_big_batch(loss):
    """For weighted losses too: the normaliser is the step's summed weights, which accumulation leaves alone."""
    whole = train_once([list(range(12))], grad_accum=1, loss=loss)
    even = train_once([list(range(6)), list(range(6, 12))], grad_accum=2, loss=loss)
    uneven = train_once([list(range(9)), list(range(9, 11)), [11]], grad_accum=3, loss=loss)
    before = train_once([], grad_accum=1, loss=loss)
    for key in whole:
        assert torch.allclose(whole[key], even[key], atol=1e-6, rtol=1e-5), key
        assert torch.allclose(whole[key], uneven[key], atol=1e-6, rtol=1e-5), key
    assert not torch.equal(whole["classifier.weight"], before["classifier.weight"]), "a step was taken"


def test_weighted_loss_over_its_normaliser_is_torchs_weighted_mean_and_focal_gamma_0_is_cross_entropy():
    gen = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(10, 3, generator=gen), torch.randint(0, 3, (10,), generator=gen)
    weights = EncodedSet([[1]] * 10, labels.tolist(), 4, 1, 0, 0, weights=WEIGHTS[labels].tolist())
    ours = weighted_classification_loss(WEIGHTS)(logits, labels) * step_scale(weights.items(list(range(10))))
    assert ours.item() == pytest.approx(F.cross_entropy(logits, labels, weight=WEIGHTS).item(), rel=1e-6)
    assert focal_loss(0.0)(logits, labels).item() == pytest.approx(classification_loss(logits, labels).item())
    multi = torch.randint(0, 2, (10, 3), generator=gen).float()
    assert multilabel()(logits, multi).item() == pytest.approx(multilabel_loss(logits, multi).item(), rel=1e-6)
    assert multilabel_loss(logits, multi).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(logits, multi).item() * 30, rel=1e-6
    ), "summed over labels and rows: a sample's loss is the sum over its labels"


class FixedDocuments(DocumentSet):
    """Chunked documents in fixed micro-batches of whole documents."""

    def __init__(self, docs, labels, batches, combine):
        super().__init__(docs, labels, 4, 1, 0, 0, combine)
        self._batches = batches

    def batches(self, epoch):
        return self._batches


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_accumulated_documents_equal_one_big_batch(how):
    """Documents of 1-3 chunks: the loss is per document and normalised by documents, however they are split."""
    torch.manual_seed(0)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=3, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)  # fmt: skip

    def train(batches, grad_accum):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
        combine = attach(model, how, 3)
        if combine.attention is not None:
            torch.nn.init.normal_(combine.attention.score[2].weight)  # not the mean it starts as
        gen = torch.Generator().manual_seed(1)
        counts = [1, 3, 2, 1, 2, 3]
        owner = [d for d, n in enumerate(counts) for _ in range(n)]
        ids = [torch.randint(1, 60, (int(n),), generator=gen).tolist() for n in torch.randint(3, 12, (len(owner),))]
        docs = Documents(ids, None, owner, len(counts))
        labels = torch.randint(0, 3, (len(counts),), generator=gen).tolist()
        cfg = TrainConfig(epochs=1, grad_accum=grad_accum, lr=1e-2, warmup_ratio=0.0, schedule="constant",
                          max_grad_norm=0.5, log_every=1)  # fmt: skip
        opt = build_optimizer(model, cfg)
        data = FixedDocuments(docs, labels, batches, combine)
        fit(model, classification_loss, data, opt, build_scheduler(opt, cfg, 1), Accelerator(), cfg, EvalConfig(),
            Hooks(NoReport()))  # fmt: skip
        return {k: v.clone() for k, v in model.state_dict().items()}

    whole = train([list(range(6))], 1)
    split = train([[0, 1], [2, 3, 4], [5]], 3)
    before = train([], 1)
    for key in whole:
        assert torch.allclose(whole[key], split[key], atol=1e-6, rtol=1e-5), key
    assert not torch.equal(whole["classifier.weight"], before["classifier.weight"]), "a step was taken"
    if how == "attention":
        key = "chunk_attention.score.2.weight"
        assert not torch.equal(whole[key], before[key]), "the attention trains with the head"
