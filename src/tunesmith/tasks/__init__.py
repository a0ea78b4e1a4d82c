"""The task registry: one line per task, its module found by name when first asked for.

Adding a task is one module (which ends with TASK = Task(...)), one line here and one row in the
table-driven tests. Lazy by module path, so importing tunesmith.config stays free of torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.errors import ConfigError

if TYPE_CHECKING:
    from tunesmith.config import RunConfig
    from tunesmith.runs import RunInfo
    from tunesmith.tasks.base import Task

TASKS: dict[str, str] = {
    "generate": "tunesmith.tasks.generate",
    "tagging": "tunesmith.tasks.tag",
    "multilabel": "tunesmith.tasks.multilabel",
    "regression": "tunesmith.tasks.regress",
    "classification": "tunesmith.tasks.classify",
}
"""Detection asks each task in this order; classification, last, takes any labeled file."""
NAMES = tuple(TASKS)
DETECT_ROWS = 1000
"""Rows of the training file read to detect the task (a bad file raises its one-line DataError here)."""


def get(name: str) -> Task:
    """The Task registered under name."""
    if name not in TASKS:
        raise ConfigError(f"task.type must be auto or one of {', '.join(NAMES)}, got '{name}'")
    return importlib.import_module(TASKS[name]).TASK


def detect(cfg: RunConfig) -> tuple[Task, str]:
    """The task the training file's first rows say, and why."""
    from tunesmith.data.readers import iter_tables

    first = None
    if cfg.data.train_data is not None:
        first = next(iter_tables(cfg.data.train_data, cfg.data.encoding, chunk_rows=DETECT_ROWS), None)
    if first is not None:
        for name in NAMES:
            task = get(name)
            why = task.detect(first, cfg.data)
            if why:
                return task, why
    return get(NAMES[-1]), "the default"


def resolve(cfg: RunConfig, why: bool = False) -> Any:
    """(config, task): task.type auto resolved from the data, the task's defaults filled in and its config
    checked; with why, also the reason the task was chosen (for the run's first line and `check`).
    """
    if cfg.task.type == "auto":
        task, reason = detect(cfg)
        reason = f"detected: {reason}"
    else:
        task, reason = get(cfg.task.type), "as given"
    configured = task.configure(cfg)
    return (configured, task, reason) if why else (configured, task)


def detect_task(cfg: RunConfig) -> RunConfig:
    """resolve()'s config alone."""
    return resolve(cfg)[0]


def for_run(path: str | Path) -> tuple[RunInfo, Task]:
    """A run folder's tunesmith.json and its task."""
    from tunesmith.runs import read_run

    run = read_run(path)
    if run.task not in TASKS:
        raise ConfigError(f"{path}: a {run.task} run, which this tunesmith does not know ({', '.join(NAMES)})")
    return run, get(run.task)


def supporting(test: Callable[[Task], bool]) -> str:
    """The names of the tasks that pass test, for messages: "tagging, multilabel and classification"."""
    names = [name for name in NAMES if test(get(name))]
    return f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)


def open_run(path: str | Path, batch_size: int | None = None, backend: str = "torch") -> Any:
    """The run folder's predictor (Predictor, Generator, ...); the backend is checked before any weights load."""
    from tunesmith.backends import check_backend

    check_backend(backend)
    run, task = for_run(path)
    if backend not in task.backends:
        runs = supporting(lambda t: backend in t.backends)
        raise ConfigError(f"--backend {backend} is for {runs} runs; a {task.name} run predicts with torch")
    return task.open_run(run, batch_size, backend)
