"""The tunesmith command: each command builds a config and calls one library function.

User errors (TunesmithError) print one line and exit 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tunesmith.errors import EXIT_USAGE, ConfigError, Interrupted, TunesmithError, one_line
from tunesmith.tasks import NAMES as TASK_NAMES

if TYPE_CHECKING:
    from tunesmith.config import RunConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune pretrained transformers on your own labeled data.",
)

Opt = typer.Option
TASK_HELP = f"{', '.join(TASK_NAMES)} (default: detected from the columns and labels; the run says why)."


def build_config(config: Path | None, flags: dict[str, Any], assignments: list[str] | None) -> RunConfig:
    """A command's RunConfig: the YAML file, then the flags that were given, then --set (highest precedence)."""
    from tunesmith.config import RunConfig

    cfg = RunConfig.from_yaml(config) if config else RunConfig()
    cfg = cfg.with_values({k: v for k, v in flags.items() if v is not None}, where="flag")
    return cfg.override(assignments or [])


@app.command()
def train(
    data: Annotated[
        str | None, typer.Argument(help="Training file (CSV, TSV, JSONL, JSON, Parquet) or saved dataset.")
    ] = None,
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML run config; flags and --set override it.")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Any config field: section.field=value (repeatable).")] = None,
    model: Annotated[
        str | None, Opt(help="Alias (minilm, smollm2), local folder, .gguf file, or hub id (default by task).")
    ] = None,
    output: Annotated[str | None, Opt("--output", "-o", help="Run folder to write.")] = None,
    task: Annotated[str | None, Opt(help=TASK_HELP)] = None,
    eval_data: Annotated[str | None, Opt(help="Evaluation file; else --eval-split of DATA is held out.")] = None,
    eval_split: Annotated[float | None, Opt(help="Fraction of DATA held out for evaluation (default 0.1).")] = None,
    text_column: Annotated[str | None, Opt(help="Text column (found by name when unset).")] = None,
    text_pair_column: Annotated[
        str | None, Opt(help="Second text of a sentence pair (found for sentence1/sentence2 and the like).")
    ] = None,
    label_column: Annotated[str | None, Opt(help="Label column (found by name when unset).")] = None,
    labels: Annotated[str | None, Opt(help="Comma-separated label names, in id order.")] = None,
    label_separator: Annotated[
        str | None, Opt(help="multilabel: separator of label names in a cell, e.g. '|'.")
    ] = None,
    class_weights: Annotated[
        str | None, Opt(help="balanced (inverse frequency), none, or label=weight pairs: 'a=2,b=1'.")
    ] = None,
    loss: Annotated[str | None, Opt(help="focal (classification, multilabel) or huber (regression).")] = None,
    focal_gamma: Annotated[float | None, Opt(help="GAMMA of --loss focal (default 2).")] = None,
    prompt_column: Annotated[str | None, Opt(help="generate: prompt column (found by name when unset).")] = None,
    response_column: Annotated[str | None, Opt(help="generate: response column (found by name when unset).")] = None,
    template: Annotated[str | None, Opt(help="generate: auto (default), chat (the tokenizer's) or plain.")] = None,
    packing: Annotated[bool, Opt(help="generate: pack samples into full rows, no attention across them.")] = False,
    gradient_checkpointing: Annotated[
        bool, Opt(help="Recompute activations in backward: less memory, slower.")
    ] = False,
    answer_pattern: Annotated[
        str | None, Opt(help="generate: regex whose group 1 is the answer for exact match, e.g. '#### (.+)'.")
    ] = None,
    max_new_tokens: Annotated[int | None, Opt(help="generate: most tokens generated per eval sample.")] = None,
    generate_samples: Annotated[
        int | None, Opt(help="generate: eval samples generated for, before and after (default 100).")
    ] = None,
    encoding: Annotated[str | None, Opt(help="Encoding of text files (default utf-8).")] = None,
    epochs: Annotated[
        int | None, Opt(help="Passes over the data (default: about 600 steps, within 3-10 epochs).")
    ] = None,
    patience: Annotated[int | None, Opt(help="Evaluations without improvement before stopping (0: never).")] = None,
    max_minutes: Annotated[float | None, Opt(help="Stop after this many minutes of training; keep the best.")] = None,
    test_data: Annotated[
        str | None, Opt(help="Labeled file scored at every evaluation (test_* in metrics.jsonl); chooses nothing.")
    ] = None,
    batch_size: Annotated[int | None, Opt(help="Samples per micro-batch (default 16).")] = None,
    lr: Annotated[float | None, Opt(help="Peak learning rate (default by model size: 1e-4 for MiniLM).")] = None,
    seed: Annotated[int | None, Opt(help="Random seed (default 42).")] = None,
    max_length: Annotated[int | None, Opt(help="Tokens per text, or per window when chunking (default 128).")] = None,
    long_documents: Annotated[
        str | None, Opt(help="truncate, or chunk: read long texts as windows (default: chunk when over 5% are long).")
    ] = None,
    chunk_stride: Annotated[int | None, Opt(help="Tokens consecutive windows share (default max-length / 4).")] = None,
    max_chunks: Annotated[int | None, Opt(help="Most windows per text, spread over it (default 16).")] = None,
    aggregate: Annotated[
        str | None, Opt(help="How windows make one prediction: max (default), mean, attention (learned).")
    ] = None,
    precision: Annotated[str | None, Opt(help="auto (default: bf16 where native, else fp32), fp32 or bf16.")] = None,
    strategy: Annotated[str | None, Opt(help="full (default), head, top-K (e.g. top-2), bitfit, lora.")] = None,
    train_layers: Annotated[int | None, Opt(help="Blocks from the top that train under top-k.")] = None,
    init: Annotated[str | None, Opt(help="pretrained (default), or random: the ablation without θ̂.")] = None,
    unfreeze: Annotated[str | None, Opt(help="gradual: the head first, then one more block per epoch.")] = None,
    lora_r: Annotated[int | None, Opt(help="LoRA rank (strategy lora).")] = None,
    lora_alpha: Annotated[float | None, Opt(help="LoRA alpha (strategy lora).")] = None,
    lora_dropout: Annotated[float | None, Opt(help="LoRA dropout (strategy lora).")] = None,
    save_adapter: Annotated[bool, Opt(help="Under lora, also save the adapter alone in RUN/adapter.")] = False,
    l2sp: Annotated[float | None, Opt(help="ALPHA of the L2-SP pull toward θ̂ (0: off).")] = None,
    layer_lr_decay: Annotated[float | None, Opt(help="GAMMA: block l below the top learns at lr·GAMMA^l.")] = None,
    body_lr: Annotated[float | None, Opt(help="Learning rate of the backbone (the same as --lr).")] = None,
    head_lr: Annotated[
        float | None, Opt(help="Learning rate of the task head (default: 10x --lr for a classification head).")
    ] = None,
    save_every: Annotated[int | None, Opt(help="Write a resumable checkpoint every N steps.")] = None,
    save_every_minutes: Annotated[float | None, Opt(help="Write a resumable checkpoint every M minutes.")] = None,
    keep_checkpoints: Annotated[int | None, Opt(help="Keep the newest K checkpoints (default 2).")] = None,
    on_nonfinite: Annotated[str | None, Opt(help="NaN/inf loss or gradient: stop (default) or skip the step.")] = None,
    resume: Annotated[bool, Opt(help="Continue the interrupted run at --output from its newest checkpoint.")] = False,
    force: Annotated[bool, Opt(help="Resume even if the data or config differ.")] = False,
    allow_pickle: Annotated[bool, Opt(help="Load pickle weights (.bin/.pt), with weights_only=True.")] = False,
    trust_remote_code: Annotated[bool, Opt(help="Let a hub model run its own Python code.")] = False,
    overwrite: Annotated[bool, Opt(help="Replace an existing run folder.")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Only errors.")] = False,
) -> None:
    """Fine-tune a pretrained model on a labeled file and write a run folder."""
    from tunesmith.train.run import run

    flags: dict[str, Any] = {
        "data.train_data": data,
        "model.name": model,
        "output": output,
        "data.eval_data": eval_data,
        "data.eval_split": eval_split,
        "data.text_column": text_column,
        "data.label_column": label_column,
        "data.text_pair_column": text_pair_column,
        "data.label_separator": label_separator,
        "train.class_weights": class_weights,
        "train.loss": loss,
        "train.focal_gamma": focal_gamma,
        "data.labels": labels,
        "task.type": task,
        "data.prompt_column": prompt_column,
        "data.response_column": response_column,
        "task.template": template,
        "train.packing": packing or None,
        "train.gradient_checkpointing": gradient_checkpointing or None,
        "eval.answer_pattern": answer_pattern,
        "eval.max_new_tokens": max_new_tokens,
        "eval.generate_samples": generate_samples,
        "data.encoding": encoding,
        "train.epochs": epochs,
        "eval.patience": patience,
        "train.max_minutes": max_minutes,
        "data.test_data": test_data,
        "train.batch_size": batch_size,
        "train.lr": body_lr if body_lr is not None else lr,
        "train.seed": seed,
        "model.max_length": max_length,
        "model.long_documents": long_documents,
        "model.chunk_stride": chunk_stride,
        "model.max_chunks": max_chunks,
        "model.aggregate": aggregate,
        "train.precision": precision,
        "strategy.name": strategy,
        "strategy.train_layers": train_layers,
        "strategy.init": init,
        "strategy.unfreeze": unfreeze,
        "strategy.lora_r": lora_r,
        "strategy.lora_alpha": lora_alpha,
        "strategy.lora_dropout": lora_dropout,
        "strategy.save_adapter": save_adapter or None,
        "strategy.l2sp": l2sp,
        "train.layer_lr_decay": layer_lr_decay,
        "train.head_lr": head_lr,
        "overwrite": overwrite or None,
        "quiet": quiet or None,
        "train.save_every": save_every,
        "train.save_every_minutes": save_every_minutes,
        "train.keep_checkpoints": keep_checkpoints,
        "train.on_nonfinite": on_nonfinite,
        "resume": resume or None,
        "force": force or None,
        "model.allow_pickle": allow_pickle or None,
        "model.trust_remote_code": trust_remote_code or None,
    }
    run(build_config(config, flags, set_))


@app.command()
def resume(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="The --output of the interrupted run.")],
    force: Annotated[bool, Opt(help="Resume even if the data files changed.")] = False,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="Only errors.")] = False,
) -> None:
    """Continue an interrupted run from its newest checkpoint, with the config it started with."""
    from tunesmith.config import RunConfig
    from tunesmith.runs import PARTIAL_SUFFIX
    from tunesmith.train.run import START_FILE, run

    target = run_dir.with_name(run_dir.name.removesuffix(PARTIAL_SUFFIX))
    start = target.with_name(target.name + PARTIAL_SUFFIX) / START_FILE
    if not start.is_file():
        raise ConfigError(f"{target}: nothing to resume (no {start})")
    cfg = RunConfig.from_dict(json.loads(start.read_text())["config"], where=str(start))
    run(cfg.with_values({"output": str(target), "resume": True, "force": force, "quiet": quiet or cfg.quiet}))


@app.command()
def check(
    data: Annotated[str, typer.Argument(help="Labeled file to check, as train would read it.")],
    eval_data: Annotated[str | None, Opt(help="Evaluation file to check against the training labels.")] = None,
    text_column: Annotated[str | None, Opt(help="Text column (found by name when unset).")] = None,
    text_pair_column: Annotated[str | None, Opt(help="Second text of a sentence pair.")] = None,
    label_column: Annotated[str | None, Opt(help="Label column (found by name when unset).")] = None,
    labels: Annotated[str | None, Opt(help="Comma-separated label names, in id order.")] = None,
    label_separator: Annotated[str | None, Opt(help="multilabel: separator of label names in a cell.")] = None,
    encoding: Annotated[str, Opt(help="Encoding of text files.")] = "utf-8",
    task_type: Annotated[str | None, Opt("--task", help=TASK_HELP)] = None,
    model: Annotated[str | None, Opt(help="Model whose tokens the lengths are counted in (default by task).")] = None,
    max_length: Annotated[int | None, Opt(help="The window the lengths are compared with (default by task).")] = None,
) -> None:
    """Validate a data file exactly as train does: columns, rows, labels (or conversations), and how long the
    texts are in the model's tokens (only its tokenizer loads).
    """
    from tunesmith.config import RunConfig
    from tunesmith.tasks import resolve

    data_cfg = {"train_data": data, "eval_data": eval_data, "eval_split": 0.0, "text_column": text_column,
                "text_pair_column": text_pair_column, "label_column": label_column, "labels": labels,
                "label_separator": label_separator, "encoding": encoding}  # fmt: skip
    given = {"task.type": task_type or "auto", "data": data_cfg, "model.name": model, "model.max_length": max_length}
    cfg, task, why = resolve(RunConfig().with_values({k: v for k, v in given.items() if v is not None}), why=True)
    found = task.load_data(cfg)
    print(f"task: {task.name} ({why})")
    for line in task.describe(found):
        print(line)
    if task.lengths is not None:
        print(task.lengths(cfg, found))


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder.")],
    data: Annotated[str, typer.Argument(help="Labeled file to score.")],
    text_column: Annotated[str | None, Opt(help="Text column (as in training when unset).")] = None,
    text_pair_column: Annotated[str | None, Opt(help="Second text of a pair (as in training when unset).")] = None,
    label_column: Annotated[str | None, Opt(help="Label column (as in training when unset).")] = None,
    encoding: Annotated[str, Opt(help="Encoding of text files.")] = "utf-8",
    batch_size: Annotated[int | None, Opt(help="Texts per batch (default 64; 16 for generate).")] = None,
    output: Annotated[Path | None, Opt("--output", "-o", help="Also write the metrics as JSON here.")] = None,
    prompt_column: Annotated[str | None, Opt(help="generate: prompt column (found by name when unset).")] = None,
    response_column: Annotated[str | None, Opt(help="generate: response column (found by name when unset).")] = None,
    answer_pattern: Annotated[str | None, Opt(help="generate: regex whose group 1 is the answer.")] = None,
    max_new_tokens: Annotated[int | None, Opt(help="generate: most tokens per reply (default 256).")] = None,
    generate_samples: Annotated[int | None, Opt(help="generate: generate for only the first N rows.")] = None,
) -> None:
    """Score a run on a labeled file as its task does (classifier: per class, confusion; generate: loss, replies)."""
    from tunesmith.runs import write_json
    from tunesmith.tasks import for_run, open_run
    from tunesmith.tasks.base import call_with

    _, task = for_run(run_dir)
    columns = {"text": text_column, "text_pair": text_pair_column, "label": label_column, "prompt": prompt_column,
               "response": response_column}  # fmt: skip
    predictor = open_run(run_dir, batch_size)
    metrics = call_with(
        predictor.evaluate_file, task.name, data, columns=columns, encoding=encoding, answer_pattern=answer_pattern,
        max_new_tokens=max_new_tokens, generate_samples=generate_samples,
    )  # fmt: skip
    task.show(metrics, data)
    if output:
        write_json(output, metrics)


@app.command()
def predict(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder.")],
    data: Annotated[
        str, typer.Argument(help="CSV / TSV / JSONL / JSON / Parquet / .txt (a text per line), or - for stdin.")
    ] = "-",
    output: Annotated[str | None, Opt("--output", "-o", help="CSV or JSONL file; stdout when unset or -.")] = None,
    top_k: Annotated[int | None, Opt(help="Keep only the k most likely labels' probabilities.")] = None,
    text_column: Annotated[str | None, Opt(help="Text column (as in training when unset).")] = None,
    text_pair_column: Annotated[str | None, Opt(help="Second text of a pair (as in training when unset).")] = None,
    encoding: Annotated[str, Opt(help="Encoding of text files.")] = "utf-8",
    batch_size: Annotated[int | None, Opt(help="Texts per batch (default 64; 16 for generate).")] = None,
    format_: Annotated[
        str | None, Opt("--format", help="csv or jsonl (default: from the output name; jsonl on stdout).")
    ] = None,
    prompt_column: Annotated[str | None, Opt(help="generate: prompt column (found by name when unset).")] = None,
    max_new_tokens: Annotated[int | None, Opt(help="generate: most tokens per reply (default 256).")] = None,
    temperature: Annotated[float | None, Opt(help="generate: 0 is greedy (default); above 0 samples.")] = None,
    top_p: Annotated[float | None, Opt(help="generate: nucleus sampling mass (with --temperature).")] = None,
    seed: Annotated[int | None, Opt(help="generate: seed of sampling (default 0).")] = None,
    backend: Annotated[str, Opt(help="torch, or onnx, onnx-int8, onnx-int8-dynamic after tunesmith export.")] = "torch",
    explain: Annotated[
        bool, Opt(help="Add each window read: its character span, its share of the decision, its own label.")
    ] = False,
) -> None:
    """Predict with a run as its task does: labels (with scores) for texts, replies to prompts (input order)."""
    from tunesmith.report import console
    from tunesmith.tasks import for_run, open_run
    from tunesmith.tasks.base import call_with

    _, task = for_run(run_dir)
    predictor = open_run(run_dir, batch_size, backend)
    columns = {"text": text_column, "text_pair": text_pair_column, "prompt": prompt_column}
    n = call_with(
        predictor.predict_file, task.name, data, output, columns=columns, encoding=encoding, top_k=top_k,
        format=format_, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
        explain=explain or None,
    )  # fmt: skip
    if output not in (None, "-"):
        console.print(f"wrote {n} {predictor.noun} to {output}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder of a classification run.")],
    format_: Annotated[str, Opt("--format", help="onnx (the only format so far): RUN/onnx/model.onnx.")] = "onnx",
    quantize: Annotated[
        str | None, Opt(help="int8, or int8-dynamic (faster, less exact): also write RUN/onnx/model.<it>.onnx.")
    ] = None,
) -> None:
    """Export a classification run for fast CPU inference: predict --backend onnx (or onnx-<quantize>)."""
    from tunesmith.export import export_run

    print(export_run(run_dir, format_, quantize))


@app.command()
def chat(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder of a generate run.")],
    max_new_tokens: Annotated[int, Opt(help="Most tokens per reply.")] = 256,
    temperature: Annotated[float, Opt(help="0 is greedy (default); above 0 samples.")] = 0.0,
    top_p: Annotated[float, Opt(help="Nucleus sampling mass (with --temperature).")] = 1.0,
    seed: Annotated[int, Opt(help="Seed of sampling.")] = 0,
) -> None:
    """Talk to a fine-tuned causal LM in the terminal, for a quick look."""
    from tunesmith.tasks import for_run, open_run

    _, task = for_run(run_dir)
    predictor = open_run(run_dir, 1)
    if not hasattr(predictor, "chat"):
        raise ConfigError(f"{run_dir}: a {task.name} run; chat needs a run trained with --task generate")
    predictor.chat(max_new_tokens, temperature, top_p, seed)


@app.command()
def serve(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder of any task.")],
    host: Annotated[str, Opt(help="Address to bind; 127.0.0.1 unless you mean to expose it.")] = "127.0.0.1",
    port: Annotated[int, Opt(help="Port.")] = 8000,
    backend: Annotated[str, Opt(help="torch, or onnx / onnx-int8 once exported.")] = "torch",
    workers: Annotated[int, Opt(help="Processes, each with its own model (for more cores).")] = 1,
    max_batch_tokens: Annotated[int, Opt(help="Tokens per batch across requests.")] = 16_384,
    max_wait_ms: Annotated[float, Opt(help="How long a batch's first request waits for others.")] = 5.0,
    max_client_batch_size: Annotated[int, Opt(help="Items per request (more: 413).")] = 64,
    max_concurrent: Annotated[int, Opt(help="Requests in flight (more: 429 with Retry-After).")] = 256,
    max_body_mb: Annotated[float, Opt(help="Request body limit in MiB (more: 413).")] = 4.0,
    timeout: Annotated[float, Opt(help="Seconds before a request is answered 504.")] = 60.0,
    strict: Annotated[bool, Opt(help="413 for a text longer than max_length, instead of the run's reading.")] = False,
    api_key: Annotated[
        str | None, Opt(envvar="TUNESMITH_API_KEY", help="Require 'Authorization: Bearer KEY' (or $TUNESMITH_API_KEY).")
    ] = None,
    cors: Annotated[list[str] | None, Opt(help="Allowed CORS origin (repeat); none by default.")] = None,
) -> None:
    """Serve a run over HTTP: POST /predict, /health, /ready, /info, /metrics, /docs (the serve extra)."""
    from tunesmith.serve import Limits
    from tunesmith.serve import serve as run_server

    limits = Limits(max_batch_tokens, max_client_batch_size, max_concurrent, max_wait_ms,
                    int(max_body_mb * 1024 * 1024), timeout, strict, api_key, tuple(cors or ()))  # fmt: skip
    print(f"serving {run_dir} on http://{host}:{port} (docs at /docs); Ctrl-C or SIGTERM stops", file=sys.stderr)
    run_server(run_dir, host, port, backend, workers, limits)


@app.command()
def compare(
    data: Annotated[str, typer.Argument(help="Training file.")],
    strategies: Annotated[
        str, Opt(help="Comma-separated: full, head, top-K, bitfit, lora, l2sp, llrd, gradual, random-init.")
    ] = "full,head,top-2,bitfit,lora,l2sp,random-init",
    output: Annotated[Path, Opt("--output", "-o", help="Folder for one run per strategy and compare.md.")] = Path(
        "runs/compare"
    ),
    test_data: Annotated[str | None, Opt(help="Labeled file every strategy is also scored on.")] = None,
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML run config shared by every strategy.")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Any config field: section.field=value.")] = None,
    model: Annotated[str | None, Opt(help="Alias (minilm), local folder, or hub id.")] = None,
    epochs: Annotated[int | None, Opt(help="Passes over the data.")] = None,
    seed: Annotated[int | None, Opt(help="Random seed.")] = None,
    overwrite: Annotated[bool, Opt(help="Reuse an existing output folder.")] = False,
) -> None:
    """Train the same data, seed and budget under several strategies and print one table."""
    from tunesmith.compare import compare as run_compare
    from tunesmith.compare import markdown

    flags = {
        "data.train_data": data,
        "model.name": model,
        "train.epochs": epochs,
        "train.seed": seed,
        "overwrite": overwrite or None,
    }
    from tunesmith.tasks import detect_task

    cfg = detect_task(build_config(config, flags, set_))  # the table names the metric, which depends on the task
    names = [s.strip() for s in strategies.split(",") if s.strip()]
    rows = run_compare(cfg, names, output, test_data)
    print(markdown(rows, cfg))
    print(f"saved {output / 'compare.json'} and {output / 'compare.md'}")


@app.command()
def tune(
    data: Annotated[str | None, typer.Argument(help="Training file (or data.train_data of --config).")] = None,
    output: Annotated[Path, Opt("--output", "-o", help="Folder for study.db, trials/, best/, tune.md.")] = Path(
        "runs/tune"
    ),
    trials: Annotated[int | None, Opt(help="Finished trials to reach (a resumed study counts its earlier).")] = None,
    time_budget: Annotated[
        str | None, Opt(help="No new trial after this (90s, 30m, 2h); each trial is capped at what is left.")
    ] = None,
    space: Annotated[
        str | None,
        Opt(help="What to search, e.g. 'lr=1e-5:1e-3,batch_size=8|16,strategy=full|lora,epochs=3' (default: all)."),
    ] = None,
    keep: Annotated[str, Opt(help="best: delete the other trials' folders; all: keep every one.")] = "best",
    jobs: Annotated[int, Opt(help="Trials at once, one GPU each (worker processes on the same study).")] = 1,
    resume: Annotated[bool, Opt(help="Continue the study in --output (after a kill, too).")] = False,
    overwrite: Annotated[bool, Opt(help="Replace the study in --output.")] = False,
    eval_data: Annotated[str | None, Opt(help="Evaluation file; else --eval-split of DATA is held out.")] = None,
    eval_split: Annotated[float | None, Opt(help="Fraction of DATA held out for evaluation (default 0.1).")] = None,
    text_column: Annotated[str | None, Opt(help="Text column (found by name when unset).")] = None,
    label_column: Annotated[str | None, Opt(help="Label column (found by name when unset).")] = None,
    task: Annotated[str | None, Opt(help=TASK_HELP)] = None,
    model: Annotated[str | None, Opt(help="Alias (minilm, smollm2), local folder, or hub id.")] = None,
    seed: Annotated[int | None, Opt(help="Seed of every trial's run and of the sampler (default 42).")] = None,
    precision: Annotated[str | None, Opt(help="fp32, bf16 (autocast) or auto.")] = None,
    config: Annotated[Path | None, Opt("--config", "-c", help="YAML run config every trial starts from.")] = None,
    set_: Annotated[list[str] | None, Opt("--set", help="Any config field: section.field=value.")] = None,
    quiet: Annotated[bool, Opt("--quiet", "-q", help="No line per trial; only the table and errors.")] = False,
) -> None:
    """Search hyperparameters with optuna (TPE, pruning): each trial a run; the best in OUTPUT/best."""
    from tunesmith.tune import markdown, run_study

    flags = {
        "data.train_data": data,
        "data.eval_data": eval_data,
        "data.eval_split": eval_split,
        "data.text_column": text_column,
        "data.label_column": label_column,
        "task.type": task,
        "model.name": model,
        "train.seed": seed,
        "train.precision": precision,
        "quiet": quiet or None,
    }
    cfg = build_config(config, flags, set_)
    result = run_study(cfg, output, space, trials, time_budget, keep, jobs, resume, overwrite)
    print(markdown(result))
    print(f"saved {output / 'tune.json'} and {output / 'tune.md'}")


@app.command("tune-worker", hidden=True)
def tune_worker(
    output: Path,
    keep: Annotated[str, Opt()] = "best",
    trials: Annotated[int | None, Opt()] = None,
    deadline: Annotated[float | None, Opt()] = None,
    lane: Annotated[int, Opt()] = 0,
) -> None:
    """One of tune --jobs N's processes: trials of the study in OUTPUT until it is done (started by tune)."""
    from tunesmith.tune import work

    work(output, deadline, trials, keep, lane, publish=False)


@app.command()
def drift(run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="Run folder.")]) -> None:
    """How far each layer moved from θ̂ during fine-tuning (from drift.json, or recomputed from θ̂)."""
    from rich.console import Console

    from tunesmith.report import drift_table
    from tunesmith.runs import read_run

    run = read_run(run_dir)
    saved = run.path / "drift.json"
    if saved.is_file():
        report = json.loads(saved.read_text())
    else:
        from tunesmith.train.run import recompute_drift

        report = recompute_drift(run)
    Console().print(drift_table(report, f"drift of {run_dir} from {run.raw['pretrained']['name']}"))


@app.command()
def info(name: Annotated[str, typer.Argument(help="Alias (minilm), local folder or hub id.")] = "minilm") -> None:
    """Architecture, parameter counts, maximum length and tokenizer of a model."""
    from rich.console import Console

    from tunesmith.model.info import describe

    Console().print(describe(name))


@app.command("demo-data")
def demo_data(
    folder: Annotated[Path, typer.Argument(help="Folder to write train.jsonl, test.jsonl, new_emails.txt.")],
) -> None:
    """Write the embedded support-email dataset (billing / technical / feedback)."""
    from tunesmith.demo import write_demo_data

    for path in write_demo_data(folder):
        print(path)


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the Rust tokenizer
    try:
        app()
    except Interrupted as e:
        print(one_line(str(e)), file=sys.stderr)
        sys.exit(e.exit_code)
    except TunesmithError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
