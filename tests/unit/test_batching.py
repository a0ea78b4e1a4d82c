from __future__ import annotations

import torch

from tunesmith.data.batching import EncodedSet, collate, grouped_batches, sorted_batches


def test_grouped_batches_cover_every_row_once_and_are_seeded():
    lengths = [(i * 37) % 100 + 1 for i in range(1000)]
    a = grouped_batches(lengths, 16, 4, torch.Generator().manual_seed(0))
    b = grouped_batches(lengths, 16, 4, torch.Generator().manual_seed(0))
    c = grouped_batches(lengths, 16, 4, torch.Generator().manual_seed(1))
    assert a == b and a != c
    assert sorted(i for batch in a for i in batch) == list(range(1000))
    assert all(len(batch) == 16 for batch in a[:-1]) or sum(len(x) < 16 for x in a) <= 1000 // (16 * 4) + 1


def test_grouped_batches_waste_less_padding_than_random_ones():
    lengths = [(i * 37) % 100 + 1 for i in range(2000)]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    grouped = grouped_batches(lengths, 32, 50, torch.Generator().manual_seed(0))
    perm = torch.randperm(2000, generator=torch.Generator().manual_seed(0)).tolist()
    random = [perm[i : i + 32] for i in range(0, 2000, 32)]
    assert padded(grouped) < 0.7 * padded(random)
    # and still random: the first batch is not simply the longest texts
    assert sorted(lengths[i] for i in grouped[0]) != sorted(lengths, reverse=True)[:32]


def test_encoded_set_order_depends_on_epoch_and_seed():
    s = EncodedSet([[1] * (i % 7 + 1) for i in range(100)], [0] * 100, 8, 2, seed=1, pad_id=0)
    assert s.batches(0) == s.batches(0) and s.batches(0) != s.batches(1)


def test_collate_pads_right_and_masks():
    batch = collate([[5, 6, 7], [8]], pad_id=0, labels=[1, 0])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0]


def test_sorted_batches_longest_first():
    assert sorted_batches([1, 5, 3, 4], 2) == [[1, 3], [2, 0]]
