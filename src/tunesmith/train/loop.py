"""fit(): the training loop, on one screen. Knows nothing about files, tasks or run folders.

Each optimiser step: micro-batches with accumulation -> non-finite check -> clip -> step -> log
-> evaluate when due -> checkpoint when due or asked to stop. Accelerate owns the device,
autocast and DDP gradient sync. Everything the loop knows between steps is in FitState, so a
checkpoint of it (plus weights, optimizer, scheduler and RNGs) continues bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from accelerate import Accelerator

from tunesmith.config import EvalConfig, TrainConfig
from tunesmith.errors import Interrupted, NonFiniteError
from tunesmith.losses import LossFn, step_scale


class TrainData(Protocol):
    """The encoded training set, as batches of row indices and their tensors."""

    def batches(self, epoch: int) -> list[list[int]]:
        """Micro-batches of this epoch, in training order (a pure function of seed and epoch)."""
        ...

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Tensors for one micro-batch: model inputs and labels."""
        ...

    def items(self, rows: list[int]) -> int:
        """What the summed loss of these rows adds up over: samples, or target tokens for generation."""
        ...


class Reporter(Protocol):
    """Where progress goes: metrics.jsonl and the progress bar."""

    def advance(self, step: int, total: int) -> None:
        """Called after every optimiser step."""
        ...

    def log(self, record: dict[str, Any]) -> None:
        """Called with each training-log and evaluation record."""
        ...


@dataclass
class FitState:
    """What the loop knows between steps: a checkpoint saves exactly this (as JSON)."""

    step: int = 0
    epoch_index: int = 0
    """Epochs completed."""
    group: int = 0
    """Optimiser steps completed within the current epoch (checkpoints sit on step boundaries,
    so the accumulation position inside a step is always 0 there)."""
    best_value: float | None = None
    """The best metric so far (by eval.metric), whichever weights eval.select keeps."""
    best_loss: float = math.inf
    best: dict[str, Any] = field(default_factory=dict)
    """The kept (saved) evaluation: the best one, or the last under eval.select last."""
    evals_since_best: int = 0
    lowest_loss: float = math.inf
    still_learning: bool = False
    """The last evaluation beat every earlier one on the metric (strictly) and on held-out loss: the
    under-trained signal. The metric alone fires on noise (a small held-out set's accuracy creeps up by
    one row after it has converged); loss that is still falling as well says the model is still learning."""
    stopped_early: bool = False
    stop_reason: str | None = None
    """Why the run ended before its budget: patience (no improvement), or time (train.max_minutes)."""
    seconds: float = 0.0
    """Seconds in the loop so far, over every attempt (a resumed run goes on counting), without monitor scoring."""
    evaluations: int = 0
    skipped: int = 0
    """Steps skipped for a non-finite loss or gradient (on_nonfinite: skip)."""
    window_loss: float = 0.0
    window_items: int = 0
    metrics_offset: int = 0
    """Bytes of metrics.jsonl written up to this state; a resumed run truncates the file there."""


@dataclass
class Hooks:
    """What the loop calls out to; each is plain data or a plain function."""

    reporter: Reporter
    evaluate: Callable[[], dict[str, Any]] | None = None
    on_best: Callable[[FitState], None] = lambda state: None
    checkpoint: Callable[[FitState], None] | None = None
    stop_requested: Callable[[], int | None] = lambda: None
    """The signal number when SIGINT/SIGTERM asked the run to stop, else None."""
    regularizer: Callable[[], torch.Tensor] | None = None
    """A parameter penalty (L2-SP) added once per optimiser step, to the last micro-batch's loss."""
    on_epoch: Callable[[int], None] | None = None
    """Called as each epoch (0-based) starts or resumes: gradual unfreezing opens blocks here."""
    monitor: Callable[[], dict[str, Any]] | None = None
    """Scores on data that choose nothing (test_data), logged as test_* after each evaluation, untimed."""
    on_evaluation: Callable[[FitState, dict[str, Any]], None] | None = None
    """Called with each evaluation's metrics once the best is updated; may raise to end the run (tune's pruner)."""


class NonFiniteSteps:
    """Steps whose loss or gradient was NaN/inf, counted on the device and read only when the loop syncs."""

    def __init__(self, device: torch.device) -> None:
        self.steps = torch.zeros((), device=device)
        self.items = torch.zeros((), device=device)
        self.first = torch.zeros((), dtype=torch.long, device=device)

    def add(self, bad: torch.Tensor, step: int, items: int) -> None:
        """Record one step's flag (1.0 when skipped) without reading it."""
        self.steps += bad
        self.items += bad * items
        self.first = torch.where((self.first == 0) & (bad > 0), step, self.first)

    def settle(self, state: FitState, cfg: TrainConfig) -> int:
        """Stop (on_nonfinite: stop) or count the skipped steps; returns the items they held."""
        skipped = int(self.steps.item())
        if not skipped:
            return 0
        if cfg.on_nonfinite == "stop":
            raise NonFiniteError(
                f"step {int(self.first.item())}: the loss or a gradient is NaN or infinite "
                f"(likely causes: learning rate too high, lr {cfg.lr:g}; or bf16 overflow)"
            )
        state.skipped += skipped
        items = int(self.items.item())
        for counter in (self.steps, self.items, self.first):
            counter.zero_()
        return items


def logits_of(data: TrainData, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's logits: the model's, or the set's own forward when it has one (chunked documents: every chunk
    through the model, then one row per document).
    """
    forward = getattr(data, "forward", None)
    return forward(model, batch) if forward is not None else model(**batch).logits


def steps_per_epoch(num_batches: int, grad_accum: int) -> int:
    """Optimiser steps in an epoch; a short last group of micro-batches is still a step."""
    return math.ceil(num_batches / grad_accum)


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: TrainData,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    accelerator: Accelerator,
    cfg: TrainConfig,
    eval_cfg: EvalConfig,
    hooks: Hooks,
    state: FitState | None = None,
) -> FitState:
    """Minimise the summed loss over data from the model's current parameters (or from a resumed state)."""
    state = state or FitState()
    procs, rank = accelerator.num_processes, accelerator.process_index
    total = cfg.epochs * steps_per_epoch(len(data.batches(0)) // procs, cfg.grad_accum)
    window = torch.tensor(state.window_loss, device=accelerator.device)  # stays on device: no sync per step
    nonfinite = NonFiniteSteps(accelerator.device)
    inner = getattr(optimizer, "optimizer", optimizer)  # under accelerate's wrapper, the torch optimizer
    fused = bool(inner.defaults.get("fused"))  # fused Adam(W)/SGD skip a step on found_inf == 1 by themselves
    window_start, last_save = time.perf_counter(), time.monotonic()
    tick = time.perf_counter()  # state.seconds advances from here; monitor scoring resets it
    model.train()
    for epoch in range(state.epoch_index, cfg.epochs):
        if hooks.on_epoch:
            hooks.on_epoch(epoch)
        batches = data.batches(epoch)
        # Under DDP each process takes every procs-th micro-batch; equal counts keep the all-reduce in step.
        mine = batches[rank : len(batches) - len(batches) % procs : procs]
        groups = [mine[i : i + cfg.grad_accum] for i in range(0, len(mine), cfg.grad_accum)]
        for group in groups[state.group :]:
            # Normalise by the items of the whole step (all micro-batches, all processes), known up front.
            local_items = items = sum(data.items(rows) for rows in group)
            if procs > 1:
                items = accelerator.reduce(torch.tensor(items, device=accelerator.device), "sum").item()
            step_loss = torch.zeros((), device=accelerator.device)
            for i, rows in enumerate(group):
                batch = {k: v.to(accelerator.device) for k, v in data.collate(rows).items()}
                labels = batch.pop("labels")
                # Skip the DDP all-reduce on all but the last micro-batch: gradients just add up locally.
                with accelerator.no_sync(model) if i < len(group) - 1 else contextlib.nullcontext():
                    loss_sum = loss_fn(logits_of(data, model, batch), labels)
                    loss = loss_sum * step_scale(items, procs)
                    if hooks.regularizer and i == len(group) - 1:
                        loss = loss + hooks.regularizer()  # the same on every process: DDP's mean keeps it
                    accelerator.backward(loss)
                step_loss += loss_sum.detach().float()  # detached: no graph is kept alive
            # The gradient norm is computed anyway for clipping; NaN/inf in the loss or any gradient
            # reaches norm + loss, so one flag covers both. It stays on the device: the fused optimizer
            # reads it and leaves the weights (and its step count) as they were when it is 1, as under a
            # GradScaler, so no step waits for the host; the flags are read only when the loop syncs anyway.
            norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or math.inf)
            state.step, state.group = state.step + 1, state.group + 1
            bad = (~torch.isfinite(norm + step_loss)).float()
            if fused:
                inner.found_inf = bad
                optimizer.step()
            elif not bad.item():  # an optimizer that cannot read the flag itself: this step waits for the host
                optimizer.step()
            window += torch.where(bad > 0, 0.0, step_loss)
            state.window_items += local_items
            nonfinite.add(bad, state.step, local_items)
            scheduler.step()  # the data moves on and the schedule too, past a skipped step
            optimizer.zero_grad(set_to_none=True)
            end_of_epoch = state.group == len(groups)
            if end_of_epoch:
                state.epoch_index, state.group = epoch + 1, 0
            hooks.reporter.advance(state.step, total)
            log = state.step % cfg.log_every == 0 or state.step == total
            due = (eval_cfg.every_steps and state.step % eval_cfg.every_steps == 0) or (
                end_of_epoch and (eval_cfg.every_steps is None or state.step == total)
            )
            now = time.perf_counter()
            state.seconds, tick = state.seconds + now - tick, now
            signum = hooks.stop_requested()
            minutes = cfg.save_every_minutes and time.monotonic() - last_save >= 60 * cfg.save_every_minutes
            save = hooks.checkpoint and (signum or minutes or (cfg.save_every and state.step % cfg.save_every == 0))
            if log or due or save:  # the one host sync: before anything is logged, scored or saved
                state.window_items -= nonfinite.settle(state, cfg)
            if log:
                elapsed = time.perf_counter() - window_start
                hooks.reporter.log(
                    {
                        "step": state.step,
                        "epoch": round(epoch + (state.group or len(groups)) / len(groups), 4),
                        "loss": window.item() / max(state.window_items, 1),
                        "lr": scheduler.get_last_lr()[0],
                        f"{getattr(data, 'unit', 'samples')}_per_s": state.window_items * procs / elapsed,
                    }
                )
                window.zero_()
                state.window_items, window_start = 0, time.perf_counter()
            if hooks.evaluate and due:
                _evaluate(state, epoch + 1, hooks, eval_cfg)
                model.train()
                tick = time.perf_counter()  # what evaluation took was counted inside _evaluate
            out_of_time = cfg.max_minutes and state.seconds >= 60 * cfg.max_minutes
            if out_of_time and state.step < total and not state.stopped_early:
                # Out of time: the weights of this step get their evaluation (or are the result) before the stop.
                if hooks.evaluate and not due:
                    _evaluate(state, epoch + 1, hooks, eval_cfg)
                elif hooks.evaluate is None:
                    state.best = {"step": state.step, "epoch": epoch + 1}
                    hooks.on_best(state)
                state.stopped_early, state.stop_reason = True, "time"
            if hooks.evaluate is None and state.step == total:
                state.best = {"step": state.step, "epoch": epoch + 1}
                hooks.on_best(state)
            if save:
                state.window_loss = window.item()
                hooks.checkpoint(state)
                last_save = time.monotonic()
            if signum:
                raise Interrupted(signum, f"stopped by signal {signum} at step {state.step}")
            if state.stopped_early:
                return state
    return state


def _evaluate(state: FitState, epoch: int, hooks: Hooks, eval_cfg: EvalConfig) -> None:
    """Score the model; keep it when it is the best so far (an equal metric with a lower loss counts).

    The evaluation's own time and saving the kept weights count in state.seconds (both are part of what a run
    costs); the monitor's scoring does not. The logged seconds are those at which these weights were reached.
    """
    started = time.perf_counter()
    metrics = hooks.evaluate()
    state.seconds += time.perf_counter() - started
    state.evaluations += 1
    value, loss = metrics[eval_cfg.metric], metrics.get("loss", math.inf)
    extra = hooks.monitor() if hooks.monitor else {}
    hooks.reporter.log(
        {
            "step": state.step,
            "epoch": epoch,
            "seconds": round(state.seconds, 3),
            **{f"eval_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
            **{f"test_{k}": v for k, v in extra.items() if isinstance(v, (int, float))},
        }
    )
    after_monitor = time.perf_counter()
    # best_value and evals_since_best follow the metric; what is kept follows eval.select (under "last",
    # every evaluation replaces the kept weights, and the metric still says whether the run was improving).
    falling = loss < state.lowest_loss or not math.isfinite(loss)  # no held-out loss: the metric decides
    state.still_learning = state.evaluations >= 2 and falling and eval_cfg.better(value, state.best_value)
    state.lowest_loss = min(state.lowest_loss, loss)
    tie = value == state.best_value and loss < state.best_loss
    improved = eval_cfg.better(value, state.best_value) or tie
    if improved:
        state.best_value, state.best_loss, state.evals_since_best = value, loss, 0
    else:
        state.evals_since_best += 1
        if eval_cfg.patience and state.evals_since_best >= eval_cfg.patience:  # None or 0: never
            state.stopped_early, state.stop_reason = True, "patience"
    if improved or eval_cfg.select == "last":
        kept = eval_cfg.select or "best"
        state.best = {"step": state.step, "epoch": epoch, "metric": eval_cfg.metric, "value": value, "loss": loss,
                      "select": kept}  # fmt: skip
        hooks.on_best(state)
    if hooks.on_evaluation:
        hooks.on_evaluation(state, metrics)
    state.seconds += time.perf_counter() - after_monitor
