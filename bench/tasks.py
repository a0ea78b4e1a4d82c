"""`make bench` section tasks: every supervised task, tunesmith's defaults against HF Trainer and a TF-IDF floor.

The sets are ../shared/data's, each written once as the JSONL tunesmith reads (text, text_pair, label; tokens,
tags); each contender trains on the same slice and is scored on the same test file (bench/task_contenders.py).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SHARED = BENCH.parents[1] / "shared" / "data"
SEED = 42
TASKS = {"sst2": "classification", "mrpc": "classification", "stsb": "regression", "goemotions": "multilabel",
         "conll2003": "tagging"}  # fmt: skip
SOURCES = {
    "sst2": "sst2/train.tsv (slice); test sst2/dev.tsv",
    "mrpc": "mrpc/train.tsv (slice), sentence pairs; test mrpc/dev.tsv",
    "stsb": "stsb/sts-train.csv (slice), sentence pairs, scores 0-5; test stsb/sts-dev.csv",
    "goemotions": "goemotions/train.tsv (slice), 28 emotions, any number per comment; test goemotions/test.tsv",
    "conll2003": "conll2003/eng.train (slice of sentences), IOB1 read as IOB2; test eng.testb",
}


def lines(path: Path, encoding: str = "utf-8") -> list[list[str]]:
    return [line.split("\t") for line in path.read_text(encoding=encoding).splitlines() if line.strip()]


def sst2() -> tuple[list[dict], list[dict]]:
    def read(name: str) -> list[dict]:
        return [{"text": f[0].strip(), "label": int(f[1])} for f in lines(SHARED / "sst2" / name)[1:]]

    return read("train.tsv"), read("dev.tsv")


def mrpc() -> tuple[list[dict], list[dict]]:
    def read(name: str) -> list[dict]:
        got = lines(SHARED / "mrpc" / name, "utf-8-sig")[1:]
        return [{"text": f[3].strip(), "text_pair": f[4].strip(), "label": int(f[0])} for f in got]

    return read("train.tsv"), read("dev.tsv")


def stsb() -> tuple[list[dict], list[dict]]:
    def read(name: str) -> list[dict]:
        return [{"text": f[5].strip(), "text_pair": f[6].strip(), "label": float(f[4])}
                for f in lines(SHARED / "stsb" / name)]  # fmt: skip

    return read("sts-train.csv"), read("sts-dev.csv")


def goemotions() -> tuple[list[dict], list[dict]]:
    names = (SHARED / "goemotions" / "emotions.txt").read_text(encoding="utf-8").split()

    def read(name: str) -> list[dict]:
        return [{"text": f[0], "label": sorted(names[int(i)] for i in f[1].split(","))}
                for f in lines(SHARED / "goemotions" / name)]  # fmt: skip

    return read("train.tsv"), read("test.tsv")


def conll2003() -> tuple[list[dict], list[dict]]:
    from tunesmith.data.readers import read_table

    def read(name: str) -> list[dict]:
        t = read_table(SHARED / "conll2003" / name)
        return [{"tokens": a, "tags": b} for a, b in zip(t.columns["tokens"], t.columns["tags"], strict=True)]

    return read("eng.train"), read("eng.testb")


SETS = {"sst2": sst2, "mrpc": mrpc, "stsb": stsb, "goemotions": goemotions, "conll2003": conll2003}


def prepare(name: str, rows: int, test_rows: int | None, folder: Path) -> dict[str, Any]:
    train, test = SETS[name]()
    random.Random(SEED).shuffle(train)
    train = train[:rows]
    if test_rows is not None:
        random.Random(SEED).shuffle(test)
        test = test[:test_rows]
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for part, data in (("train", train), ("test", test)):
        paths[part] = folder / f"{name}-{part}.jsonl"
        paths[part].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data), encoding="utf-8")
    return {"train": str(paths["train"]), "test": str(paths["test"]), "rows": len(train), "test_rows": len(test)}


def contender(payload: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(BENCH / "task_contenders.py"), json.dumps(payload)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        sys.exit(f"tasks {payload['who']} on {payload['set']} failed:\n{done.stderr[-4000:]}")
    result = {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - started}
    print(f"  tasks {payload['set']} {payload['who']}: {result}", file=sys.stderr, flush=True)
    return result


def tasks_section(work: Path, rows: int, sets: list[str]) -> dict[str, Any]:
    """Each set: the three contenders, one after another, on the same files."""
    out: dict[str, Any] = {"rows": rows, "sets": {}}
    for name in sets:
        files = prepare(name, rows, 1500 if name == "goemotions" else None, work / "tasks")
        runs = {}
        for who in ("tunesmith", "trainer", "tfidf"):
            folder = str(work / "tasks" / f"{name}-{who}")
            payload = {"who": who, "set": name, "task": TASKS[name], **files, "out": folder}
            runs[who] = contender(payload)
        out["sets"][name] = {**files, "task": TASKS[name], "source": SOURCES[name], "runs": runs}
    return out


def metrics(run: dict[str, Any]) -> list[str]:
    """The quality numbers of a contender's result (not its seconds, memory or wall time)."""
    return [k for k, v in run.items() if isinstance(v, float) and k not in ("seconds", "peak_rss_mib", "wall_s")]


def verdicts(data: dict[str, Any]) -> list[str]:
    """The issue's targets for one set, each met or missed with the numbers."""
    ours, trainer, floor = (data["runs"][w] for w in ("tunesmith", "trainer", "tfidf"))
    out = []
    for name in [k for k in metrics(ours) if k in trainer and not k.endswith("_at_0.5")]:
        gap = (ours[name] - trainer[name]) * 100
        ok = gap >= -0.5 and ours[name] >= floor.get(name, -1)
        out.append(f"{name} {ours[name]:.3f} vs Trainer {trainer[name]:.3f} ({gap:+.1f} pt), floor "
                   f"{floor.get(name, float('nan')):.3f}: {'met' if ok else 'MISSED'}")  # fmt: skip
    if "macro_f1_at_0.5" in ours:
        ok = ours["macro_f1"] >= ours["macro_f1_at_0.5"]
        out.append(f"tuned thresholds macro-F1 {ours['macro_f1']:.3f} vs 0.5 {ours['macro_f1_at_0.5']:.3f}: "
                   f"{'met' if ok else 'MISSED'}")  # fmt: skip
    ratio = ours["seconds"] / trainer["seconds"]
    out.append(f"training time {ours['seconds']:.0f} s vs Trainer {trainer['seconds']:.0f} s "
               f"({ratio:.2f}x): {'met' if ratio <= 1 else 'MISSED'}")  # fmt: skip
    return out


def tasks_lines(result: dict[str, Any]) -> list[str]:
    """RESULTS.md's tasks section: one table per set, then the targets."""
    text = [
        "",
        f"MiniLM (all-MiniLM-L6-v2) on {result['rows']:,}-row training slices (seed {SEED}). tunesmith: `tunesmith "
        "train FILE` with no options (task, lr, epochs, evaluation all its defaults). Trainer: scripted as "
        "run_classification.py / run_ner.py do it, TrainingArguments' defaults (lr 5e-5, 3 epochs, batch 8), max "
        "length 128, 0.5 threshold for multi-label, first-sub-word tags. Floor: TF-IDF (1-2 grams) + logistic "
        "regression (one-vs-rest multi-label, ridge regression, |a-b| and a*b for pairs; word features for tags). "
        "Training seconds count the training loop alone. Targets: each metric >= Trainer - 0.5 pt and >= the "
        "floor; tuned thresholds >= 0.5; training time <= Trainer's.",
    ]
    for name, data in result["sets"].items():
        runs = data["runs"]
        keys = [*metrics(runs["tunesmith"]), "seconds", "peak_rss_mib"]
        text += ["", f"**{name}** ({data['task']}): {data['source']}; {data['rows']:,} training rows, "
                 f"{data['test_rows']:,} test rows; at commit {data.get('commit', '?')}.", "",
                 "| | " + " | ".join(keys) + " |",
                 "|---|" + "---:|" * len(keys)]  # fmt: skip
        for who in ("tunesmith", "trainer", "tfidf"):
            cells = [f"{runs[who][k]:.4f}" if k not in ("seconds", "peak_rss_mib") and k in runs[who]
                     else f"{runs[who][k]:,.0f}" if k in runs[who] else "-" for k in keys]  # fmt: skip
            text.append(f"| {who} | " + " | ".join(cells) + " |")
        text += ["", *[f"- {line}" for line in verdicts(data)]]
        if "recipe" in runs["tunesmith"]:
            text.append(f"- tunesmith chose {runs['tunesmith']['recipe']} (detected task "
                        f"{runs['tunesmith'].get('task_detected')})")  # fmt: skip
    return text
