"""Training batches for generation: padded rows, or packed rows without attention across samples.

The loss is normalised by the number of target tokens in the whole optimiser step, so each set
tells the loop how many target tokens a micro-batch holds (``items``) before it runs.

Labels come out already shifted: ``labels[:, j]`` is the token that the logits at position j
must predict. With keep_logits, a batch also carries ``logits_to_keep`` (the positions where
some row predicts a target) and only those positions' labels: the LM head, a vocab-wide matmul
and softmax, then runs on the reply tokens instead of every prompt token (SmolLM2 on the demo:
a training step takes about a third less time).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tunesmith.data.batching import epoch_generator, grouped_batches, pad
from tunesmith.data.chat import IGNORE, Encoded


class TokenSet:
    """Encoded conversations, padded per micro-batch (length-grouped, like classification)."""

    unit = "target_tokens"
    """What the loss is a mean over, and what the training log counts per second."""

    def __init__(
        self,
        samples: Sequence[Encoded],
        batch_size: int,
        window: int,
        seed: int,
        pad_id: int,
        keep_logits: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.batch_size, self.window, self.seed, self.pad_id = batch_size, window, seed, pad_id
        self.keep_logits = keep_logits
        """Whether the model takes logits_to_keep as a tensor of positions (transformers' causal LMs do)."""

    def __len__(self) -> int:
        return len(self.samples)

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's order depends only on (seed, epoch): a resumed run can rebuild it exactly."""
        lengths = [len(s.ids) for s in self.samples]
        return grouped_batches(lengths, self.batch_size, self.window, epoch_generator(self.seed, epoch))

    def items(self, rows: list[int]) -> int:
        """Target tokens in these rows (what the loss is summed over), less the first position (never predicted)."""
        return sum(_scored(self.samples[i].labels) for i in rows)

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Right-padded ids, attention mask and labels (IGNORE on padding)."""
        chosen = [self.samples[i] for i in rows]
        ids, mask = pad([s.ids for s in chosen], self.pad_id)
        labels, _ = pad([s.labels for s in chosen], IGNORE)
        return self._targets({"input_ids": ids, "attention_mask": mask}, labels)

    def _targets(self, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Shift labels to the positions that predict them; with keep_logits, keep only positions with a target."""
        following = torch.cat([labels[:, 1:], torch.full_like(labels[:, :1], IGNORE)], dim=1)
        if not self.keep_logits:
            return {**batch, "labels": following}
        keep = (following != IGNORE).any(dim=0).nonzero().squeeze(1)
        return {**batch, "logits_to_keep": keep, "labels": following[:, keep]}


def _scored(labels: Sequence[int]) -> int:
    """Labels the shifted loss scores: every target except one at position 0 (nothing precedes it)."""
    return sum(label != IGNORE for label in labels[1:])


class PackedSet(TokenSet):
    """Samples concatenated into rows of max_length, each sample attending only to itself.

    Position ids restart at 0 for every sample and no attention mask is passed: transformers then
    builds a block-diagonal causal mask from the position ids (its padding-free path for sdpa and
    eager attention; flash-attention reads the same position ids). A row's padding forms its own block.
    """

    def __init__(
        self,
        samples: Sequence[Encoded],
        batch_size: int,
        max_length: int,
        seed: int,
        pad_id: int,
        keep_logits: bool = False,
    ) -> None:
        super().__init__(samples, batch_size, 1, seed, pad_id, keep_logits)
        self.max_length = max_length

    def rows_of(self, epoch: int) -> list[list[int]]:
        """Samples per packed row, first-fit in a shuffled order (the order depends only on seed and epoch)."""
        generator = epoch_generator(self.seed, epoch)
        rows: list[list[int]] = []
        room: list[int] = []
        for i in torch.randperm(len(self.samples), generator=generator).tolist():
            n = len(self.samples[i].ids)
            # First fit over the few most recent rows keeps packing dense without an O(n²) search.
            slot = next((k for k in range(max(0, len(rows) - 8), len(rows)) if room[k] >= n), None)
            if slot is None:
                rows.append([i])
                room.append(self.max_length - n)
            else:
                rows[slot].append(i)
                room[slot] -= n
        return rows

    def batches(self, epoch: int) -> list[list[int]]:
        """Micro-batches as lists of sample indices, with -1 between packed rows."""
        rows = self.rows_of(epoch)
        batches = []
        for start in range(0, len(rows), self.batch_size):
            flat: list[int] = []
            for row in rows[start : start + self.batch_size]:
                flat += [*row, -1]
            batches.append(flat)
        return batches

    def items(self, rows: list[int]) -> int:
        """Target tokens in these rows; -1 marks a row boundary."""
        return sum(_scored(self.samples[i].labels) for i in rows if i >= 0)

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Packed ids, per-sample position ids and labels; the first token of each sample is not scored."""
        packed: list[list[int]] = [[]]
        for i in rows[:-1]:
            packed.append([]) if i < 0 else packed[-1].append(i)
        width = max(sum(len(self.samples[i].ids) for i in row) for row in packed)
        ids = torch.full((len(packed), width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((len(packed), width), dtype=torch.long)
        labels = torch.full((len(packed), width), IGNORE, dtype=torch.long)
        for r, row in enumerate(packed):
            at = 0
            for i in row:
                s = self.samples[i]
                n = len(s.ids)
                ids[r, at : at + n] = torch.tensor(s.ids)
                positions[r, at : at + n] = torch.arange(n)
                labels[r, at + 1 : at + n] = torch.tensor(s.labels[1:])  # position 0 would be "predicted" by the
                at += n  # previous sample's last token
            positions[r, at:] = torch.arange(width - at)  # padding: a block of its own, never scored
        return self._targets({"input_ids": ids, "position_ids": positions}, labels)
