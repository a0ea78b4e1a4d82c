"""The one recipe: data -> model -> strategy -> loss -> optimiser -> fit -> evaluate -> save.

Everything is chosen by RunConfig; nothing here is subclassed. The run folder is assembled in a
temporary sibling and only renamed into place when every file is written.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.config import DataConfig, RunConfig
from tunesmith.data.batching import EncodedSet
from tunesmith.data.encode import encode_texts
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import read_table
from tunesmith.data.validate import Examples, examples, stratified_split
from tunesmith.errors import ConfigError
from tunesmith.losses import classification_loss
from tunesmith.metrics import evaluate_encoded
from tunesmith.model.heads import with_head
from tunesmith.model.pretrained import ModelSource, load_tokenizer, quiet_transformers, resolve
from tunesmith.model.strategies import apply_strategy
from tunesmith.report import Reporter, console, print_metrics
from tunesmith.runs import RUN_FILE, check_target, sha256_of, staged, write_json
from tunesmith.train.loop import fit, steps_per_epoch
from tunesmith.train.optim import build_optimizer, build_scheduler


@dataclass
class RunResult:
    """What a finished run produced."""

    path: Path
    metrics: dict[str, Any] | None
    """Evaluation metrics of the saved (best) checkpoint; None without evaluation data."""
    best: dict[str, Any]
    seconds: float
    stopped_early: bool


def read_examples(cfg: DataConfig, seed: int) -> tuple[Examples, Examples | None]:
    """Training and evaluation examples: from eval_data, or a stratified split of train_data."""
    if cfg.train_data is None:
        raise ConfigError("no training data: pass a file (tunesmith train DATA) or set data.train_data")
    train = examples(read_table(cfg.train_data, cfg.encoding), cfg.text_column, cfg.label_column)
    if cfg.eval_data is not None:
        return train, examples(read_table(cfg.eval_data, cfg.encoding), cfg.text_column, cfg.label_column)
    if cfg.eval_split == 0:
        return train, None
    keep, held = stratified_split(train.labels, cfg.eval_split, seed)
    return (train.take(keep), train.take(held)) if held else (train, None)


def make_accelerator(precision: str) -> Accelerator:
    """An Accelerator for this precision; bf16 where the hardware lacks it is an error, not a fallback."""
    if precision == "bf16" and not bf16_supported():
        raise ConfigError(
            "--precision bf16: this machine has no bf16 support (needs a CPU with avx512_bf16/AMX "
            "or an Ampere+ GPU); use --precision fp32"
        )
    mixed = "bf16" if precision == "bf16" else "no"
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, mixed) and AcceleratorState().num_processes == 1:
        AcceleratorState._reset_state(True)  # a second run in one process (tests, notebooks) may change precision
    return Accelerator(mixed_precision=mixed)


def bf16_supported() -> bool:
    """Whether bf16 matmuls run natively here."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_model(cfg: RunConfig, labels: LabelSpace) -> tuple[ModelSource, PreTrainedTokenizerBase, PreTrainedModel]:
    """θ̂ with a seeded new task head, its tokenizer, and the strategy's choice of what trains."""
    source = resolve(cfg.model.name)
    set_seed(cfg.train.seed)  # seeds the head's initialisation and dropout
    tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)
    model = with_head(source, cfg.task.type, labels, cfg.model.trust_remote_code)
    apply_strategy(model, cfg.strategy)
    return source, tokenizer, model


def default_output(train_data: str) -> str:
    """runs/<data file name>-<date-time>: a fresh folder per run."""
    return f"runs/{Path(train_data).stem}-{datetime.now():%Y%m%d-%H%M%S}"


def run(cfg: RunConfig) -> RunResult:
    """Fine-tune θ̂ on D as cfg says and write the run folder; returns where and how well."""
    started = time.perf_counter()
    target = Path(cfg.output or default_output(cfg.data.train_data or "run"))
    check_target(target, cfg.overwrite)  # before minutes of work, not after
    train_ex, eval_ex = read_examples(cfg.data, cfg.train.seed)
    labels = LabelSpace.from_labels(train_ex.labels, cfg.data.labels, train_ex.file)
    train_y = train_ex.label_ids(labels)
    eval_y = eval_ex.label_ids(labels) if eval_ex else None

    accelerator = make_accelerator(cfg.train.precision)
    source, tokenizer, model = load_model(cfg, labels)
    pad_id = tokenizer.pad_token_id
    train_set = EncodedSet(
        encode_texts(tokenizer, train_ex.texts, cfg.model.max_length),
        train_y,
        cfg.train.batch_size,
        cfg.train.group_window,
        cfg.train.seed,
        pad_id,
    )
    eval_ids = encode_texts(tokenizer, eval_ex.texts, cfg.model.max_length) if eval_ex else None

    optimizer = build_optimizer(model, cfg.train)
    total = cfg.train.epochs * steps_per_epoch(
        len(train_set.batches(0)) // accelerator.num_processes, cfg.train.grad_accum
    )
    scheduler = build_scheduler(optimizer, cfg.train, total)
    model, optimizer = accelerator.prepare(model, optimizer)
    if not cfg.quiet:
        console.print(
            f"[bold]tunesmith[/] fine-tuning {source.name} ({cfg.strategy.name}) on {len(train_set)} "
            f"examples, {len(labels)} labels; evaluating on {len(eval_ex) if eval_ex else 0}; "
            f"{total} steps on {accelerator.device}"
        )

    latest: dict[str, Any] = {}
    best_metrics: dict[str, Any] = {}

    def evaluate() -> dict[str, Any]:
        latest.update(evaluate_encoded(model, eval_ids, eval_y, labels, cfg.eval.batch_size, pad_id))
        return latest

    with staged(target, cfg.overwrite) as tmp:

        def save_best(state: Any) -> None:
            best_metrics.clear()
            best_metrics.update(latest)
            with quiet_transformers():
                accelerator.unwrap_model(model).save_pretrained(tmp)  # safetensors; overwrites the previous best

        with Reporter(tmp / "metrics.jsonl", cfg.quiet) as reporter:
            state = fit(
                model,
                classification_loss,
                train_set,
                optimizer,
                scheduler,
                accelerator,
                cfg.train,
                cfg.eval,
                evaluate if eval_ex else None,
                save_best,
                reporter,
            )
        # Pipelines truncate to model_max_length when asked to: make it the length we trained with.
        tokenizer.model_max_length = cfg.model.max_length
        tokenizer.save_pretrained(tmp)
        seconds = time.perf_counter() - started
        if best_metrics:
            write_json(tmp / "eval.json", best_metrics)
        write_json(tmp / RUN_FILE, run_record(cfg, labels, source, train_ex, eval_ex, state.best, seconds))
    result = RunResult(target, best_metrics or None, state.best, seconds, state.stopped_early)
    if not cfg.quiet:
        summarize(result, cfg)
    return result


def run_record(
    cfg: RunConfig,
    labels: LabelSpace,
    source: ModelSource,
    train: Examples,
    held: Examples | None,
    best: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """tunesmith.json: everything needed to read, reproduce and audit the run."""
    import accelerate
    import datasets
    import transformers

    from tunesmith import __version__

    def fingerprint(ex: Examples | None, path: str | None) -> dict[str, Any] | None:
        if ex is None:
            return None
        return {
            "path": str(path),
            "sha256": sha256_of(path) if path else None,
            "rows": len(ex),
            "text_column": ex.text_column,
            "label_column": ex.label_column,
        }

    eval_path = cfg.data.eval_data or (cfg.data.train_data if held is not None else None)
    return {
        "tunesmith": __version__,
        "task": cfg.task.type,
        "labels": labels.to_dict(),
        "pretrained": {"name": source.name, "location": source.location, "kind": source.kind},
        "data": {
            "train": fingerprint(train, cfg.data.train_data),
            "eval": fingerprint(held, eval_path),
            "eval_from": "eval_data" if cfg.data.eval_data else ("split" if held is not None else None),
        },
        "best": best,
        "train_seconds": round(seconds, 2),
        "config": cfg.to_dict(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "accelerate": accelerate.__version__,
            "datasets": datasets.__version__,
        },
    }


def summarize(result: RunResult, cfg: RunConfig) -> None:
    """The end-of-run report: the best evaluation, when it happened, how long it took, where it is."""
    if result.metrics:
        print_metrics(
            result.metrics,
            f"evaluation of the saved model (epoch {result.best.get('epoch')}, step {result.best.get('step')})",
        )
        line = f"best {cfg.eval.metric} {result.best['value']:.4f} at epoch {result.best['epoch']}"
    else:
        line = "no evaluation data: saved the final model"
    early = " (stopped early)" if result.stopped_early else ""
    console.print(f"[bold green]done[/] in {result.seconds:.1f}s{early}: {line}; run folder: {result.path}")
