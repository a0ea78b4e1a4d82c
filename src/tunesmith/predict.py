"""Predictor: batched, length-sorted inference of a sequence task (one output per text) on texts or files.

Needs nothing but a run folder. Knows nothing about training, nor about any one task: the task's Readout
turns logits into records and scores (tasks/classify.py and its siblings give one). The model is any
batch -> logits callable (backends.py): θ̃ in torch, or its ONNX export run by ONNX Runtime.
"""

from __future__ import annotations

import contextlib
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.backends import Forward, as_forward, eval_mode, onnx_forward
from tunesmith.data.chunks import Chunking, Documents, encode_documents, need_offsets
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import Table, iter_tables, reuse_column
from tunesmith.data.validate import Examples, LabelKind, examples
from tunesmith.errors import ConfigError, DataError
from tunesmith.metrics import Score, score_forward
from tunesmith.model.aggregate import Aggregator, document_logits
from tunesmith.model.heads import load_finetuned
from tunesmith.model.pretrained import load_tokenizer, local
from tunesmith.runs import RunInfo, atomic_output


class Readout(Protocol):
    """What a sequence task does with its head's logits."""

    kind: LabelKind
    labels: LabelSpace | None

    def records(self, logits: torch.Tensor, top_k: int | None) -> list[dict[str, Any]]:
        """One prediction record per row: label, score and the per-label scores, as the task defines them."""
        ...

    def csv_columns(self, top_k: int | None) -> list[str]:
        """The CSV header after text."""
        ...

    def csv_cells(self, record: dict[str, Any], top_k: int | None) -> list[str]:
        """One record's CSV cells after text."""
        ...

    def score(self) -> Score:
        """An empty running score for labeled files."""
        ...


class Predictor:
    """A fine-tuned sequence model (classifier, multi-label tagger, regressor) ready to predict texts."""

    noun = "predictions"

    def __init__(
        self,
        model: PreTrainedModel | Forward,
        tokenizer: PreTrainedTokenizerBase,
        readout: Readout,
        max_length: int,
        batch_size: int = 64,
        columns: dict[str, str | None] | None = None,
        chunking: Chunking | None = None,
        combine: Aggregator | None = None,
    ) -> None:
        """model: θ̃ as a torch module, or any Forward (backends.onnx_forward gives ONNX Runtime's). With chunking,
        a long text is read as the run's windows and combine makes their logits the text's.
        """
        self.model, self.forward = as_forward(model)
        """The torch module (None for an ONNX backend), and what runs the batches."""
        self.tokenizer = tokenizer
        self.readout = readout
        self.labels = readout.labels
        self.max_length = max_length
        self.batch_size = batch_size
        self.columns = columns or {}
        """The training file's column names by role (text, label), tried first in files to score."""
        self.chunking, self.combine = chunking, combine

    @classmethod
    def from_run(cls, path: str | Path, batch_size: int = 64, backend: str = "torch") -> Predictor:
        """The Predictor of a sequence-task run folder (tasks.open_run; a generate run has a Generator)."""
        from tunesmith.tasks import open_run

        predictor = open_run(path, batch_size, backend)
        if not isinstance(predictor, Predictor):
            raise ConfigError(f"{path}: not a run of a sequence task; use tunesmith.load({str(path)!r})")
        return predictor

    @classmethod
    def of_run(cls, run: RunInfo, readout: Readout, model_class: str, batch_size: int = 64, backend: str = "torch",
               chunking: Chunking | None = None, combine: Aggregator | None = None) -> Predictor:  # fmt: skip
        """θ̃ (run by backend: torch, or one of the ONNX files) and its tokenizer, for the task's readout."""
        model, tokenizer = run_model(run, model_class, backend)
        return cls(model, tokenizer, readout, run.max_length, batch_size, run.columns, chunking, combine)

    def column(self, table: Table, role: str) -> str | None:
        """The training file's column for a role when this table has it; None lets the usual names decide."""
        return reuse_column(table, None, self.columns.get(role))

    def documents(self, texts: list[str], pairs: list[str] | None, offsets: bool = False) -> Documents:
        """Texts (or pairs) as the run reads them: one truncated window each, or its chunks."""
        if offsets:
            need_offsets(self.tokenizer, "this run")
        return encode_documents(self.tokenizer, texts, self.max_length, pairs, self.chunking, offsets)

    def logits(self, inputs: Sequence[str | tuple[str, str]]) -> torch.Tensor:
        """The head's fp32 logits, one row per text (or (text, text pair) tuple), in input order."""
        return self._logits(self.documents(*split_pairs(inputs)))[0]

    def _logits(self, docs: Documents) -> tuple[torch.Tensor, torch.Tensor]:
        """(per document, per chunk) logits, under inference_mode: unlike no_grad, no version counters either."""
        with torch.inference_mode():
            return document_logits(self.forward, docs, self.batch_size, self.tokenizer.pad_token_id, self.combine)

    def predict(
        self,
        inputs: Sequence[str | tuple[str, str]] | str | tuple[str, str],
        top_k: int | None = None,
        explain: bool = False,
    ) -> Any:
        """Per text (or (text, text pair) tuple), the task's record: for a classifier the label, its probability,
        and the top_k (default: all) labels' probabilities. A list gives a list of dicts; one input gives one dict.

        explain adds "chunks": per window read, its [start, end) characters in the text (a pair's second), its
        share of the decision ("weight", summing to 1) and what it predicts alone.
        """
        single = isinstance(inputs, (str, tuple))
        batch = [inputs] if single else list(inputs)
        if not batch:
            return []
        docs = self.documents(*split_pairs(batch), offsets=explain)
        logits, chunk_logits = self._logits(docs)
        out = self.readout.records(logits, top_k)
        if explain:
            self._explain(out, docs, logits, chunk_logits)
        return out[0] if single else out

    def _explain(self, out: list[dict[str, Any]], docs: Documents, logits: torch.Tensor, chunks: torch.Tensor) -> None:
        """Each record's chunks: span, weight in the decided output (the top logit's), the chunk's own record."""
        owner = torch.as_tensor(docs.owner)
        decided = logits.argmax(1)
        if self.combine is not None and docs.chunked:
            share = self.combine.weights(chunks, owner, docs.n, decided)
        else:
            share = torch.ones(len(docs.ids))
        alone = self.readout.records(chunks, None)
        assert docs.spans is not None
        for c, doc in enumerate(docs.owner):
            own = {k: v for k, v in alone[c].items() if k != "scores"}
            start, end = docs.spans[c]
            out[doc].setdefault("chunks", []).append({"start": start, "end": end, "weight": float(share[c]), **own})

    def predict_proba(self, texts: Sequence[str]):  # noqa: ANN201 (numpy)
        """Class probabilities of a single-label classifier, one row per text, columns in label-space order."""
        return torch.softmax(self.logits(list(texts)), dim=-1).numpy()

    def predict_file(
        self,
        source: str,
        output: str | None,
        *,
        columns: dict[str, str | None] | None = None,
        encoding: str = "utf-8",
        top_k: int | None = None,
        format: str | None = None,  # noqa: A002 (the CLI's --format)
        explain: bool = False,
    ) -> int:
        """Predict every text of a file (or '-' for stdin) and write CSV or JSONL (or '-' for stdout).

        Input is read and output written chunk by chunk, so memory does not grow with the file;
        a file output appears (renamed from a temporary sibling) only when complete.
        """
        fmt = format or ("csv" if output and output.endswith((".csv", ".tsv")) else "jsonl")
        if fmt not in ("csv", "jsonl"):
            raise ConfigError(f"--format must be csv or jsonl, got '{fmt}'")
        self.readout.records(torch.zeros((0, 0)), top_k)  # a bad --top-k is refused before any output
        text_column, pair_column = (columns or {}).get("text"), (columns or {}).get("text_pair")
        written = 0
        with atomic_output(output) as sink:
            writer = csv.writer(sink, delimiter="\t" if (output or "").endswith(".tsv") else ",", lineterminator="\n")
            for chunk in iter_tables(source, encoding):
                if written == 0:  # the training file's columns when this file has them; else found by name
                    text_column = text_column or self.column(chunk, "text")
                    pair_column = pair_column or self.column(chunk, "text_pair")
                ex = self._examples(chunk, text_column, pair_column, None, need_labels=False)
                text_column, pair_column = ex.text_column, ex.pair_column  # later chunks use the first's columns
                inputs = list(zip(ex.texts, ex.pairs, strict=True)) if ex.pairs is not None else ex.texts
                records = self.predict(inputs, top_k, explain)
                given = [{"text": t} for t in ex.texts]
                if ex.pairs is not None:
                    given = [{"text": t, "text_pair": p} for t, p in zip(ex.texts, ex.pairs, strict=True)]
                if fmt == "jsonl":
                    sink.writelines(
                        json.dumps({**g, **r}, ensure_ascii=False) + "\n" for g, r in zip(given, records, strict=True)
                    )
                else:
                    if written == 0:
                        extra = ["chunks"] if explain else []
                        writer.writerow([*given[0], *self.readout.csv_columns(top_k), *extra] if given else [])
                    for g, rec in zip(given, records, strict=True):
                        extra = [json.dumps(rec["chunks"])] if explain else []
                        writer.writerow([*g.values(), *self.readout.csv_cells(rec, top_k), *extra])
                written += len(records)
        return written

    def evaluate_file(
        self, source: str, *, columns: dict[str, str | None] | None = None, encoding: str = "utf-8"
    ) -> dict[str, Any]:
        """Metrics on a labeled file, read chunk by chunk (memory does not grow with it for a classifier)."""
        given = columns or {}
        text_column, label_column, pair_column = given.get("text"), given.get("label"), given.get("text_pair")
        score = self.readout.score()
        kind = self.readout.kind
        context = eval_mode(self.model) if self.model is not None else contextlib.nullcontext()
        with context:
            for n, chunk in enumerate(iter_tables(source, encoding)):
                if n == 0:  # the training file's column names when this file has them too; else found by name
                    text_column = text_column or self.column(chunk, "text")
                    label_column = label_column or self.column(chunk, "label")
                    pair_column = pair_column or self.column(chunk, "text_pair")
                ex = self._examples(chunk, text_column, pair_column, label_column)
                text_column, label_column, pair_column = ex.text_column, ex.label_column, ex.pair_column
                docs = self.documents(ex.texts, ex.pairs)
                targets = kind.targets(ex, self.labels)
                pad_id = self.tokenizer.pad_token_id
                score_forward(score, self.forward, docs, targets, self.batch_size, pad_id, self.combine)
        return score.result()

    def _examples(
        self, chunk: Table, text: str | None, pair: str | None, label: str | None, need_labels: bool = True
    ) -> Examples:
        """A chunk's examples; a run trained on pairs needs pairs (and one trained on single texts, single texts)."""
        ex = examples(chunk, text, label, need_labels, self.readout.kind.parse, pair)
        if (ex.pairs is None) != (self.columns.get("text_pair") is None):
            what = "sentence pairs" if ex.pairs is None else "single texts"
            raise DataError(chunk.path, f"this run was trained on {what}; name the columns with --text-column "
                            "(and --text-pair-column)")  # fmt: skip
        return ex


def run_model(
    run: RunInfo, model_class: str, backend: str
) -> tuple[PreTrainedModel | Forward, PreTrainedTokenizerBase]:
    """A run folder's θ̃, run by torch or by one of its ONNX files, and its tokenizer: what every encoder task's
    predictor starts from.
    """
    if backend == "torch":
        model: PreTrainedModel | Forward = load_finetuned(str(run.path), model_class, run.labels)
        if torch.cuda.is_available():  # inference needs no accelerate: one device, no precision policy
            model = model.to("cuda")
    else:  # the torch weights are never loaded: the export is all ONNX Runtime needs
        model = onnx_forward(run.path, backend)
    return model, load_tokenizer(local(run.path))


def split_pairs(inputs: Sequence[str | tuple[str, str]]) -> tuple[list[str], list[str] | None]:
    """Texts, and the second texts when the inputs are (text, text pair) tuples (all or none)."""
    tuples = [isinstance(x, (tuple, list)) for x in inputs]
    if not any(tuples):
        return list(inputs), None  # type: ignore[arg-type]
    if not all(tuples) or any(len(x) != 2 for x in inputs):
        raise ConfigError("predict: give texts, or (text, text pair) tuples of two texts, not a mix")
    return [x[0] for x in inputs], [x[1] for x in inputs]
