"""AdaptiveBatcher: concurrent requests share a call, results go back to their own request."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from kfops.serving.runtime.batching import AdaptiveBatcher

HANG_GUARD_S = 30  # a broken batcher hangs; this only turns a hang into a failure


class Recorder:
    def __init__(self, fail_on=None):
        self.batches: list[list] = []
        self.fail_on = fail_on

    def __call__(self, items):
        self.batches.append(list(items))
        return [ValueError(f"bad {x}") if x == self.fail_on else x * 10 for x in items]


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, HANG_GUARD_S))


def test_concurrent_requests_are_coalesced_and_results_map_back():
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, max_batch_size=64, max_latency_s=0.5)

    async def scenario():
        return await asyncio.gather(*(batcher.submit(i) for i in range(20)))

    assert run(scenario()) == [i * 10 for i in range(20)]
    assert recorder.batches == [list(range(20))]


def test_a_lone_request_does_not_wait_for_the_latency_cap():
    recorder = Recorder()
    # An hour-long cap: if a single request waited for it, the hang guard would fail the test.
    batcher = AdaptiveBatcher(recorder, max_batch_size=64, max_latency_s=3600)
    assert run(batcher.submit(4)) == 40
    assert recorder.batches == [[4]]


def test_batches_never_exceed_max_batch_size_rows():
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, max_batch_size=4, max_latency_s=0.5)

    async def scenario():
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    assert run(scenario()) == [i * 10 for i in range(10)]
    assert [len(b) for b in recorder.batches] == [4, 4, 2]
    assert [x for b in recorder.batches for x in b] == list(range(10))


def test_rows_not_requests_count_towards_the_batch_size():
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, max_batch_size=5, max_latency_s=0.5)

    async def scenario():
        return await asyncio.gather(batcher.submit(1, rows=3), batcher.submit(2, rows=3), batcher.submit(3, rows=1))

    assert run(scenario()) == [10, 20, 30]
    assert recorder.batches == [[1], [2, 3]]


def test_a_failing_item_fails_only_its_own_request():
    batcher = AdaptiveBatcher(Recorder(fail_on=3), max_batch_size=64, max_latency_s=0.5)

    async def scenario():
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)

    results = run(scenario())
    assert results[:3] == [0, 10, 20] and results[4] == 40
    assert isinstance(results[3], ValueError) and str(results[3]) == "bad 3"


def test_a_failing_batch_fails_every_request_in_it():
    def broken(items):
        raise RuntimeError("model exploded")

    batcher = AdaptiveBatcher(broken, max_batch_size=64, max_latency_s=0.5)

    async def scenario():
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    assert [str(r) for r in run(scenario())] == ["model exploded"] * 3


def test_threaded_batches_run_one_at_a_time_and_latecomers_form_the_next_batch():
    release = threading.Event()
    recorder = Recorder()

    def slow(items):
        release.wait(HANG_GUARD_S)
        return recorder(items)

    with ThreadPoolExecutor(max_workers=4) as pool:
        batcher = AdaptiveBatcher(slow, max_batch_size=64, max_latency_s=0.5, executor=pool)

        async def scenario():
            first = asyncio.ensure_future(batcher.submit(0))
            while not recorder.batches and batcher.pending_rows:  # let the first batch start
                await asyncio.sleep(0)
            await asyncio.sleep(0.01)
            later = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
            for _ in range(5):
                await asyncio.sleep(0)
            release.set()
            return await asyncio.gather(first, *later)

        assert run(scenario()) == [0, 10, 20, 30, 40, 50]
    assert recorder.batches == [[0], [1, 2, 3, 4, 5]]


def test_on_batch_reports_rows_per_call():
    sizes = []
    batcher = AdaptiveBatcher(Recorder(), max_batch_size=64, max_latency_s=0.5, on_batch=sizes.append)

    async def scenario():
        await asyncio.gather(batcher.submit(1, rows=2), batcher.submit(2, rows=3))

    run(scenario())
    assert sizes == [5]


def test_zero_latency_dispatches_at_the_end_of_the_tick():
    recorder = Recorder()
    batcher = AdaptiveBatcher(recorder, max_batch_size=64, max_latency_s=0)

    async def scenario():
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)))

    assert run(scenario()) == [0, 10, 20]
    assert recorder.batches == [[0, 1, 2]]


def test_max_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="max_batch_size"):
        AdaptiveBatcher(Recorder(), max_batch_size=0, max_latency_s=0.1)
