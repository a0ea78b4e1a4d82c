"""generate: supervised fine-tuning of a causal LM, L = −log Pr_θ(y|x) over the gold reply's tokens.

The LM keeps its own (pretrained) head. Held-out loss and perplexity pick the checkpoint; generating for the
evaluation prompts before and after training shows what fine-tuning changed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.config import DataConfig, RunConfig
from tunesmith.data.chat import ChatFormat
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import LABEL_NAMES, Table
from tunesmith.data.sft import SFTData, is_generation_table, load_sft
from tunesmith.data.tokens import PackedSet, TokenSet
from tunesmith.errors import ConfigError
from tunesmith.generation import Generator, generate_ids
from tunesmith.losses import causal_lm_loss
from tunesmith.model.heads import takes_logits_to_keep
from tunesmith.report import console, generation_table
from tunesmith.runs import RunInfo
from tunesmith.tasks.base import Recipe, Task
from tunesmith.text_metrics import generation_scores, lm_loss

SHOWN = ("loss", "perplexity", "exact_match", "token_f1", "rouge_l", "json_valid")


def _detect(table: Table, cfg: DataConfig) -> str | None:
    """Chat records, or a prompt/response column pair without a label column."""
    if cfg.prompt_column or cfg.response_column:
        return "--prompt-column / --response-column given"
    lower = {c.lower() for c in table.columns}
    if is_generation_table(table) and not (lower & set(LABEL_NAMES) and "messages" not in lower):
        return "chat messages or a prompt/response pair of columns"
    return None


def _load_data(cfg: RunConfig) -> SFTData:
    return load_sft(cfg.data, cfg.train.seed)


def _head_config(labels: LabelSpace | None) -> dict[str, Any]:
    return {}  # the LM's own head


def _recipe(cfg: RunConfig, data: SFTData, tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> Recipe:
    """Maximum likelihood of the gold replies; evaluation by held-out loss, and by generating."""
    fmt = ChatFormat(tokenizer, cfg.task.template)
    length = cfg.model.max_length
    samples = [fmt.encode(c, length) for c in data.train.items]
    cut = {kind: sum(s.truncated == kind for s in samples) for kind in ("prompt", "target")}
    if not cfg.quiet and cut["prompt"]:
        console.print(
            f"{cut['prompt']} of {len(samples)} samples were longer than {length} tokens: prompts cut from the left"
        )
    if cut["target"]:  # a cut target loses its EOS: say so even when asked to be quiet
        console.print(
            f"warning: {cut['target']} of {len(samples)} samples' replies alone exceed max_length {length} and were "
            "cut at the end (their EOS is not learned); raise --max-length"
        )
    pad_id, keep = tokenizer.pad_token_id, takes_logits_to_keep(model)
    if cfg.train.packing:
        train_set: TokenSet = PackedSet(samples, cfg.train.batch_size, length, cfg.train.seed, pad_id, keep)
    else:
        train_set = TokenSet(samples, cfg.train.batch_size, cfg.train.group_window, cfg.train.seed, pad_id, keep)
    record = {"template": fmt.template, "truncated": cut, "target_tokens": train_set.items(list(range(len(samples))))}
    what = f"{fmt.template} template"
    if data.eval is None:
        return Recipe(train_set, causal_lm_loss, None, what, record=record)
    held = [fmt.encode(c, length) for c in data.eval.items]
    shown = data.eval.items[: cfg.eval.generate_samples]
    prompts = [fmt.prompt_ids(c, length) for c in shown]
    golds = [fmt.reference(c) for c in shown]

    def evaluate(model: torch.nn.Module) -> dict[str, Any]:
        return lm_loss(model, held, min(cfg.eval.batch_size, cfg.train.batch_size), pad_id, keep)

    def generation(model: torch.nn.Module) -> dict[str, Any]:
        if not prompts:
            return {}
        replies = generate_ids(model, tokenizer, prompts, cfg.eval.max_new_tokens, cfg.eval.batch_size)
        return {**generation_scores(replies, golds, cfg.eval.answer_pattern), "examples": _examples(shown, replies)}

    def before(model: torch.nn.Module) -> dict[str, Any]:
        if not cfg.quiet:
            console.print("scoring the pretrained model on the evaluation set (held-out loss, then generation)")
        return {**evaluate(model), **generation(model)}

    def after(model: torch.nn.Module, partial: Path, best: dict[str, Any], start: dict[str, Any]):
        scored = {**(best or evaluate(model)), **generation(model)}
        if not cfg.quiet:
            console.print(generation_table(start, scored))
        return {**scored, "before": start}, {}

    return Recipe(train_set, causal_lm_loss, evaluate, what, before=before, after=after, record=record)


def _examples(convs: list[list[dict[str, str]]], replies: list[str], n: int = 3) -> list[dict[str, str]]:
    """A few prompts with gold and generated replies, for the report to show."""
    return [
        {"prompt": c[-2]["content"] if len(c) > 1 else "", "gold": c[-1]["content"], "generated": r}
        for c, r in zip(convs[:n], replies[:n], strict=False)
    ]


def _describe(data: SFTData) -> list[str]:
    lines = [f"{data.train.file}: {len(data.train)} conversations for generate; columns {data.train.columns}"]
    if data.eval is not None:
        lines.append(f"{data.eval.file}: {len(data.eval)} conversations")
    return lines


def _summary(metrics: dict[str, Any] | None, best: dict[str, Any], cfg: RunConfig) -> str:
    if not metrics:
        return "no evaluation data: saved the final model"
    return f"held-out loss {metrics['loss']:.4f} (perplexity {metrics['perplexity']:.3f})"


def _show(metrics: dict[str, Any], title: str) -> None:
    print("  ".join(f"{k} {metrics[k]:.4f}" for k in SHOWN if k in metrics) + f"  ({metrics['n']} generated)")
    for key, value in metrics.get("json_fields", {}).items():
        print(f"  JSON field {key} correct: {value:.4f}")


def _check(cfg: RunConfig) -> None:
    if cfg.data.test_data is not None:
        raise ConfigError("data.test_data applies to classification so far; score a generate run with evaluate")


def _open_run(run: RunInfo, batch_size: int | None, backend: str) -> Generator:
    """Generation batches are capped at 32: each row holds a growing KV cache."""
    return Generator.from_run(run, min(batch_size or 16, 32))


TASK = Task(
    name="generate",
    about="supervised fine-tuning of a causal LM on prompt/response pairs or chat records",
    model_class="AutoModelForCausalLM",
    peft_task_type="CAUSAL_LM",
    new_head=False,
    backbone="causal",
    defaults={"model.name": "smollm2", "model.max_length": 512, "eval.metric": "loss"},
    metrics=("loss", "perplexity"),
    detect=_detect,
    load_data=_load_data,
    head_config=_head_config,
    recipe=_recipe,
    describe=_describe,
    summary=_summary,
    open_run=_open_run,
    show=_show,
    headline=("loss", "perplexity"),
    packs=True,
    check=_check,
    training_config={"use_cache": False},  # no KV cache while training; it would hide packed positions too
)
