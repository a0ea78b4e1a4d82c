"""What differs between tasks in a run: data, encoding, loss and evaluation. The recipe in run.py is shared.

A task is the (L, F_θ) pair of the objective: classification scores a label with cross-entropy;
generate scores the gold reply's tokens with −log Pr_θ(y|x). Each gives run.py a Recipe.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tunesmith.config import RunConfig
from tunesmith.data.batching import EncodedSet
from tunesmith.data.chat import ChatFormat
from tunesmith.data.encode import encode_texts
from tunesmith.data.sft import SFTData, is_generation_file, load_sft
from tunesmith.data.tokens import PackedSet, TokenSet
from tunesmith.data.validate import LabeledData, load_labeled
from tunesmith.generation import generate_ids
from tunesmith.losses import LossFn, causal_lm_loss, classification_loss
from tunesmith.metrics import evaluate_encoded
from tunesmith.model.heads import takes_logits_to_keep
from tunesmith.model.strategies import is_adapter
from tunesmith.report import console, generation_table
from tunesmith.runs import write_json
from tunesmith.text_metrics import generation_scores, lm_loss


def detect_task(cfg: RunConfig) -> RunConfig:
    """Resolve task.type auto from the training file's columns, and fill the task's defaults."""
    task = cfg.task.type
    if task == "auto" and cfg.data.train_data is not None:
        task = "generate" if is_generation_file(cfg.data.train_data, cfg.data.encoding) else "classification"
    return cfg.for_task("classification" if task == "auto" else task)


def load_data(cfg: RunConfig) -> LabeledData | SFTData:
    """D for the (resolved) task; every problem is one DataError, before any folder is made."""
    return load_sft(cfg.data, cfg.train.seed) if cfg.task.type == "generate" else load_labeled(cfg.data, cfg.train.seed)


@dataclass
class Recipe:
    """What fit() and the run need from the task."""

    train_set: Any
    loss_fn: LossFn
    evaluate: Callable[[torch.nn.Module], dict[str, Any]] | None
    """Held-out metrics of the model as it is now (every evaluation during training)."""
    generate_eval: Callable[[torch.nn.Module], dict[str, Any]] | None = None
    """generate: generation metrics (exact match, token F1, ROUGE-L, JSON), before and after training."""
    test: Callable[[torch.nn.Module], dict[str, Any]] | None = None
    """Metrics on data.test_data, which chooses nothing: logged at each evaluation and kept for the saved model."""
    record: dict[str, Any] = field(default_factory=dict)
    """What tunesmith.json records about the task."""


def classification(
    cfg: RunConfig, data: LabeledData, tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module
) -> Recipe:
    """Labels by cross-entropy; evaluation by the confusion matrix."""
    pad_id = tokenizer.pad_token_id
    train_set = EncodedSet(
        encode_texts(tokenizer, data.train.texts, cfg.model.max_length),
        data.train_ids,
        cfg.train.batch_size,
        cfg.train.group_window,
        cfg.train.seed,
        pad_id,
    )

    def scorer(examples: Any, label_ids: list[int] | None) -> Callable[[torch.nn.Module], dict[str, Any]] | None:
        if examples is None:
            return None
        ids = encode_texts(tokenizer, examples.texts, cfg.model.max_length)
        return lambda model: evaluate_encoded(model, ids, label_ids, data.labels, cfg.eval.batch_size, pad_id)

    return Recipe(
        train_set,
        classification_loss,
        scorer(data.eval, data.eval_ids),
        test=scorer(data.test, data.test_ids),
        record={"labels": data.labels.to_dict()},
    )


def generate(cfg: RunConfig, data: SFTData, tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> Recipe:
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
    if data.eval is None:
        return Recipe(train_set, causal_lm_loss, None, record=record)
    held = [fmt.encode(c, length) for c in data.eval.items]
    shown = data.eval.items[: cfg.eval.generate_samples]
    prompts = [fmt.prompt_ids(c, length) for c in shown]
    golds = [fmt.reference(c) for c in shown]

    def evaluate(model: torch.nn.Module) -> dict[str, Any]:
        return lm_loss(model, held, min(cfg.eval.batch_size, cfg.train.batch_size), pad_id, keep)

    def generate_eval(model: torch.nn.Module) -> dict[str, Any]:
        if not prompts:
            return {}
        replies = generate_ids(model, tokenizer, prompts, cfg.eval.max_new_tokens, cfg.eval.batch_size)
        return {**generation_scores(replies, golds, cfg.eval.answer_pattern), "examples": _examples(shown, replies)}

    return Recipe(train_set, causal_lm_loss, evaluate, generate_eval, record=record)


def _examples(convs: list[list[dict[str, str]]], replies: list[str], n: int = 3) -> list[dict[str, str]]:
    """A few prompts with gold and generated replies, for the report to show."""
    return [
        {"prompt": c[-2]["content"] if len(c) > 1 else "", "gold": c[-1]["content"], "generated": r}
        for c, r in zip(convs[:n], replies[:n], strict=False)
    ]


BASELINE = "baseline.json"
"""In <output>.partial (generate): θ̂'s held-out metrics, measured once before training, kept across a resume."""


def baseline(recipe: Recipe, model: torch.nn.Module, partial: Path, resumed: bool, quiet: bool) -> dict[str, Any]:
    """θ̂'s held-out loss and generation metrics (generate only), so the report can show what training changed."""
    if recipe.generate_eval is None:
        return {}
    file = partial / BASELINE
    if resumed and file.exists():
        return json.loads(file.read_text())
    if not quiet:
        console.print("scoring the pretrained model on the evaluation set (held-out loss, then generation)")
    before = {**recipe.evaluate(model), **recipe.generate_eval(model)}
    write_json(file, before)
    return before


def after_training(
    recipe: Recipe,
    final: torch.nn.Module,
    partial: Path,
    state: Any,
    before: dict[str, Any],
    best: dict[str, Any],
    quiet: bool,
) -> dict[str, Any]:
    """θ̃'s generation metrics, on the saved (best) weights, beside θ̂'s."""
    from safetensors.torch import load_model as load_weights

    if state.best.get("step") != state.step and not is_adapter(final):
        load_weights(final, str(partial / "model.safetensors"))  # the best checkpoint, not the last step
    after = {**(best or recipe.evaluate(final)), **recipe.generate_eval(final)}
    if not quiet:
        console.print(generation_table(before, after))
    return {**after, "before": before}


RECIPES: dict[str, Callable[[RunConfig, Any, PreTrainedTokenizerBase, torch.nn.Module], Recipe]] = {
    "classification": classification,
    "generate": generate,
}
