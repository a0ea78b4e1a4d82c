"""RESULTS.md from the sections' JSON in bench/out/ (bench/run.py writes them; this only formats)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

INTEGER = ("samples/s", "tokens/s", "wall s", "peak RSS MiB")


def cell(key: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if key in INTEGER:
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return f"{value:.3f}"


def table(rows: dict[str, dict[str, Any]], keys: list[str]) -> list[str]:
    lines = ["| | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    lines += [f"| {who} | " + " | ".join(cell(k, row[k]) for k in keys) + " |" for who, row in rows.items()]
    return lines


def ratio(a: dict[str, Any], b: dict[str, Any], keys: list[str]) -> dict[str, str]:
    """a / b per column; accuracies as a difference in points, which is what the targets speak of."""
    out = {}
    for k in keys:
        out[k] = f"{(a[k] - b[k]) * 100:+.1f} pt" if "accuracy" in k else f"{a[k] / b[k]:.2f}x"
    return out


def machine_lines(info: dict[str, Any]) -> list[str]:
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in info.items()]]


def train_lines(result: dict[str, Any]) -> list[str]:
    keys = ["samples/s", "tokens/s", "MFU", "wall s", "peak RSS MiB", "dev accuracy"]
    runs = result["runs"]
    lines = []
    for name, data in result["sets"].items():
        lines += [
            "",
            f"**{name}**: {data['rows']:,} training rows, {data['tokens']:,} non-pad tokens, "
            f"{data['flops'] / 1e12:.1f} TFLOP per epoch; scored on {Path(data['dev']).name}; "
            f"{data.get('reps', result['reps'])} repetitions at commit {data.get('commit', '?')}.",
            "",
        ]
        rows: dict[str, dict[str, Any]] = {}
        for precision in ("fp32", "bf16"):
            ours, theirs = runs[f"{name} {precision} tunesmith"], runs[f"{name} {precision} trainer"]
            rows[f"tunesmith {precision}"] = ours
            rows[f"Trainer {precision}"] = theirs
            rows[f"**tunesmith / Trainer, {precision}**"] = ratio(ours, theirs, keys)
        fp32 = runs[f"{name} fp32 trainer"]
        across = ratio(runs[f"{name} bf16 tunesmith"], fp32, keys)
        rows["**tunesmith bf16 / Trainer fp32**"] = {**across, "MFU": ""}  # over different peaks: no ratio
        lines += table(rows, keys)
    return lines


def infer_lines(result: dict[str, Any]) -> list[str]:
    keys = ["samples/s", "wall s", "peak RSS MiB", "agree with pipeline", "agree with torch", "accuracy"]
    keys += ["agree with torch, dev", "dev accuracy"]
    runs = dict(result["runs"])
    base = runs["pipeline"]
    for who in [w for w in runs if w != "pipeline"]:
        runs[f"**{who} / pipeline**"] = ratio(runs[who], base, ["samples/s", "wall s", "peak RSS MiB"]) | {
            k: "" for k in keys[3:]
        }
    lines = [
        "",
        f"{result['texts']:,} SST-2 texts the model did not train on, batch 32; samples/s counts the "
        "prediction call alone, wall s the whole process (imports and loading included). "
        "The dev columns score sst2/dev.tsv (872 texts) once, untimed. Export took "
        + ", ".join(f"{s:.1f} s ({name})" for name, s in result["export_s"].items())
        + ". onnx-int8: int8 weights and activations in blocks of 64 (MatMulNBits); onnx-int8-dynamic: one "
        "activation scale per batch (quantize_dynamic). Settings: RUN/onnx/export.json.",
        "",
    ]
    return lines + table(runs, keys)


def sft_lines(result: dict[str, Any]) -> list[str]:
    keys = ["tokens/s", "samples/s", "wall s", "peak RSS MiB", "train loss"]
    runs = dict(result["runs"])
    if "trl" in runs:
        runs["**tunesmith / TRL**"] = ratio(runs["tunesmith"], runs["trl"], keys[:-1]) | {"train loss": ""}
    missing = (
        []
        if "trl" in runs
        else ["", "TRL did not install on this machine (`pip install trl` failed): tunesmith ran alone."]
    )
    return [
        "",
        f"{result['examples']} GSM8K problems ({result['tokens']:,} tokens at max length {result['max_length']}), "
        f"SmolLM2-135M-Instruct, 1 epoch, batch 8, lr 5e-5, {result['precision']}, no packing, "
        "length-grouped batches, loss on the answer only, no gradient checkpointing (TRL's SFTConfig default is on).",
        "",
        *table(runs, keys),
        *missing,
    ]


def _old_sections(target: Path) -> dict[str, str]:
    """The "## title" blocks of the RESULTS.md already there, by title (bench/out/ is not kept between runs)."""
    if not target.exists():
        return {}
    blocks = target.read_text(encoding="utf-8").split("\n## ")[1:]
    return {b.split("\n", 1)[0].strip(): "## " + b.rstrip("\n") for b in blocks}


def render(out: Path, target: Path) -> None:
    sections = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    first = next(iter(sections.values()), None)
    lines = [
        "# Benchmarks: tunesmith against the tools it replaces",
        "",
        "Written by `make bench` (bench/run.py). Each contender runs in its own process, alternating within "
        "each repetition; every number is the median of the repetitions. MFU is model FLOPs per second "
        "(6 per non-embedding parameter per non-pad token, plus attention) over the matmul peak measured in "
        "the same run.",
    ]
    titles = {
        "train": "Training: tunesmith vs Hugging Face Trainer (MiniLM, 1 epoch, batch 32, lr 5e-5, max length 128)",
        "infer": "Inference: `tunesmith predict` vs `transformers.pipeline`",
        "sft": "Generative SFT: tunesmith vs TRL SFTTrainer",
        "tasks": "Every supervised task: tunesmith's defaults vs HF Trainer vs TF-IDF",
        "long": "Long documents: truncation at 128 and 512 tokens vs chunks (MiniLM, BBC News)",
        "serve": "Serving: `tunesmith serve` vs FastAPI + `transformers.pipeline` (MiniLM, one SST-2 text per request)",
    }
    import long
    import serve
    import tasks

    render_section = {"train": train_lines, "infer": infer_lines, "sft": sft_lines, "tasks": tasks.tasks_lines,
                      "long": long.long_lines, "serve": serve.serve_lines}  # fmt: skip
    kept = _old_sections(target)
    reused = [t for n, t in titles.items() if n not in sections and t in kept]
    if reused and "Machine" in kept:  # the kept sections' machine; a rerun section names its own cpu below
        lines += ["", kept["Machine"]]
    elif first:
        lines += ["", "## Machine", "", *machine_lines(first["machine"])]
    for name, title in titles.items():
        if name not in sections and title in kept:  # a section not rerun keeps what the last run wrote
            lines += ["", kept[title]]
        if name in sections:
            s = sections[name]
            lines += [
                "",
                f"## {title}",
                "",
                f"{s['reps']} repetitions, {s['date']}, commit {s['machine']['tunesmith commit']}, "
                f"{s['minutes']:.0f} minutes, on {s['machine']['cpu']} ({s['machine']['cores']} cores).",
            ]
            lines += render_section[name](s)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
