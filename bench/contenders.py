"""One contender of one benchmark, run as its own process by bench/run.py (so its peak RSS is its own).

    python bench/contenders.py '{"job": "train", "who": "trainer", ...}'

Prints one JSON line: the seconds of the timed part, the peak RSS of this process, and what the
job measured (dev accuracy, predictions, training loss). Every contender gets the same data, model,
hyperparameters and precision from the payload; each runs with the settings its own documentation
recommends (Trainer: dynamic padding and length-grouped batches).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_table(path: str, text: str, label: str | None) -> tuple[list[str], list[str]]:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ","))
    return [r[text] for r in rows], [r[label] for r in rows] if label else []


def train_tunesmith(a: dict[str, Any]) -> dict[str, Any]:
    import tunesmith

    result = tunesmith.finetune(
        a["train"], a["model"], a["out"], epochs=1, batch_size=32, lr=5e-5, max_length=128, eval_split=0.0,
        seed=a["seed"], quiet=True, precision=a["precision"], overwrite=True,
    )  # fmt: skip
    fit_s = json.loads((result.path / "tunesmith.json").read_text())["fit_seconds"]
    return {"seconds": fit_s, "accuracy": tunesmith.evaluate(result.path, a["dev"])["accuracy"]}


def train_trainer(a: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    texts, labels = read_table(a["train"], a["text"], a["label"])
    dev_texts, dev_labels = read_table(a["dev"], a["text_dev"], a["label"])
    names = sorted(set(labels))
    tok = AutoTokenizer.from_pretrained(a["model"])

    def dataset(t: list[str], y: list[str]) -> Dataset:
        ds = Dataset.from_dict({"text": t, "labels": [names.index(v) for v in y]})
        return ds.map(lambda b: tok(b["text"], truncation=True, max_length=128), batched=True, remove_columns="text")

    train, dev = dataset(texts, labels), dataset(dev_texts, dev_labels)
    model = AutoModelForSequenceClassification.from_pretrained(a["model"], num_labels=len(names))
    args = TrainingArguments(
        output_dir=a["out"], per_device_train_batch_size=32, per_device_eval_batch_size=64, num_train_epochs=1,
        learning_rate=5e-5, weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0,
        train_sampling_strategy="group_by_length", seed=a["seed"], report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=True, bf16=a["precision"] == "bf16", dataloader_num_workers=0,
        disable_tqdm=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tok))
    seconds = trainer.train().metrics["train_runtime"]
    out = trainer.predict(dev)
    return {"seconds": seconds, "accuracy": float((np.argmax(out.predictions, -1) == out.label_ids).mean())}


def infer_tunesmith(a: dict[str, Any]) -> dict[str, Any]:
    import tunesmith

    texts, _ = read_table(a["texts"], a["text"], None)
    predictor = tunesmith.load(a["run"], batch_size=32, backend=a["backend"])
    t = time.perf_counter()
    labels = [r["label"] for r in predictor.predict(texts)]
    return {"seconds": time.perf_counter() - t, "labels": labels}


def infer_pipeline(a: dict[str, Any]) -> dict[str, Any]:
    from transformers import pipeline

    texts, _ = read_table(a["texts"], a["text"], None)
    pipe = pipeline("text-classification", model=a["run"], device="cpu")
    t = time.perf_counter()
    out = pipe(texts, batch_size=32, truncation=True, max_length=128)
    return {"seconds": time.perf_counter() - t, "labels": [r["label"] for r in out]}


def sft_tunesmith(a: dict[str, Any]) -> dict[str, Any]:
    import tunesmith

    result = tunesmith.finetune(
        a["train"], a["model"], a["out"], epochs=1, batch_size=8, lr=5e-5, max_length=a["max_length"],
        eval_split=0.0, seed=a["seed"], quiet=True, precision=a["precision"], overwrite=True,
        gradient_checkpointing=a.get("gradient_checkpointing", False), **{"task.type": "generate"},
    )  # fmt: skip
    fit_s = json.loads((result.path / "tunesmith.json").read_text())["fit_seconds"]
    logs = [json.loads(line) for line in (result.path / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in logs if "loss" in r]
    return {"seconds": fit_s, "train_loss": sum(losses) / len(losses)}


def sft_trl(a: dict[str, Any]) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [json.loads(line) for line in open(a["train"], encoding="utf-8")]
    ds = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": r["question"]}],
             "completion": [{"role": "assistant", "content": r["answer"]}]}
            for r in rows
        ]
    )  # fmt: skip
    tok = AutoTokenizer.from_pretrained(a["model"])
    model = AutoModelForCausalLM.from_pretrained(a["model"], dtype="float32")  # fp32 master weights, as tunesmith
    args = SFTConfig(
        output_dir=a["out"], per_device_train_batch_size=8, num_train_epochs=1, learning_rate=5e-5,
        weight_decay=0.01, warmup_steps=0.1, lr_scheduler_type="linear", max_grad_norm=1.0, max_length=a["max_length"],
        packing=False, gradient_checkpointing=a.get("gradient_checkpointing", False),
        train_sampling_strategy="group_by_length", seed=a["seed"], report_to=[], save_strategy="no",
        logging_strategy="steps", logging_steps=10, use_cpu=True, bf16=a["precision"] == "bf16",
        dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    # SFTConfig turns gradient checkpointing on by default (less memory, a recomputed forward); it is set
    # here as for tunesmith (off unless the payload asks), so both do the same work per step.
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    metrics = trainer.train()
    return {"seconds": metrics.metrics["train_runtime"], "train_loss": metrics.training_loss}


JOBS = {
    ("train", "tunesmith"): train_tunesmith,
    ("train", "trainer"): train_trainer,
    ("infer", "tunesmith"): infer_tunesmith,
    ("infer", "pipeline"): infer_pipeline,
    ("sft", "tunesmith"): sft_tunesmith,
    ("sft", "trl"): sft_trl,
}

if __name__ == "__main__":
    payload = json.loads(sys.argv[1])
    import torch

    torch.manual_seed(payload.get("seed", 0))
    result = JOBS[payload["job"], payload["who"]](payload)
    print(json.dumps({**result, "peak_rss_mib": peak_rss_mib()}))
