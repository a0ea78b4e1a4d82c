"""One contender of one benchmark, run as its own process by bench/run.py (so its peak RSS is its own).

    python bench/contenders.py '{"job": "train", "who": "trainer", ...}'

Prints one JSON line: the seconds of the timed part, the peak RSS of this process, and what the
job measured (dev accuracy, predictions, training loss). Every contender gets the same data, model,
hyperparameters and precision from the payload; each runs with the settings its own documentation
recommends (Trainer: dynamic padding and length-grouped batches). The "defaults" jobs (bench/defaults.py)
are the exception: there each tool runs with its own defaults, which is what they compare.
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


def trainer_setup(a: dict[str, Any]) -> tuple[Any, Any, Any, Any, list[str]]:
    """For Trainer: the tokenizer, the model with a head for the training file's labels, the training and dev
    files as tokenised datasets (truncated at max length 128), and the label names in the order of their ids."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(a["model"])
    texts, labels = read_table(a["train"], a["text"], a["label"])
    dev_texts, dev_labels = read_table(a["dev"], a["text_dev"], a["label"])
    names = sorted(set(labels))

    def dataset(t: list[str], y: list[str]) -> Dataset:
        ds = Dataset.from_dict({"text": t, "labels": [names.index(v) for v in y]})
        return ds.map(lambda b: tok(b["text"], truncation=True, max_length=128), batched=True, remove_columns="text")

    model = AutoModelForSequenceClassification.from_pretrained(a["model"], num_labels=len(names))
    return tok, model, dataset(texts, labels), dataset(dev_texts, dev_labels), names


def train_trainer(a: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    tok, model, train, dev, names = trainer_setup(a)
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


def chat_pairs(path: str, prompt: str, response: str) -> Any:
    """A JSONL file of prompt / response records as TRL's conversational prompt-completion dataset."""
    from datasets import Dataset

    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    return Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": r[prompt]}],
             "completion": [{"role": "assistant", "content": r[response]}]}
            for r in rows
        ]
    )  # fmt: skip


def sft_trl(a: dict[str, Any]) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    ds = chat_pairs(a["train"], "question", "answer")
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


# bench/defaults.py: each tool with its own defaults, scored on a test file the run never chooses by.


def run_record(path: Any) -> dict[str, Any]:
    """What a tunesmith run folder says about its budget, how it stopped and what its defaults chose."""
    run = json.loads((path / "tunesmith.json").read_text())
    logs = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in logs if "seconds" in r]  # the evaluation records: training-loop seconds so far
    epochs = run["config"]["train"]["epochs"]
    return {
        "seconds": run["fit_seconds"], "train_seconds": run["train_seconds"], "epochs": epochs,
        "epochs_run": evals[-1]["epoch"] if evals else epochs, "best_epoch": run["best"].get("epoch"),
        "stop_reason": run["stop_reason"] or "budget", "under_trained": run["under_trained"],
        "defaults": {k: v["value"] for k, v in run["defaults"].items()},
        "curve": [[r["epoch"], r["seconds"], r.get("test_accuracy"), r.get("test_macro_f1")] for r in evals],
    }  # fmt: skip


def defaults_tunesmith(a: dict[str, Any]) -> dict[str, Any]:
    """tunesmith with nothing set (a["options"] empty), test_data scored at every evaluation; or with the
    grid's explicit options, scored once on the saved model."""
    import tunesmith

    options = a.get("options") or {"test_data": a["dev"]}
    result = tunesmith.finetune(a["train"], output=a["out"], quiet=True, overwrite=True, **options)
    saved = result.path / "eval.json"
    tested = json.loads(saved.read_text()).get("test") if saved.exists() else None
    tested = tested or tunesmith.evaluate(result.path, a["dev"])
    return {**run_record(result.path), "accuracy": tested["accuracy"], "macro_f1": tested["macro_f1"]}


def defaults_trainer(a: dict[str, Any]) -> dict[str, Any]:
    """Trainer as a user writes it: TrainingArguments' defaults, on every row, scored with tunesmith's metrics."""
    import numpy as np
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from tunesmith.data.labels import LabelSpace
    from tunesmith.metrics import classification_metrics

    tok, model, train, test, names = trainer_setup(a)
    args = TrainingArguments(
        output_dir=a["out"], use_cpu=True, report_to=[], save_strategy="no", seed=a["seed"],
        per_device_eval_batch_size=64, disable_tqdm=True,  # scoring speed and quiet output; training untouched
    )  # fmt: skip
    recipe = {"epochs": args.num_train_epochs, "lr": args.learning_rate, "batch_size": args.per_device_train_batch_size}
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tok))
    done = trainer.train()
    out = trainer.predict(test)
    confusion = np.zeros((len(names), len(names)), dtype=np.int64)
    np.add.at(confusion, (out.label_ids, np.argmax(out.predictions, -1)), 1)
    scores = classification_metrics(confusion, LabelSpace(tuple(names)))
    return {"seconds": done.metrics["train_runtime"], "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
            **recipe}  # fmt: skip


def score_triage(folder: str, test: str, max_new_tokens: int, batch_size: int = 16) -> dict[str, Any]:
    """The one scorer of both SFT contenders' saved models: greedy replies under the tokenizer's chat template,
    then the share that parse as a JSON object and the accuracy of its category and urgency fields."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = [json.loads(line) for line in open(test, encoding="utf-8")]
    tok = AutoTokenizer.from_pretrained(folder)
    tok.padding_side = "left"
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False, add_generation_prompt=True)
        for r in rows
    ]
    order = sorted(range(len(rows)), key=lambda i: -len(prompts[i]))  # similar lengths share a batch
    replies = [""] * len(rows)
    started = time.perf_counter()
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        enc = tok([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            ids = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad, use_cache=True,
                temperature=None, top_p=None, top_k=None,
            )  # fmt: skip
        for i, seq in zip(batch, ids[:, enc["input_ids"].shape[1] :], strict=True):
            replies[i] = tok.decode(seq, skip_special_tokens=True)
    hits = {"valid_json": 0, "category": 0, "urgency": 0}
    for row, reply in zip(rows, replies, strict=True):
        gold = json.loads(row["response"])
        try:
            got = json.loads(reply.strip())
        except ValueError:
            continue
        if isinstance(got, dict):
            hits["valid_json"] += 1
            hits["category"] += got.get("category") == gold["category"]
            hits["urgency"] += got.get("urgency") == gold["urgency"]
    return {
        **{k: v / len(rows) for k, v in hits.items()}, "score_s": time.perf_counter() - started,
        "example_reply": replies[0][:300],
    }  # fmt: skip


def defaults_sft_tunesmith(a: dict[str, Any]) -> dict[str, Any]:
    """tunesmith with nothing set: the task from the prompt / response columns, SmolLM2 by default."""
    import tunesmith

    result = tunesmith.finetune(a["train"], output=a["out"], quiet=True, overwrite=True)
    record = run_record(result.path)
    precision = json.loads((result.path / "tunesmith.json").read_text())["config"]["train"]["precision"]
    return {**record, "precision": precision, **score_triage(str(result.path), a["dev"], a["max_new_tokens"])}


def defaults_sft_trl(a: dict[str, Any]) -> dict[str, Any]:
    """TRL's SFTTrainer with SFTConfig's defaults (lr 2e-5, 3 epochs, batch 8, bf16, gradient checkpointing)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    ds = chat_pairs(a["train"], "prompt", "response")
    tok = AutoTokenizer.from_pretrained(a["model"])
    model = AutoModelForCausalLM.from_pretrained(a["model"], dtype="float32")  # fp32 master weights, as tunesmith
    args = SFTConfig(output_dir=a["out"], use_cpu=True, report_to=[], save_strategy="no", seed=a["seed"],
                     disable_tqdm=True)  # fmt: skip
    recipe = {"epochs": args.num_train_epochs, "lr": args.learning_rate, "precision": "bf16" if args.bf16 else "fp32",
              "gradient_checkpointing": args.gradient_checkpointing}  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    done = trainer.train()
    trainer.save_model(a["out"])
    return {"seconds": done.metrics["train_runtime"], "train_loss": done.training_loss, **recipe,
            **score_triage(a["out"], a["dev"], a["max_new_tokens"])}  # fmt: skip


JOBS = {
    ("train", "tunesmith"): train_tunesmith,
    ("train", "trainer"): train_trainer,
    ("infer", "tunesmith"): infer_tunesmith,
    ("infer", "pipeline"): infer_pipeline,
    ("sft", "tunesmith"): sft_tunesmith,
    ("sft", "trl"): sft_trl,
    ("defaults", "tunesmith"): defaults_tunesmith,
    ("defaults", "trainer"): defaults_trainer,
    ("defaults-sft", "tunesmith"): defaults_sft_tunesmith,
    ("defaults-sft", "trl"): defaults_sft_trl,
}

if __name__ == "__main__":
    payload = json.loads(sys.argv[1])
    import torch

    torch.manual_seed(payload.get("seed", 0))
    result = JOBS[payload["job"], payload["who"]](payload)
    print(json.dumps({**result, "peak_rss_mib": peak_rss_mib()}))
