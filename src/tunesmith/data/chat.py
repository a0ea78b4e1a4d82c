"""Conversations to token ids and labels: the template, the target mask, EOS, truncation.

The model is trained on exactly the tokens it will see at inference: the prompt is rendered as
``apply_chat_template(..., add_generation_prompt=True)`` renders it for generation, and each
target is the text the template puts after it, up to and including the end-of-turn token. So
masking needs no "response key" to search for, and EOS is always part of the target: a model
that never saw its EOS scored never learns to stop.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from tunesmith.data.sft import Conversation
from tunesmith.errors import ConfigError

IGNORE = -100
"""Label of a token that is not scored (prompt, template and padding): cross-entropy's ignore_index."""

PLAIN = {"system": "{content}\n\n", "user": "### Instruction:\n{content}\n\n", "assistant": "### Response:\n"}
"""The plain template, for tokenizers without a chat template: Alpaca's, turn after turn.
An assistant turn is "### Response:\\n" + content + EOS, followed by a blank line before the next turn."""


@dataclass
class Encoded:
    """One sample: token ids, their labels (IGNORE where not scored), and whether it was truncated."""

    ids: list[int]
    labels: list[int]
    truncated: str | None = None
    """None, "prompt" (cut from the left) or "target" (its end cut: its EOS is not learned)."""


class ChatFormat:
    """Renders conversations for one tokenizer with the chat template, or the plain one."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str = "auto") -> None:
        if template not in ("auto", "chat", "plain"):
            raise ConfigError(f"task.template must be auto, chat or plain, got '{template}'")
        has_chat = bool(getattr(tokenizer, "chat_template", None))
        if template == "chat" and not has_chat:
            raise ConfigError("--template chat: this tokenizer has no chat template; use --template plain")
        if tokenizer.eos_token_id is None:
            raise ConfigError("the tokenizer has no EOS token, so a fine-tuned model could not learn to stop")
        self.tokenizer = tokenizer
        self.template = "chat" if template == "chat" or (template == "auto" and has_chat) else "plain"
        self.eos = tokenizer.eos_token
        # A plain-template sequence starts as the tokenizer's own encoding would (a BOS for Llama-style ones).
        prefix = tokenizer("")["input_ids"]
        self.bos = prefix if prefix == [tokenizer.bos_token_id] else []

    def render(self, conv: Conversation, generation_prompt: bool = False) -> str:
        """The conversation as text; with generation_prompt, ending where the model's reply begins."""
        if self.template == "chat":
            return self.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=generation_prompt)
        text = "".join(
            PLAIN[m["role"]].format(content=m["content"])
            + (f"{m['content']}{self.eos}\n\n" if m["role"] == "assistant" else "")
            for m in conv
        )
        return text + (PLAIN["assistant"] if generation_prompt else "")

    def segments(self, conv: Conversation) -> list[tuple[str, bool]]:
        """(text, is_target) pieces whose concatenation is the rendered conversation, minus its tail."""
        pieces: list[tuple[str, bool]] = []
        done = ""
        for i, message in enumerate(conv):
            if message["role"] != "assistant":
                continue
            before = self.render(conv[:i], generation_prompt=True)
            through = self.render(conv[: i + 1])
            if not (before.startswith(done) and through.startswith(before)):
                raise ConfigError(
                    "the chat template does not render a conversation as a prefix of its continuation, so "
                    "its targets cannot be located; use --template plain"
                )
            target = through[len(before) :]
            end = target.find(self.eos)
            # The target ends with EOS; what the template adds after it (a newline) is context for the next turn.
            cut = end + len(self.eos) if end >= 0 else len(target.rstrip())
            pieces += [(before[len(done) :], False), (target[:cut], True)]
            done = before + target[:cut]
        return pieces

    def encode(self, conv: Conversation, max_length: int) -> Encoded:
        """Token ids and labels: targets (with EOS) keep their ids, everything else is IGNORE."""
        ids, labels = list(self.bos), [IGNORE] * len(self.bos)
        for text, is_target in self.segments(conv):
            piece = self.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
            if is_target and not text.endswith(self.eos):
                piece.append(self.tokenizer.eos_token_id)
            ids += piece
            labels += piece if is_target else [IGNORE] * len(piece)
        return truncate(Encoded(ids, labels), max_length)

    def prompt_ids(self, conv: Conversation, max_length: int) -> list[int]:
        """Ids of the prompt for generation (the conversation up to the reply), cut from the left to fit."""
        if conv and conv[-1]["role"] == "assistant":
            conv = conv[:-1]
        text = self.render(conv, generation_prompt=True)
        ids = list(self.bos) + self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids[-max_length:]

    def reference(self, conv: Conversation) -> str:
        """The gold reply: the last assistant turn."""
        return conv[-1]["content"] if conv and conv[-1]["role"] == "assistant" else ""


def truncate(sample: Encoded, max_length: int) -> Encoded:
    """Cut an over-long sample: the prompt from the left (its start matters least), never a target silently.

    When even the whole prompt cannot make room, the target's end is cut and the sample says so,
    so that the run can warn that those samples do not learn their EOS.
    """
    extra = len(sample.ids) - max_length
    if extra <= 0:
        return sample
    first_target = next((i for i, label in enumerate(sample.labels) if label != IGNORE), len(sample.ids))
    if extra <= first_target - 1:  # keep at least one prompt token: the first target is predicted from it
        return Encoded(sample.ids[extra:], sample.labels[extra:], "prompt")
    start = max(first_target - 1, 0)
    return Encoded(sample.ids[start : start + max_length], sample.labels[start : start + max_length], "target")
