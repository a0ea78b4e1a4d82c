"""What a task is: F_θ's head and L, and everything around them that differs by task. Names no task.

A task module (tasks/classify.py, ...) fills in one Task with values and its own functions; the registry
(tasks/__init__.py) finds it by name. Run code asks the Task, never which task it is.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.errors import ConfigError

if TYPE_CHECKING:  # config imports the registry: nothing heavy or cyclic at import time
    import torch
    from transformers import PreTrainedModel

    from tunesmith.config import RunConfig
    from tunesmith.data.labels import LabelSpace
    from tunesmith.data.readers import Table
    from tunesmith.losses import LossFn
    from tunesmith.model.pretrained import ModelSource
    from tunesmith.runs import RunInfo

Metrics = dict[str, Any]
Scorer = Callable[["torch.nn.Module"], Metrics]


@dataclass
class Recipe:
    """What fit() and the run need from the task, built once the model and tokenizer are loaded."""

    train_set: Any
    """The encoded training set (train/loop.py's TrainData), with .unit: what the loss is a mean over."""
    loss_fn: LossFn
    evaluate: Scorer | None
    """Held-out metrics of the model as it is now ("loss" and the task's metrics; every evaluation)."""
    what: str
    """The start line's description of the targets: "3 labels", "chat template"."""
    test: Scorer | None = None
    """Metrics on data.test_data, which chooses nothing: logged at each evaluation and kept for the saved model."""
    before: Scorer | None = None
    """θ̂ scored once before training (kept across a resume), for after() to set beside θ̃."""
    after: Callable[[torch.nn.Module, Path, Metrics, Metrics], tuple[Metrics, dict[str, Any]]] | None = None
    """On the saved weights once training is done, in the partial run folder: (the final metrics, more for
    tunesmith.json). Decision thresholds are tuned here, and generation compared with before()."""
    record: dict[str, Any] = field(default_factory=dict)
    """What tunesmith.json records about the task."""
    long_documents: dict[str, Any] | None = None
    """How texts longer than the window are read (sequence tasks; tunesmith.json's "long_documents")."""


@dataclass(frozen=True)
class Task:
    """One task: values that describe it, and the functions of its module that do what differs."""

    name: str
    """Registry key, task.type, and tunesmith.json's "task"."""
    about: str
    """One line for help texts."""
    model_class: str
    """The transformers AutoModelFor* class of F_θ."""
    peft_task_type: str
    """peft's TaskType for LoRA."""
    new_head: bool
    """The head starts from random (a classifier) rather than pretrained (an LM's own): it learns at 10x lr and
    trains whole under LoRA."""
    backbone: str
    """encoder or causal: which default learning-rate table applies (train/defaults.py)."""
    defaults: Mapping[str, Any]
    """Config fields filled when unset: model.name, model.max_length, eval.metric."""
    metrics: tuple[str, ...]
    """The eval.metric choices."""
    detect: Callable[[Table, Any], str | None]
    """(the training file's first rows, DataConfig) -> why this file is this task's, or None."""
    load_data: Callable[[RunConfig], Any]
    """D, checked: every problem one DataError, before any folder is made. Has train, eval, labels, fingerprints."""
    head_config: Callable[[LabelSpace | None], dict[str, Any]]
    """from_pretrained's head arguments (num_labels, id2label, problem_type) for the label space."""
    recipe: Callable[..., Recipe]
    """(cfg, data, tokenizer, model) -> Recipe."""
    describe: Callable[[Any], list[str]]
    """Lines `tunesmith check` prints about the data."""
    summary: Callable[[Metrics | None, dict[str, Any], RunConfig], str]
    """The end-of-run line (it may print tables first)."""
    open_run: Callable[[RunInfo, int | None, str], Any]
    """A predictor for a run folder: predict, predict_file, evaluate_file, noun."""
    show: Callable[[Metrics, str], None]
    """How `tunesmith evaluate` prints the metrics."""
    headline: tuple[str, ...] = ()
    """The metrics compare's test columns show."""
    backends: tuple[str, ...] = ("torch",)
    """Inference backends a run of this task supports; onnx ones need `tunesmith export`."""
    losses: tuple[str, ...] = ()
    """The train.loss names this task takes (unset: its own default loss)."""
    packs: bool = False
    """Whether train.packing applies (concatenating samples into full rows)."""
    check: Callable[[RunConfig], None] = lambda cfg: None
    """Refuses the other config fields that do not apply to this task (one ConfigError)."""
    training_config: Mapping[str, Any] = field(default_factory=dict)
    """model.config values while fitting, restored for the saved model (use_cache off for a causal LM)."""
    chunks: bool = False
    """Whether texts longer than the window can be chunked (model.long_documents and the fields beside it)."""
    lengths: Callable[[RunConfig, Any], str] | None = None
    """`check`'s line about the texts' lengths in the model's tokens, against max_length."""

    def new_model(
        self,
        source: ModelSource,
        labels: LabelSpace | None,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        random_init: bool = False,
    ) -> PreTrainedModel:
        """θ̂ as this task's model class with its head for the label space (seeded by the caller)."""
        from tunesmith.model.heads import pretrained

        head = self.head_config(labels)
        return pretrained(source, self.model_class, head, trust_remote_code, allow_pickle, random_init)

    def configure(self, cfg: RunConfig) -> RunConfig:
        """A copy with task.type set and every unset default of this task filled in, checked."""
        values: dict[str, Any] = {"task.type": self.name}
        for key, default in self.defaults.items():
            section, name = key.split(".")
            if getattr(getattr(cfg, section), name) is None:
                values[key] = default
        cfg = cfg.with_values(values, where="config")
        if cfg.eval.metric not in self.metrics:
            raise ConfigError(
                f"eval.metric {cfg.eval.metric} does not apply to {self.name}; use one of: {', '.join(self.metrics)}"
            )
        if cfg.train.packing and not self.packs:
            raise ConfigError(f"--packing does not apply to {self.name}; it packs samples of generate runs")
        if cfg.train.loss is not None and cfg.train.loss not in self.losses:
            choices = f"use one of: {', '.join(self.losses)}" if self.losses else "it has one loss"
            raise ConfigError(f"--loss {cfg.train.loss} does not apply to {self.name}; {choices}")
        m = cfg.model
        given = [flag for flag, value in (("--long-documents chunk", m.long_documents == "chunk"),
                 ("--chunk-stride", m.chunk_stride is not None), ("--max-chunks", m.max_chunks is not None),
                 ("--aggregate", m.aggregate is not None)) if value]  # fmt: skip
        if given and not self.chunks:
            raise ConfigError(f"{given[0]} does not apply to {self.name} runs; classification, multilabel and "
                              "regression chunk long texts")  # fmt: skip
        self.check(cfg)
        return cfg


def saved_title(best: dict[str, Any]) -> str:
    """The title of the end-of-run metrics table."""
    return f"evaluation of the saved model (epoch {best.get('epoch')}, step {best.get('step')})"


def kept_line(best: dict[str, Any], cfg: RunConfig) -> str:
    """Which evaluation the run kept (eval.select) and its metric value."""
    kept = "last" if best.get("select") == "last" else "best"
    return f"{kept} {cfg.eval.metric} {best['value']:.4f} at epoch {best['epoch']}"


def call_with(method: Callable[..., Any], task: str, /, *args: Any, **options: Any) -> Any:
    """Call a predictor's method with the options that were given (None means not given); an option this task's
    method does not take is one line naming it, not a TypeError.
    """
    given = {k: v for k, v in options.items() if v is not None}
    takes = inspect.signature(method).parameters
    for name in given:
        if name not in takes:
            raise ConfigError(f"--{name.replace('_', '-')} does not apply to a {task} run")
    return method(*args, **given)
