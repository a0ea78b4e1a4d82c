"""`make bench` section serve: `tunesmith serve` vs the server a user would write (FastAPI + transformers.pipeline,
one pipeline call per request), same run folder, same texts, same machine, one after the other.

The run: the packaged MiniLM fine-tuned by `tunesmith train` on 2,000 SST-2 rows (1 epoch, so the bench is about
serving, not accuracy). Texts: sst2/dev.tsv sentences, one per request. Each server runs in its own process on
127.0.0.1; clients are httpx async clients in this process, one connection each, opened before the clock starts,
each posting one request after another, at concurrency 1, 8 and 64 for --serve-seconds each after a warm-up.
Then a soak: tunesmith at 64 clients, 10 s to reach its working set, then --soak-seconds with its RSS read every
10 s (growth from the first reading to the last). Clients and server share the machine's cores.

    .venv/bin/python bench/run.py --sections serve [--serve-seconds 20] [--soak-seconds 180]
"""

from __future__ import annotations

import asyncio
import csv
import json
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

BENCH = Path(__file__).resolve().parent
SHARED = BENCH.parents[1] / "shared" / "data"
LEVELS = (1, 8, 64)
BASELINE = """
import sys
from fastapi import FastAPI
from transformers import pipeline

clf = pipeline("text-classification", model=sys.argv[1], top_k=None, device="cpu")
app = FastAPI()


@app.post("/predict")
def predict(body: dict):  # a plain def: FastAPI runs it in its thread pool, as most users' servers do
    inputs = body["inputs"]
    texts = [inputs] if isinstance(inputs, str) else inputs
    return clf(texts, truncation=True, max_length=128)


@app.get("/health")
def health():
    return {"status": "ok"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
"""


def sentences() -> list[str]:
    with (SHARED / "sst2" / "dev.tsv").open(encoding="utf-8") as f:
        return [row["sentence"] for row in csv.DictReader(f, delimiter="\t")]


def train_run(work: Path) -> Path:
    """A MiniLM SST-2 run to serve (trained once; reruns reuse it)."""
    run = work / "serve" / "run"
    if (run / "tunesmith.json").exists():
        return run
    rows = []
    with (SHARED / "sst2" / "train.tsv").open(encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f, delimiter="\t")):
            if i >= 2000:
                break
            rows.append({"text": row["sentence"], "label": row["label"]})
    data = work / "serve" / "train.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tunesmith = str(Path(sys.executable).with_name("tunesmith"))
    subprocess.run([tunesmith, "train", str(data), "--output", str(run), "--epochs", "1", "--quiet"], check=True)
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(who: str, run: Path, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    if who == "tunesmith":
        command = [str(Path(sys.executable).with_name("tunesmith")), "serve", str(run), "--port", str(port)]
        ready = "/ready"
    else:
        script = work / "serve" / "baseline.py"
        script.write_text(BASELINE)
        command = [sys.executable, str(script), str(run), str(port)]
        ready = "/health"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"serve bench: {who} exited {proc.returncode}")
        try:
            if httpx.get(url + ready, timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    sys.exit(f"serve bench: {who} not ready in 180 s")


async def drive(url: str, texts: list[str], clients: int, seconds: float) -> dict[str, Any]:
    """`clients` callers, each posting one text per request, one after another, for `seconds`.

    Each caller has its own one-connection httpx client: with one pool of 64 connections httpcore scans every
    connection per request (a getpeername call each), and that client took half a core of the 2 the servers run
    on, more for the server that answers in bursts (batches) than for the one that answers one at a time.
    """
    latencies: list[float] = []
    failures = 0
    at = 0
    connected = asyncio.Barrier(clients + 1)
    deadline = float("inf")

    async def client() -> None:
        nonlocal at, failures
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=1)) as http:
            await http.get(url + "/health")  # connected before the clock starts: steady state, not the ramp-up
            await connected.wait()
            while time.monotonic() < deadline:
                text = texts[at % len(texts)]
                at += 1
                started = time.perf_counter()
                got = await http.post(url + "/predict", json={"inputs": text})
                if got.status_code != 200:
                    failures += 1
                    continue
                latencies.append(time.perf_counter() - started)

    callers = [asyncio.create_task(client()) for _ in range(clients)]
    await connected.wait()
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(*callers)
    elapsed = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    return {"items/s": len(ms) / elapsed, "p50 ms": statistics.median(ms) if ms else float("nan"),
            "p99 ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else float("nan"),
            "requests": len(ms), "failed": failures}  # fmt: skip


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def serve_section(work: Path, seconds: float, soak_s: float) -> dict[str, Any]:
    run = train_run(work)
    texts = sentences()
    out: dict[str, Any] = {"texts": len(texts), "seconds": seconds, "runs": {}}
    for who in ("pipeline server", "tunesmith"):
        proc, url = start("tunesmith" if who == "tunesmith" else "baseline", run, work)
        try:
            asyncio.run(drive(url, texts, 8, 3))  # warm-up
            for level in LEVELS:
                result = asyncio.run(drive(url, texts, level, seconds))
                out["runs"][f"{who} @{level}"] = {"who": who, "clients": level, **result}
                print(f"  serve {who} @{level}: {result}", file=sys.stderr, flush=True)
            if who == "tunesmith" and soak_s:
                out["soak"] = soak(proc.pid, url, texts, soak_s)
        finally:
            stop(proc)
    return out


def soak(pid: int, url: str, texts: list[str], seconds: float) -> dict[str, Any]:
    """64 clients for `seconds`, RSS read every 10 s, after 10 s at that load: a leak grows on, a working set
    (64 connections' buffers, batches of their size) is there by then.
    """
    asyncio.run(drive(url, texts, 64, 10))
    readings: list[float] = []

    async def watch() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            readings.append(rss_mib(pid))
            await asyncio.sleep(10)

    async def both() -> dict[str, Any]:
        result, _ = await asyncio.gather(drive(url, texts, 64, seconds), watch())
        return result

    result = asyncio.run(both())
    growth = readings[-1] / readings[0] - 1 if len(readings) > 1 else float("nan")
    print(f"  serve soak: {result}, RSS {readings[0]:.0f} -> {readings[-1]:.0f} MiB", file=sys.stderr)
    return {**result, "seconds": seconds, "rss_mib": readings, "rss growth": growth}


def serve_lines(result: dict[str, Any]) -> list[str]:
    """RESULTS.md's serve section: the table per concurrency, the ratios, the targets, the soak."""
    text = ["", (__doc__ or "").split("\n\n", 1)[1].split("\n    .venv")[0].strip(), "",
            "| server | clients | items/s | p50 ms | p99 ms | failed |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    runs = result["runs"]
    for r in runs.values():
        text.append(f"| {r['who']} | {r['clients']} | {r['items/s']:.1f} | {r['p50 ms']:.1f} | {r['p99 ms']:.1f} | "
                    f"{r['failed']} |")  # fmt: skip
    text.append("")
    for level in LEVELS:
        ours, base = runs.get(f"tunesmith @{level}"), runs.get(f"pipeline server @{level}")
        if ours and base:
            p50, p99 = ours["p50 ms"] - base["p50 ms"], ours["p99 ms"] - base["p99 ms"]
            ratio = ours["items/s"] / base["items/s"]
            text.append(f"- {level} clients: tunesmith {ratio:.2f}x the items/s, p50 {p50:+.1f} ms, p99 {p99:+.1f} ms")
    ours, base = runs.get("tunesmith @64"), runs.get("pipeline server @64")
    if ours and base:
        ok = ours["items/s"] >= 2 * base["items/s"] and ours["p99 ms"] <= base["p99 ms"]
        text.append(f"- target at 64 clients (>= 2x items/s, p99 no worse): {'met' if ok else 'MISSED'}")
    ours, base = runs.get("tunesmith @1"), runs.get("pipeline server @1")
    if ours and base:
        ok = ours["p50 ms"] <= base["p50 ms"] + 10
        text.append(f"- target for one client (p50 within 10 ms of the baseline's): {'met' if ok else 'MISSED'}")
    if "soak" in result:
        s = result["soak"]
        text.append(f"- soak: {s['seconds']:.0f} s at 64 clients, {s['items/s']:.1f} items/s, {s['failed']} failed; "
                    f"RSS {s['rss_mib'][0]:.0f} -> {s['rss_mib'][-1]:.0f} MiB ({s['rss growth']:+.1%}; target under "
                    f"+5%): {'met' if s['rss growth'] < 0.05 else 'MISSED'}")  # fmt: skip
    return text
