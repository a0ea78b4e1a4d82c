"""Tokenisation, done once per run (not once per epoch or per batch).

Knows the tokenizer, nothing about models or losses. Sequences are kept unpadded;
batching.py pads each batch only to its own longest member.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from tunesmith.data.chunks import encode_documents


def encode_texts(
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    max_length: int,
    chunk: int = 4096,
    pairs: Sequence[str] | None = None,
) -> list[list[int]]:
    """Token ids per text (or per pair), truncated to max_length, special tokens included: one window each,
    as encode_documents reads texts without chunking.
    """
    return encode_documents(tokenizer, texts, max_length, pairs, chunk=chunk).ids
