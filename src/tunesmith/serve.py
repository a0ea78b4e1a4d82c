"""`tunesmith serve`: an HTTP service for any run folder (FastAPI + uvicorn; the `serve` extra).

A thin layer over the run's own predictor (predict.Predictor, tasks/tag.Tagger, generation.Generator): no model
logic here. This module reads requests in text-embeddings-inference's shape ({"inputs": ...}), bounds what one
caller may ask (body, items, concurrency, time), batches callers together (batcher.py) and reports what it did
(/info, /metrics, JSON access lines). The answers are `tunesmith predict`'s records, in input order.
"""

import asyncio
import ctypes
import hmac
import json
import os
import signal
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import ConfigError, TunesmithError

try:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from starlette.datastructures import Headers
except ImportError as missing:  # the extra is not installed: one line from the CLI, not a traceback
    raise ConfigError(f"tunesmith serve needs the serve extra ({missing.name} is missing): "
                      "pip install 'tunesmith[serve]'") from None  # fmt: skip

from tunesmith.batcher import Batcher
from tunesmith.serve_inputs import BadInput, ChatRequest, Service

ANSWERING = ("/predict", "/v1/chat/completions")
"""The paths that run the model: counted against --max-concurrent, timed in the latency histogram."""
BATCH_REQUESTS = 8
"""A batch holds at most this many full requests' items (under load the token budget is usually reached first)."""


@dataclass(frozen=True)
class Limits:
    """What one caller may ask, and how callers are batched (TEI's names where TEI has the setting)."""

    max_batch_tokens: int = 16_384
    """Tokens per batch across callers (a request over it runs alone)."""
    max_client_batch_size: int = 64
    """Items per request; more is 413."""
    max_concurrent_requests: int = 256
    """Requests in flight (queued or running); more is 429 with Retry-After."""
    max_wait_ms: float = 5.0
    """How long the first request of a batch waits for others."""
    max_body_bytes: int = 4 * 1024 * 1024
    timeout_s: float = 60.0
    """A request not answered by then is 504 (its batch, if it started, still finishes)."""
    strict: bool = False
    """413 for a text longer than the run reads in one window (instead of the run's truncation or chunks)."""
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()


def create_app(
    run: str | Path, backend: str = "torch", limits: Limits | None = None, wait_for_model: bool = False
) -> FastAPI:
    """The service of one run folder; the model loads (and is warmed up) when the app starts: in the background,
    or with wait_for_model before the app takes any connection (each of --workers processes does so).
    """
    limits = limits or Limits()
    service = Service(run, backend)  # reads tunesmith.json only: a bad folder is one line before any serving
    _few_arenas()
    registry = CollectorRegistry()
    requests = Counter("tunesmith_requests", "Requests answered, by path and status.", ["path", "status"],
                       registry=registry)  # fmt: skip
    latency = Histogram("tunesmith_request_seconds", "Time to answer a request that runs the model.", registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))  # fmt: skip
    batch_items = Histogram("tunesmith_batch_items", "Items per model call.", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))  # fmt: skip
    batch_seconds = Histogram("tunesmith_batch_seconds", "Time per model call.", registry=registry,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))  # fmt: skip
    tokens_done = Counter("tunesmith_tokens", "Tokens read by the model (what --max-batch-tokens counts).",
                          registry=registry)  # fmt: skip
    items_done = Counter("tunesmith_items", "Items answered (rate() of it is items/s).", registry=registry)
    queue_depth = Gauge("tunesmith_queue_depth", "Requests waiting for a batch.", registry=registry)
    in_flight = Gauge("tunesmith_requests_in_flight", "Requests being answered.", registry=registry)

    def on_batch(items: int, tokens: int, seconds: float) -> None:
        batch_items.observe(items)
        batch_seconds.observe(seconds)
        items_done.inc(items)
        tokens_done.inc(tokens)

    state: dict[str, Any] = {"ready": False, "in_flight": 0}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202 (an async generator)
        batcher = Batcher(service.run_batch, limits.max_batch_tokens, limits.max_client_batch_size * BATCH_REQUESTS,
                          limits.max_wait_ms / 1000, on_batch)  # fmt: skip
        state["batcher"] = batcher
        queue_depth.set_function(lambda: batcher.depth)

        async def warm() -> None:
            """Load θ̃, then pay the first call's one-off costs on a small request, before /ready says ready."""
            try:
                await asyncio.to_thread(service.load)
                batcher.start()
                await batcher.submit(*service.warmup())
            except TunesmithError as e:  # a run folder whose weights cannot load: one line, a non-zero exit
                print(f"error: {e}", file=sys.stderr, flush=True)
                os._exit(2)
            state["ready"] = True

        if wait_for_model:  # uvicorn takes connections only after startup: a worker serves once it is ready
            await warm()
        else:  # /health answers while the model loads; /ready and /predict say 503 until it has
            state["warming"] = asyncio.get_running_loop().create_task(warm())
        yield
        state["ready"] = False
        if "warming" in state and not state["warming"].done():
            state["warming"].cancel()
        await batcher.stop()

    app = FastAPI(title=f"tunesmith: {service.title}", version=service.info()["tunesmith"], lifespan=lifespan,
                  description=service.description())  # fmt: skip
    if limits.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(limits.cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])  # fmt: skip

    def error(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message, "error_type": kind}, status_code=status, headers=headers)

    def refusal(method: str, path: str, headers: Headers) -> JSONResponse | None:
        """The answer to a request refused before any parsing: 401, 411, 413 by Content-Length, or 429."""
        if limits.api_key and path != "/health" and not _authorised(headers, limits.api_key):
            return error(401, "missing or wrong 'Authorization: Bearer <key>'", "unauthorized",
                         {"WWW-Authenticate": "Bearer"})  # fmt: skip
        length = headers.get("content-length", "")
        if method == "POST" and not length.isdigit():
            return error(411, "a request body needs a Content-Length (bodies are limited in size)", "length")
        if int(length or 0) > limits.max_body_bytes:
            return error(413, f"body over {limits.max_body_bytes} bytes", "payload_too_large")
        if path in ANSWERING and state["in_flight"] >= limits.max_concurrent_requests:
            return error(429, f"over {limits.max_concurrent_requests} requests in flight; retry shortly",
                         "overloaded", {"Retry-After": "1"})  # fmt: skip
        return None

    def guarded(inner: Any) -> Any:
        """The app behind the refusals, counted and timed, with one JSON access line per request.

        Plain ASGI rather than @app.middleware("http"): under 64 clients, py-spy put a quarter of the event loop's
        CPU time in BaseHTTPMiddleware's task group and streams (the forward, not the loop, bounds throughput).
        """

        async def guard(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] != "http":  # the lifespan
                return await inner(scope, receive, send)
            started, method, path = time.perf_counter(), scope["method"], scope["path"]
            status = 500

            async def sending(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            refused = refusal(method, path, Headers(scope=scope))
            counted = refused is None and path in ANSWERING
            state["in_flight"] += counted
            in_flight.set(state["in_flight"])
            try:
                await (refused or inner)(scope, receive, sending)
            finally:
                state["in_flight"] -= counted
                in_flight.set(state["in_flight"])
                seconds = time.perf_counter() - started
                if path in ANSWERING:
                    latency.observe(seconds)
                requests.labels(path, str(status)).inc()
                _access(method, path, status, seconds, scope.get("client"))

        return guard

    app.add_middleware(guarded)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """Pydantic's first error as one line naming the field (inputs[2], top_k), not its nested list."""
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return error(422, f"body: not valid JSON ({first.get('msg', '')})", "validation")
        loc = [p for p in first.get("loc", ()) if p != "body"]
        where = "".join(f"[{p}]" if isinstance(p, int) else "" for p in loc[1:])
        field = f"{loc[0]}{where}" if loc else "body"
        if first.get("type") == "missing" or not loc:
            return error(422, f"{field}: {first.get('msg', 'invalid')}", "validation")
        said = service.expects if loc[0] == "inputs" else first.get("msg", "invalid")
        return error(422, f"{field}: {said}", "validation")

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, exc: BadInput) -> JSONResponse:
        return error(exc.status, str(exc), "validation" if exc.status == 422 else "payload_too_large")

    request_model, response_model = service.schemas()

    async def answer(items: list[Any], options: Any) -> Any:
        """The batcher's records for these items, or the error response: 503 loading, 413 too many, 504 late."""
        if not state["ready"]:
            return error(503, "the model is still loading", "unavailable", {"Retry-After": "1"})
        if len(items) > limits.max_client_batch_size:
            raise BadInput(f"inputs: {len(items)} items, over --max-client-batch-size {limits.max_client_batch_size}",
                           413)  # fmt: skip
        cost = await asyncio.to_thread(service.cost, items, limits.strict)
        try:
            return await asyncio.wait_for(state["batcher"].submit(items, cost, options), limits.timeout_s)
        except asyncio.TimeoutError:
            return error(504, f"not answered within {limits.timeout_s:g} s", "timeout")

    # No `from __future__ import annotations` in this module: FastAPI must see the run's own request model here,
    # a local, not the string "request_model".
    answers = list[response_model]  # type: ignore[valid-type]

    @app.post("/predict", response_model=answers, response_model_exclude_unset=True)
    async def predict(body: request_model) -> Any:  # type: ignore[valid-type]
        """One record per input, in input order, as `tunesmith predict` writes them."""
        return await answer(*service.parse(body))

    if service.kind == "prompts":

        @app.post("/v1/chat/completions")
        async def chat_completions(body: ChatRequest) -> Any:
            """OpenAI's chat completion request and reply (no streaming), for clients written against it."""
            options = (body.max_tokens, body.temperature, body.top_p, body.seed or 0)
            got = await answer([[m.model_dump() for m in body.messages]], options)
            if isinstance(got, Response):
                return got
            reply = got[0]["response"]
            return {"id": f"chatcmpl-{time.time_ns():x}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.model or service.title,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                 "finish_reason": "stop"}]}  # fmt: skip

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Response:
        """Readiness: the model is loaded and has answered a warm-up request."""
        if not state["ready"]:
            return error(503, "the model is still loading", "unavailable")
        return JSONResponse({"status": "ready"})

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The run (task, labels, base model, lengths, thresholds, data fingerprints), backend and limits."""
        return {**service.info(), "backend": backend, "limits": {**asdict(limits), "api_key": bool(limits.api_key)}}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _few_arenas() -> None:
    """At most two glibc malloc arenas in this process (M_ARENA_MAX), before the serving threads start.

    glibc gives threads that contend for malloc arenas of their own, up to 8 per core, and keeps what they free:
    under 64 clients (the event loop's, the token counters' and the batcher's threads) the server's RSS grew 8.5%
    from the 10 s reading to the 110 s one; with two arenas, 1.5% (bench/serve.py's soak, 2 cores).
    Elsewhere than glibc (macOS, musl) there is nothing to set.
    """
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # -8: M_ARENA_MAX in glibc's malloc.h
    except (OSError, AttributeError):
        pass


def _access(method: str, path: str, status: int, seconds: float, peer: tuple[str, int] | None) -> None:
    """One JSON line on stderr per request; never its body."""
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "method": method, "path": path, "status": status,
            "ms": round(seconds * 1000, 2), "client": peer[0] if peer else None}  # fmt: skip
    print(json.dumps(line), file=sys.stderr, flush=True)


def _authorised(headers: Headers, key: str) -> bool:
    given = headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


def app_from_env() -> FastAPI:
    """The app of TUNESMITH_SERVE (JSON: run, backend, limits): what each of uvicorn's --workers processes builds."""
    given = json.loads(os.environ["TUNESMITH_SERVE"])
    limits = given["limits"]
    limits["cors_origins"] = tuple(limits.get("cors_origins", ()))
    return create_app(given["run"], given["backend"], Limits(**limits), wait_for_model=True)


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, backend: str = "torch", workers: int = 1,
          limits: Limits | None = None, graceful_s: float = 30.0) -> None:  # fmt: skip
    """Serve until SIGTERM or SIGINT: then stop accepting, finish requests in flight (graceful_s at most), exit 0."""
    import uvicorn

    limits = limits or Limits()
    Service(run, backend)  # a bad run folder or backend is one line here, not one per worker
    options = {"host": host, "port": port, "access_log": False, "timeout_graceful_shutdown": graceful_s,
               "log_level": "warning"}  # fmt: skip
    # uvicorn drains, then re-raises the signal it caught to the handler it found: a no-op one makes a drained
    # shutdown exit 0 instead of dying by SIGTERM.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    if workers > 1:  # each worker process builds its own app (and model) from the environment
        os.environ["TUNESMITH_SERVE"] = json.dumps({"run": str(run), "backend": backend, "limits": asdict(limits)})
        uvicorn.run("tunesmith.serve:app_from_env", factory=True, workers=workers, **options)
    else:
        uvicorn.run(create_app(run, backend, limits), **options)
