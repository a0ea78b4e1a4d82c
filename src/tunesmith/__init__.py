"""tunesmith: fine-tune pretrained transformers on your own labeled data.

θ̃ = argmin_θ Σ L(y, F_θ(x)), starting from θ̂. The public API is the handful of names below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__version__ = "0.1.0"

# Imported before `def tune` below: importing a submodule binds its name on the package, and the function
# must be what `tunesmith.tune` names. The module stays importable through sys.modules (from tunesmith.tune ...).
from tunesmith import tune as _tune_module  # noqa: E402
from tunesmith.config import RunConfig  # noqa: E402
from tunesmith.errors import ConfigError, DataError, ModelError, TunesmithError  # noqa: E402


def finetune(
    train_data: str | None = None,
    model: str | None = None,
    output: str | None = None,
    *,
    config: RunConfig | str | Path | None = None,
    **options: Any,
):
    """Fine-tune a pretrained model on a labeled file; returns a RunResult (path, metrics, best, seconds).

    ``options`` are config fields by name or dotted key: ``epochs=4``, ``eval_data="test.csv"``,
    ``**{"train.lr": 3e-5}``. Example: ``finetune(train_data="emails.csv", output="runs/support")``.
    """
    from tunesmith.train.run import run

    cfg = config if isinstance(config, RunConfig) else (RunConfig.from_yaml(config) if config else RunConfig())
    values = {"data.train_data": train_data, "model.name": model, "output": output}
    cfg = cfg.with_values({k: v for k, v in values.items() if v is not None}, where="argument")
    return run(cfg.with_values(options, where="argument"))


def load(path: str | Path, batch_size: int | None = None, backend: str = "torch"):
    """The run folder's predictor: ``load("runs/support").predict(["I was charged twice"])`` for a classifier
    (and the other sequence tasks), ``load("runs/triage").generate(["Summarise: ..."])`` for a generate run.

    backend runs a sequence model with torch, or with ONNX Runtime ("onnx", "onnx-int8", "onnx-int8-dynamic")
    once the run has been exported (tunesmith.export.export_onnx, or ``tunesmith export RUN --format onnx``).
    """
    from tunesmith.tasks import open_run

    return open_run(path, batch_size, backend)


def evaluate(run: str | Path, data: str | Path, **options: Any) -> dict[str, Any]:
    """Metrics of a run folder's model on a labeled file, as its task scores it (``tunesmith evaluate``).

    ``options``: ``columns={"text": ..., "label": ...}`` (``prompt``/``response`` for generate), ``encoding``,
    ``batch_size``, and the task's own (generate: ``answer_pattern``, ``max_new_tokens``, ``generate_samples``).
    """
    from tunesmith.tasks import for_run, open_run
    from tunesmith.tasks.base import call_with

    _, task = for_run(run)
    named = {r: options.pop(f"{r}_column") for r in COLUMN_ROLES if f"{r}_column" in options}
    columns = {**named, **options.pop("columns", {})}
    predictor = open_run(run, options.pop("batch_size", None))
    return call_with(predictor.evaluate_file, task.name, str(data), columns=columns, **options)


COLUMN_ROLES = ("text", "text_pair", "label", "prompt", "response")
"""The roles a data file's columns play; ``<role>_column`` names one (--text-column, ...)."""


def tune(
    train_data: str | None = None,
    output: str | Path = "runs/tune",
    *,
    config: RunConfig | str | Path | None = None,
    space: str | None = None,
    trials: int | None = None,
    time_budget: str | None = None,
    keep: str = "best",
    jobs: int = 1,
    resume: bool = False,
    overwrite: bool = False,
    **options: Any,
) -> _tune_module.TuneResult:
    """Search hyperparameters with optuna, each trial an ordinary run; returns a TuneResult (best, trials, pareto).

    ``options`` set the config every trial starts from, as in finetune. Example:
    ``tune("emails.csv", "runs/tuned", trials=20, time_budget="30m", space="lr=1e-5:1e-3,strategy=full|lora")``;
    the best run is then in runs/tuned/best. The CLI's ``tunesmith tune`` takes the same arguments.
    """
    cfg = config if isinstance(config, RunConfig) else (RunConfig.from_yaml(config) if config else RunConfig())
    if train_data is not None:
        cfg = cfg.with_values({"data.train_data": train_data}, where="argument")
    cfg = cfg.with_values(options, where="argument")
    return _tune_module.run_study(cfg, Path(output), space, trials, time_budget, keep, jobs, resume, overwrite)


def __getattr__(name: str) -> Any:
    # Heavy modules (torch, transformers) load only when these names are used.
    if name == "Predictor":
        from tunesmith.predict import Predictor

        return Predictor
    if name == "RunResult":
        from tunesmith.train.run import RunResult

        return RunResult
    raise AttributeError(name)


__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "Predictor",
    "RunConfig",
    "RunResult",
    "TunesmithError",
    "__version__",
    "evaluate",
    "finetune",
    "load",
    "tune",
]
