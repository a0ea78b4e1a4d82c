"""Generating with a fine-tuned causal LM: batched (left-padded, length-sorted), stopping at EOS.

Generator is to generation what Predictor is to classification: it needs nothing but a run
folder, and serves the CLI's predict and chat and the Python API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.backends import eval_mode
from tunesmith.data.batching import pad, sorted_batches
from tunesmith.data.chat import ChatFormat
from tunesmith.data.readers import iter_tables, reuse_column
from tunesmith.data.sft import Conversation, conversations
from tunesmith.errors import ConfigError
from tunesmith.model.heads import takes_logits_to_keep
from tunesmith.model.pretrained import load_errors, load_tokenizer, local, quiet_transformers
from tunesmith.runs import RunInfo, atomic_output, read_run


@torch.inference_mode()
def generate_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[str]:
    """The reply to each prompt (token ids), in input order; greedy unless temperature > 0."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ConfigError(f"--temperature must be >= 0 and --top-p in (0, 1], got {temperature}, {top_p}")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    stops = {tokenizer.eos_token_id}
    configured = model.generation_config.eos_token_id
    stops |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p} if temperature > 0 else {}
    replies = [""] * len(prompts)
    with eval_mode(model):
        for rows in sorted_batches([len(p) for p in prompts], batch_size):
            # left padding: every prompt ends where generation starts
            ids, mask = pad([prompts[i] for i in rows], pad_id, side="left")
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                eos_token_id=sorted(stops),
                pad_token_id=pad_id,
                **sampling,
            )
            for r, i in enumerate(rows):
                replies[i] = tokenizer.decode(out[r, ids.shape[1] :], skip_special_tokens=True).strip()
    return replies


class Generator:
    """A fine-tuned causal LM ready to reply to prompts or conversations."""

    noun = "replies"

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        fmt: ChatFormat,
        max_length: int,
        batch_size: int = 16,
        columns: dict[str, str | None] | None = None,
    ) -> None:
        self.model = model.eval()
        self.tokenizer, self.format, self.max_length, self.batch_size = tokenizer, fmt, max_length, batch_size
        self.columns = columns or {}

    @classmethod
    def from_run(cls, run: RunInfo | str | Path, batch_size: int = 16) -> Generator:
        """Load θ̃, its tokenizer and template from a run folder (tasks.open_run checks it is a generate run)."""
        run = run if isinstance(run, RunInfo) else read_run(run)
        with load_errors(local(run.path)), quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(run.path), use_safetensors=True)
        tokenizer = load_tokenizer(local(run.path))
        if torch.cuda.is_available():
            model = model.to("cuda")
        fmt = ChatFormat(tokenizer, run.raw.get("template", "auto"))
        return cls(model, tokenizer, fmt, run.max_length, batch_size, run.columns)

    def generate(
        self,
        prompts: Sequence[str | Conversation] | str,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> Any:
        """Replies to prompts (strings, or conversations as lists of {role, content}); one string for one string."""
        single = isinstance(prompts, str)
        items = [prompts] if single else list(prompts)
        convs = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in items]
        ids = [self.format.prompt_ids(c, self.max_length) for c in convs]
        out = generate_ids(self.model, self.tokenizer, ids, max_new_tokens, self.batch_size, temperature, top_p, seed)
        return out[0] if single else out

    def predict_file(
        self,
        source: str,
        output: str | None,
        *,
        columns: dict[str, str | None] | None = None,
        encoding: str = "utf-8",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
    ) -> int:
        """Reply to every prompt of a file (or '-' for stdin); JSONL with the prompt and the response, in order.

        A file output appears (renamed from a temporary sibling) only when complete.
        """
        written = 0
        given = (columns or {}).get("prompt")
        with atomic_output(output) as sink:
            for chunk in iter_tables(source, encoding):
                convs = conversations(chunk, reuse_column(chunk, given, self.columns.get("prompt")), None, False)
                replies = self.generate(convs.items, max_new_tokens, temperature, top_p, seed)
                for conv, reply in zip(convs.items, replies, strict=True):
                    prompt = conv[-1]["content"] if conv[-1]["role"] == "user" else None
                    record = {"prompt": prompt} if prompt is not None else {"messages": conv}
                    sink.write(json.dumps({**record, "response": reply}, ensure_ascii=False) + "\n")
                sink.flush()
                written += len(replies)
        return written

    def evaluate_file(
        self,
        source: str,
        *,
        columns: dict[str, str | None] | None = None,
        encoding: str = "utf-8",
        answer_pattern: str | None = None,
        max_new_tokens: int = 256,
        generate_samples: int | None = None,
    ) -> dict[str, Any]:
        """Held-out loss and perplexity over every sample; generation metrics over the first generate_samples."""
        from tunesmith.config import EvalConfig
        from tunesmith.data.readers import read_table
        from tunesmith.text_metrics import generation_scores, lm_loss

        EvalConfig(answer_pattern=answer_pattern, max_new_tokens=max_new_tokens)  # checks the regex and the count
        given = columns or {}
        table = read_table(source, encoding)
        prompt_column = reuse_column(table, given.get("prompt"), self.columns.get("prompt"))
        response_column = reuse_column(table, given.get("response"), self.columns.get("response"))
        convs = conversations(table, prompt_column, response_column).items
        held = [self.format.encode(c, self.max_length) for c in convs]
        metrics = lm_loss(
            self.model, held, self.batch_size, self.tokenizer.pad_token_id, takes_logits_to_keep(self.model)
        )
        shown = convs[:generate_samples] if generate_samples is not None else convs
        prompts = [self.format.prompt_ids(c, self.max_length) for c in shown]
        replies = generate_ids(self.model, self.tokenizer, prompts, max_new_tokens, self.batch_size)
        golds = [self.format.reference(c) for c in shown]
        return {**metrics, **generation_scores(replies, golds, answer_pattern)}

    def chat(self, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0) -> None:
        """An interactive conversation on the terminal; the history is kept (and cut from the left to fit)."""
        history: Conversation = []
        print("tunesmith chat: type a message; /reset forgets the conversation, /quit (or Ctrl-D) leaves")
        while True:
            try:
                line = input("> ").strip()
            except EOFError:
                print()
                return
            if line in ("/quit", "/exit"):
                return
            if line == "/reset":
                history = []
                continue
            if not line:
                continue
            history.append({"role": "user", "content": line})
            reply = self.generate([history], max_new_tokens, temperature, top_p, seed)[0]
            history.append({"role": "assistant", "content": reply})
            print(reply)
