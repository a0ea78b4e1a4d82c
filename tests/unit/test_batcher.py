"""The micro-batcher alone: callers share batches, each gets its own results in order, options never mix."""

from __future__ import annotations

import asyncio
import threading

import pytest

from tunesmith.batcher import Batcher


def run(coro):
    return asyncio.run(coro)


class Recorder:
    """A run function that remembers each batch it was given (and from which thread)."""

    def __init__(self) -> None:
        self.batches: list[tuple[list, object]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list, key: object) -> list:
        self.batches.append((list(items), key))
        self.threads.add(threading.current_thread().name)
        return [f"{x}:{key}" for x in items]


def test_concurrent_callers_share_a_batch_and_get_their_own_results():
    recorder = Recorder()

    async def main():
        batcher = Batcher(recorder, max_tokens=1000, max_items=100, max_wait_s=0.2)
        batcher.start()
        got = await asyncio.gather(*(batcher.submit([f"a{i}", f"b{i}"], 2) for i in range(10)))
        await batcher.stop()
        return got

    got = run(main())
    assert got == [[f"a{i}:None", f"b{i}:None"] for i in range(10)]
    assert len(recorder.batches) == 1 and len(recorder.batches[0][0]) == 20
    assert recorder.threads == {"tunesmith-batch_0"}  # off the event loop, in the one worker thread


def test_options_never_mix_and_the_budget_splits_batches():
    recorder = Recorder()

    async def main():
        batcher = Batcher(recorder, max_tokens=10, max_items=100, max_wait_s=0.1)
        batcher.start()
        calls = [batcher.submit([i], 4, "x" if i % 2 else "y") for i in range(8)]
        got = await asyncio.gather(*calls)
        await batcher.stop()
        return got

    got = run(main())
    assert got == [[f"{i}:{'x' if i % 2 else 'y'}"] for i in range(8)]
    for items, key in recorder.batches:
        assert {key} == {"x" if i % 2 else "y" for i in items}
        assert len(items) * 4 <= 10 or len(items) == 1  # within the token budget (a lone request may exceed it)
    assert len(recorder.batches) >= 4


def test_a_lone_request_waits_at_most_max_wait():
    recorder = Recorder()

    async def main():
        batcher = Batcher(recorder, max_tokens=1000, max_items=100, max_wait_s=0.05)
        batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(["only"], 1)
        waited = loop.time() - started
        await batcher.stop()
        return waited

    assert run(main()) < 0.5


def test_a_failing_batch_fails_its_callers_and_the_worker_lives_on():
    calls = []

    def flaky(items, key):
        calls.append(items)
        if len(calls) == 1:
            raise ValueError("boom")
        return items

    async def main():
        batcher = Batcher(flaky, max_tokens=1000, max_items=100, max_wait_s=0.01)
        batcher.start()
        with pytest.raises(ValueError, match="boom"):
            await batcher.submit(["a"], 1)
        again = await batcher.submit(["b"], 1)
        await batcher.stop()
        return again

    assert run(main()) == ["b"]


def test_a_caller_that_gave_up_is_not_run():
    recorder = Recorder()

    async def main():
        batcher = Batcher(recorder, max_tokens=1000, max_items=100, max_wait_s=0.2)
        batcher.start()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(batcher.submit(["late"], 1), 0.01)
        await asyncio.sleep(0.3)
        await batcher.stop()

    run(main())
    assert recorder.batches == []
