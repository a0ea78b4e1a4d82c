"""What training did, on screen and on disk: progress, metrics.jsonl, metric tables, the summary.

Knows nothing about models; it formats numbers that others computed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)
"""Chatter goes to stderr, so stdout stays clean for predictions piped to other tools."""


class Reporter:
    """Appends every record to metrics.jsonl and drives a progress bar (none when quiet)."""

    def __init__(self, metrics_file: Path, quiet: bool = False) -> None:
        self.file = metrics_file.open("a")
        self.quiet = quiet
        self.last: dict[str, Any] = {}
        self.progress: Progress | None = None
        self.task = None

    def __enter__(self) -> Reporter:
        if not self.quiet:
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()
        self.file.close()

    def offset(self) -> int:
        """Bytes written to metrics.jsonl so far (a checkpoint records it)."""
        self.file.flush()
        return self.file.tell()

    def advance(self, step: int, total: int) -> None:
        """Move the bar to this optimiser step."""
        if self.progress is None:
            return
        if self.task is None:
            self.task = self.progress.add_task("train", total=total, info="")
        self.progress.update(self.task, completed=step)

    def log(self, record: dict[str, Any]) -> None:
        """Write a training-log or evaluation record; show the latest values beside the bar."""
        self.file.write(json.dumps({**record, "time": round(time.time(), 3)}) + "\n")
        self.file.flush()
        self.last.update(record)
        if self.progress is not None and self.task is not None:
            parts = []
            if "loss" in self.last:
                parts.append(f"loss {self.last['loss']:.4f}")
            if "lr" in self.last:
                parts.append(f"lr {self.last['lr']:.2e}")
            for unit in ("samples", "target_tokens"):
                if f"{unit}_per_s" in self.last:
                    parts.append(f"{self.last[f'{unit}_per_s']:.1f} {unit.replace('_', ' ')}/s")
            if "eval_macro_f1" in self.last:
                parts.append(f"eval macro-F1 {self.last['eval_macro_f1']:.4f}")
            if "eval_perplexity" in self.last:
                parts.append(f"eval perplexity {self.last['eval_perplexity']:.3f}")
            self.progress.update(self.task, info=" · ".join(parts))


def metrics_table(metrics: dict[str, Any], title: str) -> Table:
    """Per-class precision / recall / F1 / support, then the overall scores."""
    table = Table(title=title, title_justify="left")
    table.add_column("label")
    for col in ("precision", "recall", "f1", "support"):
        table.add_column(col, justify="right")
    for name, m in metrics["per_class"].items():
        table.add_row(name, f"{m['precision']:.4f}", f"{m['recall']:.4f}", f"{m['f1']:.4f}", str(m["support"]))
    table.add_section()
    n = str(metrics["n"])
    table.add_row("accuracy", "", "", f"{metrics['accuracy']:.4f}", n)
    table.add_row("macro avg", "", "", f"{metrics['macro_f1']:.4f}", n)
    table.add_row("weighted avg", "", "", f"{metrics['weighted_f1']:.4f}", n)
    table.caption = f"loss {metrics['loss']:.4f}" if metrics.get("loss") == metrics.get("loss") else None
    return table


def confusion_table(metrics: dict[str, Any]) -> Table:
    """Rows are the true labels, columns the predicted ones."""
    names = list(metrics["per_class"])
    title = "confusion matrix (rows: true, columns: predicted)"
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("")
    for name in names:
        table.add_column(name, justify="right")
    for name, row in zip(names, metrics["confusion_matrix"], strict=True):
        table.add_row(name, *map(str, row))
    return table


def print_metrics(metrics: dict[str, Any], title: str, out: Console | None = None) -> None:
    """Both tables."""
    out = out or console
    out.print(metrics_table(metrics, title))
    out.print(confusion_table(metrics))


GENERATION_ROWS = (
    ("loss", "held-out loss (per target token)"),
    ("perplexity", "perplexity"),
    ("exact_match", "exact match"),
    ("token_f1", "token F1"),
    ("rouge_l", "ROUGE-L"),
    ("json_valid", "valid JSON"),
)


def generation_table(before: dict[str, Any], after: dict[str, Any]) -> Table:
    """θ̂ against θ̃ on the evaluation set: what fine-tuning changed."""
    table = Table(title=f"evaluation set: pretrained vs fine-tuned (generation on {after.get('n', 0)} samples)")
    for column in ("metric", "pretrained θ̂", "fine-tuned θ̃", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    rows = [(key, name) for key, name in GENERATION_ROWS if key in after]
    rows += [(f"json_fields.{k}", f"JSON field {k} correct") for k in after.get("json_fields", {})]

    def get(metrics: dict[str, Any], key: str) -> float | None:
        for part in key.split("."):
            metrics = metrics.get(part) if isinstance(metrics, dict) else None
        return metrics if isinstance(metrics, (int, float)) else None

    for key, name in rows:
        old, new = get(before, key), get(after, key)
        change = f"{new - old:+.4f}" if old is not None and new is not None else ""
        table.add_row(name, "" if old is None else f"{old:.4f}", "" if new is None else f"{new:.4f}", change)
    return table


def parameter_drift(
    model: torch.nn.Module, start: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    """How far θ̃ moved from where training started (θ̂, plus the initial head), per parameter and per layer.

    For each: ‖θ̃ − θ̂‖ / ‖θ̂‖, the largest absolute change, and the share of entries that changed at all.
    Groups are the embeddings, each block, the rest of the backbone, and the head; totals add up
    embeddings, blocks, head and everything.
    """
    from tunesmith.model.strategies import layout

    lay = layout(model)  # names and layer groups; the values come from start and finetuned
    sums: dict[str, list[float]] = {}  # group -> [Σd², Σθ̂², max|d|, moved, numel]

    def add(key: str, d2: float, a2: float, peak: float, moved: int, numel: int) -> None:
        acc = sums.setdefault(key, [0.0, 0.0, 0.0, 0, 0])
        acc[0] += d2
        acc[1] += a2
        acc[2] = max(acc[2], peak)
        acc[3] += moved
        acc[4] += numel

    params: dict[str, dict[str, float]] = {}
    for name, _ in model.named_parameters():
        if name not in finetuned or name not in start:
            continue  # a weight tied to another is saved once
        stats = _change(start[name].detach(), finetuned[name])
        params[name] = _ratios(*stats)
        group = lay.group(name)
        for key in {group, "blocks" if group.startswith("block ") else group, "all"}:
            add(key, *stats)
    order = ["embeddings", *[f"block {i}" for i in range(len(lay.blocks))], "backbone", "head"]
    totals = ["embeddings", "blocks", "head", "all"]
    return {
        "groups": {g: _ratios(*sums[g]) for g in order if g in sums},
        "totals": {t: _ratios(*sums[t]) for t in totals if t in sums},
        "parameters": params,
    }


def _change(before: torch.Tensor, after: torch.Tensor, chunk: int = 1 << 20) -> tuple[float, float, float, int, int]:
    """Σ(θ̃−θ̂)², Σθ̂², max|θ̃−θ̂|, entries changed, entries; a million entries at a time.

    Drift runs at the end of training: a whole-matrix difference of the embeddings (and each temporary
    of it) would add its size to the run's peak RSS.
    """
    d2 = a2 = peak = 0.0
    moved = 0
    for old, new in zip(before.reshape(-1).split(chunk), after.reshape(-1).split(chunk), strict=True):
        delta = new.float() - old.float()
        d2 += float(torch.linalg.vector_norm(delta)) ** 2
        a2 += float(torch.linalg.vector_norm(old.float())) ** 2
        peak = max(peak, float(delta.abs().max()))
        moved += int(torch.count_nonzero(delta))
    return d2, a2, peak, moved, before.numel()


def _ratios(d2: float, a2: float, peak: float, moved: int, numel: int) -> dict[str, float]:
    return {
        "relative": (d2**0.5 / a2**0.5) if a2 > 0 else (0.0 if d2 == 0 else float("inf")),
        "max_abs": peak,
        "moved": moved / numel if numel else 0.0,
        "numel": numel,
    }


def drift_table(drift: dict[str, Any], title: str) -> Table:
    """One row per layer with a bar of its relative change, then the totals."""
    rows = {**drift["groups"], **{f"total: {k}": v for k, v in drift["totals"].items()}}
    top = max((v["relative"] for v in drift["groups"].values() if v["relative"] != float("inf")), default=0) or 1
    table = Table(title=title, title_justify="left")
    for col, justify in (
        ("layer", "left"),
        ("‖θ̃−θ̂‖/‖θ̂‖", "right"),
        ("", "left"),
        ("max |Δ|", "right"),
        ("moved", "right"),
        ("parameters", "right"),
    ):
        table.add_column(col, justify=justify)
    for name, v in rows.items():
        if name == "total: embeddings":
            table.add_section()
        bar = "" if name.startswith("total") else "█" * round(20 * min(v["relative"], top) / top)
        table.add_row(name, f"{v['relative']:.4f}", bar, f"{v['max_abs']:.4g}", f"{v['moved']:.1%}", f"{v['numel']:,}")
    return table
