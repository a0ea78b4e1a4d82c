"""Tokenisation, done once per run (not once per epoch or per batch).

Knows the tokenizer, nothing about models or losses. Sequences are kept unpadded;
batching.py pads each batch only to its own longest member.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    chunk: int = 4096,
    pairs: Sequence[str] | None = None,
) -> list[list[int]]:
    """Token ids per text (or per pair), truncated to max_length, special tokens included."""
    return encode(tokenizer, texts, max_length, pairs, chunk)[0]


def encode(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    pairs: Sequence[str] | None = None,
    chunk: int = 4096,
) -> tuple[list[list[int]], list[list[int]] | None]:
    """Token ids per text, and for sentence pairs the segment ids (token_type_ids) where the model has them.

    A pair is the tokenizer's own pair encoding, tokenizer(a, b), truncated longest_first: the longer text
    loses tokens first, so a short question keeps all of its own beside a long passage. Chunks keep the fast
    tokenizer's batch path (parallel in Rust) without building one huge intermediate for a million-row file.
    """
    segments = pairs is not None and "token_type_ids" in tokenizer.model_input_names
    ids: list[list[int]] = []
    types: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        second = list(pairs[start : start + chunk]) if pairs is not None else None
        enc = tokenizer(
            list(texts[start : start + chunk]),
            second,
            truncation="longest_first" if pairs is not None else True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=segments,
        )
        ids.extend(enc["input_ids"])
        if segments:
            types.extend(enc["token_type_ids"])
    return ids, (types if segments else None)
