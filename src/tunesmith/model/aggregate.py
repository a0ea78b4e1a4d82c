"""How a long document's chunks become one prediction: max, mean, or a learned attention over their logits.

The chunks' logits (not their hidden states) are combined: every architecture keeps its own head, transformers
still loads the run folder as it is, and an ONNX graph runs per chunk with the very same aggregation after it.
A document of one chunk gets exactly that chunk's logits under each aggregation: the max and the mean of one row
are the row, and attention's single weight is exactly 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tunesmith.backends import Forward, iter_logits
from tunesmith.data.chunks import Documents

AGGREGATIONS = ("max", "mean", "attention")
PREFIX = "chunk_attention"
"""The attention's parameters, a submodule of the model while it trains (so the optimiser, accelerate, DDP and
checkpoints treat them as part of the head)."""
FILE = "aggregate.safetensors"
"""In a run folder: the attention's weights, kept out of model.safetensors so transformers loads it cleanly."""


class ChunkAttention(torch.nn.Module):
    """A score per chunk from its logits (a two-layer MLP), softmax-normalised over its document's chunks.

    The output layer starts at zero: every chunk scores alike, so training starts from the mean and learns
    which chunks to trust (a confident chunk, or one that speaks for a particular label). It has no bias: the
    softmax ignores a shift shared by all chunks, so a bias would get no gradient but float noise, which Adam
    scales up to full-size steps.
    """

    def __init__(self, outputs: int, hidden: int = 16) -> None:
        super().__init__()
        last = torch.nn.Linear(hidden, 1, bias=False)
        self.score = torch.nn.Sequential(torch.nn.Linear(outputs, hidden), torch.nn.Tanh(), last)
        torch.nn.init.zeros_(last.weight)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        """One score per chunk (row of logits)."""
        return self.score(logits).squeeze(-1)


def aggregate(
    how: str, logits: torch.Tensor, owner: torch.Tensor, n: int, attention: ChunkAttention | None = None
) -> torch.Tensor:
    """(chunks, outputs) logits -> (n, outputs): per document the max or mean over its chunks, or their
    attention-weighted sum. owner gives each chunk's document (0..n-1).
    """
    index = owner.unsqueeze(1).expand_as(logits)
    base = logits.new_zeros((n, logits.shape[1]))
    if how == "max":
        return base.scatter_reduce(0, index, logits, "amax", include_self=False)
    if how == "mean":
        return base.scatter_reduce(0, index, logits, "mean", include_self=False)
    assert attention is not None, "attention needs its module"
    alpha = _softmax_by(attention(logits), owner, n)
    return base.index_add(0, owner, alpha.unsqueeze(1) * logits)


def _softmax_by(scores: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of the scores within each document (max subtracted per document, so it cannot overflow)."""
    top = scores.new_zeros(n).scatter_reduce(0, owner, scores, "amax", include_self=False)
    e = torch.exp(scores - top[owner])
    return e / e.new_zeros(n).index_add(0, owner, e)[owner]


@torch.inference_mode()
def weights(
    how: str,
    logits: torch.Tensor,
    owner: torch.Tensor,
    n: int,
    columns: torch.Tensor,
    attention: ChunkAttention | None = None,
) -> torch.Tensor:
    """Each chunk's share of its document's output in column columns[doc] (summing to 1 per document): the
    attention weight; 1/chunks for mean; for max, the chunk(s) holding the maximum.
    """
    counts = torch.bincount(owner, minlength=n).to(logits.dtype)
    if how == "mean":
        return 1.0 / counts[owner]
    if how == "attention":
        assert attention is not None
        return _softmax_by(attention(logits), owner, n)
    mine = logits.gather(1, columns[owner].unsqueeze(1)).squeeze(1)
    top = aggregate("max", mine.unsqueeze(1), owner, n).squeeze(1)
    hit = (mine == top[owner]).to(logits.dtype)
    return hit / hit.new_zeros(n).index_add(0, owner, hit)[owner]


@dataclass
class Aggregator:
    """One aggregation with its parameters (the attention module, for attention): a chunks -> documents Combine."""

    how: str
    attention: ChunkAttention | None = None

    def __call__(self, logits: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
        """The documents' logits (aggregate())."""
        return aggregate(self.how, logits, owner, n, self.attention)

    def weights(self, logits: torch.Tensor, owner: torch.Tensor, n: int, columns: torch.Tensor) -> torch.Tensor:
        """Each chunk's share of its document's output in the given columns (the module-level weights)."""
        return weights(self.how, logits, owner, n, columns, self.attention)


def attach(model: torch.nn.Module, how: str, outputs: int) -> Aggregator:
    """The aggregation of a run that trains on chunks; attention's module becomes a submodule of the model
    (under a peft wrapper, of the model inside it), so it trains, syncs and checkpoints with the head.
    """
    if how != "attention":
        return Aggregator(how)
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    module = ChunkAttention(outputs)
    inner.add_module(PREFIX, module)
    return Aggregator(how, module)


def from_run(path: Path, how: str, outputs: int) -> Aggregator:
    """A run folder's aggregation: attention's weights come from its aggregate.safetensors."""
    if how != "attention":
        return Aggregator(how)
    module = ChunkAttention(outputs)
    tensors = load_file(str(path / FILE))
    module.load_state_dict({k.removeprefix(f"{PREFIX}."): v for k, v in tensors.items()})
    return Aggregator(how, module.eval())


def split_off(folder: Path) -> None:
    """Move the attention's tensors out of the saved model.safetensors into aggregate.safetensors."""
    file = folder / "model.safetensors"
    tensors = load_file(str(file))
    mine = {k: tensors.pop(k) for k in [k for k in tensors if k.startswith(f"{PREFIX}.")]}
    if mine:
        save_file(mine, str(folder / FILE))
        save_file(tensors, str(file), metadata={"format": "pt"})


def fold_input(folder: Path, scale: float, shift: float) -> None:
    """Attention that was trained on z reads y = scale·z + shift once the head outputs y (regression's units):
    W·z + b = (W/scale)·y + (b − W·1·shift/scale), folded into its first layer in model.safetensors.
    """
    file = folder / "model.safetensors"
    tensors = load_file(str(file))
    weight, bias = f"{PREFIX}.score.0.weight", f"{PREFIX}.score.0.bias"
    if weight not in tensors:
        return
    w = tensors[weight]
    tensors[bias] = tensors[bias] - w.sum(1) * shift / scale
    tensors[weight] = w / scale
    save_file(tensors, str(file), metadata={"format": "pt"})


@torch.inference_mode()
def document_logits(
    forward: Forward, docs: Documents, batch_size: int, pad_id: int, combine: Aggregator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(one row of logits per document, one per chunk): the chunks run longest first in batches of batch_size,
    then are combined per document. Documents of one chunk each are their chunks' logits as they are.
    """
    chunk_logits: torch.Tensor | None = None
    for rows, logits in iter_logits(forward, docs.ids, batch_size, pad_id, docs.types):
        if chunk_logits is None:
            chunk_logits = torch.zeros((len(docs.ids), logits.shape[-1]))
        chunk_logits[rows] = logits
    if chunk_logits is None:
        return torch.zeros((0, 0)), torch.zeros((0, 0))
    if combine is None or not docs.chunked:
        return chunk_logits, chunk_logits
    return combine(chunk_logits, torch.as_tensor(docs.owner), docs.n), chunk_logits
