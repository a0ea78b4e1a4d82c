"""`make bench-tune`: what `tunesmith tune` buys over the defaults, measured as the README's example.

A user's file: 1,500 seeded, stratified TREC-6 questions (../shared/data/trec/train_5500.label), a separate
500-row dev file from the rest of that pool, and the official 500-question test set (TREC_10.label), all as
CSV text,label. Two runs of the CLI, as a user types them, each its own process:
- `tunesmith train train.csv --eval-data dev.csv` (no other flags: the defaults of train/defaults.py);
- `tunesmith tune train.csv --eval-data dev.csv --trials N --time-budget B` (optuna, the full space);
then both saved models are scored on the test file (never seen by either). It writes bench/TUNE.md and
bench/out/tune_example.json: test accuracy and macro-F1 of each, wall seconds, the trials by state, the best
trial's parameters, and the study's own tune.md.

    .venv/bin/python bench/tune_example.py [--trials 12] [--time-budget 12m] [--work DIR]

About 15 minutes on a 2-core CPU with the defaults here.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from defaults import sample, trec, write_csv  # noqa: E402
from run import SEED, machine, machine_commit  # noqa: E402
from trec_csv import TREC  # noqa: E402

TARGET, RECORD = BENCH / "TUNE.md", BENCH / "out" / "tune_example.json"
CLI = Path(sys.executable).parent / "tunesmith"


def prepare(folder: Path, rows: int, dev_rows: int) -> dict[str, Path]:
    """Train and dev slices drawn from the training pool without overlap; the official test set as is."""
    pool = trec(TREC / "train_5500.label", False)
    train = sample(pool, rows, SEED)
    seen = {text for text, _ in train}  # TREC repeats some questions: none of the training texts is in dev
    dev = sample([row for row in pool if row[0] not in seen], dev_rows, SEED)
    test = trec(TREC / "TREC_10.label", False)
    return {
        name: write_csv(folder / f"{name}.csv", part) for name, part in (("train", train), ("dev", dev), ("test", test))
    }


def timed(command: list[str]) -> float:
    """Run one CLI command (its output goes to this process's stderr), failing loudly; its wall seconds."""
    print("$", " ".join(command), file=sys.stderr, flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=sys.stderr)
    return time.perf_counter() - started


def scores(run: Path, test: Path) -> dict[str, float]:
    import tunesmith

    metrics = tunesmith.evaluate(run, test)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def render(record: dict[str, Any], study_md: str) -> str:
    d, t, best = record["defaults"], record["tune"], record["tune"]["best"]
    states = ", ".join(f"{n} {s.lower()}" for s, n in sorted(t["states"].items()))
    return "\n".join([
        "# `tunesmith tune` against the defaults",
        "",
        f"Written by `make bench-tune` (bench/tune_example.py), {record['date']}, commit {record['commit']}, "
        f"{record['machine']['cores']} CPU cores ({record['machine']['cpu']}).",
        "",
        f"Data: {record['rows']['train']:,} TREC-6 training questions, a disjoint {record['rows']['dev']:,}-row dev "
        f"file for both to evaluate on, scored on the official {record['rows']['test']} test questions.",
        "",
        "| run | test accuracy | test macro-F1 | wall s |",
        "|---|---:|---:|---:|",
        f"| `tunesmith train train.csv --eval-data dev.csv` | {d['test']['accuracy']:.3f} | "
        f"{d['test']['macro_f1']:.3f} | {d['seconds']:.0f} |",
        f"| `tunesmith tune train.csv --eval-data dev.csv {' '.join(t['args'])}`, best/ | "
        f"{t['test']['accuracy']:.3f} | {t['test']['macro_f1']:.3f} | {t['seconds']:.0f} |",
        "",
        f"The study: {states}; best trial {best['number']} (dev {record['metric']} {best['value']:.4f}): "
        f"`{json.dumps(best['params'])}`. The defaults' run chose {json.dumps(d['chosen'])}.",
        "",
        "## The study's tune.md",
        "",
        study_md.strip(),
        "",
    ])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1500)
    parser.add_argument("--dev-rows", type=int, default=500)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--time-budget", default="12m")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="tunesmith-tune-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        files = prepare(work, args.rows, args.dev_rows)
        train, dev, test = (str(files[k]) for k in ("train", "dev", "test"))
        base = [str(CLI), "train", train, "--eval-data", dev, "-o", str(work / "defaults"), "--overwrite"]
        default_seconds = timed(base)
        tune_args = ["--trials", str(args.trials), "--time-budget", args.time_budget]
        tuned = work / "tuned"
        tune_seconds = timed([str(CLI), "tune", train, "--eval-data", dev, *tune_args, "-o", str(tuned), "--overwrite"])
        study = json.loads((tuned / "tune.json").read_text())
        info = json.loads((work / "defaults" / "tunesmith.json").read_text())
        record = {
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": machine_commit(),
            "machine": machine(), "metric": study["metric"],
            "rows": {k: sum(1 for _ in open(v, encoding="utf-8")) - 1 for k, v in files.items()},
            "defaults": {"seconds": default_seconds, "test": scores(work / "defaults", Path(test)),
                         "chosen": {k: v["value"] for k, v in info["defaults"].items()}},
            "tune": {"seconds": tune_seconds, "args": tune_args, "test": scores(tuned / "best", Path(test)),
                     "best": {k: study["best"][k] for k in ("number", "value", "params")},
                     "states": collections.Counter(r["state"] for r in study["trials"]), "trials": study["trials"]},
        }  # fmt: skip
        RECORD.parent.mkdir(parents=True, exist_ok=True)
        RECORD.write_text(json.dumps(record, indent=1))
        TARGET.write_text(render(record, (tuned / "tune.md").read_text(encoding="utf-8")), encoding="utf-8")
        print(TARGET.read_text(encoding="utf-8").split("## The study")[0], file=sys.stderr)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
