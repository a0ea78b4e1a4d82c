"""Length-grouped batch order and dynamic-padding collation. Knows nothing about models or losses.

Padding every batch to the model's maximum length wastes most of the compute on short texts;
sorting the whole set by length makes batches non-random. The middle road, as in transformers'
LengthGroupedSampler: shuffle, cut into windows, sort each window by length, then shuffle batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch's order: a pure function of (seed, epoch), so a resumed run rebuilds it exactly."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def pad(
    rows: Sequence[Sequence[int]], value: int, side: str = "right", width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded with value to the longest (or width), on the right or (for generation) the left; and the mask."""
    width = width or max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(0, len(row)) if side == "right" else slice(width - len(row), width)
        out[i, span] = torch.as_tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return out, mask


def collate(
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    labels: Sequence[Any] | None = None,
    types: Sequence[Sequence[int]] | None = None,
) -> dict[str, torch.Tensor]:
    """Right-pad to the longest sequence of the batch; the attention mask hides the padding.

    labels become a tensor as they are: class ids (long), multi-hot rows or regression targets (float).
    types are the segment ids of sentence pairs (token_type_ids), padded with 0.
    """
    input_ids, attention_mask = pad(sequences, pad_id)
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if types is not None:
        batch["token_type_ids"] = pad(types, 0)[0]
    if labels is not None:
        batch["labels"] = torch.as_tensor(labels)
    return batch


class EncodedSet:
    """Encoded texts (or pairs) with their targets: what fit() draws its micro-batches from."""

    unit = "samples"
    """What the loss is a mean over, and what the training log counts per second."""

    def __init__(
        self,
        ids: list[list[int]],
        labels: Sequence[Any],
        batch_size: int,
        window: int,
        seed: int,
        pad_id: int,
        types: list[list[int]] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.ids, self.labels, self.types, self.weights = ids, labels, types, weights
        self.batch_size, self.window, self.seed, self.pad_id = batch_size, window, seed, pad_id
        self.lengths = [len(s) for s in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's order depends only on (seed, epoch): a resumed run can rebuild it exactly."""
        return grouped_batches(self.lengths, self.batch_size, self.window, epoch_generator(self.seed, epoch))

    def items(self, rows: list[int]) -> float:
        """What the summed loss of these rows is normalised by: the samples, or with class weights the sum of
        their weights (as torch's weighted cross-entropy mean), so accumulation leaves the normaliser unchanged.
        """
        return len(rows) if self.weights is None else sum(self.weights[i] for i in rows)

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Padded tensors with targets for these rows."""
        types = [self.types[i] for i in rows] if self.types is not None else None
        return collate([self.ids[i] for i in rows], self.pad_id, [self.labels[i] for i in rows], types)
