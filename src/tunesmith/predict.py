"""Predictor: batched, length-sorted inference on texts or files, output in input order.

Needs nothing but a run folder. Knows nothing about training. The model is any batch -> logits
callable: θ̃ in torch, or its ONNX export run by ONNX Runtime (export.py); batching is the same.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.data.batching import collate, sorted_batches
from tunesmith.data.encode import encode_texts
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import Table, iter_tables
from tunesmith.data.validate import examples
from tunesmith.errors import ConfigError
from tunesmith.model.heads import load_finetuned
from tunesmith.model.pretrained import quiet_transformers
from tunesmith.runs import atomic_output, read_run

Forward = Callable[[dict[str, torch.Tensor]], torch.Tensor]
"""collate()'s CPU tensors (input_ids, attention_mask) in, fp32 logits on the CPU out."""


def torch_forward(model: torch.nn.Module) -> Forward:
    """A torch classifier as a Forward: the batch moves to the model's device, the logits come back."""
    device = next(model.parameters()).device

    def forward(batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu()

    return forward


def iter_logits(
    forward: Forward, ids: Sequence[Sequence[int]], batch_size: int, pad_id: int
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(row indices, fp32 logits on the CPU) per batch, longest texts first, so padding stays small."""
    for rows in sorted_batches([len(s) for s in ids], batch_size):
        yield rows, forward(collate([ids[i] for i in rows], pad_id))


class Predictor:
    """A fine-tuned classifier ready to label texts."""

    def __init__(
        self,
        model: PreTrainedModel | Forward,
        tokenizer: PreTrainedTokenizerBase,
        labels: LabelSpace,
        max_length: int,
        batch_size: int = 64,
        columns: dict[str, str | None] | None = None,
    ) -> None:
        """model: θ̃ as a torch module, or any Forward (export.onnx_forward gives ONNX Runtime's)."""
        torch_model = isinstance(model, torch.nn.Module)
        self.model = model.eval() if torch_model else None
        """The torch module (None for an ONNX backend): evaluate_run scores with it."""
        self.forward = torch_forward(model) if torch_model else model
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_length = max_length
        self.batch_size = batch_size
        self.columns = columns or {}
        """The training file's text and label column names, tried first in files to score."""

    @classmethod
    def from_run(cls, path: str | Path, batch_size: int = 64, backend: str = "torch") -> Predictor:
        """Load θ̃ (run by backend: torch, or one of the ONNX files), its tokenizer and label space from a run folder."""
        from tunesmith.export import FILES  # the ONNX backends; export imports Forward from here, so not at the top

        if backend != "torch" and backend not in FILES:
            raise ConfigError(f"--backend must be one of {', '.join(('torch', *FILES))}, got '{backend}'")
        run = read_run(path)
        if backend == "torch":
            model: PreTrainedModel | Forward = load_finetuned(str(run.path), run.task, run.labels)
            if torch.cuda.is_available():  # inference needs no accelerate: one device, no precision policy
                model = model.to("cuda")
        else:  # the torch weights are never loaded: the export is all ONNX Runtime needs
            from tunesmith.export import onnx_forward

            model = onnx_forward(run.path, backend)
        with quiet_transformers():
            tokenizer = AutoTokenizer.from_pretrained(str(run.path))
        columns = {"text": run.text_column, "label": run.label_column}
        return cls(model, tokenizer, run.labels, run.max_length, batch_size, columns)

    def column(self, table: Table, role: str) -> str | None:
        """The training file's column for a role when this table has it; None lets the usual names decide."""
        name = self.columns.get(role)
        return name if name in table.columns else None

    @torch.inference_mode()  # unlike no_grad, no version counters either: nothing here is ever backpropagated
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities, one row per text, columns in label-space order."""
        ids = encode_texts(self.tokenizer, texts, self.max_length)
        probs = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for rows, logits in iter_logits(self.forward, ids, self.batch_size, self.tokenizer.pad_token_id):
            probs[rows] = torch.softmax(logits, dim=-1).numpy()
        return probs

    def predict(self, texts: Sequence[str] | str, top_k: int | None = None) -> Any:
        """Per text: the predicted label, its probability, and the top_k (default: all) labels' probabilities.

        A list of texts gives a list of dicts; a single string gives one dict.
        """
        single = isinstance(texts, str)
        probs = self.predict_proba([texts] if single else list(texts))
        out = [self._record(row, top_k) for row in probs]
        return out[0] if single else out

    def _record(self, row: np.ndarray, top_k: int | None) -> dict[str, Any]:
        order = np.argsort(-row, kind="stable")[: top_k or len(row)]
        best = int(order[0])
        return {
            "label": self.labels.names[best],
            "score": float(row[best]),
            "scores": {self.labels.names[i]: float(row[i]) for i in order},
        }

    def predict_file(
        self,
        source: str,
        output: str | None,
        top_k: int | None = None,
        text_column: str | None = None,
        encoding: str = "utf-8",
        fmt: str | None = None,
    ) -> int:
        """Label every text of a file (or '-' for stdin) and write CSV or JSONL (or '-' for stdout).

        Input is read and output written chunk by chunk, so memory does not grow with the file;
        a file output appears (renamed from a temporary sibling) only when complete.
        """
        if top_k is not None and not 1 <= top_k <= len(self.labels):
            raise ConfigError(f"--top-k must be between 1 and {len(self.labels)} (the number of labels), got {top_k}")
        fmt = fmt or ("csv" if output and output.endswith((".csv", ".tsv")) else "jsonl")
        if fmt not in ("csv", "jsonl"):
            raise ConfigError(f"--format must be csv or jsonl, got '{fmt}'")
        written = 0
        with atomic_output(output) as sink:
            writer = csv.writer(sink, delimiter="\t" if (output or "").endswith(".tsv") else ",", lineterminator="\n")
            for chunk in iter_tables(source, encoding):
                column = text_column or self.column(chunk, "text")
                ex = examples(chunk, column, None, need_labels=False)
                text_column = ex.text_column  # every later chunk uses the first chunk's column
                records = self.predict(ex.texts, top_k)
                if fmt == "jsonl":
                    sink.writelines(
                        json.dumps({"text": t, **r}, ensure_ascii=False) + "\n"
                        for t, r in zip(ex.texts, records, strict=True)
                    )
                else:
                    self._write_csv(writer, ex.texts, records, top_k, header=written == 0)
                written += len(records)
        return written

    def _write_csv(
        self, writer: Any, texts: list[str], records: list[dict[str, Any]], top_k: int | None, header: bool
    ) -> None:
        """One column per label's probability; with top_k, label_i / score_i pairs instead."""
        if header:
            extra = (
                [f"{c}_{i}" for i in range(1, top_k + 1) for c in ("label", "score")]
                if top_k
                else [f"p({n})" for n in self.labels.names]
            )
            writer.writerow(["text", "label", "score", *extra])
        for text, rec in zip(texts, records, strict=True):
            if top_k:
                extra = [x for name, p in rec["scores"].items() for x in (name, f"{p:.6f}")]
            else:
                extra = [f"{rec['scores'][n]:.6f}" for n in self.labels.names]
            writer.writerow([text, rec["label"], f"{rec['score']:.6f}", *extra])


def load(path: str | Path, batch_size: int = 64, backend: str = "torch") -> Predictor:
    """tunesmith.load(run_folder): a Predictor for the run."""
    return Predictor.from_run(path, batch_size, backend)
