"""One contender of the tasks section on one set, as its own process (bench/tasks.py starts it).

    python bench/task_contenders.py '{"who": "trainer", "task": "multilabel", "train": ..., "test": ...}'

tunesmith runs with no options at all. HF Trainer is scripted as transformers' run_classification.py and
run_ner.py do it: TrainingArguments' defaults (lr 5e-5, 3 epochs, batch 8), max length 128, dynamic padding;
regression by num_labels=1, multi-label by problem_type and a 0.5 threshold, tags on the first sub-word
(label_all_tokens False). The floor is scikit-learn: TF-IDF (1-2 grams) with logistic regression (one-vs-rest
for multi-label, ridge for regression, |a-b| and a*b features for pairs; for tags a logistic regression on
word features). Every contender is scored by the same functions (tunesmith's, seqeval's) on the same test
file. Prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import numpy as np

MAX_LENGTH = 128


def rows(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def fields(task: str, data: list[dict[str, Any]]) -> tuple[list[str], list[str] | None, list[Any]]:
    """Texts, second texts of pairs (or None), gold labels, from the JSONL the bench wrote."""
    pairs = [r["text_pair"] for r in data] if "text_pair" in data[0] else None
    key = {"tagging": "tags"}.get(task, "label")
    return [r.get("text", r.get("tokens")) for r in data], pairs, [r[key] for r in data]


def score(task: str, gold: list[Any], predicted: Any, names: list[str]) -> dict[str, Any]:
    """Test metrics with tunesmith's own functions (and seqeval for tags), whoever predicted."""
    from tunesmith.data.labels import LabelSpace

    if task == "classification":
        from tunesmith.metrics import classification_metrics

        confusion = np.zeros((len(names), len(names)), dtype=np.int64)
        np.add.at(confusion, ([names.index(str(g)) for g in gold], predicted), 1)
        out = classification_metrics(confusion, LabelSpace(tuple(names)))
        positive = "1" if "1" in names else names[-1]
        return {"accuracy": out["accuracy"], "macro_f1": out["macro_f1"],
                "f1": out["per_class"][positive]["f1"]}  # fmt: skip
    if task == "multilabel":
        from tunesmith.tasks.multilabel import multilabel_metrics

        truth = np.array([[float(n in g) for n in names] for g in gold])
        probs, cut = predicted
        out = multilabel_metrics(probs, truth, cut, tuple(names))
        half = multilabel_metrics(probs, truth, np.full(len(names), 0.5), tuple(names))
        return {"micro_f1": out["micro_f1"], "macro_f1": out["macro_f1"], "micro_f1_at_0.5": half["micro_f1"],
                "macro_f1_at_0.5": half["macro_f1"]}  # fmt: skip
    if task == "regression":
        from scipy.stats import pearsonr, spearmanr

        pred = np.asarray(predicted, dtype=float)
        return {"pearson": float(pearsonr(pred, gold).statistic), "spearman": float(spearmanr(pred, gold).statistic)}
    from tunesmith.data.tags import iob2
    from tunesmith.tasks.tag import entity_metrics

    out = entity_metrics([iob2(g) for g in gold], [iob2(p) for p in predicted], 0.0, 0)
    return {"entity_f1": out["micro_f1"], "precision": out["precision"], "recall": out["recall"]}


def label_names(task: str, labels: list[Any]) -> list[str]:
    if task == "multilabel":
        return sorted({n for g in labels for n in g})
    if task == "tagging":
        return sorted({t for g in labels for t in g})
    return sorted({str(x) for x in labels}) if task == "classification" else []


def tunesmith_job(a: dict[str, Any]) -> dict[str, Any]:
    import tunesmith

    result = tunesmith.finetune(a["train"], output=a["out"], quiet=True, overwrite=True)
    record = json.loads((result.path / "tunesmith.json").read_text())
    metrics = tunesmith.evaluate(result.path, a["test"])
    task = record["task"]
    if task == "classification":
        positive = "1" if "1" in metrics["per_class"] else list(metrics["per_class"])[-1]
        out = {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
               "f1": metrics["per_class"][positive]["f1"]}  # fmt: skip
    elif task == "multilabel":
        half = metrics["at_0.5"]
        out = {"micro_f1": metrics["micro_f1"], "macro_f1": metrics["macro_f1"],
               "micro_f1_at_0.5": half["micro_f1"], "macro_f1_at_0.5": half["macro_f1"]}  # fmt: skip
    elif task == "regression":
        out = {"pearson": metrics["pearson"], "spearman": metrics["spearman"]}
    else:
        out = {"entity_f1": metrics["micro_f1"], "precision": metrics["precision"], "recall": metrics["recall"]}
    chosen = {k: v["value"] for k, v in record["defaults"].items() if k in ("train.lr", "train.epochs")}
    return {**out, "seconds": record["fit_seconds"], "task_detected": task, "recipe": chosen}


def trainer_job(a: dict[str, Any]) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, Trainer, TrainingArguments

    import tunesmith.model.pretrained as pretrained

    task = a["task"]
    model_dir = pretrained.resolve("minilm").location
    tok = AutoTokenizer.from_pretrained(model_dir)
    train_x, train_p, train_y = fields(task, rows(a["train"]))
    test_x, test_p, test_y = fields(task, rows(a["test"]))
    names = label_names(task, train_y)
    args = TrainingArguments(output_dir=a["out"], use_cpu=True, report_to=[], save_strategy="no", seed=42,
                             per_device_eval_batch_size=64, disable_tqdm=True)  # fmt: skip
    if task == "tagging":
        from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification

        from tunesmith.data.tags import iob2

        names = sorted({t for g in train_y for t in iob2(g)})

        def encode(x: list[list[str]], y: list[list[str]]) -> Dataset:
            enc = tok(x, is_split_into_words=True, truncation=True, max_length=MAX_LENGTH)
            labels = []
            for i, tags in enumerate(y):
                previous, row = None, []
                for w in enc.word_ids(i):
                    row.append(-100 if w is None or w == previous else names.index(iob2(tags)[w]))
                    previous = w
                labels.append(row)
            return Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                                      "token_type_ids": enc["token_type_ids"], "labels": labels})  # fmt: skip

        model = AutoModelForTokenClassification.from_pretrained(model_dir, num_labels=len(names))
        collator = DataCollatorForTokenClassification(tok)
        train, test = encode(train_x, train_y), encode(test_x, test_y)
    else:
        from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

        def target(y: Any) -> Any:
            if task == "multilabel":
                return [float(n in y) for n in names]
            return float(y) if task == "regression" else names.index(str(y))

        def encode(x: list[str], p: list[str] | None, y: list[Any]) -> Dataset:
            enc = tok(x, p, truncation=True, max_length=MAX_LENGTH) if p else tok(x, truncation=True,
                                                                                   max_length=MAX_LENGTH)  # fmt: skip
            return Dataset.from_dict({**enc, "labels": [target(v) for v in y]})

        kind = {"multilabel": "multi_label_classification", "regression": "regression"}.get(task)
        count = 1 if task == "regression" else len(names)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=count, problem_type=kind)
        collator = DataCollatorWithPadding(tok)
        train, test = encode(train_x, train_p, train_y), encode(test_x, test_p, test_y)
    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    done = trainer.train()
    logits = trainer.predict(test).predictions
    if task == "tagging":
        predicted = []
        for i, x in enumerate(test_x):
            enc = tok(x, is_split_into_words=True, truncation=True, max_length=MAX_LENGTH)
            tags, previous = ["O"] * len(x), None
            for pos, w in enumerate(enc.word_ids()):
                if w is not None and w != previous:
                    tags[w] = names[int(logits[i, pos].argmax())]
                previous = w
            predicted.append(tags)
    elif task == "multilabel":
        predicted = (torch.sigmoid(torch.from_numpy(logits)).numpy(), np.full(len(names), 0.5))
    elif task == "regression":
        predicted = logits[:, 0].tolist()
    else:
        predicted = logits.argmax(-1).tolist()
    recipe = {"lr": args.learning_rate, "epochs": args.num_train_epochs, "batch_size": args.per_device_train_batch_size}
    return {**score(task, test_y, predicted, names), "seconds": done.metrics["train_runtime"], "recipe": recipe}


def word_features(tokens: list[str], i: int) -> dict[str, Any]:
    w = tokens[i]
    return {"w=" + w.lower(): 1, "suf=" + w[-3:].lower(): 1, "title": w.istitle(), "upper": w.isupper(),
            "digit": any(c.isdigit() for c in w), "prev=" + (tokens[i - 1].lower() if i else "<s>"): 1,
            "next=" + (tokens[i + 1].lower() if i + 1 < len(tokens) else "</s>"): 1}  # fmt: skip


def tfidf_job(a: dict[str, Any]) -> dict[str, Any]:
    from scipy.sparse import hstack
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.multiclass import OneVsRestClassifier

    task = a["task"]
    train_x, train_p, train_y = fields(task, rows(a["train"]))
    test_x, test_p, test_y = fields(task, rows(a["test"]))
    names = label_names(task, train_y)
    started = time.perf_counter()
    if task == "tagging":
        vec = DictVectorizer()
        x = vec.fit_transform([word_features(s, i) for s in train_x for i in range(len(s))])
        y = [t for g in train_y for t in g]
        clf = LogisticRegression(max_iter=1000).fit(x, y)
        seconds = time.perf_counter() - started
        flat = clf.predict(vec.transform([word_features(s, i) for s in test_x for i in range(len(s))]))
        predicted, at = [], 0
        for s in test_x:
            predicted.append(list(flat[at : at + len(s)]))
            at += len(s)
        return {**score(task, test_y, predicted, names), "seconds": seconds}
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    vec.fit(train_x + (train_p or []))

    def features(x: list[str], p: list[str] | None) -> Any:
        a_ = vec.transform(x)
        if p is None:
            return a_
        b_ = vec.transform(p)
        return hstack([abs(a_ - b_), a_.multiply(b_)]).tocsr()

    train_f, test_f = features(train_x, train_p), features(test_x, test_p)
    if task == "regression":
        model = Ridge(alpha=1.0).fit(train_f, np.asarray(train_y, dtype=float))
        seconds = time.perf_counter() - started
        predicted: Any = model.predict(test_f).tolist()
    elif task == "multilabel":
        truth = np.array([[float(n in g) for n in names] for g in train_y])
        keep = truth.sum(0) > 0
        model = OneVsRestClassifier(LogisticRegression(max_iter=1000)).fit(train_f, truth[:, keep])
        seconds = time.perf_counter() - started
        probs = np.zeros((test_f.shape[0], len(names)))
        probs[:, keep] = model.predict_proba(test_f)
        predicted = (probs, np.full(len(names), 0.5))
    else:
        model = LogisticRegression(max_iter=1000).fit(train_f, [str(v) for v in train_y])
        seconds = time.perf_counter() - started
        predicted = [names.index(v) for v in model.predict(test_f)]
    return {**score(task, test_y, predicted, names), "seconds": seconds}


JOBS = {"tunesmith": tunesmith_job, "trainer": trainer_job, "tfidf": tfidf_job}

if __name__ == "__main__":
    payload = json.loads(sys.argv[1])
    import torch

    torch.manual_seed(42)
    result = JOBS[payload["who"]](payload)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))
