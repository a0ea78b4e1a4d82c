"""D for generation: prompt/response pairs or chat records, checked, as conversations.

Every sample becomes a list of {role, content} messages (the format of OpenAI and of
transformers chat templates); every assistant turn is a target. Knows nothing about tokenizers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from tunesmith.config import DataConfig
from tunesmith.data.readers import Table, find_column, is_missing, iter_tables, read_table
from tunesmith.data.validate import data_fingerprints, text_value
from tunesmith.errors import ConfigError, DataError

Conversation = list[dict[str, str]]

PAIRS = (("prompt", "response"), ("prompt", "completion"), ("instruction", "output"), ("question", "answer"))
"""Usual (prompt, response) column names, tried in order; input/output comes last (see find_pair)."""
PROMPT_NAMES = ("prompt", "instruction", "question", "input", "text")
"""Where a prompt is looked for when no pair matches (a prompts file for predict has no responses)."""
MESSAGES = ("messages", "conversations", "conversation")
ROLES = ("system", "user", "assistant")


def is_generation_table(table: Table) -> bool:
    """Whether a file's columns say generation (chat records or a prompt/response pair), not classification."""
    lower = {c.lower() for c in table.columns}
    return bool(lower & set(MESSAGES)) or any(p in lower and r in lower for p, r in (*PAIRS, ("input", "output")))


def is_generation_file(path: str, encoding: str = "utf-8") -> bool:
    """is_generation_table on the file's first rows (a bad file raises its one-line DataError)."""
    first = next(iter_tables(path, encoding, chunk_rows=64), None)
    return first is not None and is_generation_table(first)


@dataclass
class Conversations:
    """Validated conversations, and the row each came from (for messages about it)."""

    file: str
    items: list[Conversation]
    rows: list[int]
    columns: dict[str, str | None]
    """Which columns were read: prompt/response (and input), or messages."""

    def __len__(self) -> int:
        return len(self.items)

    def take(self, indices: list[int]) -> Conversations:
        """A subset (the evaluation split), keeping where each row came from."""
        return Conversations(self.file, [self.items[i] for i in indices], [self.rows[i] for i in indices], self.columns)


def conversations(
    table: Table, prompt_column: str | None, response_column: str | None, need_response: bool = True
) -> Conversations:
    """Chat records from a messages column, else (instruction [+ input]) / response pairs."""
    rows = [table.first_row + i + 1 for i in range(len(table))]
    lower = {c.lower(): c for c in table.columns}
    messages_col = next((lower[m] for m in MESSAGES if m in lower), None)
    if messages_col and prompt_column is None:
        items = [_messages(table, i, v, messages_col, need_response) for i, v in enumerate(table.columns[messages_col])]
        return Conversations(table.path, items, rows, {"messages": messages_col})
    prompt_col, input_col, response_col = find_pair(table, prompt_column, response_column, need_response)
    items = []
    for i in range(len(table)):
        prompt = _text(table, i, prompt_col)
        if input_col is not None and not is_missing(table.columns[input_col][i]):
            prompt = f"{prompt}\n\n{_text(table, i, input_col)}"  # Alpaca: the input follows the instruction
        conv = [{"role": "user", "content": prompt}]
        if response_col is not None:
            conv.append({"role": "assistant", "content": _text(table, i, response_col)})
        items.append(conv)
    return Conversations(table.path, items, rows, {"prompt": prompt_col, "input": input_col, "response": response_col})


def find_pair(
    table: Table, prompt_column: str | None, response_column: str | None, need_response: bool
) -> tuple[str, str | None, str | None]:
    """(prompt, optional Alpaca input, response) column names: given, else the first usual pair present."""
    lower = {c.lower(): c for c in table.columns}
    if prompt_column is None:
        found = next((p for p in (*PAIRS, ("input", "output")) if p[0] in lower and p[1] in lower), None)
        if found:
            prompt_column, response_column = lower[found[0]], response_column or lower[found[1]]
    prompt_col = find_column(table, prompt_column, PROMPT_NAMES, "prompt", "--prompt-column")
    input_col = lower.get("input") if prompt_col.lower() == "instruction" else None
    response_col = None
    if need_response or response_column is not None:
        names = tuple(r for _, r in PAIRS)
        response_col = find_column(table, response_column, names, "response", "--response-column")
    return prompt_col, input_col, response_col


def _text(table: Table, i: int, column: str) -> str:
    return text_value(table, i, table.columns[column][i], column)


def _messages(table: Table, i: int, value: Any, column: str, need_response: bool) -> Conversation:
    """A list of {role, content} with known roles and text content, ending (for training) with the assistant."""

    def bad(message: str) -> DataError:
        return DataError(table.path, message, column=column, **table.where(i))

    if not isinstance(value, list) or not value:
        raise bad(f"expected a non-empty list of {{role, content}} messages, got {type(value).__name__}")
    conv = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise bad(f"message {k + 1}: expected an object with role and content")
        role = m["role"]
        # ShareGPT spells roles from/value as human/gpt; OpenAI's role/content is what templates take.
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        if role not in ROLES:
            raise bad(f"message {k + 1}: unknown role {str(role)[:20]!r} (expected system, user or assistant)")
        if not isinstance(m["content"], str):
            raise bad(f"message {k + 1}: content must be text, got {type(m['content']).__name__}")
        conv.append({"role": role, "content": m["content"]})
    if need_response and not any(m["role"] == "assistant" and m["content"].strip() for m in conv):
        raise bad("no assistant message with content: nothing to learn from this conversation")
    return conv


@dataclass
class SFTData:
    """Training (and evaluation) conversations, and where they came from."""

    train: Conversations
    eval: Conversations | None
    eval_from: str | None
    labels: None = None
    """Generation has no label space; run code shared with classification reads this."""

    def fingerprints(self, cfg: DataConfig) -> dict[str, Any]:
        """Paths, sha256s, row counts and columns of the data files, as tunesmith.json records them."""

        def info(ex: Conversations | None) -> dict[str, Any] | None:
            return ex and {"rows": len(ex), "columns": ex.columns}

        return data_fingerprints(cfg, self.eval_from, info(self.train), info(self.eval))


def load_sft(cfg: DataConfig, seed: int) -> SFTData:
    """Read and check the training (and evaluation) conversations; every problem is one DataError."""
    if cfg.train_data is None:
        raise ConfigError("no training data: pass a file (tunesmith train DATA) or set data.train_data")
    train = conversations(read_table(cfg.train_data, cfg.encoding), cfg.prompt_column, cfg.response_column)
    if cfg.eval_data is not None:
        held = conversations(read_table(cfg.eval_data, cfg.encoding), cfg.prompt_column, cfg.response_column)
        return SFTData(train, held, "eval_data")
    n_eval = min(round(len(train) * cfg.eval_split), len(train) - 1)
    if n_eval <= 0:
        return SFTData(train, None, None)
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    return SFTData(train.take(sorted(order[n_eval:])), train.take(sorted(order[:n_eval])), "split")
