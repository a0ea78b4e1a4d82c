"""Where a training step's time goes: collation, forward, loss, backward, clipping, optimizer.

The packaged MiniLM with tunesmith's own pieces (tokenisation, length-grouped batches, collate,
loss, AdamW parameter groups), on SST-2 rows, timed part by part with perf_counter after a few
warm-up steps; then torch.profiler's top operators over the same steps. Issue 6 asks for this
breakdown before any optimisation.

    .venv/bin/python bench/profile_step.py [--rows 2000] [--steps 30] [--precision fp32]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import time
from pathlib import Path

import torch

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2" / "train.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (dynamic shapes) first.")
    args = parser.parse_args()

    from tunesmith.config import TrainConfig
    from tunesmith.data.batching import EncodedSet
    from tunesmith.data.encode import encode_texts
    from tunesmith.data.labels import LabelSpace
    from tunesmith.losses import classification_loss
    from tunesmith.model.pretrained import load_tokenizer, resolve
    from tunesmith.tasks import get
    from tunesmith.train.optim import build_optimizer

    with open(SST2, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))[: args.rows]
    labels = LabelSpace.from_labels([r["label"] for r in rows], None, str(SST2))
    source = resolve("minilm")
    tokenizer = load_tokenizer(source)
    t = time.perf_counter()
    ids = encode_texts(tokenizer, [r["sentence"] for r in rows], 128)
    tokenise_s = time.perf_counter() - t
    data = EncodedSet(ids, [labels.index(r["label"]) for r in rows], args.batch_size, 50, 42, tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = get("classification").new_model(source, labels).train()
    optimizer = build_optimizer(model, TrainConfig())
    if args.compile:
        model = torch.compile(model, dynamic=True)
    batches = data.batches(0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()
    parts = dict.fromkeys(["collate", "forward", "loss", "backward", "clip", "optimizer"], 0.0)
    tokens = padded = 0

    def step(rows: list[int], timed: bool) -> None:
        nonlocal tokens, padded
        marks = [time.perf_counter()]
        batch = data.collate(rows)
        labels_ = batch.pop("labels")
        marks.append(time.perf_counter())
        with autocast:
            logits = model(**batch).logits
            marks.append(time.perf_counter())
            loss = classification_loss(logits, labels_) / len(rows)
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        marks.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if timed:
            for name, a, b in zip(parts, marks, marks[1:], strict=False):
                parts[name] += b - a
            tokens += int(batch["attention_mask"].sum())
            padded += batch["attention_mask"].numel()

    t = time.perf_counter()
    for rows_ in batches[:3]:
        step(rows_, False)
    print(f"first 3 steps (warm-up{', compilation' if args.compile else ''}): {time.perf_counter() - t:.1f}s")
    measured = batches[3 : 3 + args.steps]
    for rows_ in measured:
        step(rows_, True)
    total = sum(parts.values())
    print(
        f"{len(measured)} steps of {args.batch_size}, {args.precision}, torch threads {torch.get_num_threads()}: "
        f"{total / len(measured) * 1000:.0f} ms per step, {len(measured) * args.batch_size / total:.1f} samples/s; "
        f"padding {1 - tokens / padded:.1%} of positions; tokenising {args.rows} rows took {tokenise_s:.2f}s"
    )
    for name, seconds in parts.items():
        print(f"  {name:10s} {seconds / len(measured) * 1000:8.1f} ms  {seconds / total:6.1%}")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for rows_ in measured[:10]:
            step(rows_, False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
