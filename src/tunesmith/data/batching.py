"""Length-grouped batch order and dynamic-padding collation. Knows nothing about models or losses.

Padding every batch to the model's maximum length wastes most of the compute on short texts;
sorting the whole set by length makes batches non-random. The middle road, as in transformers'
LengthGroupedSampler: shuffle, cut into windows, sort each window by length, then shuffle batches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def grouped_batches(
    lengths: Sequence[int], batch_size: int, window: int, generator: torch.Generator
) -> list[list[int]]:
    """Random batches of similar length: the order depends only on the lengths and the generator."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: -lengths[i])  # stable: ties keep shuffled order
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    perm = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in perm]


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Deterministic batches, longest first, for evaluation and prediction (order restored by the caller)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def collate(
    sequences: Sequence[Sequence[int]], pad_id: int, labels: Sequence[int] | None = None
) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence of the batch; the attention mask hides the padding."""
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if labels is not None:
        batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
    return batch


class EncodedSet:
    """Encoded texts with label ids: what fit() draws its micro-batches from."""

    def __init__(
        self, ids: list[list[int]], labels: list[int], batch_size: int, window: int, seed: int, pad_id: int
    ) -> None:
        self.ids, self.labels = ids, labels
        self.batch_size, self.window, self.seed, self.pad_id = batch_size, window, seed, pad_id
        self.lengths = [len(s) for s in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's order depends only on (seed, epoch): a resumed run can rebuild it exactly."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return grouped_batches(self.lengths, self.batch_size, self.window, generator)

    def items(self, rows: list[int]) -> int:
        """Samples in these rows: the classification loss is a mean over samples."""
        return len(rows)

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Padded tensors with labels for these rows."""
        return collate([self.ids[i] for i in rows], self.pad_id, [self.labels[i] for i in rows])
