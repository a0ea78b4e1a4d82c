"""`tunesmith serve` as a user runs it: a real uvicorn process on 127.0.0.1, real HTTP, bounded waits.

Contract: for each task the server's records equal the Python API's on the same inputs (labels exactly, numbers
to 1e-5), for torch and ONNX. Limits: each bad request gets its status and one line; the server lives on.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_tasks import CASES

import tunesmith
from conftest import write_rows

START_S = 90
"""Bound on a server's start (imports, model load, warm-up) on a slow 2-core machine."""


class Server:
    """`tunesmith serve RUN --port P [options]` in its own process, ready when /ready says so."""

    def __init__(self, run: Path, *options: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = run.parent / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "tunesmith", "serve", str(run), "--port", str(self.port), *options]
        self.proc = subprocess.Popen(command, stderr=self.log.open("w"), stdout=subprocess.DEVNULL,
                                     env={**os.environ, "TUNESMITH_API_KEY": ""})  # fmt: skip
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"server exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
            try:
                if httpx.get(self.url + "/ready", timeout=2, headers=self.auth()).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.proc.kill()
        raise AssertionError(f"server not ready in {START_S} s: {self.log.read_text()[-2000:]}")

    def auth(self) -> dict[str, str]:
        return {}

    def post(self, body: Any, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + "/predict", json=body, timeout=30, **kw)

    def stop(self) -> int:
        """SIGTERM, then the exit status (the server must exit by itself within 20 s)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


class KeyedServer(Server):
    def auth(self) -> dict[str, str]:
        return {"Authorization": "Bearer s3cret"}


def close(a: Any, b: Any, path: str = "") -> None:
    """Equal records: strings, labels and integers exactly, floats to 1e-5."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, abs_tol=1e-5), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: {sorted(a)} != {sorted(b)}"
        for k in a:
            close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: {len(a)} != {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            close(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory) -> dict[str, Path]:
    """One small trained run per task case (learning is not the point here: equal answers are)."""
    made = {}
    for name, case in CASES.items():
        folder = tmp_path_factory.mktemp(f"serve-{name}")
        train = write_rows(folder / f"train{case.ext}", case.make(60, 1))
        options = {"epochs": 2, "batch_size": 16, "lr": 1e-3, "quiet": True, **case.options}
        tunesmith.finetune(str(train), request.getfixturevalue(case.model), str(folder / "run"), **options)
        made[name] = folder / "run"
    return made


def api_records(run: Path, name: str, inputs: list[Any], backend: str = "torch") -> list[Any]:
    predictor = tunesmith.load(run, backend=backend)
    if CASES[name].task == "generate":
        return [{"response": r} for r in predictor.generate(inputs, max_new_tokens=8)]
    return predictor.predict(inputs)


def wire(inputs: list[Any]) -> list[Any]:
    return [list(x) if isinstance(x, tuple) else x for x in inputs]


@pytest.mark.parametrize("name", list(CASES))
def test_each_task_answers_as_the_python_api(runs, name):
    run, case = runs[name], CASES[name]
    server = Server(run)
    try:
        extra = {"max_new_tokens": 8} if case.task == "generate" else {}
        got = server.post({"inputs": wire(case.sample), **extra})
        assert got.status_code == 200, got.text
        close(got.json(), api_records(run, name, case.sample))
        one = server.post({"inputs": wire(case.sample)[0], **extra})
        assert one.status_code == 200, one.text
        close(one.json(), api_records(run, name, case.sample[:1]))
        if case.task == "generate":  # OpenAI's request shape too
            chat = httpx.post(
                server.url + "/v1/chat/completions",
                timeout=30,
                json={"model": "anything", "max_tokens": 8, "messages": [{"role": "user", "content": case.sample[0]}]},
            )
            assert chat.status_code == 200, chat.text
            message = chat.json()["choices"][0]["message"]
            assert message == {"role": "assistant", "content": api_records(run, name, case.sample[:1])[0]["response"]}
            empty = httpx.post(server.url + "/v1/chat/completions", json={"messages": []}, timeout=30)
            assert empty.status_code == 422 and empty.json()["error"].startswith("messages")
        info = httpx.get(server.url + "/info").json()
        assert info["task"] == case.task and info["backend"] == "torch"
        labels = tunesmith.load(run).labels if case.task != "generate" else None
        assert info["labels"] == (list(labels.names) if labels is not None else None)
        schema = httpx.get(server.url + "/openapi.json").json()
        if case.task == "classification":  # /docs shows the run's own label names
            assert schema["components"]["schemas"]["Prediction"]["properties"]["label"]["enum"] == list(labels.names)
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("name", ["classification", "multilabel", "regression"])
def test_answers_equal_tunesmith_predicts_file_output(runs, name, cli, tmp_path):
    import json

    run, texts = runs[name], ["my invoice was wrong", "the app crashes at login", "thanks, all good"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    code, _, err = cli("predict", str(run), str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.jsonl"))
    assert code == 0, err
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r.pop("text") for r in written] == texts
    server = Server(run)
    try:
        got = server.post({"inputs": texts})
        assert got.status_code == 200, got.text
        close(got.json(), written)
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("name", ["classification", "tagging"])
def test_onnx_backend_answers_as_the_python_api(runs, name):
    from tunesmith.export import export_run

    run, case = runs[name], CASES[name]
    export_run(run, "onnx", None)
    server = Server(run, "--backend", "onnx")
    try:
        got = server.post({"inputs": wire(case.sample)})
        assert got.status_code == 200, got.text
        close(got.json(), api_records(run, name, case.sample, "onnx"))
        assert httpx.get(server.url + "/info").json()["backend"] == "onnx"
    finally:
        assert server.stop() == 0


def test_bad_requests_get_their_status_and_one_line(runs, tmp_path):
    run = runs["classification"]
    server = KeyedServer(
        run, "--api-key", "s3cret", "--max-client-batch-size", "4", "--max-body-mb", "0.01", "--strict"
    )
    key = server.auth()
    try:
        assert httpx.get(server.url + "/health").status_code == 200  # liveness needs no key
        denied = server.post({"inputs": "my invoice"})
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert server.post({"inputs": "x"}, headers={"Authorization": "Bearer wrong"}).status_code == 401
        cases = {
            "not json": (422, "body: not valid JSON"),
            '{"inputs": 3}': (422, "inputs"),
            '{"inputs": []}': (422, "inputs: an empty list"),
            '{"texts": ["a"]}': (422, "inputs"),
            '{"inputs": [["a", "b"], ["c", "d"]]}': (422, "single texts"),
            '{"inputs": "a", "top_k": 99}': (422, "top_k"),
            '{"inputs": ["a", "b", "c", "d", "e"]}': (413, "5 items"),
            '{"inputs": "' + "word " * 4000 + '"}': (413, "body over"),
            '{"inputs": ["short", "' + "word " * 300 + '"]}': (413, "inputs[1]: 302 tokens, over the run's max_length"),
        }
        for body, (status, says) in cases.items():
            got = httpx.post(server.url + "/predict", content=body, timeout=30,
                             headers={**key, "Content-Type": "application/json"})  # fmt: skip
            assert got.status_code == status, (body[:40], got.text)
            line = got.json()["error"]
            assert says in line and "\n" not in line, (body[:40], line)
        good = server.post({"inputs": ["my invoice", "login error"]}, headers=key)
        assert good.status_code == 200 and len(good.json()) == 2  # the server lived through all of it
        metrics = httpx.get(server.url + "/metrics", headers=key).text
        assert 'tunesmith_requests_total{path="/predict",status="422"} 6.0' in metrics
        assert 'tunesmith_requests_total{path="/predict",status="413"} 3.0' in metrics
    finally:
        assert server.stop() == 0
    lines = [ln for ln in server.log.read_text().splitlines() if ln.startswith("{")]
    assert lines and all("word" not in ln for ln in lines)  # access lines never hold request bodies


def post_all(server: Server, bodies: list[Any]) -> list[httpx.Response]:
    """Every body posted at once from its own thread."""
    out: list[Any] = [None] * len(bodies)

    def send(i: int) -> None:
        out[i] = server.post(bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return out


def batches_run(server: Server) -> float:
    """Model calls so far, by /metrics; its time histogram counts the same calls."""
    found = {}
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("tunesmith_batch_items_count", "tunesmith_batch_seconds_count"):
            found[name] = float(value)
    assert len(found) == 2 and len(set(found.values())) == 1, found
    return found["tunesmith_batch_items_count"]


def test_concurrent_requests_share_batches_and_each_gets_its_own_answers(runs):
    run = runs["classification"]
    texts = [f"invoice {i} " * (1 + i % 5) for i in range(16)]
    expected = tunesmith.load(run).predict(texts)
    server = Server(run, "--max-wait-ms", "200")
    try:
        before = batches_run(server)
        answers = post_all(server, [{"inputs": [t]} for t in texts])
        for got, want in zip(answers, expected, strict=True):
            assert got.status_code == 200, got.text
            close(got.json(), [want])
        batches = batches_run(server) - before
        assert batches < len(texts), f"{batches:.0f} batches for {len(texts)} concurrent requests"
    finally:
        assert server.stop() == 0


def test_overload_is_429_and_slow_is_504(runs):
    run = runs["classification"]
    server = Server(run, "--max-concurrent", "1", "--max-wait-ms", "1500")
    try:
        first, second = post_all(server, [{"inputs": "my invoice"}, {"inputs": "login error"}])
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 429], statuses
        refused = first if first.status_code == 429 else second
        assert refused.headers["retry-after"] == "1"
    finally:
        assert server.stop() == 0
    server = Server(run, "--timeout", "0.05", "--max-wait-ms", "1000")
    try:
        late = server.post({"inputs": "my invoice"})
        assert late.status_code == 504 and "0.05 s" in late.json()["error"]
    finally:
        assert server.stop() == 0


def test_sigterm_finishes_the_request_in_flight(runs):
    run = runs["classification"]
    server = Server(run, "--max-wait-ms", "1000")
    answer: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: answer.append(server.post({"inputs": "my invoice"})))
    sender.start()
    time.sleep(0.3)  # the request is queued in the batcher, waiting for company
    started = time.monotonic()
    assert server.stop() == 0
    sender.join(timeout=30)
    assert answer and answer[0].status_code == 200, answer
    assert time.monotonic() - started < 20


def test_a_bad_run_folder_is_one_line(tmp_path, cli):
    code, _, err = cli("serve", str(tmp_path / "nowhere"))
    assert code == 2 and "nowhere" in err and "Traceback" not in err


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def load(url: str, clients: int, seconds: float, stop_at: float | None = None) -> dict[str, list[Any]]:
    """`clients` callers posting one after another for `seconds`; every 50th body malformed, every 100th over the
    body limit. Returns each kind's statuses (or the exception's name when no answer came)."""
    import asyncio

    good = {"inputs": ["my invoice was wrong", "login error after the update"]}
    oversized = json_bytes({"inputs": "word " * 4000})
    results: dict[str, list[Any]] = {"good": [], "bad": [], "big": []}
    sent = 0
    deadline = time.monotonic() + seconds

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            sent += 1
            kind = "bad" if sent % 50 == 7 else "big" if sent % 100 == 13 else "good"
            body = {"bad": b'{"inputs": [', "big": oversized, "good": json_bytes(good)}[kind]
            try:
                got = await http.post(url + "/predict", content=body, headers={"Content-Type": "application/json"})
                results[kind].append(got.status_code)
                if kind == "good" and got.status_code == 200:
                    assert len(got.json()) == 2
            except httpx.TransportError as e:
                results[kind].append(type(e).__name__)
                return

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return results


def json_bytes(body: Any) -> bytes:
    import json

    return json.dumps(body).encode()


def test_64_clients_with_bad_requests_mixed_in(runs):
    import asyncio

    server = Server(runs["classification"], "--max-body-mb", "0.01")
    try:
        asyncio.run(load(server.url, 64, 2))  # warm: the first batches pay one-off costs
        before = rss_kib(server.proc.pid)
        results = asyncio.run(load(server.url, 64, 8))
        after = rss_kib(server.proc.pid)
        assert len(results["good"]) > 64 and results["bad"] and results["big"]
        assert set(results["good"]) == {200}, sorted(set(map(str, results["good"])))
        assert set(results["bad"]) == {422} and set(results["big"]) == {413}
        assert after < before * 1.2, f"RSS {before} -> {after} KiB over 8 s of load"
    finally:
        assert server.stop() == 0


def test_429_under_overload_then_recovery(runs):
    import asyncio

    server = Server(runs["classification"], "--max-concurrent", "2", "--max-wait-ms", "20")
    try:
        results = asyncio.run(load(server.url, 16, 3))
        statuses = set(results["good"])
        assert 429 in statuses and 200 in statuses and statuses <= {200, 429}, statuses
        assert server.post({"inputs": "my invoice"}).status_code == 200  # recovered once the crowd left
    finally:
        assert server.stop() == 0


def test_sigterm_under_load_completes_what_was_in_flight(runs):
    import asyncio

    server = Server(runs["classification"])

    async def scenario() -> dict[str, list[Any]]:
        running = asyncio.ensure_future(load(server.url, 16, 10))
        await asyncio.sleep(2)
        server.proc.send_signal(signal.SIGTERM)
        return await running

    results = asyncio.run(scenario())
    assert server.proc.wait(timeout=20) == 0
    answered = [s for s in results["good"] if isinstance(s, int)]
    assert answered and set(answered) == {200}, set(answered)  # a request it took is answered, none half-done


def test_workers_each_answer_alike(runs):
    run = runs["classification"]
    texts = ["my invoice was wrong", "login error"]
    server = Server(run, "--workers", "2")
    try:
        answers = post_all(server, [{"inputs": texts}] * 6)
        for got in answers:
            assert got.status_code == 200, got.text
            close(got.json(), tunesmith.load(run).predict(texts))
    finally:
        assert server.stop() == 0


def test_counting_tokens_leaves_the_predictors_tokenizer_alone(runs):
    """The server counts a request's tokens on the event loop's threads while the batcher predicts: with one
    shared fast tokenizer, counting (untruncated) switched off the predictor's truncation mid-batch, so a long text
    reached the model whole and its batch failed with a 500 (seen under load with SIGTERM)."""
    from tunesmith.serve_inputs import Service

    service = Service(runs["classification"], "torch")
    service.load()
    shared = service.predictor.tokenizer
    shared("warm up", truncation=True, max_length=service.predictor.max_length)
    before = shared.backend_tokenizer.truncation
    assert before is not None
    long = "word " * 4000
    chunking = service.predictor.chunking
    most = service.predictor.max_length * (chunking.max_chunks if chunking is not None else 1)
    assert service.cost([long], strict=False) == most  # counted whole, then capped at what the run reads
    assert shared.backend_tokenizer.truncation == before
    stop = time.monotonic() + 3
    failures: list[str] = []

    def count() -> None:
        while time.monotonic() < stop:
            service.cost([long] * 8, strict=False)

    counters = [threading.Thread(target=count) for _ in range(2)]
    for t in counters:
        t.start()
    while time.monotonic() < stop:  # the batcher's side, with long texts that must stay truncated
        try:
            service.run_batch([long, "my invoice was wrong"], (None, False))
        except Exception as e:  # noqa: BLE001 (the failure is the finding)
            failures.append(repr(e))
    for t in counters:
        t.join()
    assert not failures, failures[:2]
