"""tagging: a tag per word, e.g. named entities (the parties, dates and amounts of a contract).

Reads CoNLL files as they come (data/readers.py: a sentence per row, tokens and tags as lists) and JSONL with
tokens/tags lists. IOB1 tags are turned into IOB2. The first sub-word of each word carries the word's tag and
the rest are masked (-100), as transformers' run_ner does; --label-all-subwords labels continuation pieces with
the word's I- tag, never copying B- (which inflates entity F1: transformers#14043). A sentence longer than the
window is cut into overlapping windows, each word tagged by the window where it is most central. Scores are
entity-level, by seqeval in strict IOB2 mode.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunesmith.backends import Forward, eval_mode, onnx_forward, torch_forward
from tunesmith.config import DataConfig, RunConfig
from tunesmith.data.batching import epoch_generator, grouped_batches, pad, sorted_batches
from tunesmith.data.labels import LabelSpace
from tunesmith.data.readers import Table, find_column, iter_tables, read_table, reuse_column
from tunesmith.data.validate import data_fingerprints, random_split, sha256_of
from tunesmith.errors import ConfigError, DataError
from tunesmith.losses import token_cross_entropy
from tunesmith.model.heads import load_finetuned
from tunesmith.model.pretrained import load_tokenizer, local
from tunesmith.report import console
from tunesmith.runs import RunInfo, atomic_output
from tunesmith.tasks.base import Recipe, Task, kept_line, saved_title

TOKEN_NAMES = ("tokens", "words")
TAG_NAMES = ("tags", "ner_tags", "labels", "label")
IGNORE = -100
TAG = re.compile(r"^(O|[BI]-.+)$")


def iob2(tags: Sequence[str]) -> list[str]:
    """IOB1 (I- starts an entity unless it continues one of its type) as IOB2 (every entity starts with B-).

    Valid IOB2 comes back unchanged; a stray I- after O or another type becomes B-, as seqeval reads it.
    """
    out: list[str] = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first word, end word) of each entity of an IOB2 sequence."""
    found: list[tuple[str, int, int]] = []
    for i, tag in enumerate(tags):
        if tag.startswith("B-"):
            found.append((tag[2:], i, i + 1))
        elif tag.startswith("I-") and found and found[-1][0] == tag[2:] and found[-1][2] == i:
            found[-1] = (found[-1][0], found[-1][1], i + 1)
    return found


@dataclass
class Sentences:
    """Validated sentences: tokens, their IOB2 tags, and where each came from."""

    file: str
    tokens: list[list[str]]
    tags: list[list[str]] | None
    rows: list[int]
    lines: list[int] | None
    token_column: str
    tag_column: str | None

    def __len__(self) -> int:
        return len(self.tokens)

    def take(self, indices: list[int]) -> Sentences:
        """A subset, keeping where each sentence came from."""
        return Sentences(
            self.file, [self.tokens[i] for i in indices], [self.tags[i] for i in indices] if self.tags else None,
            [self.rows[i] for i in indices], [self.lines[i] for i in indices] if self.lines else None,
            self.token_column, self.tag_column,
        )  # fmt: skip

    def tag_ids(self, space: LabelSpace) -> list[list[int]]:
        """Ids of the tags; one outside the space is a DataError naming the sentence."""
        assert self.tags is not None
        out = []
        for i, tags in enumerate(self.tags):
            ids = [space.index(t) for t in tags]
            if None in ids:
                bad = tags[ids.index(None)]
                raise DataError(self.file, f"tag '{bad}' was never seen in training (known: {', '.join(space.names)})",
                                row=self.rows[i], line=self.lines[i] if self.lines else None, column=self.tag_column)
            out.append(ids)  # type: ignore[arg-type]
        return out


def sentences(table: Table, token_column: str | None, tag_column: str | None, need_tags: bool = True) -> Sentences:
    """Find the columns, then check every row: a non-empty list of tokens and, with tags, as many IOB tags."""
    tok_col = find_column(table, token_column, TOKEN_NAMES, "tokens", "--text-column")
    tag_col = find_column(table, tag_column, TAG_NAMES, "tags", "--label-column") if need_tags else None
    tokens, tags = [], [] if tag_col else None
    for i, value in enumerate(table.columns[tok_col]):
        where = table.where(i)
        words = _strings(table, i, value, tok_col, "tokens")
        if not words:
            raise DataError(table.path, "a sentence with no tokens", column=tok_col, **where)
        tokens.append(words)
        if tags is not None:
            assert tag_col is not None
            row = _strings(table, i, table.columns[tag_col][i], tag_col, "tags")
            if len(row) != len(words):
                raise DataError(table.path, f"{len(words)} tokens but {len(row)} tags", column=tag_col, **where)
            bad = next((t for t in row if not TAG.match(t)), None)
            if bad is not None:
                raise DataError(table.path, f"tag {bad!r} is not IOB (O, B-TYPE or I-TYPE)", column=tag_col, **where)
            tags.append(iob2(row))
    rows = [table.first_row + i + 1 for i in range(len(table))]
    return Sentences(table.path, tokens, tags, rows, table.lines, tok_col, tag_col)


def _strings(table: Table, i: int, value: Any, column: str, what: str) -> list[str]:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataError(table.path, f"expected a list of {what} (strings), got {str(value)[:40]!r}", column=column,
                        **table.where(i))  # fmt: skip
    return [v.strip() for v in value]


def tag_space(tags: list[list[str]], given: Sequence[str] | None, file: str) -> LabelSpace:
    """O first, then each type's B- and I- tags in order of type (or --labels as given)."""
    seen = {t for row in tags for t in row}
    if given:
        unknown = sorted(seen - set(given))
        if unknown:
            raise DataError(file, f"tag '{unknown[0]}' is not in --labels ({', '.join(given)})")
        return LabelSpace(tuple(given))
    types = sorted({t[2:] for t in seen if t != "O"})
    if not types:
        raise DataError(file, "every tag is O: tagging needs at least one entity type")
    return LabelSpace(("O", *(f"{p}-{t}" for t in types for p in "BI")))


@dataclass
class TaggedData:
    """Everything training needs from D for tagging."""

    train: Sentences
    eval: Sentences | None
    labels: LabelSpace
    eval_from: str | None
    test: Sentences | None = None

    def fingerprints(self, cfg: DataConfig) -> dict[str, Any]:
        """Paths, sha256s, sentence counts and columns of the data files."""

        def info(s: Sentences | None) -> dict[str, Any] | None:
            return s and {"rows": len(s), "text_column": s.token_column, "label_column": s.tag_column}

        found = data_fingerprints(cfg, self.eval_from, info(self.train), info(self.eval))
        if self.test is not None and cfg.test_data is not None:
            found["test"] = {"path": cfg.test_data, "sha256": sha256_of(cfg.test_data), **info(self.test)}
        return found


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


@dataclass
class Window:
    """One model input: a span of a sentence's sub-words with the tokenizer's special tokens around it."""

    ids: list[int]
    labels: list[int]
    """Tag ids where the loss looks (the first piece of each owned word; every piece with all-subwords)."""
    sentence: int
    words: list[int]
    """The words this window owns (tags them), in order."""
    firsts: list[int]
    """Where each owned word's first piece sits in ids."""


class Encoder:
    """Words -> windows of sub-word ids, each word owned by the window where its first piece is most central."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int, all_subwords: bool = False) -> None:
        if not tokenizer.is_fast:
            raise ConfigError("tagging needs a fast tokenizer (it maps sub-words to words); this model has none")
        full = tokenizer("a", add_special_tokens=True)["input_ids"]
        bare = tokenizer("a", add_special_tokens=False)["input_ids"]
        at = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        self.prefix, self.suffix = full[:at], full[at + len(bare) :]
        self.budget = max_length - len(self.prefix) - len(self.suffix)
        if self.budget < 4:
            raise ConfigError(f"model.max_length {max_length} leaves no room for words beside the special tokens")
        self.stride = self.budget // 2
        """Consecutive windows overlap by half: every word has one where it sits at least a quarter in."""
        self.tokenizer, self.all_subwords = tokenizer, all_subwords

    def encode(self, tokens: list[list[str]], tag_ids: list[list[int]] | None = None,
               space: LabelSpace | None = None) -> list[Window]:  # fmt: skip
        """Every sentence's windows, in sentence order (without tags: for prediction)."""
        windows: list[Window] = []
        for start in range(0, len(tokens), 2048):
            enc = self.tokenizer(tokens[start : start + 2048], is_split_into_words=True, add_special_tokens=False)
            for k in range(len(enc["input_ids"])):
                s = start + k
                gold = tag_ids[s] if tag_ids is not None else None
                windows.extend(self._windows(s, enc["input_ids"][k], enc.word_ids(k), gold, space))
        return windows

    def _windows(self, sentence: int, ids: list[int], word_ids: list[int | None], gold: list[int] | None,
                 space: LabelSpace | None) -> list[Window]:  # fmt: skip
        n = len(ids)
        bounds = [(0, n)]
        if n > self.budget:
            step = self.budget - self.stride
            bounds = [(s, min(s + self.budget, n)) for s in range(0, max(n - self.stride, 1), step)]
        first: dict[int, int] = {}
        for pos, w in enumerate(word_ids):
            if w is not None and w not in first:
                first[w] = pos
        owner = {w: max(range(len(bounds)), key=lambda b: _centrality(p, bounds[b])) for w, p in first.items()}
        lead = len(self.prefix)
        out = []
        for b, (lo, hi) in enumerate(bounds):
            labels = [IGNORE] * (hi - lo)
            words, firsts = [], []
            for pos in range(lo, hi):
                w = word_ids[pos]
                if w is None or owner[w] != b:
                    continue
                if first[w] == pos:
                    words.append(w)
                    firsts.append(lead + pos - lo)
                    labels[pos - lo] = gold[w] if gold is not None else IGNORE
                elif self.all_subwords and gold is not None and space is not None:
                    labels[pos - lo] = _inside(gold[w], space)
            padded = [IGNORE] * lead + labels + [IGNORE] * len(self.suffix)
            out.append(Window(self.prefix + ids[lo:hi] + self.suffix, padded, sentence, words, firsts))
        return out


def _centrality(pos: int, bound: tuple[int, int]) -> int:
    lo, hi = bound
    return min(pos - lo, hi - 1 - pos) if lo <= pos < hi else -1


def _inside(tag_id: int, space: LabelSpace) -> int:
    """The I- tag of a B- tag (a continuation piece never begins an entity); others unchanged."""
    name = space.names[tag_id]
    return space.label2id.get("I-" + name[2:], tag_id) if name.startswith("B-") else tag_id


class TagSet:
    """Windows with their token labels: what fit() draws its micro-batches from."""

    unit = "tokens"
    """The loss is a mean over labeled tokens (first pieces, or every piece with label_all_subwords)."""

    def __init__(self, windows: list[Window], batch_size: int, window: int, seed: int, pad_id: int) -> None:
        self.windows, self.batch_size, self.window, self.seed, self.pad_id = windows, batch_size, window, seed, pad_id

    def __len__(self) -> int:
        return len(self.windows)

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's order depends only on (seed, epoch)."""
        lengths = [len(w.ids) for w in self.windows]
        return grouped_batches(lengths, self.batch_size, self.window, epoch_generator(self.seed, epoch))

    def items(self, rows: list[int]) -> int:
        """Labeled tokens in these rows."""
        return sum(sum(lab != IGNORE for lab in self.windows[i].labels) for i in rows)

    def collate(self, rows: list[int]) -> dict[str, torch.Tensor]:
        """Right-padded ids, mask and labels (IGNORE on padding)."""
        ids, mask = pad([self.windows[i].ids for i in rows], self.pad_id)
        labels, _ = pad([self.windows[i].labels for i in rows], IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


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
        torch_model = isinstance(model, torch.nn.Module)
        self.model = model.eval() if torch_model else None
        self.forward = torch_forward(model) if torch_model else model
        self.tokenizer, self.labels, self.max_length, self.batch_size = tokenizer, labels, max_length, batch_size
        self.encoder = Encoder(tokenizer, max_length)
        self.columns = columns or {}

    @classmethod
    def of_run(cls, run: RunInfo, batch_size: int | None, backend: str) -> Tagger:
        """θ̃ (torch, or its ONNX export) and its tokenizer from a run folder."""
        assert run.labels is not None
        if backend == "torch":
            model: PreTrainedModel | Forward = load_finetuned(str(run.path), TASK.model_class, run.labels)
            if torch.cuda.is_available():
                model = model.to("cuda")
        else:
            model = onnx_forward(run.path, backend)
        tokenizer = load_tokenizer(local(run.path))
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
