"""`tunesmith compare`: the same data, seed and budget under several strategies, in one table.

Each strategy trains in its own process (so its peak memory and time are its own) through the
ordinary `tunesmith train`; this module only builds their configs and reads their run folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.errors import ConfigError, TunesmithError

VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "head": {"strategy.name": "head"},
    "bitfit": {"strategy.name": "bitfit"},
    "lora": {"strategy.name": "lora"},
    "l2sp": {"strategy.l2sp": 0.01},
    "llrd": {"train.layer_lr_decay": 0.8},
    "gradual": {"strategy.unfreeze": "gradual"},
    "random-init": {"strategy.init": "random"},
}
"""Short names for compare; top-K is also accepted (top-2: the top 2 blocks and the head)."""


def variant(name: str) -> dict[str, Any]:
    """Config fields that turn the base config into this strategy."""
    if name in VARIANTS:
        return VARIANTS[name]
    if name.startswith("top-") and name[4:].isdigit():
        return {"strategy.name": name}
    raise ConfigError(f"compare: unknown strategy '{name}'; use {', '.join(VARIANTS)} or top-K")


def compare(base: RunConfig, strategies: list[str], output: Path, test_data: str | None = None) -> list[dict[str, Any]]:
    """Train base under each strategy into output/<name>; write compare.json and compare.md; return the rows."""
    from tunesmith.tasks import resolve

    base, _ = resolve(base)
    for name in strategies:
        variant(name)  # every name is checked before hours of training
    if output.exists() and any(output.iterdir()) and not base.overwrite:
        raise ConfigError(f"{output}: already exists; pass --overwrite or choose another --output")
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in strategies:
        cfg = base.with_values({**variant(name), "output": str(output / name), "quiet": True})
        rows.append(_train_one(name, cfg, test_data))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    (output / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    (output / "compare.md").write_text(markdown(rows, base) + "\n")
    return rows


def _train_one(name: str, cfg: RunConfig, test_data: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config, log = Path(tmp) / "run.yaml", Path(tmp) / "stderr.log"
        config.write_text(cfg.to_yaml())
        started = time.perf_counter()
        # stderr goes to a file, not a pipe: a chatty child could fill a pipe nobody reads while we wait.
        with log.open("w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "train", "--config", str(config)], stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, not the maximum over all children
        seconds = time.perf_counter() - started
        error = log.read_text().strip()
    if os.waitstatus_to_exitcode(status) != 0:
        raise TunesmithError(f"compare: strategy {name} failed: {error.splitlines()[-1] if error else status}")
    run = Path(cfg.output)
    info = json.loads((run / "tunesmith.json").read_text())
    drift = json.loads((run / "drift.json").read_text())
    row = {
        "strategy": name,
        "metric": cfg.eval.metric,
        "eval": info["best"].get("value"),
        "trainable_parameters": info["parameters"]["trainable"],
        "total_parameters": info["parameters"]["total"],
        "train_seconds": round(seconds, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "mean_backbone_drift": mean_backbone_drift(drift),
    }
    if test_data:
        from tunesmith.tasks import for_run, open_run

        _, task = for_run(run)
        test = open_run(run).evaluate_file(test_data)
        row.update({f"test_{name}": test[name] for name in task.headline if name in test})
    return row


def mean_backbone_drift(drift: dict[str, Any]) -> float:
    """Mean relative drift ‖θ̃ − θ̂‖ / ‖θ̂‖ over a drift.json's backbone groups (the head is not θ̂'s)."""
    backbone = [v["relative"] for g, v in drift["groups"].items() if g != "head"]
    return sum(backbone) / len(backbone) if backbone else 0.0


def markdown(rows: list[dict[str, Any]], base: RunConfig) -> str:
    """The comparison as a Markdown table."""
    tested = [k.removeprefix("test_") for k in rows[0] if k.startswith("test_")]
    head = [
        "strategy",
        f"eval {base.eval.metric}",
        *(f"test {name}" for name in tested),
        "trainable params",
        "train time (s)",
        "peak RSS (MiB)",
        "mean backbone drift",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["strategy"], f"{r['eval']:.4f}" if r["eval"] is not None else "-"]
        cells += [f"{r[f'test_{name}']:.4f}" for name in tested]
        cells += [
            f"{r['trainable_parameters']:,}",
            f"{r['train_seconds']:.0f}",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['mean_backbone_drift']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
