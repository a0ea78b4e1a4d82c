"""`make bench-defaults`: do tunesmith's defaults beat what a user gets from plain Hugging Face Trainer (and TRL)?

What it measures, per (set, size) cell, on 7 classification sets from ../shared/data (SST-2, TREC-6, TREC-50,
SMS spam, BBC News, GoEmotions single-label, MRPC as one joined text) and the embedded triage demo (generative),
each at a small and a larger seeded, stratified slice of its training pool:
- tunesmith with nothing set (`tunesmith.finetune(train, output=..., test_data=test)`: lr by model size, 10x head
  lr, bf16 where native, a ~600-step budget of 3-10 epochs on a 0.1 held-out split that keeps the best evaluation
  and stops after 3 without improvement from 500 held-out rows, and the last weights below; train/defaults.py);
- Trainer with TrainingArguments' defaults (lr 5e-5, 3 epochs, batch 8, no warmup, no weight decay, every row);
- on the small slices, a grid of tunesmith runs with the classic all-rows recipe spelled out (lr = head lr in
  {3e-5, 1e-4, 3e-4} x epochs {3, 10}, eval_split 0), whose best test accuracy is what tuning could reach;
- time to Trainer's quality: Trainer's train_runtime over the training-loop seconds of tunesmith's first
  evaluation whose test accuracy reaches Trainer's final one (metrics.jsonl; test scoring is untimed there);
- triage: tunesmith's defaults (SmolLM2) against TRL's SFTTrainer with SFTConfig's defaults, both saved models
  scored by one greedy scorer (contenders.score_triage: valid JSON, category and urgency accuracy).
How: both contenders read the same CSV (text,label) training and test files, written once; every run is its own
process (bench/run.py's contender()), all with seed 42, MiniLM at max length 128. Each cell's result is
bench/out/defaults/<set>-<size>.json, so rerunning some sets keeps the others; DEFAULTS.md is rendered from all.

Time on this 2-core CPU, by the estimate it prints first (--plan prints only that): about 3 hours for all of
it (SST-2, TREC-6/50, SMS, GoEmotions about 45 min; BBC News and MRPC about 1 hour; triage about 80 min, most
of it tunesmith's 20-epoch budget on 324 pairs), so run it in parts with --sets: the cells merge.

    .venv/bin/python bench/defaults.py [--sets sst2,trec6] [--sizes small,large] [--grid-sizes small]
        [--small-rows 500] [--large-rows 2000] [--test-rows 1000] [--reps 1] [--plan]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from results import machine_lines, table  # noqa: E402  (the RESULTS.md helpers, shared)
from run import SEED, SHARED, contender, machine, machine_commit, minilm, smollm2_folder, write_table  # noqa: E402
from trec_csv import TREC  # noqa: E402

OUT = BENCH / "out" / "defaults"
TARGET = BENCH / "DEFAULTS.md"
Rows = list[tuple[str, str]]
"""(text, label) pairs."""
GRID = [(lr, epochs) for lr in (3e-5, 1e-4, 3e-4) for epochs in (3, 10)]
TOLERANCE, GRID_GAP, SPEEDUP = 0.5, 1.0, 2.0
"""The targets: tunesmith >= Trainer - 0.5 pt on every cell; mean within 1 pt of the grid's best; time to
Trainer's quality at least 2x faster on the median cell."""
TRIAGE_MAX_NEW_TOKENS = 80
TEST_SHARE = 0.2
"""Sets without a test file (SMS spam, BBC News) hold out this seeded, stratified share as their test pool."""

# Seconds per training sample of MiniLM in fp32 at batch 16 here: a fixed part and a part per token, measured
# on this CPU (SST-2, 13.6 tokens a row: 123 samples/s; SMS spam, 25: 81; BBC News, 128: 20); scoring is a
# forward pass, about a quarter of a training step; each process pays for its imports and loading the model;
# Trainer's batches of 8, not grouped by length, cost about twice as much per sample (SST-2 and SMS spam, 3
# epochs of 1,000 rows). EARLY: the share of its epoch budget a tunesmith run trains before patience stops it
# (about half in the smoke runs), for the likely total; the upper bound runs every budget in full.
SAMPLE_S, TOKEN_S, SCORE_SHARE, PROCESS_S, TRAINER_FACTOR, EARLY = 0.003, 0.00037, 0.25, 6.0, 2.0, 0.6
SFT_OURS_S, SFT_THEIRS_S, REPLY_S, SFT_SETUP_S = 0.6, 1.2, 0.5, 60.0
"""SmolLM2 seconds per triage pair trained by tunesmith (fp32, its default) and by TRL (bf16 with gradient
checkpointing, its defaults), per test reply scored (greedy, at most 80 new tokens), and what a tunesmith
generate run spends outside its loop (reading the GGUF, generating for held-out prompts before and after)."""


def tsv(path: Path, text: int, label: int, header: bool = True) -> Rows:
    """(text, label) from the given fields of a TAB-separated file, split on TABs (no CSV quoting: MRPC and
    GoEmotions hold bare or doubled quote marks)."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()[1 if header else 0 :]
    return [(f[text].strip(), f[label].strip()) for f in (line.split("\t") for line in lines if line.strip())]


def trec(path: Path, fine: bool) -> Rows:
    """TREC questions with the coarse (DESC) or fine (DESC:manner) label; train_5500 is not UTF-8: latin-1."""
    rows = []
    for line in path.read_bytes().decode("latin-1").splitlines():
        if line.strip():
            label, question = line.split(" ", 1)
            rows.append((question.strip(), label if fine else label.split(":", 1)[0]))
    return rows


def held_out(rows: Rows) -> tuple[Rows, Rows]:
    """A seeded, stratified (pool, test) split for a set that ships without a test file."""
    from tunesmith.data.validate import stratified_split

    pool, test = stratified_split([label for _, label in rows], TEST_SHARE, SEED)
    return [rows[i] for i in pool], [rows[i] for i in test]


def sst2() -> tuple[Rows, Rows]:
    return tsv(SHARED / "sst2" / "train.tsv", 0, 1), tsv(SHARED / "sst2" / "dev.tsv", 0, 1)


def sms_spam() -> tuple[Rows, Rows]:
    return held_out(tsv(SHARED / "sms_spam" / "SMSSpamCollection", 1, 0, header=False))


def bbc_news() -> tuple[Rows, Rows]:
    """Headline and body as one line of text; exact duplicate files dropped before the split."""
    seen, rows = set(), []
    for path in sorted((SHARED / "bbc_news" / "bbc").glob("*/*.txt")):
        raw = path.read_bytes()
        if raw in seen:
            continue
        seen.add(raw)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # sport/199.txt has one latin-1 byte
            text = raw.decode("latin-1")
        rows.append((" ".join(text.split()), path.parent.name))
    return held_out(rows)


def goemotions() -> tuple[Rows, Rows]:
    """The comments with exactly one emotion, labeled by its name; texts kept as in the file (split on TABs)."""
    names = (SHARED / "goemotions" / "emotions.txt").read_text(encoding="utf-8").split()

    def read(file: str) -> Rows:
        rows = tsv(SHARED / "goemotions" / file, 0, 1, header=False)
        return [(text, names[int(ids)]) for text, ids in rows if "," not in ids]

    return read("train.tsv"), read("test.tsv")


def mrpc() -> tuple[Rows, Rows]:
    """Each sentence pair as one text, "s1 [SEP] s2" (tunesmith has no pair task yet); test labels from MSR."""

    def read(file: str) -> Rows:
        lines = (SHARED / "mrpc" / file).read_text(encoding="utf-8-sig").splitlines()[1:]
        return [(f"{f[3].strip()} [SEP] {f[4].strip()}", f[0]) for f in (line.split("\t") for line in lines)]

    return read("train.tsv"), read("msr_paraphrase_test.txt")


SETS: dict[str, Callable[[], tuple[Rows, Rows]]] = {
    "sst2": sst2,
    "trec6": lambda: (trec(TREC / "train_5500.label", False), trec(TREC / "TREC_10.label", False)),
    "trec50": lambda: (trec(TREC / "train_5500.label", True), trec(TREC / "TREC_10.label", True)),
    "sms_spam": sms_spam,
    "bbc_news": bbc_news,
    "goemotions": goemotions,
    "mrpc": mrpc,
}
SOURCES = {
    "sst2": "sst2/train.tsv; test sst2/dev.tsv",
    "trec6": "trec/train_5500.label (latin-1), coarse labels; test TREC_10.label",
    "trec50": "trec/train_5500.label (latin-1), fine labels; test TREC_10.label",
    "sms_spam": f"sms_spam/SMSSpamCollection, a seeded stratified {TEST_SHARE:.0%} held out as test",
    "bbc_news": f"bbc_news (98 duplicate files dropped), headline + body; a seeded stratified {TEST_SHARE:.0%} as test",
    "goemotions": "goemotions/train.tsv rows with exactly one emotion (28 labels); test test.tsv likewise",
    "mrpc": 'mrpc/train.tsv as "s1 [SEP] s2" (no pair task in tunesmith yet); test msr_paraphrase_test.txt',
    "triage": "tunesmith.demo triage_train.jsonl (360 pairs); test triage_test.jsonl (90)",
}


def sample(rows: Rows, n: int, seed: int = SEED) -> Rows:
    """A seeded, stratified sample of exactly min(n, len(rows)) rows with every label at least once."""
    if n >= len(rows):
        return list(rows)
    rng = random.Random(seed)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    labels = sorted(by_label)
    share = {lab: len(by_label[lab]) * n / len(rows) for lab in labels}
    take = {lab: max(1, math.floor(share[lab])) for lab in labels}
    by_remainder = sorted(labels, key=lambda lab: (share[lab] - math.floor(share[lab]), rng.random()), reverse=True)
    for lab in by_remainder:  # largest remainders first, until the total is n
        if sum(take.values()) >= n:
            break
        take[lab] += take[lab] < len(by_label[lab])
    out = [row for lab in labels for row in rng.sample(by_label[lab], take[lab])]
    rng.shuffle(out)
    return out


def mean_tokens(rows: Rows) -> float:
    """Mean MiniLM tokens per text at max length 128 (for the time estimate)."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(minilm())([t for t, _ in rows], truncation=True, max_length=128)["input_ids"]
    return sum(map(len, ids)) / len(ids)


def write_csv(path: Path, rows: Rows) -> Path:
    write_table(path, ["text", "label"], [list(r) for r in rows])
    return path


def prepare(name: str, sizes: dict[str, int], test_rows: int, folder: Path) -> dict[str, Any]:
    """The set's test file and one training file per size, as CSV text,label; the test keeps only the labels
    the training pool has (every slice has each of them at least once)."""
    pool, test = SETS[name]()
    known = {label for _, label in pool}
    unseen = sum(label not in known for _, label in test)
    test = sample([r for r in test if r[1] in known], test_rows)
    slices = {size: sample(pool, rows) for size, rows in sizes.items()}
    return {
        "test": write_csv(folder / f"{name}-test.csv", test), "test_rows": len(test),
        "train": {size: write_csv(folder / f"{name}-{size}.csv", rows) for size, rows in slices.items()},
        "rows": {size: len(rows) for size, rows in slices.items()}, "pool": len(pool), "labels": len(known),
        "test_unseen_dropped": unseen, "tokens_per_row": mean_tokens(max(slices.values(), key=len)),
    }  # fmt: skip


def prepare_triage(sizes: dict[str, int], test_rows: int, folder: Path) -> dict[str, Any]:
    """The demo's triage pairs: a seeded sample (stratified by category) per size, the test file capped."""
    from tunesmith.demo import write_demo_data

    write_demo_data(folder / "demo")
    pairs = (folder / "demo" / "triage_train.jsonl").read_text(encoding="utf-8").splitlines()
    tests = (folder / "demo" / "triage_test.jsonl").read_text(encoding="utf-8").splitlines()

    def by_category(lines: list[str], n: int) -> list[str]:
        rows = [(line, json.loads(json.loads(line)["response"])["category"]) for line in lines]
        return [line for line, _ in sample(rows, n)]

    def write(path: Path, lines: list[str]) -> Path:
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    test = by_category(tests, test_rows)
    files = {size: write(folder / f"triage-{size}.jsonl", by_category(pairs, n)) for size, n in sizes.items()}
    return {
        "test": write(folder / "triage-test.jsonl", test), "test_rows": len(test), "train": files,
        "rows": {size: min(n, len(pairs)) for size, n in sizes.items()}, "pool": len(pairs),
    }  # fmt: skip


def budget_epochs(rows: int, batch: int = 16) -> tuple[int, int]:
    """Rows tunesmith trains on (after its 0.1 split) and the epoch budget train/defaults.py gives them."""
    from tunesmith.train.defaults import epoch_budget

    train = rows - round(rows * 0.1)
    return train, epoch_budget(math.ceil(train / batch)).value


def likely_epochs(budget: int, share: float) -> float:
    """Epochs of a budget that run when early stopping ends it at ``share``; patience needs PATIENCE + 1."""
    from tunesmith.train.defaults import PATIENCE

    return min(budget, max(PATIENCE + 1.0, budget * share))


def estimate(rows: int, tokens: float, test_rows: int, grid: bool, share: float = 1.0) -> float:
    """Seconds one classification cell should take here when tunesmith trains ``share`` of its epoch budget."""
    per = SAMPLE_S + TOKEN_S * tokens
    train, budget = budget_epochs(rows)
    epochs = likely_epochs(budget, share)
    ours = epochs * (train * per + (rows - train + test_rows) * per * SCORE_SHARE) + PROCESS_S
    theirs = 3 * rows * per * TRAINER_FACTOR + test_rows * per * SCORE_SHARE + PROCESS_S
    search = sum(e * rows * per + test_rows * per * SCORE_SHARE + PROCESS_S for _, e in GRID) if grid else 0.0
    return ours + theirs + search


def estimate_triage(rows: int, test_rows: int, trl: bool, share: float = 1.0) -> float:
    """Seconds of a triage cell: tunesmith's epoch budget (``share`` of it), TRL's 3 epochs, and scoring."""
    train, budget = budget_epochs(rows)
    score = REPLY_S * test_rows + PROCESS_S
    theirs = 3 * rows * SFT_THEIRS_S + score if trl else 0.0
    return likely_epochs(budget, share) * train * SFT_OURS_S + SFT_SETUP_S + score + theirs


def median(records: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in records]
    return statistics.median(values) if all(isinstance(v, (int, float)) for v in values) else values[0]


def time_to_quality(curve: list[list[Any]], target: float, their_seconds: float) -> float | None:
    """Their seconds over the training seconds of our first evaluation at or above their final test accuracy."""
    for _, seconds, accuracy, _ in curve:
        if accuracy is not None and accuracy >= target:
            return their_seconds / max(seconds, 1e-9)
    return None


def payload(job: str, who: str, train: Path, test: Path, out: Path, tag: str, **extra: Any) -> dict[str, Any]:
    return {"job": job, "who": who, "train": str(train), "dev": str(test), "text": "text", "text_dev": "text",
            "label": "label", "out": str(out), "seed": SEED, "tag": tag, **extra}  # fmt: skip


def run_once(spec: dict[str, Any]) -> dict[str, Any]:
    """contender() (its own process), then its run folder is deleted: only the numbers are kept."""
    try:
        return contender(spec)
    finally:
        shutil.rmtree(spec["out"], ignore_errors=True)


def classification_cell(name: str, size: str, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    train, test, work = data["train"][size], data["test"], data["work"]
    runs: dict[str, list[dict[str, Any]]] = {"tunesmith": [], "trainer": []}
    for rep in range(args.reps):
        for who in runs:  # alternate, so drift in the machine's speed hits both alike
            extra = {"model": minilm()} if who == "trainer" else {}
            tag = f"{name} {size} rep {rep}"
            runs[who].append(run_once(payload("defaults", who, train, test, work / f"{who}-{rep}", tag, **extra)))
    grid = []
    if size in args.grid_sizes:
        for lr, epochs in GRID:
            options = {"lr": lr, "head_lr": lr, "epochs": epochs, "eval_split": 0.0}
            spec = payload("defaults", "tunesmith", train, test, work / "grid", f"{name} {size} grid", options=options)
            grid.append({**run_once(spec), "lr": lr, "epochs_set": epochs})
    return {"runs": runs, "grid": grid}


def triage_cell(size: str, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    train, test, work = data["train"][size], data["test"], data["work"]
    trl = importlib.util.find_spec("trl") is not None  # make bench-defaults installs it; say so when it could not
    runs: dict[str, list[dict[str, Any]]] = {"tunesmith": [], **({"trl": []} if trl else {})}
    model = str(smollm2_folder(work)) if trl else None  # TRL's model: the GGUF de-quantised once, as bench/run.py
    for rep in range(args.reps):
        for who in runs:
            extra = {"model": model, "max_new_tokens": TRIAGE_MAX_NEW_TOKENS}
            tag = f"triage {size} rep {rep}"
            runs[who].append(run_once(payload("defaults-sft", who, train, test, work / f"sft-{who}", tag, **extra)))
    return {"runs": runs, "trl": trl}


def summary(cell: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one classification cell that the tables and targets speak of (medians over repetitions)."""
    ours, theirs = cell["runs"]["tunesmith"], cell["runs"]["trainer"]
    speedups = [time_to_quality(o["curve"], t["accuracy"], t["seconds"]) for o, t in zip(ours, theirs, strict=True)]
    reached = [s for s in speedups if s is not None]
    out = {
        "ours": median(ours, "accuracy"), "ours_f1": median(ours, "macro_f1"), "theirs": median(theirs, "accuracy"),
        "theirs_f1": median(theirs, "macro_f1"), "speedup": statistics.median(reached) if reached else None,
        "ours_wall": median(ours, "wall_s"), "theirs_wall": median(theirs, "wall_s"),
        "ours_s": median(ours, "seconds"), "theirs_s": median(theirs, "seconds"),
        "epochs_run": median(ours, "epochs_run"), "budget": median(ours, "epochs"),
        "stop": median(ours, "stop_reason"), "under_trained": median(ours, "under_trained"),
    }  # fmt: skip
    out["diff"] = (out["ours"] - out["theirs"]) * 100
    if cell["grid"]:
        best = max(cell["grid"], key=lambda g: g["accuracy"])
        out["grid"], out["grid_at"] = best["accuracy"], f"lr {rate(best['lr'])}, {best['epochs_set']} ep"
        out["grid_gap"] = (best["accuracy"] - out["ours"]) * 100
        out["grid_wall"] = sum(g["wall_s"] for g in cell["grid"])
    return out


def rate(lr: float) -> str:
    """3e-05 as 3e-5."""
    mantissa, exponent = f"{lr:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def points(value: float) -> str:
    return f"{value:+.1f} pt"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def classification_lines(cells: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The accuracy and time tables, and the three targets with their verdicts."""
    sums = {f"{c['set']} {c['size']}": summary(c) for c in cells}
    accuracy, timing = {}, {}
    for key, s in sums.items():
        c = next(c for c in cells if f"{c['set']} {c['size']}" == key)
        stop = f"{s['stop']}{', under-trained' if s['under_trained'] else ''}"
        accuracy[key] = {
            "rows": f"{c['rows']:,}", "test rows": f"{c['test_rows']:,}", "tunesmith acc": f"{s['ours']:.3f}",
            "tunesmith F1": f"{s['ours_f1']:.3f}", "epochs run / budget": f"{s['epochs_run']:g} / {s['budget']}",
            "stop": stop, "Trainer acc": f"{s['theirs']:.3f}", "Trainer F1": f"{s['theirs_f1']:.3f}",
            "tunesmith - Trainer": points(s["diff"]), f">= Trainer - {TOLERANCE} pt": verdict(s["diff"] >= -TOLERANCE),
            "grid best": f"{s['grid']:.3f} ({s['grid_at']})" if "grid" in s else "",
            "grid - tunesmith": points(s["grid_gap"]) if "grid" in s else "",
        }  # fmt: skip
        timing[key] = {
            "tunesmith train s": f"{s['ours_s']:.0f}", "Trainer train s": f"{s['theirs_s']:.0f}",
            "tunesmith wall s": f"{s['ours_wall']:.0f}", "Trainer wall s": f"{s['theirs_wall']:.0f}",
            "grid wall s (6 runs)": f"{s['grid_wall']:.0f}" if "grid" in s else "",
            "Trainer s / tunesmith s to Trainer's accuracy": f"{s['speedup']:.2f}x" if s["speedup"] else "not reached",
            f">= {SPEEDUP:g}x": verdict((s["speedup"] or 0.0) >= SPEEDUP),
        }  # fmt: skip
    tables = ["", *table(accuracy, list(next(iter(accuracy.values())).keys()))]
    tables += ["", *table(timing, list(next(iter(timing.values())).keys()))]
    misses = [k for k, s in sums.items() if s["diff"] < -TOLERANCE]
    gaps = [s["grid_gap"] for s in sums.values() if "grid" in s]
    speedups = [s["speedup"] or 0.0 for s in sums.values()]  # not reached counts as slowest
    typical = statistics.median(speedups)
    lines = [
        f"- tunesmith's defaults at least Trainer's defaults (within {TOLERANCE} pt) on every cell: "
        f"{verdict(not misses)}"
        + (f"; missed on {', '.join(misses)}." if misses else f" ({len(sums)} of {len(sums)} cells)."),
    ]
    if gaps:
        mean_gap = statistics.mean(gaps)
        lines.append(
            f"- mean within {GRID_GAP:g} pt of the grid's best over the {len(gaps)} cells with a grid: "
            f"{verdict(mean_gap <= GRID_GAP)} (the grid's best is {mean_gap:+.2f} pt above on average)."
        )
    lines.append(
        f"- time to Trainer-defaults' final test accuracy at least {SPEEDUP:g}x faster on the median cell: "
        f"{verdict(typical >= SPEEDUP)} (median {typical:.2f}x; per cell below)."
    )
    return tables, lines


def triage_lines(cells: list[dict[str, Any]]) -> list[str]:
    rows: dict[str, dict[str, str]] = {}
    for c in cells:
        for who, records in c["runs"].items():
            stop = median(records, "stop_reason") if who == "tunesmith" else ""
            ran = f"{median(records, 'epochs_run'):g} / " if who == "tunesmith" else ""
            rows[f"{c['size']} ({c['rows']} pairs): {'TRL' if who == 'trl' else who}"] = {
                "valid JSON": f"{median(records, 'valid_json'):.3f}", "category": f"{median(records, 'category'):.3f}",
                "urgency": f"{median(records, 'urgency'):.3f}", "precision": str(median(records, "precision")),
                "epochs run / budget": f"{ran}{median(records, 'epochs'):g}{f' ({stop})' if stop else ''}",
                "train s": f"{median(records, 'seconds'):.0f}", "wall s": f"{median(records, 'wall_s'):.0f}",
            }  # fmt: skip
        if not c["trl"]:
            rows[f"{c['size']}: TRL"] = dict.fromkeys(next(iter(rows.values())), "not installed")
    lines = ["", *table(rows, list(next(iter(rows.values())).keys()))]
    example = {who: records[0]["example_reply"] for c in cells[-1:] for who, records in c["runs"].items()}
    lines += ["", "First test reply of each (last size):", ""]
    lines += [f"- {who}: `{' '.join(reply.replace('`', ' ').split())}`" for who, reply in example.items()]
    return lines


def render(out: Path, target: Path) -> None:
    """DEFAULTS.md from every cell's JSON in out."""
    cells = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    order = [*SETS, "triage"]
    cells.sort(key=lambda c: (order.index(c["set"]), c["size"] != "small"))
    classify = [c for c in cells if c["set"] != "triage"]
    triage = [c for c in cells if c["set"] == "triage"]
    lines = [
        "# Defaults: tunesmith with nothing set against plain Trainer / TRL",
        "",
        "Written by `make bench-defaults` (bench/defaults.py). The evidence behind train/defaults.py: per "
        "set and slice, tunesmith's defaults (lr 1e-4 for MiniLM, head 10x, bf16 autocast where the CPU has it, "
        "a ~600-step budget of 3-10 epochs with a 0.1 held-out split, which keeps the best evaluation and stops "
        "after 3 without improvement when it has 500 rows or more, and the last weights when it has fewer) "
        "against Hugging Face Trainer with "
        "TrainingArguments' defaults (lr 5e-5, 3 epochs, batch 8, no warmup, weight decay 0, every row), both "
        "with the packaged all-MiniLM-L6-v2 at max length 128, seed 42, on the same training and test files. "
        "Accuracy and macro-F1 are on the test file (tunesmith: its saved model), scored by the same "
        "function. The grid is tunesmith with lr = head lr in {3e-5, 1e-4, 3e-4} x {3, 10} epochs on every "
        "row (eval_split 0): what picking the recipe by its test score could reach. Time to Trainer's "
        "accuracy: Trainer's train_runtime over the training-loop seconds (evaluation included, test scoring "
        "not) of tunesmith's first evaluation that reached Trainer's final test accuracy.",
    ]
    tables, targets = classification_lines(classify) if classify else ([], [])
    if targets:
        lines += ["", "## Targets", "", *targets]
    notes = out / "NOTES.md"  # the hand-written reading of the misses, kept beside the cells it reads
    if notes.is_file():
        lines += ["", notes.read_text(encoding="utf-8").strip()]
    if cells:
        newest = max(cells, key=lambda c: c["date"])
        lines += ["", "## Machine", "", *machine_lines(newest["machine"])]
    if classify:
        lines += ["", "## Classification", *tables]
    if triage:
        lines += [
            "",
            "## Generation: the triage demo, tunesmith vs TRL SFTTrainer",
            "",
            "tunesmith with nothing set (SmolLM2-135M-Instruct, task from the prompt/response columns: lr 1e-4, "
            "the epoch budget, bf16 where native) against TRL's SFTTrainer with "
            "SFTConfig's defaults (lr 2e-5, 3 epochs, batch 8, bf16, gradient checkpointing; fp32 weights "
            f"loaded). Both saved models are scored by one function: greedy replies under the chat template, "
            f"at most {TRIAGE_MAX_NEW_TOKENS} new tokens, then the share that parse as a JSON object and the "
            "accuracy of its category and urgency.",
            *triage_lines(triage),
        ]
    lines += [
        "",
        "## Sets",
        "",
        "Slices are seeded, stratified samples of each training pool (every label at least once); test files are "
        "seeded, stratified samples, capped, of the labels the pool has.",
        "",
    ]
    for c in cells:
        unseen = c.get("test_unseen_dropped")
        what = (f"rows, {c['labels']} labels, {c['tokens_per_row']:.0f} tokens a row" if "labels" in c else "pairs") + (
            f", {unseen} test rows of labels the pool lacks dropped" if unseen else ""
        )
        lines.append(
            f"- {c['set']} {c['size']}: {c['rows']:,} of {c['pool']:,} {what}, test {c['test_rows']:,}; "
            f"{SOURCES[c['set']]}. {c['date']}, commit {c['commit']}, {c['reps']} repetition(s), "
            f"{c['minutes']:.1f} min."
        )
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join([*SETS, "triage"]), help="Comma-separated; default all.")
    parser.add_argument("--sizes", default="small,large")
    parser.add_argument("--grid-sizes", default="small", help="Sizes that also get the 6-run grid ('' for none).")
    parser.add_argument("--small-rows", type=int, default=500)
    parser.add_argument("--large-rows", type=int, default=2000)
    parser.add_argument("--test-rows", type=int, default=1000)
    parser.add_argument("--triage-small-rows", type=int, default=96)
    parser.add_argument("--triage-large-rows", type=int, default=360)
    parser.add_argument("--reps", type=int, default=1)
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    parser.add_argument("--plan", action="store_true", help="Write the files, print the time estimate, run nothing.")
    args = parser.parse_args()
    names = [s for s in args.sets.split(",") if s]
    unknown = sorted(set(names) - {*SETS, "triage"})
    sizes = [s for s in args.sizes.split(",") if s]
    args.grid_sizes = [s for s in args.grid_sizes.split(",") if s]
    if unknown or not set(sizes) <= {"small", "large"}:
        sys.exit(f"unknown sets {unknown} or sizes {sizes}; sets: {', '.join([*SETS, 'triage'])}; sizes: small,large")
    work = args.work or Path(tempfile.mkdtemp(prefix="tunesmith-defaults-"))
    try:
        plans, planned = plan(args, names, sizes, work)
        if not args.plan:
            run_cells(args, plans, planned)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def plan(
    args: argparse.Namespace, names: list[str], sizes: list[str], work: Path
) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, str], float]]:
    """Every file written first, then the estimate of the whole run printed: the data of each set, and the
    likely seconds of each (set, size) cell."""
    (work / "data").mkdir(parents=True, exist_ok=True)
    wanted = {"small": args.small_rows, "large": args.large_rows}
    triage_rows = {"small": args.triage_small_rows, "large": args.triage_large_rows}
    trl = importlib.util.find_spec("trl") is not None
    plans, planned, upper = {}, {}, 0.0
    for name in names:
        if name == "triage":
            data = prepare_triage({s: triage_rows[s] for s in sizes}, args.test_rows, work / "data")
        else:
            data = prepare(name, {s: wanted[s] for s in sizes}, args.test_rows, work / "data")
        plans[name] = {**data, "work": work}
        for size in sizes:
            rows, tests = data["rows"][size], data["test_rows"]
            if name == "triage":
                cost = partial(estimate_triage, rows, tests, trl)
            else:
                cost = partial(estimate, rows, data["tokens_per_row"], tests, size in args.grid_sizes)
            planned[name, size] = cost(share=EARLY) * args.reps
            upper += cost(share=1.0) * args.reps
    total = sum(planned.values())
    each = ", ".join(f"{name} {size} {cost / 60:.1f}" for (name, size), cost in planned.items())
    print(f"estimate: about {total / 60:.0f} minutes, {upper / 60:.0f} at most if no run stops early; minutes per "
          f"cell: {each}", file=sys.stderr, flush=True)  # fmt: skip
    return plans, planned


def run_cells(
    args: argparse.Namespace, plans: dict[str, dict[str, Any]], planned: dict[tuple[str, str], float]
) -> None:
    """Each cell in turn, its JSON written and DEFAULTS.md rendered after it; the targets' verdicts at the end."""
    OUT.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"machine: {info}", file=sys.stderr, flush=True)
    started, total = time.perf_counter(), sum(planned.values())
    for (name, size), cost in planned.items():
        t = time.perf_counter()
        data = plans[name]
        result = triage_cell(size, data, args) if name == "triage" else classification_cell(name, size, data, args)
        minutes = (time.perf_counter() - t) / 60
        record = {
            "set": name, "size": size, "rows": data["rows"][size], "pool": data["pool"], "test_rows": data["test_rows"],
            **{k: data[k] for k in ("labels", "test_unseen_dropped", "tokens_per_row") if k in data},
            "reps": args.reps, "commit": machine_commit(), "machine": info, "minutes": minutes,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), **result,
        }  # fmt: skip
        (OUT / f"{name}-{size}.json").write_text(json.dumps(record, indent=1))
        elapsed = (time.perf_counter() - started) / 60
        so_far = f"{elapsed:.1f} of ~{total / 60:.0f} min so far"
        print(f"[{name} {size}] {minutes:.1f} min (estimated {cost / 60:.1f}); {so_far}", file=sys.stderr, flush=True)
        render(OUT, TARGET)
    written = TARGET.read_text(encoding="utf-8")
    if "## Targets" in written:  # the verdicts, on screen too
        print(written.split("## Targets", 1)[1].split("\n## ", 1)[0].strip(), file=sys.stderr)
    print(f"wrote {TARGET}", file=sys.stderr)


if __name__ == "__main__":
    main()
