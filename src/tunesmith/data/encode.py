"""Tokenisation, done once per run (not once per epoch or per batch).

Knows the tokenizer, nothing about models or losses. Sequences are kept unpadded;
batching.py pads each batch only to its own longest member.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int, chunk: int = 4096
) -> list[list[int]]:
    """Token ids per text, truncated to max_length, special tokens included.

    Chunks keep the fast tokenizer's batch path (parallel in Rust) without building one huge
    intermediate for a million-row file.
    """
    ids: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        enc = tokenizer(
            list(texts[start : start + chunk]),
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )
        ids.extend(enc["input_ids"])
    return ids
