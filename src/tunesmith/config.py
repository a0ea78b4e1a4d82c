"""The run config: typed dataclasses, one docstring per field, YAML in and out, dotted overrides.

Every option of tunesmith is a field here; CLI flags only set fields. Nothing in this file
touches data or models.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunesmith.config_parse import build, parse_value, suggest
from tunesmith.errors import ConfigError
from tunesmith.tasks import NAMES as TASK_NAMES

METRICS = {
    "macro_f1": "max",
    "weighted_f1": "max",
    "micro_f1": "max",
    "samples_f1": "max",
    "accuracy": "max",
    "subset_accuracy": "max",
    "pearson": "max",
    "spearman": "max",
    "rmse": "min",
    "mae": "min",
    "loss": "min",
    "perplexity": "min",
}
"""Every metric that can pick the best checkpoint, and which way is better; each task says which apply to it."""


@dataclass
class DataConfig:
    """Where D comes from and how its columns are read."""

    train_data: str | None = None
    """Training file (CSV, TSV, JSONL, JSON, Parquet) or a folder saved by datasets' save_to_disk."""
    eval_data: str | None = None
    """Evaluation file; when unset, a stratified eval_split fraction of train_data is held out."""
    eval_split: float = 0.1
    """Fraction of train_data held out for evaluation when eval_data is unset (0 disables evaluation). Kept at
    0.1 on small files too: without held-out data nothing picks the checkpoint or stops a long budget early,
    and bench/DEFAULTS.md shows the split costing less than training to convergence gains."""
    test_data: str | None = None
    """A labeled file scored at every evaluation (test_* in metrics.jsonl, with the training seconds so far) and
    on the saved model (eval.json's "test"); it never picks a checkpoint or stops a run. Its scoring time is not
    counted in the training seconds, so time-to-quality can be read from metrics.jsonl."""
    text_column: str | None = None
    """Column holding the text; found by name (text, sentence, content, body, ...) when unset."""
    label_column: str | None = None
    """Column holding the label; found by name (label, labels, category, class, target) when unset."""
    prompt_column: str | None = None
    """generate: column holding the prompt; found by name (prompt, instruction (+ input), question, input)
    when unset."""
    response_column: str | None = None
    """generate: column holding the gold response; found by name (response, completion, output, answer) when unset."""
    text_pair_column: str | None = None
    """Column holding the second text of a sentence pair (classification, regression): each row is encoded as
    the pair (text, text_pair); found for the usual pairs (sentence1/sentence2, premise/hypothesis,
    question/answer, query/passage, text_a/text_b) when text_column is unset."""
    label_separator: str | None = None
    """multilabel: the character(s) between label names in a text cell ("billing|refund"); giving it selects
    multilabel. List cells (JSONL, Parquet) need none; an empty cell is the empty label set."""
    label_all_subwords: bool = False
    """tagging: also train on each word's continuation pieces, with the word's I- tag (B- never copied); the
    first piece alone is scored and predicted either way."""
    labels: list[str] | None = None
    """Label names in the order of their ids; sorted labels of the training data when unset."""
    encoding: str = "utf-8"
    """Text encoding of CSV, TSV, JSONL and plain-text files."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_split < 1.0:
            raise ConfigError(f"data.eval_split must be in [0, 1), got {self.eval_split}")
        if isinstance(self.labels, str):
            self.labels = [s.strip() for s in self.labels.split(",") if s.strip()]


@dataclass
class ModelConfig:
    """θ̂: which pretrained model, and how its inputs are shaped."""

    name: str | None = None
    """Alias of a packaged model (minilm, smollm2), a local transformers folder, a .gguf file, or a hub id;
    minilm for classification and smollm2 for generate when unset."""
    max_length: int | None = None
    """Longer texts are truncated to this many tokens (special tokens included); 128 for classification and
    512 for generate when unset."""
    long_documents: str | None = None
    """Texts longer than max_length (classification, multilabel, regression): truncate, or chunk (read as
    overlapping windows of max_length tokens whose outputs are aggregated into the document's; a pair windows its
    second text, keeping the first in every window). Unset: chunk when over 5% of the training texts are longer."""
    chunk_stride: int | None = None
    """Tokens that consecutive windows of a chunked text share, under half of max_length; max_length // 4 when
    unset."""
    max_chunks: int | None = None
    """Most windows read of one text (16 when unset): a longer text is read at that many windows spread evenly
    from its start to its end. A micro-batch holds whole texts up to batch_size windows, so this bounds memory."""
    aggregate: str | None = None
    """How a chunked text's windows make one prediction: max (per output, the largest logit of any window),
    mean, or attention (a learned softmax weighting of the windows); max when unset: best where the evidence is
    not at the start (bench/RESULTS.md, long: buried 0.962 vs mean 0.946, attention 0.925), within 2 BBC articles."""
    trust_remote_code: bool = False
    """Allow a hub model to run its own Python code; off, since that code runs on your machine."""
    allow_pickle: bool = False
    """Allow pickle weights (.bin/.pt) when a model has no safetensors; even then torch.load(weights_only=True)."""

    def __post_init__(self) -> None:
        if self.max_length is not None and self.max_length < 8:
            raise ConfigError(f"model.max_length must be at least 8, got {self.max_length}")
        if self.long_documents not in (None, "truncate", "chunk"):
            raise ConfigError(f"--long-documents must be truncate or chunk, got '{self.long_documents}'")
        if self.aggregate not in (None, "max", "mean", "attention"):
            raise ConfigError(f"--aggregate must be max, mean or attention, got '{self.aggregate}'")
        if self.max_chunks is not None and self.max_chunks < 1:
            raise ConfigError(f"--max-chunks must be at least 1, got {self.max_chunks}")
        if self.chunk_stride is not None and self.chunk_stride < 0:
            raise ConfigError(f"--chunk-stride must be at least 0, got {self.chunk_stride}")


@dataclass
class TaskConfig:
    """F_θ: the task head put on the pretrained network."""

    type: str = "auto"
    """classification (one label per text) or generate (supervised fine-tuning of a causal LM on
    prompt/response pairs or chat records); auto: from the training file's columns (tasks/__init__.py asks
    each task in turn; the run summary says which and why)."""
    template: str = "auto"
    """generate: how conversations become text: chat (the tokenizer's chat template), plain (Alpaca's
    "### Instruction: / ### Response:" blocks) or auto (chat when the tokenizer has a template)."""

    def __post_init__(self) -> None:
        if self.type not in ("auto", *TASK_NAMES):
            raise ConfigError(f"task.type must be auto or one of {', '.join(TASK_NAMES)}, got '{self.type}'")
        if self.template not in ("auto", "chat", "plain"):
            raise ConfigError(f"task.template must be auto, chat or plain, got '{self.template}'")


@dataclass
class StrategyConfig:
    """Which parameters train."""

    name: str = "full"
    """full (every parameter trains), head (only the task head), top-k (top train_layers blocks and the head),
    bitfit (biases and the head), lora (LoRA adapters and the head); top-2 is top-k with train_layers 2."""
    train_layers: int = 2
    """Blocks from the top that train under top-k."""
    lora_r: int = 8
    """Rank of the LoRA update matrices."""
    lora_alpha: float = 16.0
    """LoRA scaling: the update is (lora_alpha / lora_r)·B·A."""
    lora_dropout: float = 0.1
    """Dropout on the LoRA input."""
    lora_targets: list[str] | None = None
    """Module names that get LoRA adapters; peft's choice for the architecture when unset (BERT: query, value)."""
    save_adapter: bool = False
    """Under lora, also save the adapter alone (run/adapter); the run folder always holds the merged model."""
    unfreeze: str = "none"
    """gradual (ULMFiT): the head alone in epoch 1, then one more block from the top each epoch, embeddings last."""
    init: str = "pretrained"
    """pretrained (θ̂), or random: the same architecture with random weights, the ablation showing what θ̂ gives."""
    l2sp: float = 0.0
    """ALPHA of the L2-SP pull toward θ̂: (ALPHA/2)·‖θ_backbone − θ̂_backbone‖² joins the loss; the backbone then
    gets no weight decay (the pull replaces it), the head keeps it."""

    def __post_init__(self) -> None:
        if self.name.startswith("top-") and self.name != "top-k":
            k = self.name.removeprefix("top-")
            if not k.isdigit() or int(k) < 1:
                raise ConfigError(f"strategy '{self.name}': write top-K with K a positive number, e.g. top-2")
            self.name, self.train_layers = "top-k", int(k)
        if self.lora_r < 1 or not 0 <= self.lora_dropout < 1:
            raise ConfigError(
                f"strategy.lora_r must be at least 1 and lora_dropout in [0, 1), got {self.lora_r}, {self.lora_dropout}"
            )
        if self.train_layers < 1:
            raise ConfigError(f"strategy.train_layers must be at least 1, got {self.train_layers}")
        if self.unfreeze not in ("none", "gradual"):
            raise ConfigError(f"strategy.unfreeze must be none or gradual, got '{self.unfreeze}'")
        if self.init not in ("pretrained", "random"):
            raise ConfigError(f"strategy.init must be pretrained or random, got '{self.init}'")
        if self.l2sp < 0:
            raise ConfigError(f"strategy.l2sp must be at least 0, got {self.l2sp}")


@dataclass
class TrainConfig:
    """The optimisation: AdamW with warmup, decay, clipping and accumulation."""

    epochs: int | None = None
    """Passes over the training data. When unset, enough passes for about 600 optimiser steps, at least 3 and at
    most 10 (train/defaults.py): a fixed 3 epochs stopped small files long before they converged."""
    batch_size: int = 16
    """Samples per micro-batch; one optimiser step sees batch_size * grad_accum samples."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step."""
    lr: float | None = None
    """Peak learning rate of the backbone; the head uses head_lr. When unset, by task, model size and strategy
    (train/defaults.py): 1e-4 for encoders under 50M parameters such as MiniLM, 3e-5 under 200M, 1e-5 above;
    causal LMs 1e-4 under 300M parameters; adapters and bias-only training higher."""
    head_lr: float | None = None
    """Peak learning rate of the task head. When unset: 10x lr for a classification head, which starts from
    random and is tiny, so the backbone's rate leaves it under-trained; lr for a causal LM's pretrained head."""
    layer_lr_decay: float | None = None
    """GAMMA: the block l places below the top learns at lr·GAMMA^l, the embeddings at the lowest rate."""
    weight_decay: float = 0.01
    """AdamW weight decay; never applied to biases and LayerNorm weights."""
    warmup_ratio: float = 0.1
    """Fraction of the optimiser steps spent warming the learning rate up linearly from 0."""
    schedule: str = "linear"
    """Decay after warmup: linear, cosine or constant."""
    max_grad_norm: float = 1.0
    """Gradients are clipped to this global norm (0 disables clipping)."""
    seed: int = 42
    """Seeds the head's initialisation, dropout, the eval split and the data order."""
    precision: str = "auto"
    """auto: bf16 autocast where the hardware runs bf16 matmuls natively (CPUs with AMX or avx512_bf16, Ampere+
    GPUs), else fp32; fp32; or bf16 (an error where the hardware lacks it). Weights and optimizer state stay fp32
    either way. bf16 scored the same as fp32 on SST-2 and TREC at 1.4x the speed on an avx512_bf16 CPU
    (bench/RESULTS.md), and is what TRL's and most GPU recipes' defaults use."""
    log_every: int = 10
    """Optimiser steps between entries of metrics.jsonl."""
    group_window: int = 50
    """Length grouping: batches are cut from shuffled windows of group_window * batch_size samples."""
    save_every: int | None = None
    """Write a resumable checkpoint every this many optimiser steps."""
    save_every_minutes: float | None = None
    """Write a resumable checkpoint when this many minutes have passed since the last one."""
    keep_checkpoints: int = 2
    """How many of the newest checkpoints to keep while the run is in progress."""
    on_nonfinite: str = "stop"
    """A NaN or infinite loss or gradient: stop (keeping the last good checkpoint), or skip the step."""
    max_minutes: float | None = None
    """Stop (as early stopping does, keeping the best evaluation) once the training loop has run this many
    minutes; evaluation counts, scoring test_data does not. No cap when unset."""
    gradient_checkpointing: bool = False
    """Keep only each layer's input in the forward pass and recompute the rest in backward: less activation
    memory for one more forward pass per step (TRL's SFTConfig turns it on by default; tunesmith leaves it off)."""
    loss: str | None = None
    """The task's loss when unset: cross-entropy (classification), binary cross-entropy per label (multilabel),
    mse on standardised targets (regression). focal (classification, multilabel) down-weights the examples the
    model already gets right by (1-p)^focal_gamma; huber (regression) is mse near 0 and linear beyond 1 sd."""
    focal_gamma: float = 2.0
    """GAMMA of the focal loss (0 is the plain cross-entropy)."""
    class_weights: str | None = None
    """balanced (inverse frequency in the training labels: n / (classes · count), as scikit-learn's; for
    multilabel each label's positives weigh negatives/positives, BCE's pos_weight), none, or name=weight
    pairs ("a=2,b=1", others 1). A single-label loss is then normalised by the summed weights of the step's
    samples, as torch's weighted mean, so accumulation leaves it unchanged; a multilabel loss stays a mean per
    sample. Recorded in tunesmith.json."""
    packing: bool = False
    """generate: concatenate samples into rows of model.max_length (batch_size rows per micro-batch), each
    sample attending only to itself; no compute is spent on padding."""

    def __post_init__(self) -> None:
        checks = [
            (self.epochs is None or self.epochs >= 1, f"train.epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"train.batch_size must be at least 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"train.grad_accum must be at least 1, got {self.grad_accum}"),
            (self.lr is None or self.lr > 0, f"train.lr must be positive, got {self.lr}"),
            (
                self.max_minutes is None or self.max_minutes > 0,
                f"train.max_minutes must be positive, got {self.max_minutes}",
            ),
            (self.head_lr is None or self.head_lr > 0, f"train.head_lr must be positive, got {self.head_lr}"),
            (
                self.layer_lr_decay is None or 0 < self.layer_lr_decay <= 1,
                f"train.layer_lr_decay must be in (0, 1], got {self.layer_lr_decay}",
            ),
            (0 <= self.warmup_ratio < 1, f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}"),
            (
                self.schedule in ("linear", "cosine", "constant"),
                f"train.schedule must be linear, cosine or constant, got '{self.schedule}'",
            ),
            (
                self.precision in ("fp32", "bf16", "auto"),
                f"train.precision must be fp32, bf16 or auto, got '{self.precision}'",
            ),
            (self.log_every >= 1, f"train.log_every must be at least 1, got {self.log_every}"),
            (self.group_window >= 1, f"train.group_window must be at least 1, got {self.group_window}"),
            (
                self.save_every is None or self.save_every >= 1,
                f"train.save_every must be at least 1, got {self.save_every}",
            ),
            (
                self.save_every_minutes is None or self.save_every_minutes > 0,
                f"train.save_every_minutes must be positive, got {self.save_every_minutes}",
            ),
            (self.keep_checkpoints >= 1, f"train.keep_checkpoints must be at least 1, got {self.keep_checkpoints}"),
            (
                self.loss in (None, "ce", "bce", "focal", "mse", "huber"),
                f"train.loss must be ce, bce, focal, mse or huber, got '{self.loss}'",
            ),
            (self.focal_gamma >= 0, f"train.focal_gamma must be at least 0, got {self.focal_gamma}"),
            (
                self.on_nonfinite in ("stop", "skip"),
                f"train.on_nonfinite must be stop or skip, got '{self.on_nonfinite}'",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass
class EvalConfig:
    """When to evaluate, which checkpoint to keep, when to stop."""

    every_steps: int | None = None
    """Evaluate every this many optimiser steps; at the end of every epoch when unset."""
    metric: str | None = None
    """Metric that picks the best checkpoint: macro_f1 (the default), weighted_f1, accuracy or loss for
    classification; loss (the default) or perplexity for generate (lower is better)."""
    patience: int | None = None
    """Stop after this many evaluations without improvement (0: never). When unset: 3 when train.epochs is
    unset too and the held-out set has at least 500 rows (enough to tell epochs apart), else never."""
    select: str | None = None
    """Which evaluated weights the run keeps: best (by metric) or last. When unset: best when the held-out set
    has at least 500 rows, else last: on 50 held-out rows accuracy has a standard error of about 6 points, so
    "best" picks noise (an SST-2 slice of 500 rows kept epoch 2 at 0.75 test accuracy while later epochs
    reached 0.79), and the last weights of a decayed schedule are the steadier choice."""
    batch_size: int = 64
    """Samples per batch when evaluating and predicting."""
    generate_samples: int = 100
    """generate: evaluation samples the model generates for, before and after training (0: none);
    held-out loss and perplexity always use every evaluation sample."""
    max_new_tokens: int = 256
    """generate: the most tokens generated per evaluation sample."""
    answer_pattern: str | None = None
    """generate: a regex whose first group (else whole match) is the answer compared by exact match,
    e.g. '#### (.+)' for worked maths answers; the whole stripped reply when unset."""

    def __post_init__(self) -> None:
        if self.metric is not None and self.metric not in METRICS:
            raise ConfigError(f"eval.metric must be one of {', '.join(METRICS)}, got '{self.metric}'")
        if self.generate_samples < 0 or self.max_new_tokens < 1:
            raise ConfigError("eval.generate_samples must be at least 0 and eval.max_new_tokens at least 1")
        if self.answer_pattern is not None:
            import re

            try:
                re.compile(self.answer_pattern)
            except re.error as e:
                raise ConfigError(f"eval.answer_pattern {self.answer_pattern!r} is not a regex: {e}") from None
        if self.every_steps is not None and self.every_steps < 1:
            raise ConfigError(f"eval.every_steps must be at least 1, got {self.every_steps}")
        if self.select not in (None, "best", "last"):
            raise ConfigError(f"eval.select must be best or last, got '{self.select}'")
        if self.patience is not None and self.patience < 0:
            raise ConfigError(f"eval.patience must be at least 0 (0: never stop early), got {self.patience}")

    def better(self, new: float, old: float | None) -> bool:
        """Whether ``new`` improves on ``old`` for the chosen metric."""
        if old is None:
            return True
        return new < old if METRICS[self.metric or "loss"] == "min" else new > old


@dataclass
class RunConfig:
    """Everything one fine-tuning run needs; tunesmith.json in the run folder holds it resolved."""

    data: DataConfig = field(default_factory=DataConfig)
    """D: the files and their columns."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """θ̂: the pretrained model."""
    task: TaskConfig = field(default_factory=TaskConfig)
    """F_θ: the task head."""
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    """Which parameters train."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The optimisation."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation, best checkpoint, early stopping."""
    output: str | None = None
    """Run folder to write; runs/<train file name>-<time> when unset."""
    overwrite: bool = False
    """Replace an existing run folder at output."""
    quiet: bool = False
    """No progress bar and no tables, only errors."""
    resume: bool = False
    """Continue an interrupted run from the newest checkpoint in <output>.partial."""
    force: bool = False
    """Resume even when the data or the config differ from the interrupted run's."""

    def for_task(self, task: str) -> RunConfig:
        """A copy with task.type set and every default that depends on the task filled in (Task.configure)."""
        from tunesmith.tasks import get

        return get(task).configure(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, as written to YAML and tunesmith.json."""
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """The config as YAML that from_yaml reads back."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "config") -> RunConfig:
        """Build from a nested dict; unknown keys and wrongly typed values raise ConfigError."""
        return build(cls, raw, where)

    @classmethod
    def from_yaml(cls, path: str | Path) -> RunConfig:
        """Read a YAML config file."""
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config is a mapping of sections, got {type(raw).__name__}")
        if "tunesmith" in raw and isinstance(raw.get("config"), dict):
            # A run folder's tunesmith.json (JSON is YAML): re-run its resolved config, as a new run.
            raw = {k: v for k, v in raw["config"].items() if k not in ("resume", "force", "overwrite")}
        return cls.from_dict(raw, where=str(path))

    def override(self, assignments: list[str]) -> RunConfig:
        """Apply ``section.field=value`` strings (values parsed as YAML) and re-check the result."""
        values = {}
        for item in assignments:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set {item}: expected section.field=value")
            values[key.strip()] = parse_value(value)
        return self.with_values(values, where="--set")

    def with_values(self, values: dict[str, Any], where: str = "option") -> RunConfig:
        """A copy with fields set by dotted key (train.lr) or by bare field name (lr).

        A bare name found in several sections means the first in section order (data, model, task,
        strategy, train, eval): batch_size is train.batch_size; use eval.batch_size for the other.
        """
        raw = self.to_dict()
        for key, value in values.items():
            parts = key.split(".") if "." in key else self._locate(key, where)
            node = raw
            for depth, part in enumerate(parts):
                if not isinstance(node, dict) or part not in node:
                    known = list(node) if isinstance(node, dict) else []
                    raise ConfigError(
                        f"{where} {key}: unknown key '{'.'.join(parts[: depth + 1])}'" + suggest(part, known)
                    )
                if depth == len(parts) - 1:
                    if isinstance(node[part], dict) and isinstance(value, dict):
                        node[part] = {**node[part], **value}
                    elif isinstance(node[part], dict) and "name" in node[part] and isinstance(value, str):
                        node[part]["name"] = value  # strategy="head" means strategy.name, as model="x" does
                    elif isinstance(node[part], dict):
                        raise ConfigError(f"{where} {key}: '{key}' is a section; set one of its fields")
                    else:
                        node[part] = value
                else:
                    node = node[part]
        return RunConfig.from_dict(raw, where=where)

    def _locate(self, name: str, where: str) -> list[str]:
        raw = self.to_dict()
        if name in raw:  # a top-level field, or a section (which with_values then refuses to set whole)
            return [name]
        hits = [[section, name] for section, fields in raw.items() if isinstance(fields, dict) and name in fields]
        if hits:  # a name in several sections means the first: batch_size is train.batch_size, not eval's
            return hits[0]
        every = [f"{s}.{f}" for s, fields in raw.items() if isinstance(fields, dict) for f in fields]
        raise ConfigError(f"{where} {name}: unknown option" + suggest(name, [e.split(".")[1] for e in every]))
