"""fit(): the training loop, on one screen. Knows nothing about files, tasks or run folders.

Order of each optimiser step: evaluate/checkpoint when due -> micro-batches with accumulation
-> clip -> step -> log. Accelerate owns the device, autocast and DDP gradient sync.
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
from tunesmith.losses import LossFn, step_scale


class TrainData(Protocol):
    """The encoded training set, as batches of row indices and their tensors."""

    def batches(self, epoch: int) -> list[list[int]]:
        """Micro-batches of this epoch, in training order (a pure function of seed and epoch)."""
        ...

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Tensors for one micro-batch: input_ids, attention_mask, labels."""
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
    """What the loop knows between steps (and what a checkpoint must restore)."""

    step: int = 0
    epoch: int = 0
    best_value: float | None = None
    best: dict[str, Any] = field(default_factory=dict)
    evals_since_best: int = 0
    stopped_early: bool = False


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
    evaluate: Callable[[], dict[str, Any]] | None,
    on_best: Callable[[FitState], None],
    reporter: Reporter,
) -> FitState:
    """Minimise the summed loss over data from the model's current parameters; returns where it ended."""
    state = FitState()
    procs, rank = accelerator.num_processes, accelerator.process_index
    total = cfg.epochs * steps_per_epoch(len(data.batches(0)) // procs, cfg.grad_accum)

    # The logging window's summed loss stays on the device (added to in place), read once per log step.
    def new_window() -> tuple[torch.Tensor, int, float]:
        return torch.zeros((), device=accelerator.device), 0, time.perf_counter()

    window_loss, window_items, window_start = new_window()

    def run_eval() -> None:
        metrics = evaluate()
        model.train()
        value = metrics[eval_cfg.metric]
        reporter.log(
            {
                "step": state.step,
                "epoch": state.epoch,
                **{f"eval_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))},
            }
        )
        loss = metrics.get("loss", math.inf)
        tie = value == state.best_value and loss < state.best.get("loss", math.inf)  # equal metric: lower loss wins
        if eval_cfg.better(value, state.best_value) or tie:
            state.best_value, state.evals_since_best = value, 0
            state.best = {
                "step": state.step,
                "epoch": state.epoch,
                "metric": eval_cfg.metric,
                "value": value,
                "loss": loss,
            }
            on_best(state)
        else:
            state.evals_since_best += 1
            state.stopped_early = eval_cfg.patience is not None and state.evals_since_best >= eval_cfg.patience

    model.train()
    for epoch in range(cfg.epochs):
        state.epoch = epoch + 1
        batches = data.batches(epoch)
        # Under DDP each process takes every procs-th micro-batch; equal counts keep the all-reduce in step.
        mine = batches[rank : len(batches) - len(batches) % procs : procs]
        for start in range(0, len(mine), cfg.grad_accum):
            group = mine[start : start + cfg.grad_accum]
            # Normalise by the items of the whole step (all micro-batches, all processes), known up front.
            items = (
                accelerator.reduce(torch.tensor(sum(map(len, group))), "sum").item()
                if procs > 1
                else sum(map(len, group))
            )
            for i, rows in enumerate(group):
                batch = {k: v.to(accelerator.device) for k, v in data.collate(rows).items()}
                labels = batch.pop("labels")
                # Skip the DDP all-reduce on all but the last micro-batch: gradients just add up locally.
                with accelerator.no_sync(model) if i < len(group) - 1 else contextlib.nullcontext():
                    loss_sum = loss_fn(model(**batch).logits, labels)
                    accelerator.backward(loss_sum * step_scale(items, procs))
                window_loss += loss_sum.detach().float()  # detached: no graph kept; on device: no sync
                window_items += len(rows)
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            reporter.advance(state.step, total)
            if state.step % cfg.log_every == 0 or state.step == total:
                elapsed = time.perf_counter() - window_start
                reporter.log(
                    {
                        "step": state.step,
                        "epoch": round(epoch + (start + len(group)) / max(len(mine), 1), 4),
                        "loss": window_loss.item() / window_items,  # .item() syncs: only at log steps
                        "lr": scheduler.get_last_lr()[0],
                        "samples_per_s": window_items * procs / elapsed,
                    }
                )
                window_loss, window_items, window_start = new_window()
            if evaluate and eval_cfg.every_steps and state.step % eval_cfg.every_steps == 0:
                run_eval()
            if state.stopped_early:
                return state
        last = epoch == cfg.epochs - 1  # with every_steps, the final step is evaluated too
        if evaluate and (eval_cfg.every_steps is None or (last and state.step % eval_cfg.every_steps)):
            run_eval()
        if state.stopped_early:
            return state
    if evaluate is None:
        state.best = {"step": state.step, "epoch": state.epoch}
        on_best(state)
    return state
