"""The one recipe: data -> model -> strategy -> loss -> optimiser -> fit -> evaluate -> save.

Everything is chosen by RunConfig; nothing here is subclassed. The run is built in
<output>.partial (checkpoints, metrics, the best weights so far) and renamed onto <output> only
when complete; a failed run leaves nothing behind unless a checkpoint makes it resumable.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from safetensors.torch import load_file, save_file
from safetensors.torch import load_model as load_weights
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.config import RunConfig
from tunesmith.data.labels import LabelSpace
from tunesmith.data.validate import sha256_of
from tunesmith.errors import ConfigError, DiskError, Interrupted, ModelError, TunesmithError
from tunesmith.losses import l2sp_penalty
from tunesmith.model.aggregate import split_off
from tunesmith.model.heads import checkpoint_activations, head_parameter_names
from tunesmith.model.pretrained import ModelSource, load_tokenizer, quiet_transformers, resolve
from tunesmith.model.strategies import apply_strategy, check_strategy, gradual_unfreezing, is_adapter
from tunesmith.report import Reporter, console, parameter_drift
from tunesmith.runs import RUN_FILE, RunInfo, TensorFile, abandon, begin, environment, finish, write_json
from tunesmith.tasks import get as get_task
from tunesmith.tasks import resolve as resolve_task
from tunesmith.tasks.base import Recipe, Task
from tunesmith.train import checkpoint
from tunesmith.train.defaults import resolve as resolve_defaults
from tunesmith.train.loop import FitState, Hooks, fit, steps_per_epoch
from tunesmith.train.optim import build_optimizer, build_scheduler

START_FILE = "run.json"
"""In <output>.partial: the config and data fingerprints the run started with, checked on resume."""
START_WEIGHTS = "start.safetensors"
"""In <output>.partial: θ̂ and the initial head as training started, for drift.json; gone when the run is done."""
RUNTIME_ONLY = {"output", "overwrite", "quiet", "resume", "force", "data.train_data", "data.eval_data", "path"}
"""What may differ between an interrupted run and its resumption (a moved file is compared by sha256)."""


@dataclass
class RunResult:
    """What a finished run produced."""

    path: Path
    metrics: dict[str, Any] | None
    """Evaluation metrics of the saved (best) checkpoint; None without evaluation data."""
    best: dict[str, Any]
    seconds: float
    stopped_early: bool
    skipped_steps: int = 0
    under_trained: bool = False
    """The last evaluation was the best and the budget ran out: more epochs would likely still help."""


def make_accelerator(precision: str) -> Accelerator:
    """An Accelerator for this precision; bf16 where the hardware lacks it is an error, not a fallback."""
    if precision == "bf16" and not bf16_supported():
        raise ConfigError(
            "--precision bf16: this machine has no bf16 support (needs a CPU with avx512_bf16/AMX "
            "or an Ampere+ GPU); use --precision fp32"
        )
    if precision == "auto":
        precision = "bf16" if bf16_supported() else "fp32"
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


def load_model(
    cfg: RunConfig, task: Task, labels: LabelSpace | None
) -> tuple[ModelSource, PreTrainedTokenizerBase, PreTrainedModel]:
    """θ̂ with the task's seeded new head (none for a causal LM), and its tokenizer; every parameter trainable."""
    source = resolve(cfg.model.name)
    set_seed(cfg.train.seed)  # seeds the head's initialisation and dropout
    tokenizer = load_tokenizer(source, cfg.model.trust_remote_code)
    random_init = cfg.strategy.init == "random"
    model = task.new_model(source, labels, cfg.model.trust_remote_code, cfg.model.allow_pickle, random_init)
    return source, tokenizer, model


def l2sp_regularizer(model: PreTrainedModel, alpha: float) -> Callable[[], torch.Tensor]:
    """The L2-SP penalty over the trainable backbone; θ̂ is copied once here, not per step."""
    heads = head_parameter_names(model)
    params = [p for name, p in model.named_parameters() if p.requires_grad and name not in heads]
    anchors = [p.detach().clone() for p in params]
    return lambda: l2sp_penalty(params, anchors, alpha)


BEST_TRAINABLE = "best_trainable.safetensors"
"""Under lora: the best adapter and head weights so far, in <output>.partial."""


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (adapters and head), detached copies."""
    return {n: p.detach().clone().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_merged(model: torch.nn.Module, folder: Path, save_adapter: bool) -> PreTrainedModel:
    """Restore the best adapter, optionally save it alone, then save (and return) the merged plain model."""
    best = folder / BEST_TRAINABLE
    if best.exists():
        model.load_state_dict(load_file(str(best)), strict=False)
        best.unlink()
    with quiet_transformers():
        if save_adapter:
            model.save_pretrained(folder / "adapter")
        merged = model.merge_and_unload()
        merged.save_pretrained(folder)
    return merged


def run_drift(
    cfg: RunConfig, labels: LabelSpace | None, folder: Path, model: torch.nn.Module | None = None
) -> dict[str, Any]:
    """Drift of the saved θ̃ from the starting point: the run's snapshot of it when there is one (with the
    model giving names and layout), else θ̂ rebuilt exactly (same seed, same initial head).
    """
    snapshot = folder / START_WEIGHTS
    if model is None or not snapshot.exists():
        _, _, model = load_model(cfg, get_task(cfg.task.type), labels)  # the plain start; LoRA is saved merged
        start: Mapping[str, torch.Tensor] = dict(model.named_parameters())
    else:
        start = TensorFile(snapshot)
    return parameter_drift(model, start, TensorFile(folder / "model.safetensors"))


def recompute_drift(run: RunInfo) -> dict[str, Any]:
    """Drift of a run folder from the θ̂ it records; refused if that model's weights changed since."""
    cfg = RunConfig.from_dict(run.raw["config"], where=str(run.path / RUN_FILE))
    saved = run.raw["pretrained"].get("sha256")
    now = weights_sha256(resolve(cfg.model.name))
    if saved and now != saved:
        raise ModelError(f"{cfg.model.name}: its weights changed since {run.path} was trained (sha256 differs)")
    return run_drift(cfg, run.labels, run.path)


def weights_sha256(source: ModelSource) -> str | None:
    """Fingerprint of a local model's weight files, so drift can check it compares against the same θ̂."""
    if source.kind == "hub":
        return None
    if source.gguf_file:
        return sha256_of(Path(source.location) / source.gguf_file)
    files = sorted(Path(source.location).glob("*.safetensors")) or sorted(Path(source.location).glob("*.bin"))
    digest = hashlib.sha256()
    for f in files:
        digest.update(sha256_of(f).encode())
    return digest.hexdigest() if files else None


def default_output(train_data: str) -> str:
    """runs/<data file name>-<date-time>: a fresh folder per run."""
    return f"runs/{Path(train_data).stem}-{datetime.now():%Y%m%d-%H%M%S}"


def check_resumable(partial: Path, start: dict[str, Any], force: bool) -> None:
    """Refuse to continue a run with other data or another config, naming the first difference."""
    saved = json.loads((partial / START_FILE).read_text())
    differences = _differences(saved, start)
    if differences and not force:
        raise ConfigError(
            f"refusing to resume {partial}: {differences[0]}"
            f"{f' (and {len(differences) - 1} more)' if len(differences) > 1 else ''}; "
            "pass --force to resume anyway"
        )


def _differences(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences, data before config; paths under RUNTIME_ONLY are ignored."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted({**old, **new}, key=lambda k: k != "data")
        keys = [k for k in keys if f"{path}{k}".removeprefix("config.") not in RUNTIME_ONLY and k not in RUNTIME_ONLY]
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{path}{k}.")]
    if old == new:
        return []
    what, name = ("data", path.removeprefix("data.")) if path.startswith("data.") else ("config", path)
    if name.endswith("sha256."):  # the full digests are noise in a message; their starts tell them apart
        old, new = f"{old[:12]}…" if old else old, f"{new[:12]}…" if new else new
    return [f"{what} {name.rstrip('.').removeprefix('config.')} is {old!r} in the interrupted run, {new!r} now"]


BEFORE = "baseline.json"
"""In <output>.partial: θ̂'s metrics (Recipe.before), measured once before training, kept across a resume."""


def score_before(recipe: Recipe, model: torch.nn.Module, partial: Path, resumed: bool) -> dict[str, Any]:
    """θ̂ scored by the task before training (generation: held-out loss and replies), for after() to compare."""
    if recipe.before is None:
        return {}
    file = partial / BEFORE
    if resumed and file.exists():
        return json.loads(file.read_text())
    before = recipe.before(model)
    write_json(file, before)
    return before


OnEvaluation = Callable[[FitState, dict[str, Any]], None]


def run(cfg: RunConfig, on_evaluation: OnEvaluation | None = None) -> RunResult:
    """Fine-tune θ̂ on D as cfg says and write the run folder; returns where and how well.

    on_evaluation sees each evaluation's metrics as it happens (tune's pruner); an exception it raises ends
    the run like any other failure, leaving no run folder.
    """
    started = time.perf_counter()
    target = Path(cfg.output or default_output(cfg.data.train_data or "run"))
    check_strategy(cfg.strategy)
    cfg, task, why = resolve_task(cfg, why=True)
    data = task.load_data(cfg)  # all data errors come before any folder is made
    start = {"config": cfg.to_dict(), "data": data.fingerprints(cfg.data)}
    partial = begin(target, cfg.overwrite, cfg.resume)
    if cfg.resume and (partial / START_FILE).exists():
        check_resumable(partial, start, cfg.force)
    try:
        write_json(partial / START_FILE, start)
        result = _train(cfg, task, data, partial, started, on_evaluation, why)
        write_json(partial / RUN_FILE, {**result.pop("record"), "data": start["data"], **environment()})
    except OSError as e:
        abandon(partial, checkpoint.latest(partial) is not None)
        raise DiskError(f"could not write the run in {partial}: {e.strerror or e}") from None
    except TunesmithError as e:
        last = checkpoint.latest(partial)
        abandon(partial, last is not None)
        if last is not None and not isinstance(e, Interrupted):  # an interruption already says how to resume
            e.args = (f"{e}; the run can continue from its {last.name} checkpoint: tunesmith resume {target}",)
        raise
    except BaseException:
        abandon(partial, checkpoint.latest(partial) is not None)
        raise
    try:
        finish(partial, target, drop=(checkpoint.FOLDER, START_FILE, START_WEIGHTS))
    except OSError as e:  # the run is complete: never delete it here
        raise DiskError(
            f"the finished run is in {partial} but could not be moved to {target}: {e.strerror or e}"
        ) from None
    out = RunResult(target, **result)
    if not cfg.quiet:
        summarize(out, cfg, task)
    elif out.skipped_steps:  # skipped steps change the result: say so even when asked to be quiet
        console.print(f"warning: {out.skipped_steps} steps with a non-finite loss or gradient were skipped")
    return out


def _train(
    cfg: RunConfig,
    task: Task,
    data: Any,
    partial: Path,
    started: float,
    on_evaluation: OnEvaluation | None = None,
    why: str = "as given",
) -> dict[str, Any]:
    """Load, encode, fit (from a checkpoint when resuming) and save into the partial folder."""
    accelerator = make_accelerator(cfg.train.precision)
    source, tokenizer, model = load_model(cfg, task, data.labels)
    pretrained_parameters = sum(p.numel() for p in model.parameters())  # θ̂ and head, before any adapter
    # θ̂ and the seeded head, kept on disk for drift: a copy in memory would add the model's size to peak RSS
    # for the whole run, and rebuilding it later costs seconds (de-quantising a GGUF).
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters()}, str(partial / START_WEIGHTS))
    model = apply_strategy(model, cfg.strategy, task.peft_task_type, task.new_head)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError(f"strategy {cfg.strategy.name}: no parameter of this model trains under it; use full or lora")
    recipe = task.recipe(cfg, data, tokenizer, model)
    saved_config = {key: getattr(model.config, key, None) for key in task.training_config}
    for key, value in task.training_config.items():  # e.g. no KV cache while training a causal LM
        setattr(model.config, key, value)
    if cfg.train.gradient_checkpointing:
        checkpoint_activations(model, source.name)
    counts = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    batches = len(recipe.train_set.batches(0)) // accelerator.num_processes
    per_epoch = steps_per_epoch(batches, cfg.train.grad_accum)
    eval_rows = len(data.eval) if data.eval is not None else 0
    bf16 = accelerator.mixed_precision == "bf16"
    cfg, chosen = resolve_defaults(cfg, pretrained_parameters, per_epoch, eval_rows, bf16, str(accelerator.device))
    optimizer = build_optimizer(model, cfg.train, l2sp=cfg.strategy.l2sp > 0)
    total = cfg.train.epochs * per_epoch
    scheduler = build_scheduler(optimizer, cfg.train, total)
    model, optimizer = accelerator.prepare(model, optimizer)
    # After prepare: θ̂'s copy must sit on the device the parameters moved to (a GPU's, not the CPU's).
    l2sp = cfg.strategy.l2sp
    regularizer = l2sp_regularizer(accelerator.unwrap_model(model), l2sp) if l2sp > 0 else None
    state, last = None, checkpoint.latest(partial) if cfg.resume else None
    if last is not None:
        state = checkpoint.load(last, accelerator.unwrap_model(model), optimizer, scheduler)
        with open(partial / "metrics.jsonl", "r+b") as f:  # drop what was logged after the checkpoint
            f.truncate(state.metrics_offset)
    else:  # killed before its first checkpoint: start over, forgetting what that attempt logged
        for name in ("metrics.jsonl", "best_eval.json"):
            (partial / name).unlink(missing_ok=True)
    if not cfg.quiet:
        where = f"resuming at step {state.step}" if state else f"{len(data.train)} examples"
        what = recipe.what
        console.print(
            f"[bold]tunesmith[/] fine-tuning {source.name} ({cfg.task.type}: {why}; {cfg.strategy.name}): {where}, "
            f"{what}, evaluating on {len(data.eval) if data.eval else 0}; {total} steps on {accelerator.device}"
        )
    latest: dict[str, Any] = {}
    best_file = partial / "best_eval.json"  # a resumed run starts from the best metrics saved so far
    best_metrics: dict[str, Any] = json.loads(best_file.read_text()) if state and best_file.exists() else {}

    def evaluate() -> dict[str, Any]:
        latest.update(recipe.evaluate(model))
        return latest

    tested: dict[str, Any] = {}

    def monitor() -> dict[str, Any]:
        tested.clear()
        tested.update(recipe.test(model))
        return tested

    before = score_before(recipe, model, partial, resumed=state is not None)

    def save_best(state: FitState) -> None:
        best_metrics.clear()
        best_metrics.update(latest)
        if tested:  # the test scores of exactly these weights (the monitor ran just before)
            best_metrics["test"] = dict(tested)
        unwrapped = accelerator.unwrap_model(model)
        if is_adapter(unwrapped):  # keep only what trains; merged once, at the end
            save_file(trainable_state(unwrapped), str(partial / BEST_TRAINABLE))
        else:
            with quiet_transformers():
                unwrapped.save_pretrained(partial)  # safetensors; replaces the previous best
        write_json(best_file, best_metrics)

    with Reporter(partial / "metrics.jsonl", cfg.quiet) as reporter, checkpoint.stop_on_signals() as stop:

        def save_checkpoint(state: FitState) -> None:
            state.metrics_offset = reporter.offset()
            checkpoint.save(
                partial, state, accelerator.unwrap_model(model), optimizer, scheduler, cfg.train.keep_checkpoints
            )

        unfreeze = gradual_unfreezing(model) if cfg.strategy.unfreeze == "gradual" else None
        hooks = Hooks(
            reporter,
            evaluate if recipe.evaluate else None,
            save_best,
            save_checkpoint,
            stop,
            regularizer,
            unfreeze,
            monitor if recipe.test and recipe.evaluate else None,
            on_evaluation,
        )
        fit_started = time.perf_counter()
        try:
            state = fit(
                model,
                recipe.loss_fn,
                recipe.train_set,
                optimizer,
                scheduler,
                accelerator,
                cfg.train,
                cfg.eval,
                hooks,
                state,
            )
        except Interrupted as e:
            e.args = (f"{e}; checkpoint saved, continue with: tunesmith resume {partial.with_suffix('')}",)
            raise
        fit_seconds = time.perf_counter() - fit_started  # the loop alone (this attempt), as trainer.train() counts
    # Adam's moments (twice the model's size) are done with: saving, drift and scoring then stay under
    # the loop's peak RSS instead of adding to it.
    optimizer.state.clear()
    # Without autocast's wrapper: what is scored after training (after()) is what predict will compute, in fp32.
    final = accelerator.unwrap_model(model, keep_fp32_wrapper=False)
    for key, value in saved_config.items():  # the saved config is the one to predict with (KV cache on)
        setattr(final.config, key, value)
    if is_adapter(final):
        final = save_merged(final, partial, cfg.strategy.save_adapter)
    elif saved_config:
        final.config.save_pretrained(partial)
    # Pipelines truncate to model_max_length when asked to: make it the length we trained with.
    tokenizer.model_max_length = cfg.model.max_length
    tokenizer.save_pretrained(partial)
    write_json(partial / "drift.json", run_drift(cfg, data.labels, partial, final))
    best_file.unlink(missing_ok=True)
    more: dict[str, Any] = {}
    if recipe.after is not None:
        if state.best.get("step") != state.step:  # the best checkpoint, not the last step (a merged LoRA is it)
            load_weights(final, str(partial / "model.safetensors"))
        best_metrics, more = recipe.after(final, partial, best_metrics, before)
    split_off(partial)  # chunk attention's weights leave model.safetensors: transformers loads it as it is
    (partial / BEFORE).unlink(missing_ok=True)
    if best_metrics:
        write_json(partial / "eval.json", best_metrics)
    seconds = time.perf_counter() - started
    # The budget ran out while the model still learned: the last of several evaluations was the best on the
    # metric and on held-out loss (FitState.still_learning). A time cap's stop is the user's choice, not a note.
    under_trained = state.still_learning and state.stop_reason != "time"
    record = {
        "tunesmith": _version(),
        "task": cfg.task.type,
        "task_chosen": why,
        **recipe.record,
        **({"long_documents": recipe.long_documents} if recipe.long_documents else {}),
        **more,
        "pretrained": {
            "name": source.name,
            "location": source.location,
            "kind": source.kind,
            "sha256": weights_sha256(source),
        },
        "seed": cfg.train.seed,
        "parameters": counts,
        "best": state.best,
        "stop_reason": state.stop_reason,
        "under_trained": under_trained,
        "defaults": chosen,
        "skipped_steps": state.skipped,
        "train_seconds": round(seconds, 2),
        "fit_seconds": round(fit_seconds, 2),
        "config": cfg.to_dict(),
    }
    return {
        "metrics": best_metrics or None,
        "best": state.best,
        "seconds": seconds,
        "stopped_early": state.stopped_early,
        "skipped_steps": state.skipped,
        "under_trained": under_trained,
        "record": record,
    }


def _version() -> str:
    from tunesmith import __version__

    return __version__


def summarize(result: RunResult, cfg: RunConfig, task: Task) -> None:
    """The end-of-run report: the best evaluation, when it happened, how long it took, where it is."""
    line = task.summary(result.metrics, result.best, cfg)
    notes = (" (stopped early)" if result.stopped_early else "") + (
        f" ({result.skipped_steps} non-finite steps skipped)" if result.skipped_steps else ""
    )
    console.print(f"[bold green]done[/] in {result.seconds:.1f}s{notes}: {line}; run folder: {result.path}")
    if result.under_trained:
        epochs = result.best["epoch"]
        console.print(
            f"[yellow]under-trained?[/] the last evaluation (epoch {epochs}) was the best and {cfg.eval.metric} was "
            f"still improving; train longer: tunesmith train --config {result.path / RUN_FILE} "
            f"--epochs {2 * epochs} -o {result.path}-longer"
        )
