"""tagging: a tag per word, e.g. named entities (the parties, dates and amounts of a contract).

Reads CoNLL files as they come and JSONL with tokens/tags lists; data/tags.py turns them into IOB2 sentences
and sub-word windows. Scores are entity-level, by seqeval in strict IOB2 mode; predictions are a tag per token,
or entities with character offsets for raw text, as transformers' token-classification pipeline gives them.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.backends import Forward, as_forward, eval_mode, torch_forward
from tunesmith.config import DataConfig, RunConfig
from tunesmith.data.batching import pad, sorted_batches
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import Table, iter_tables, read_table, reuse_column
from tunesmith.data.tags import (
    IGNORE,
    TAG_NAMES,
    TOKEN_NAMES,
    Encoder,
    Sentences,
    TaggedData,
    TagSet,
    Window,
    iob2,
    sentences,
    spans,
    tag_space,
)
from tunesmith.data.validate import random_split
from tunesmith.errors import ConfigError
from tunesmith.losses import token_cross_entropy
from tunesmith.predict import run_model
from tunesmith.report import console
from tunesmith.runs import RunInfo, atomic_output
from tunesmith.tasks.base import Recipe, Task, kept_line, saved_title


def _load_data(cfg: RunConfig) -> TaggedData:
    d = cfg.data
    if d.train_data is None:
        raise ConfigError("no training data: pass a file (tunesmith train DATA) or set data.train_data")

    def read(path: str, known: Sentences | None = None) -> Sentences:
        table = read_table(path, d.encoding)
        tokens = reuse_column(table, d.text_column, known.token_column if known else None)
        tags = reuse_column(table, d.label_column, known.tag_column if known else None)
        return sentences(table, tokens, tags)

    train = read(d.train_data)
    held, eval_from = None, None
    if d.eval_data is not None:
        held, eval_from = read(d.eval_data, train), "eval_data"
    elif d.eval_split > 0:
        keep, out = random_split(len(train), d.eval_split, cfg.train.seed)
        if out:
            train, held, eval_from = train.take(keep), train.take(out), "split"
    assert train.tags is not None
    space = tag_space(train.tags, d.labels, train.file)
    test = read(d.test_data, train) if d.test_data is not None else None
    for part in (held, test):
        if part is not None:
            part.tag_ids(space)  # unknown tags are found now, before any folder is made
    return TaggedData(train, held, space, eval_from, test)


def word_probabilities(
    forward: Forward, windows: list[Window], counts: list[int], batch_size: int, pad_id: int, classes: int
) -> tuple[list[np.ndarray], float, int]:
    """Per sentence, each word's tag probabilities (zeros for a word with no sub-word, which is tagged O), and the
    summed loss over the windows' labeled positions with the number of them (0 without gold labels).
    """
    probs = [np.zeros((n, classes), dtype=np.float32) for n in counts]
    loss, scored = 0.0, 0
    for rows in sorted_batches([len(w.ids) for w in windows], batch_size):
        ids, mask = pad([windows[i].ids for i in rows], pad_id)
        labels, _ = pad([windows[i].labels for i in rows], IGNORE)
        logits = forward({"input_ids": ids, "attention_mask": mask})
        if (labels != IGNORE).any():
            loss += float(token_cross_entropy(logits, labels))
            scored += int((labels != IGNORE).sum())
        p = torch.softmax(logits, dim=-1).numpy()
        for r, i in enumerate(rows):
            win = windows[i]
            probs[win.sentence][win.words] = p[r, win.firsts]
    return probs, loss, scored


def decode(probs: np.ndarray, space: LabelSpace) -> list[str]:
    """Each word's most likely tag, made valid IOB2 (a stray I- begins its entity), as the pipeline groups them."""
    if probs.shape[1] == 0 or not len(probs):
        return ["O"] * len(probs)
    outside = space.index("O")
    ids = [int(row.argmax()) if row.any() or outside is None else outside for row in probs]
    return iob2([space.names[i] for i in ids])


def entity_metrics(gold: list[list[str]], pred: list[list[str]], loss: float, scored: int) -> dict[str, Any]:
    """Seqeval's entity-level scores in strict IOB2 mode: per type, micro and macro; word accuracy; the loss."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    report = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    types = {k: v for k, v in report.items() if not k.endswith(" avg")}
    words = sum(len(g) for g in gold)
    right = sum(a == b for g, p in zip(gold, pred, strict=True) for a, b in zip(g, p, strict=True))
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    return {
        "loss": loss / scored if scored else float("nan"),
        "micro_f1": float(micro["f1-score"]),
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "macro_f1": float(np.mean([v["f1-score"] for v in types.values()])) if types else 0.0,
        "accuracy": right / words if words else 0.0,
        "n": len(gold),
        "per_class": {t: {"precision": float(v["precision"]), "recall": float(v["recall"]),
                          "f1": float(v["f1-score"]), "support": int(v["support"])} for t, v in types.items()},
    }  # fmt: skip


def score_sentences(forward: Forward, encoder: Encoder, part: Sentences, space: LabelSpace, batch_size: int,
                    pad_id: int) -> dict[str, Any]:  # fmt: skip
    """Entity metrics of a forward on labeled sentences."""
    assert part.tags is not None
    windows = encoder.encode(part.tokens, part.tag_ids(space), space)
    counts = [len(t) for t in part.tokens]
    probs, loss, scored = word_probabilities(forward, windows, counts, batch_size, pad_id, len(space))
    return entity_metrics(part.tags, [decode(p, space) for p in probs], loss, scored)


def _detect(table: Table, cfg: DataConfig) -> str | None:
    """Tokens and tags as lists (a CoNLL file reads so), or --label-all-subwords given."""
    lower = {c.lower(): c for c in table.columns}
    tokens = next((lower[n] for n in TOKEN_NAMES if n in lower), None)
    tags = next((lower[n] for n in TAG_NAMES if n in lower), None)
    if tokens and tags and any(isinstance(v, (list, np.ndarray)) for v in table.columns[tokens]):
        return f"columns '{tokens}' and '{tags}' hold a tag per token" + (" (CoNLL)" if table.format == "conll" else "")
    return None


def _head_config(labels: LabelSpace | None) -> dict[str, Any]:
    assert labels is not None
    return {"num_labels": len(labels), "id2label": labels.id2label, "label2id": labels.label2id}


def _recipe(cfg: RunConfig, data: TaggedData, tokenizer: PreTrainedTokenizerBase, model: torch.nn.Module) -> Recipe:
    """Token cross-entropy over first sub-words; evaluation by seqeval's entity F1 on whole words."""
    encoder = Encoder(tokenizer, cfg.model.max_length, cfg.data.label_all_subwords)
    space = data.labels
    windows = encoder.encode(data.train.tokens, data.train.tag_ids(space), space)
    split = sum(1 for _ in windows) - len(data.train)
    if split and not cfg.quiet:
        console.print(f"{split} windows more than sentences: long sentences were cut into overlapping windows "
                      f"of {cfg.model.max_length} tokens (each word tagged once)")  # fmt: skip
    t = cfg.train
    train_set = TagSet(windows, t.batch_size, t.group_window, t.seed, tokenizer.pad_token_id)

    def scorer(part: Sentences | None):  # noqa: ANN202
        if part is None:
            return None

        def score(model: torch.nn.Module) -> dict[str, Any]:
            with eval_mode(model), torch.inference_mode():
                return score_sentences(torch_forward(model), encoder, part, space, cfg.eval.batch_size,
                                       tokenizer.pad_token_id)  # fmt: skip

        return score

    types = sorted({n[2:] for n in space.names if n != "O"})
    return Recipe(train_set, token_cross_entropy, scorer(data.eval), f"{len(types)} entity types ({', '.join(types)})",
                  test=scorer(data.test), record={"labels": space.to_dict(),
                  "label_all_subwords": cfg.data.label_all_subwords})  # fmt: skip


class Tagger:
    """A fine-tuned tagger: tags per word for pre-split tokens, entity spans with character offsets for raw text."""

    noun = "tagged texts"

    def __init__(
        self,
        model: PreTrainedModel | Forward,
        tokenizer: PreTrainedTokenizerBase,
        labels: LabelSpace,
        max_length: int,
        batch_size: int = 32,
        columns: dict[str, str | None] | None = None,
    ) -> None:
        self.model, self.forward = as_forward(model)
        self.tokenizer, self.labels, self.max_length, self.batch_size = tokenizer, labels, max_length, batch_size
        self.encoder = Encoder(tokenizer, max_length)
        self.columns = columns or {}

    @classmethod
    def of_run(cls, run: RunInfo, batch_size: int | None, backend: str) -> Tagger:
        """θ̃ (torch, or its ONNX export) and its tokenizer from a run folder."""
        assert run.labels is not None
        model, tokenizer = run_model(run, TASK.model_class, backend)
        return cls(model, tokenizer, run.labels, run.max_length, batch_size or 32, run.columns)

    def words(self, text: str) -> list[tuple[str, tuple[int, int]]]:
        """Raw text as the tokenizer's words with character offsets (the words the pipeline aggregates over)."""
        return self.tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str(text)

    def tag(self, tokens: list[list[str]]) -> list[tuple[list[str], list[float]]]:
        """Per sentence, each word's tag and its probability."""
        windows = self.encoder.encode(tokens)
        with torch.inference_mode():
            probs, _, _ = word_probabilities(self.forward, windows, [len(t) for t in tokens], self.batch_size,
                                             self.tokenizer.pad_token_id, len(self.labels))  # fmt: skip
        out = []
        for p in probs:
            tags = decode(p, self.labels)
            out.append((tags, [float(p[i, self.labels.label2id[t]]) if p.any() else 1.0 for i, t in enumerate(tags)]))
        return out

    def predict(self, inputs: str | Sequence[str] | Sequence[Sequence[str]]) -> Any:
        """Raw text -> its entities with character offsets; a list of texts -> a list of records; a list of token
        lists (pre-split sentences) -> per sentence a tag per token and the entities by word index.
        """
        single = isinstance(inputs, str)
        batch = [inputs] if single else list(inputs)
        raw = [isinstance(x, str) for x in batch]
        split = [[w for w, _ in self.words(x)] if r else [str(t) for t in x] for x, r in zip(batch, raw, strict=True)]
        records = []
        for x, is_raw, words, (tags, scores) in zip(batch, raw, split, self.tag(split) if batch else [], strict=True):
            if is_raw:
                offsets = [o for _, o in self.words(x)]
                ents = [{"type": t, "start": offsets[a][0], "end": offsets[b - 1][1],
                         "text": x[offsets[a][0] : offsets[b - 1][1]], "score": float(np.mean(scores[a:b]))}
                        for t, a, b in spans(tags)]  # fmt: skip
                records.append({"text": x, "entities": ents})
            else:
                ents = [{"type": t, "start": a, "end": b, "text": " ".join(words[a:b])} for t, a, b in spans(tags)]
                records.append({"tokens": words, "tags": tags, "entities": ents})
        return records[0] if single else records

    def predict_file(self, source: str, output: str | None, *, columns: dict[str, str | None] | None = None,
                     encoding: str = "utf-8") -> int:  # fmt: skip
        """Tag every row of a file (tokens lists, as CoNLL reads, or a text column of raw text); JSONL out."""
        given = columns or {}
        written = 0
        with atomic_output(output) as sink:
            for chunk in iter_tables(source, encoding):
                tokens = reuse_column(chunk, given.get("text"), self.columns.get("text"))
                lower = {c.lower(): c for c in chunk.columns}
                tokens = tokens or next((lower[n] for n in TOKEN_NAMES if n in lower), None)
                if tokens is not None and any(isinstance(v, (list, np.ndarray)) for v in chunk.columns[tokens]):
                    inputs: list[Any] = sentences(chunk, tokens, None, need_tags=False).tokens
                else:
                    from tunesmith.data.validate import examples

                    inputs = examples(chunk, given.get("text"), None, need_labels=False).texts
                records = self.predict(inputs) if inputs else []
                sink.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
                written += len(records)
        return written

    def evaluate_file(self, source: str, *, columns: dict[str, str | None] | None = None,
                      encoding: str = "utf-8") -> dict[str, Any]:  # fmt: skip
        """Entity metrics on a tagged file (CoNLL or JSONL tokens/tags)."""
        given = columns or {}
        table = read_table(source, encoding)
        part = sentences(table, reuse_column(table, given.get("text"), self.columns.get("text")),
                         reuse_column(table, given.get("label"), self.columns.get("label")))  # fmt: skip
        context = eval_mode(self.model) if self.model is not None else contextlib.nullcontext()
        with context, torch.inference_mode():
            return score_sentences(self.forward, self.encoder, part, self.labels, self.batch_size,
                                   self.tokenizer.pad_token_id)  # fmt: skip


def _describe(data: TaggedData) -> list[str]:
    assert data.train.tags is not None
    counts = Counter(t for tags in data.train.tags for t, _, _ in spans(tags))
    words = sum(len(t) for t in data.train.tokens)
    lines = [f"{data.train.file}: {len(data.train)} sentences, {words} words; token column "
             f"'{data.train.token_column}', tag column '{data.train.tag_column}'",
             "entities: " + ", ".join(f"{t} ({counts[t]})" for t in sorted(counts))]  # fmt: skip
    if data.eval is not None:
        lines.append(f"{data.eval.file}: {len(data.eval)} sentences, every tag known")
    return lines


def _print(metrics: dict[str, Any], title: str, out: Any = None) -> None:
    from tunesmith.report import metrics_table

    shown = {**metrics, "weighted_f1": metrics["micro_f1"]}
    table = metrics_table(shown, title)
    table.caption = f"entity-level (seqeval, strict IOB2); accuracy is per word; loss {metrics['loss']:.4f}"
    (out or console).print(table)


def _summary(metrics: dict[str, Any] | None, best: dict[str, Any], cfg: RunConfig) -> str:
    if not metrics:
        return "no evaluation data: saved the final model"
    _print(metrics, saved_title(best))
    return f"entity F1 {metrics['micro_f1']:.4f}; {kept_line(best, cfg)}"


def _show(metrics: dict[str, Any], title: str) -> None:
    from rich.console import Console

    _print(metrics, f"{title} ({metrics['n']} sentences)", Console())
    m = metrics
    print(f"entity F1 {m['micro_f1']:.4f}  precision {m['precision']:.4f}  recall {m['recall']:.4f}  "
          f"macro-F1 {m['macro_f1']:.4f}  word accuracy {m['accuracy']:.4f}")  # fmt: skip


def _check(cfg: RunConfig) -> None:
    if cfg.train.class_weights not in (None, "none"):
        raise ConfigError("--class-weights applies to classification and multilabel so far")


def _open_run(run: RunInfo, batch_size: int | None, backend: str) -> Tagger:
    return Tagger.of_run(run, batch_size, backend)


TASK = Task(
    name="tagging",
    about="a tag per word (named entities), from CoNLL files or tokens/tags lists",
    model_class="AutoModelForTokenClassification",
    peft_task_type="TOKEN_CLS",
    new_head=True,
    backbone="encoder",
    defaults={"model.name": "minilm", "model.max_length": 128, "eval.metric": "micro_f1"},
    metrics=("micro_f1", "macro_f1", "accuracy", "loss"),
    detect=_detect,
    load_data=_load_data,
    head_config=_head_config,
    recipe=_recipe,
    describe=_describe,
    summary=_summary,
    open_run=_open_run,
    show=_show,
    headline=("micro_f1", "precision", "recall"),
    backends=("torch", "onnx", "onnx-int8", "onnx-int8-dynamic"),
    losses=("ce",),
    check=_check,
)
