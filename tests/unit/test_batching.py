"""The dynamic batcher: batches concurrent calls, never runs expired rows, sheds when full."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import numpy.typing as npt
import pytest

from gateway.backends.batching import DynamicBatcher
from gateway.errors import BackendFailure, DeadlineExpired, Overloaded


class RecordingModel:
    """Scores a row as the sum of its features; records every call's row count."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.calls: list[int] = []
        self.hold = hold

    def __call__(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        if self.hold is not None:
            self.hold.wait(10)
        self.calls.append(rows.shape[0])
        return rows.sum(axis=1).astype(np.float64)


def rows(*values: float) -> npt.NDArray[np.float32]:
    return np.array([[v, 0.0] for v in values], dtype=np.float32)


def test_each_caller_gets_its_own_scores() -> None:
    model = RecordingModel()

    async def run() -> list[npt.NDArray[np.float64]]:
        batcher = DynamicBatcher("m/1", model, max_batch=8, max_delay_us=2000, queue_rows=100)
        batcher.start()
        futures = [batcher.submit(rows(float(i), float(i) + 0.5)) for i in range(4)]
        results = await asyncio.gather(*futures)
        await batcher.close()
        return list(results)

    results = asyncio.run(run())
    for i, scores in enumerate(results):
        np.testing.assert_array_equal(scores, [i, i + 0.5])
    assert model.calls == [8]  # four callers, one model call


def test_rows_arriving_while_busy_form_the_next_batch() -> None:
    hold = threading.Event()
    model = RecordingModel(hold)

    async def run() -> None:
        # The worker thread (inline_max_rows=0): the held model must not block the loop.
        batcher = DynamicBatcher(
            "m/1", model, max_batch=16, max_delay_us=0, queue_rows=100, inline_max_rows=0
        )
        batcher.start()
        first = batcher.submit(rows(1.0))
        await asyncio.sleep(0.05)  # let the dispatcher take it and block in the model
        rest = [batcher.submit(rows(float(i))) for i in range(5)]
        hold.set()
        await asyncio.gather(first, *rest)
        await batcher.close()

    asyncio.run(run())
    assert model.calls == [1, 5]


@pytest.mark.parametrize("inline_max_rows", [0, 64], ids=["worker-thread", "inline"])
def test_inline_and_worker_thread_give_the_same_scores(inline_max_rows: int) -> None:
    model = RecordingModel()

    async def run() -> list[npt.NDArray[np.float64]]:
        batcher = DynamicBatcher(
            "m/1",
            model,
            max_batch=4,
            max_delay_us=1000,
            queue_rows=100,
            inline_max_rows=inline_max_rows,
        )
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(rows(float(i))) for i in range(10)))
        await batcher.close()
        return list(results)

    assert [float(r[0]) for r in asyncio.run(run())] == [float(i) for i in range(10)]
    assert sum(model.calls) == 10


def test_a_deadline_answers_the_caller_even_while_the_model_is_busy() -> None:
    hold = threading.Event()

    async def run() -> None:
        batcher = DynamicBatcher(
            "m/1",
            RecordingModel(hold),
            max_batch=1,
            max_delay_us=0,
            queue_rows=10,
            inline_max_rows=0,
        )
        batcher.start()
        busy = batcher.submit(rows(1.0))
        await asyncio.sleep(0.05)  # the model holds the first row
        started = time.monotonic()
        waiting = batcher.submit(rows(2.0), deadline=time.monotonic() + 0.05)
        with pytest.raises(DeadlineExpired):
            await waiting
        assert time.monotonic() - started < 5  # answered by the timer, not the model
        hold.set()
        await busy
        await batcher.close()
        assert batcher.stats.expired == 1  # and never run

    asyncio.run(run())


def test_expired_rows_are_never_run() -> None:
    model = RecordingModel()

    async def run() -> None:
        batcher = DynamicBatcher("m/1", model, max_batch=8, max_delay_us=20_000, queue_rows=100)
        batcher.start()
        expired = batcher.submit(rows(1.0), deadline=time.monotonic() + 0.001)
        live = batcher.submit(rows(2.0), deadline=time.monotonic() + 10)
        with pytest.raises(DeadlineExpired):
            await expired
        np.testing.assert_array_equal(await live, [2.0])
        assert batcher.stats.expired == 1
        await batcher.close()

    asyncio.run(run())
    assert model.calls == [1]


def test_a_full_queue_sheds() -> None:
    hold = threading.Event()

    async def run() -> None:
        batcher = DynamicBatcher(
            "m/1",
            RecordingModel(hold),
            max_batch=2,
            max_delay_us=0,
            queue_rows=3,
            inline_max_rows=0,
        )
        batcher.start()
        first = batcher.submit(rows(1.0))
        await asyncio.sleep(0.05)  # the model holds the first batch
        queued = batcher.submit(rows(1.0, 2.0, 3.0))
        with pytest.raises(Overloaded, match="queue is full"):
            batcher.submit(rows(4.0))
        assert batcher.stats.shed == 1
        hold.set()
        await asyncio.gather(first, queued)
        await batcher.close()

    asyncio.run(run())


@pytest.mark.parametrize("inline_max_rows", [0, 4096], ids=["worker-thread", "inline"])
def test_large_requests_run_in_max_batch_chunks(inline_max_rows: int) -> None:
    model = RecordingModel()

    async def run() -> npt.NDArray[np.float64]:
        batcher = DynamicBatcher(
            "m/1",
            model,
            max_batch=4,
            max_delay_us=0,
            queue_rows=100,
            inline_max_rows=inline_max_rows,
        )
        batcher.start()
        result = await batcher.submit(rows(*range(10)))
        await batcher.close()
        return result

    np.testing.assert_array_equal(asyncio.run(run()), np.arange(10, dtype=np.float64))
    assert model.calls == [4, 4, 2]


def test_model_failure_reaches_every_caller() -> None:
    def broken(_: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        raise RuntimeError("onnx exploded")

    async def run() -> None:
        batcher = DynamicBatcher("m/1", broken, max_batch=8, max_delay_us=1000, queue_rows=100)
        batcher.start()
        futures = [batcher.submit(rows(1.0)) for _ in range(3)]
        for future in futures:
            with pytest.raises(BackendFailure, match="onnx exploded"):
                await future
        assert batcher.stats.failures == 1
        await batcher.close()

    asyncio.run(run())


class SlowModel(RecordingModel):
    """Takes ``seconds`` per call (on the worker thread, like a large model)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        time.sleep(self.seconds)
        return super().__call__(rows)


def test_admission_refuses_what_the_queue_ahead_cannot_finish_in_time() -> None:
    model = SlowModel(0.05)

    async def run() -> DynamicBatcher:
        batcher = DynamicBatcher(
            "m/1", model, max_batch=1, max_delay_us=0, queue_rows=100, inline_max_rows=0
        )
        batcher.start()
        await batcher.submit(rows(1.0))  # measures the service time: ~50 ms a call
        assert batcher.service_s >= 0.04
        first = batcher.submit(rows(1.0))  # runs now
        second = batcher.submit(rows(2.0), deadline=time.monotonic() + 10)  # 2 calls: fits
        with pytest.raises(Overloaded, match="cannot answer in time"):
            # Three calls of ~50 ms ahead of a 60 ms deadline: refused at once, never run.
            batcher.submit(rows(3.0), deadline=time.monotonic() + 0.06)
        await asyncio.gather(first, second)
        # On an idle model a short deadline is no overload: admitted, then it expires.
        alone = batcher.submit(rows(4.0), deadline=time.monotonic() + 0.001)
        with pytest.raises(DeadlineExpired):
            await alone
        await batcher.close()
        return batcher

    batcher = asyncio.run(run())
    assert batcher.stats.shed_late == 1 and batcher.stats.shed == 0
    assert model.calls == [1, 1, 1]  # the refused and the expired rows never ran


def test_an_idle_model_scores_a_call_on_the_spot() -> None:
    model = RecordingModel()

    async def run() -> None:
        # Not even started: the call never reaches the queue or the dispatcher.
        batcher = DynamicBatcher("m/1", model, max_batch=8, max_delay_us=0, queue_rows=100)
        times: list[int] = []
        future = batcher.submit(rows(1.0, 2.0), deadline=time.monotonic() + 10, times=times)
        assert future.done()
        np.testing.assert_array_equal(await future, [1.0, 2.0])
        assert len(times) == 2 and times[0] <= times[1]  # the model call's start and end
        assert batcher.stats.batches == 1 and batcher.stats.rows == 2
        assert batcher.service_s > 0.0  # admission control still learns the service time
        assert batcher.queued_rows == 0

    asyncio.run(run())
    assert model.calls == [2]


def test_calls_submitted_in_the_same_loop_step_after_one_on_the_spot_batch() -> None:
    model = RecordingModel()

    async def run() -> None:
        batcher = DynamicBatcher("m/1", model, max_batch=8, max_delay_us=0, queue_rows=100)
        batcher.start()
        futures = [batcher.submit(rows(float(i))) for i in range(4)]  # one loop step
        assert [f.done() for f in futures] == [True, False, False, False]
        assert [float(s[0]) for s in await asyncio.gather(*futures)] == [0.0, 1.0, 2.0, 3.0]
        # A later step finds the model idle again.
        assert batcher.submit(rows(5.0)).done()
        await batcher.close()

    asyncio.run(run())
    assert model.calls == [1, 3, 1]


def test_calls_arriving_while_a_bulk_request_runs_inline_batch_together() -> None:
    model = RecordingModel()

    async def run() -> None:
        batcher = DynamicBatcher("m/1", model, max_batch=4, max_delay_us=0, queue_rows=100)
        batcher.start()
        bulk = batcher.submit(rows(*range(10)))  # more than a batch: queued, chunked
        await asyncio.sleep(0)  # the dispatcher runs the first chunk, then yields
        small = [batcher.submit(rows(float(i))) for i in range(3)]
        assert not any(f.done() for f in small)  # the model is busy: they wait
        np.testing.assert_array_equal(await bulk, np.arange(10, dtype=np.float64))
        assert [float(s[0]) for s in await asyncio.gather(*small)] == [0.0, 1.0, 2.0]
        await batcher.close()

    asyncio.run(run())
    assert model.calls == [4, 4, 2, 3]


def test_without_score_idle_now_every_call_is_queued() -> None:
    model = RecordingModel()

    async def run() -> None:
        batcher = DynamicBatcher(
            "m/1", model, max_batch=8, max_delay_us=0, queue_rows=100, score_idle_now=False
        )
        batcher.start()
        futures = [batcher.submit(rows(float(i))) for i in range(3)]
        assert not any(f.done() for f in futures)
        assert [float(s[0]) for s in await asyncio.gather(*futures)] == [0.0, 1.0, 2.0]
        await batcher.close()

    asyncio.run(run())
    assert model.calls == [3]  # submitted in one step, scored in one call


def test_a_model_failure_on_the_spot_is_the_callers_error() -> None:
    def broken(_: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        raise RuntimeError("onnx exploded")

    async def run() -> None:
        batcher = DynamicBatcher("m/1", broken, max_batch=8, max_delay_us=0, queue_rows=100)
        future = batcher.submit(rows(1.0))
        with pytest.raises(BackendFailure, match="onnx exploded"):
            await future
        assert batcher.stats.failures == 1 and batcher.stats.batches == 0

    asyncio.run(run())
