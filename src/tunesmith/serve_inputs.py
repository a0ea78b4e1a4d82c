"""What `tunesmith serve` takes and answers for one run: the inputs of its task, their schemas, their cost.

TEI's request shape, {"inputs": ...}, read as the run's task reads texts: one text or a list of texts; for a run
trained on sentence pairs one [text, text pair] or a list of them; for tagging raw texts or pre-split token
lists; for generation prompts or conversations. The schemas carry the run's own label names, so /docs shows
them. The predictor answers; nothing here knows a model.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, create_model

from tunesmith.errors import ConfigError

CPU_BATCH = 16
"""Items per forward when the model runs on a CPU. A served batch is a mix of callers' lengths, padded to the
longest: on the 2-core bench machine MiniLM read random draws of 64 SST-2 sentences at 190 items/s in
length-sorted forwards of 16 and at 117 in one forward of 64 (`tunesmith predict` sorts a whole file first, so
its batches of 64 are of like lengths and it keeps them).
"""


class BadInput(Exception):
    """A request the run cannot take: one line naming the field, and its HTTP status (422, or 413 for size)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


class Message(BaseModel):
    """One turn of a conversation, as chat templates take it."""

    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    """OpenAI's chat completion request, the fields a fine-tuned causal LM can honour (others are ignored)."""

    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int = Field(256, ge=1, le=4096)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int | None = None


class Service:
    """One run folder's predictor, its inputs and its records."""

    def __init__(self, run: str | Path, backend: str) -> None:
        from tunesmith.backends import check_backend
        from tunesmith.tasks import for_run

        check_backend(backend)
        self.run, self.task = for_run(run)
        if backend not in self.task.backends:
            raise ConfigError(f"--backend {backend}: a {self.task.name} run is served with torch")
        self.backend = backend
        pairs = self.run.columns.get("text_pair") is not None
        self.kind = {"generate": "prompts", "tagging": "words"}.get(self.task.name, "pairs" if pairs else "texts")
        self.title = f"{self.task.name} run {self.run.path.resolve().name}"
        self.predictor: Any = None
        self.counter: Any = None
        self.counting = threading.Lock()

    def load(self) -> None:
        """θ̃ and its tokenizer (slow: in a thread, while /health already answers).

        cost() counts with a copy of the tokenizer, one thread at a time: a fast tokenizer keeps its truncation
        setting in shared state, so counting (untruncated) beside the batcher's predict (truncated) on one object
        let a long text reach the model whole, and failed the batch it was in.
        """
        from tunesmith.tasks import open_run

        self.predictor = open_run(self.run.path, None, self.backend)
        model = getattr(self.predictor, "model", None)  # None: an ONNX session, on the CPU
        if model is None or next(model.parameters()).device.type == "cpu":
            self.predictor.batch_size = min(self.predictor.batch_size, CPU_BATCH)
        self.counter = copy.deepcopy(self.predictor.tokenizer)

    @property
    def expects(self) -> str:
        """What `inputs` must be for this run, as the one line of a 422."""
        return {
            "texts": "this run reads single texts: give a text or a list of texts",
            "pairs": "this run reads sentence pairs: give [text, text pair] or a list of them",
            "words": "give a raw text, a list of them, or pre-split token lists",
            "prompts": "give a prompt, a list of them, or conversations (lists of {role, content})",
        }[self.kind]

    def description(self) -> str:
        """/docs' line on what this run takes."""
        shapes = {
            "texts": '`{"inputs": "one text"}` or `{"inputs": ["t1", "t2"]}`',
            "pairs": '`{"inputs": ["text", "text pair"]}` or `{"inputs": [["a1", "b1"], ["a2", "b2"]]}`',
            "words": '`{"inputs": "raw text"}`, a list of them, or pre-split `{"inputs": [["New", "York"]]}`',
            "prompts": '`{"inputs": "a prompt"}`, a list of them, or conversations of {role, content}',
        }
        return f"POST /predict takes {shapes[self.kind]} and answers one record per input, in input order."

    def schemas(self) -> tuple[type[BaseModel], type[BaseModel]]:
        """The request and record models of this run's task, with its label names."""
        names = tuple(self.run.labels.names) if self.run.labels is not None else ()
        label: Any = Literal[names] if names else str  # type: ignore[valid-type]
        loose = ConfigDict(extra="forbid")
        if self.kind == "prompts":
            inputs: Any = Union[str, list[Union[str, list[Message]]]]  # noqa: UP007 (pydantic reads the union)
            request = create_model("PredictRequest", __config__=loose, inputs=(inputs, ...),
                                   max_new_tokens=(int, Field(256, ge=1, le=4096)),
                                   temperature=(float, Field(0.0, ge=0)), top_p=(float, Field(1.0, gt=0, le=1)),
                                   seed=(int, 0))  # fmt: skip
            record = create_model("Reply", response=(str, ...))
            return request, record
        if self.kind == "words":
            entity = create_model("Entity", type=(label, ...), start=(int, ...), end=(int, ...), text=(str, ...),
                                  score=(float | None, None))  # fmt: skip
            request = create_model("PredictRequest", __config__=loose,
                                   inputs=(Union[str, list[Union[str, list[str]]]], ...))  # noqa: UP007  # fmt: skip
            record = create_model("Tagged", text=(str | None, None), tokens=(list[str] | None, None),
                                  tags=(list[str] | None, None), entities=(list[entity], ...))  # type: ignore[valid-type]  # fmt: skip
            return request, record
        chunk = create_model("Chunk", start=(int, ...), end=(int, ...), weight=(float, ...),
                             label=(label | None, None), labels=(list[label] | None, None),
                             value=(float | None, None), score=(float | None, None))  # type: ignore[valid-type]  # fmt: skip
        inputs = Union[str, list[Union[str, list[str]]]]  # noqa: UP007
        request = create_model("PredictRequest", __config__=loose, inputs=(inputs, ...),
                               top_k=(int | None, Field(None, ge=1)), explain=(bool, False))  # fmt: skip
        fields: dict[str, Any] = {"chunks": (list[chunk] | None, None)}  # type: ignore[valid-type]
        record = {"regression": "value", "multilabel": "labels"}.get(self.task.name, "label")
        if record == "value":
            fields["value"] = (float, ...)
        elif record == "labels":
            fields.update(labels=(list[label], ...), scores=(dict[str, float], ...))  # type: ignore[valid-type]
        else:
            fields.update(label=(label, ...), score=(float, ...), scores=(dict[str, float], ...))
        return request, create_model("Prediction", **fields)

    def parse(self, body: BaseModel) -> tuple[list[Any], Hashable]:
        """The request's items as the predictor takes them, and its options (requests batch with equal ones)."""
        raw = body.inputs  # type: ignore[attr-defined]
        if self.kind == "prompts":
            items = [raw] if isinstance(raw, str) else list(raw)
            items = [x if isinstance(x, str) else [m.model_dump() for m in x] for x in items]
            options: Hashable = (body.max_new_tokens, body.temperature, body.top_p, body.seed)  # type: ignore[attr-defined]
        elif self.kind == "words":
            items = [raw] if isinstance(raw, str) else list(raw)
            options = None
        else:
            items = self._sequences(raw)
            top_k, explain = body.top_k, body.explain  # type: ignore[attr-defined]
            if top_k is not None:
                try:
                    self.predictor.readout.records(_empty(), top_k)
                except ConfigError as e:
                    raise BadInput(f"top_k: {str(e).removeprefix('--top-k ')}") from None
            options = (top_k, explain)
        if not items:
            raise BadInput("inputs: an empty list; give at least one input")
        return items, options

    def _sequences(self, raw: Any) -> list[Any]:
        """Texts, or (text, text pair) tuples for a pair run; the wrong kind is one line."""
        if self.kind == "pairs":
            if isinstance(raw, list) and len(raw) == 2 and all(isinstance(x, str) for x in raw):
                return [tuple(raw)]
            if isinstance(raw, list) and all(isinstance(x, list) and len(x) == 2 for x in raw):
                return [tuple(x) for x in raw]
            raise BadInput(f"inputs: {self.expects}")
        if isinstance(raw, str):
            return [raw]
        if all(isinstance(x, str) for x in raw):
            return list(raw)
        if all(isinstance(x, list) and len(x) == 1 for x in raw):  # TEI's [["t1"], ["t2"]]
            return [x[0] for x in raw]
        raise BadInput(f"inputs: {self.expects}")

    def cost(self, items: list[Any], strict: bool) -> int:
        """Tokens the items take in a batch (the batcher's budget); with strict, a text longer than the run reads
        in one window is a 413 naming it.
        """
        from tunesmith.data.chunks import token_lengths

        p = self.predictor
        if self.kind == "prompts":
            return len(items) * p.max_length
        if self.kind == "words":
            texts = [x if isinstance(x, str) else " ".join(x) for x in items]
            with self.counting:
                return int(token_lengths(self.counter, texts).clip(max=p.max_length).sum())
        first = [x[0] if isinstance(x, tuple) else x for x in items]
        second = [x[1] for x in items] if self.kind == "pairs" else None
        with self.counting:
            lengths = token_lengths(self.counter, first, second)
        if strict and (lengths > p.max_length).any():
            at = int((lengths > p.max_length).argmax())
            raise BadInput(f"inputs[{at}]: {int(lengths[at])} tokens, over the run's max_length {p.max_length} "
                           "(the server is --strict)", 413)  # fmt: skip
        chunking = getattr(p, "chunking", None)
        most = p.max_length * (chunking.max_chunks if chunking is not None else 1)
        return int(lengths.clip(max=most).sum())

    def run_batch(self, items: list[Any], options: Hashable) -> list[Any]:
        """The predictor on one batch of items (in the batcher's thread)."""
        p = self.predictor
        if self.kind == "prompts":
            max_new, temperature, top_p, seed = options  # type: ignore[misc]
            return [{"response": r} for r in p.generate(items, max_new, temperature, top_p, seed)]
        if self.kind == "words":
            return p.predict(items)
        top_k, explain = options  # type: ignore[misc]
        return p.predict(items, top_k, explain)

    def warmup(self) -> tuple[list[Any], int, Hashable]:
        """A small request of this run's kind, for the batcher before /ready says ready."""
        if self.kind == "prompts":
            return ["Hello"], 1, (4, 0.0, 1.0, 0)
        if self.kind == "words":
            return ["Warm up"], 1, None
        return [("warm", "up")] if self.kind == "pairs" else ["warm up"], 1, (None, False)

    def info(self) -> dict[str, Any]:
        """/info: what the run is, from its tunesmith.json."""
        import tunesmith

        raw = self.run.raw
        data = raw.get("data", {})
        return {
            "task": self.task.name,
            "input": self.kind,
            "labels": self.run.labels.names if self.run.labels is not None else None,
            "base_model": raw.get("pretrained"),
            "max_length": self.run.max_length,
            "long_documents": raw.get("long_documents"),
            "thresholds": raw.get("thresholds"),
            "data": {part: _fingerprint(data[part]) for part in ("train", "eval") if data.get(part)},
            "tunesmith": tunesmith.__version__,
            "versions": raw.get("versions"),
        }


def _fingerprint(part: dict[str, Any]) -> dict[str, Any]:
    """A data file's sha256 and rows, not its path (a path says where the trainer's files were)."""
    return {k: v for k, v in part.items() if k in ("sha256", "rows")}


def _empty() -> Any:
    import torch

    return torch.zeros((0, 0))
