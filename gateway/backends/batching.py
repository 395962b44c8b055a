"""A per-model dynamic batcher: concurrent calls share one ONNX Runtime call.

Rows wait in a bounded queue with their deadline. A dispatcher task takes up to
``max_batch`` rows (waiting at most ``max_delay_us`` for a partial batch), drops
those whose deadline has passed, and runs the rest. One batch is in flight per model
at a time, so calls that arrive while the model is busy form the next batch.

Where a batch runs: batches of up to ``inline_max_rows`` rows run on the event-loop
thread, in ``max_batch`` chunks with a yield between chunks; larger ones in the
model's worker thread, where ONNX Runtime releases the GIL (for models whose one call
takes long: GPUs, large networks). A tree ensemble scores 16 rows in ~16 us, while
handing a batch to a thread and back needs the GIL twice: under load the event loop
holds it and the worker waits up to ``sys.getswitchinterval()`` (5 ms) for it: Score
at c=8 ran at 0.51x the bare server's throughput that way against 0.63x inline
(benchmarks/results/worker-thread/ against
benchmarks/results/2026-11-28T192803Z-vm.md). An ONNX Runtime call per request
costs 20-30 us inside a server against 6 us alone (MEASURED.md); batching across
concurrent calls is how that cost is shared.

With no batching delay (the default), a call that finds its model idle is scored
at once on its own step, its future done before ``submit`` returns: behind a gRPC
server, calls reach the batcher one loop step apart, so the queue's hop to the
dispatcher task only added loop steps (1.04 rows per model call in a 10x spike on the
2-core VM, 2026-11-29). Calls submitted later in that same loop step (a stream's
messages, callers woken together) and calls arriving while the model is busy (a
worker-thread batch, a chunked bulk request) queue and batch as before.

Every queued request's deadline is armed as a loop timer: when it fires before the scores
arrive, the caller gets DeadlineExpired at once (and the row is skipped if still
queued), without a per-request ``wait_for`` task.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from gateway.errors import BackendFailure, DeadlineExpired, Overloaded
from gateway.threadnames import name_this_thread

T = TypeVar("T")
ScoreFn = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float64]]


@dataclass(slots=True)
class _Pending:
    rows: npt.NDArray[np.float32]
    deadline: float  # time.monotonic() seconds; inf when none
    future: asyncio.Future[npt.NDArray[np.float64]]
    timer: asyncio.TimerHandle | None
    times: list[int] | None  # filled with the batch's (start, end) perf_counter_ns


def _expire(pending: _Pending, name: str) -> None:
    if not pending.future.done():
        pending.future.set_exception(
            DeadlineExpired(f"deadline passed before model {name} answered")
        )


SERVICE_EWMA_WEIGHT = 0.05
"""Weight of the newest model call in the service-time mean (about the last 20 calls)."""

BATCH_SIZE_EDGES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
"""Upper bounds (rows) of the batch-size histogram's buckets; one more for larger."""


@dataclass(slots=True)
class BatcherStats:
    """Counters a caller may read (and telemetry exports)."""

    batches: int = 0
    rows: int = 0
    expired: int = 0
    shed: int = 0
    """Requests refused because the queue was full (queue_rows)."""
    shed_late: int = 0
    """Requests refused at admission: the work queued ahead of them, at the measured
    service time, would end past their deadline."""
    failures: int = 0
    sizes: list[int] = field(default_factory=lambda: [0] * (len(BATCH_SIZE_EDGES) + 1))
    """Model calls per batch-size bucket (BATCH_SIZE_EDGES, then larger)."""

    def count_batch(self, rows: int) -> None:
        self.batches += 1
        self.rows += rows
        self.sizes[bisect.bisect_left(BATCH_SIZE_EDGES, rows)] += 1


class DynamicBatcher:
    """Queue rows for one model and score them in batches.

    Args:
        name: the model's ``name/version``, for messages.
        score: scores float32 rows; runs in the worker thread.
        max_batch: rows per model call.
        max_delay_us: how long a partial batch may wait for more rows.
        queue_rows: most rows waiting; ``submit`` beyond it raises Overloaded.
        inline_max_rows: batches up to this many rows run on the event-loop thread;
            0 sends every batch to the worker thread.
        score_idle_now: with ``max_delay_us`` 0, a call that finds the model idle
            (nothing queued or running) and fits one inline batch is scored at once in
            ``submit``, its future already done: no queue, no timer, no dispatcher
            hop. False: every call goes through the queue (benchmarks/micro/batcher.py
            compares the two).
    """

    def __init__(
        self,
        name: str,
        score: ScoreFn,
        *,
        max_batch: int,
        max_delay_us: int,
        queue_rows: int,
        inline_max_rows: int = 4096,
        score_idle_now: bool = True,
    ) -> None:
        self.name = name
        self.inline_max_rows = inline_max_rows
        self._score = score
        self.max_batch = max_batch
        self._max_delay_s = max_delay_us / 1e6
        self._score_idle_now = score_idle_now and max_delay_us == 0
        self._now_max_rows = min(max_batch, inline_max_rows)
        self._scored_this_step = False
        """True from a call scored on the spot to the end of the loop step it ran in:
        calls submitted later in the same step queue, and batch together."""
        self.queue_rows = queue_rows
        self._queue: collections.deque[_Pending] = collections.deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"model-{name}", initializer=name_this_thread
        )
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._running = 0
        """1 while a model call is in flight (its rows no longer count as queued)."""
        self.service_s = 0.0
        """Exponentially weighted mean duration of one model call of up to max_batch
        rows, in seconds (0 until the first call): what admission control reckons with."""
        self.stats = BatcherStats()

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    def start(self) -> None:
        """Start the dispatcher on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._dispatch_forever(), name=f"batcher-{self.name}"
            )

    async def close(self) -> None:
        """Finish what is queued, then stop the dispatcher and the worker thread."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None
        self._executor.shutdown(wait=True)

    async def run_in_worker(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(*args)`` on this model's worker thread (raw-tensor inference)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def submit(
        self,
        rows: npt.NDArray[np.float32],
        deadline: float = float("inf"),
        times: list[int] | None = None,
    ) -> asyncio.Future[npt.NDArray[np.float64]]:
        """Queue ``rows`` (float32 [k, width]); the future gives their scores.

        ``times``, when given, receives the ``perf_counter_ns`` at which the model call
        holding these rows started and ended (queue wait and inference, for telemetry).

        Admission: with a finite ``deadline`` and work ahead of them, the rows are
        refused when the model calls ahead of them (the one running, and the queued
        rows in ``max_batch`` chunks, then theirs) at the measured service time per
        call would end past it:
        under a spike the caller gets its fallback at once instead of a late answer,
        and the queue never holds work that cannot finish in time.

        Raises:
            Overloaded: the queue cannot take ``k`` more rows, they could not be
                answered before ``deadline``, or the batcher is closing.
        """
        k = rows.shape[0]
        if self._closing:
            raise Overloaded(f"model {self.name} is unloading")
        if self._queued_rows + k > self.queue_rows:
            self.stats.shed += 1
            raise Overloaded(
                f"model {self.name} queue is full ({self._queued_rows} of "
                f"{self.queue_rows} rows waiting)"
            )
        loop = asyncio.get_running_loop()
        busy = self._queued_rows or self._running or self._scored_this_step
        if busy and deadline != float("inf") and self.service_s > 0.0:
            # Only work queued ahead counts as overload; a deadline shorter than one
            # call on an idle model is a timeout (below).
            calls = -(-(self._queued_rows + k) // self.max_batch) + self._running
            expected = loop.time() + calls * self.service_s
            if expected > deadline:
                self.stats.shed_late += 1
                raise Overloaded(
                    f"model {self.name} cannot answer in time: {calls} model call(s) of "
                    f"~{self.service_s * 1e3:.2f} ms ahead, "
                    f"{max(deadline - loop.time(), 0.0) * 1e3:.2f} ms left"
                )
        future: asyncio.Future[npt.NDArray[np.float64]] = loop.create_future()
        # time.monotonic(), not loop.time(): uvloop's clock is the loop step's start
        # in whole milliseconds, and a route's deadline may be shorter than that.
        if deadline != float("inf") and time.monotonic() + self.service_s > deadline:
            # Even alone, one call would end past the deadline: a timeout known now,
            # answered as the timer would answer it, without spending the model call.
            self.stats.expired += 1
            _expire(_Pending(rows, deadline, future, None, None), self.name)
            return future
        if self._score_idle_now and not busy and k <= self._now_max_rows:
            # An idle model and no batching delay: score now, on the caller's step. A
            # queue and the dispatcher's hop would only add loop steps, since calls
            # reach the batcher one loop step apart (1.04 rows per model call in a
            # 10x spike, 2026-11-29): nothing else would join this batch.
            self._score_now(loop, rows, future, times)
            return future
        pending = _Pending(rows, deadline, future, None, times)
        if deadline != float("inf"):
            # loop.time() is time.monotonic() on asyncio and uvloop alike.
            pending.timer = loop.call_at(deadline, _expire, pending, self.name)
        self._queue.append(pending)
        self._queued_rows += k
        self._wakeup.set()
        return future

    async def _dispatch_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self._max_delay_s > 0 and self._queued_rows < self.max_batch:
                await self._wait_for_more(self._max_delay_s)
            batch = self._take_batch()
            if not batch:
                continue
            rows = batch[0].rows if len(batch) == 1 else np.concatenate([p.rows for p in batch])
            started_ns = time.perf_counter_ns()
            self._running = 1
            try:
                if rows.shape[0] > self.inline_max_rows:
                    scores = await loop.run_in_executor(self._executor, self._run_chunked, rows)
                elif rows.shape[0] <= self.max_batch:
                    scores = self._score(rows)
                else:
                    scores = await self._run_chunked_inline(rows)
            except Exception as exc:  # the runtime's own errors: answered, never raised here
                self._running = 0
                failure = self._failed(exc)
                for pending in batch:
                    self._settle(pending)
                    if not pending.future.done():
                        pending.future.set_exception(failure)
                continue
            ended_ns = time.perf_counter_ns()
            self._running = 0
            calls = -(-rows.shape[0] // self.max_batch)
            self._observe_service((ended_ns - started_ns) / 1e9 / calls)
            self.stats.count_batch(rows.shape[0])
            start = 0
            for pending in batch:
                end = start + pending.rows.shape[0]
                self._settle(pending)
                if pending.times is not None:
                    pending.times += (started_ns, ended_ns)
                if not pending.future.done():  # expired or the caller went away
                    pending.future.set_result(scores[start:end])
                start = end
            if rows.shape[0] <= self.inline_max_rows:
                # Inline batches never yielded: let the answered calls go out first.
                await asyncio.sleep(0)

    def _score_now(
        self,
        loop: asyncio.AbstractEventLoop,
        rows: npt.NDArray[np.float32],
        future: asyncio.Future[npt.NDArray[np.float64]],
        times: list[int] | None,
    ) -> None:
        # Calls submitted later in this loop step (a stream's messages, callers woken
        # together) find the model busy and queue: the dispatcher batches them.
        self._scored_this_step = True
        loop.call_soon(self._end_step)
        started_ns = time.perf_counter_ns()
        try:
            scores = self._score(rows)
        except Exception as exc:  # the runtime's own errors: answered, never raised here
            future.set_exception(self._failed(exc))
            return
        ended_ns = time.perf_counter_ns()
        self._observe_service((ended_ns - started_ns) / 1e9)
        self.stats.count_batch(rows.shape[0])
        if times is not None:
            times += (started_ns, ended_ns)
        future.set_result(scores)

    def _failed(self, exc: Exception) -> BackendFailure:
        """A model call's own error, counted, as its callers receive it."""
        self.stats.failures += 1
        return BackendFailure(f"model {self.name} failed: {exc}")

    def _end_step(self) -> None:
        self._scored_this_step = False

    def _observe_service(self, seconds: float) -> None:
        if self.service_s == 0.0:
            self.service_s = seconds
        else:
            self.service_s += SERVICE_EWMA_WEIGHT * (seconds - self.service_s)

    @staticmethod
    def _settle(pending: _Pending) -> None:
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None

    async def _wait_for_more(self, delay_s: float) -> None:
        deadline = time.monotonic() + delay_s
        while self._queued_rows < self.max_batch and not self._closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _take_batch(self) -> list[_Pending]:
        """Pop up to max_batch rows of live requests; fail the expired ones."""
        now = time.monotonic()
        batch: list[_Pending] = []
        taken = 0
        while self._queue:
            pending = self._queue[0]
            k = pending.rows.shape[0]
            if batch and taken + k > self.max_batch:
                break
            self._queue.popleft()
            self._queued_rows -= k
            if pending.deadline <= now or pending.future.done():
                # Never spend model time on an answer nobody can use: expired (the
                # timer may not have fired yet) or cancelled by a caller that went away.
                self._settle(pending)
                if not pending.future.done():
                    _expire(pending, self.name)
                if pending.deadline <= now:
                    self.stats.expired += 1
                continue
            batch.append(pending)
            taken += k
        return batch

    async def _run_chunked_inline(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        # Bulk rows on the loop thread, one max_batch chunk at a time, yielding between
        # chunks so that calls arriving meanwhile are read, validated and queued. In a
        # worker thread each chunk would need the GIL back from the busy loop.
        n = rows.shape[0]
        out = np.empty(n, dtype=np.float64)
        for start in range(0, n, self.max_batch):
            out[start : start + self.max_batch] = self._score(rows[start : start + self.max_batch])
            await asyncio.sleep(0)
        return out

    def _run_chunked(self, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        # A single request larger than max_batch (ScoreBatch) runs in max_batch chunks:
        # tree ensembles get slower per row past a few dozen rows.
        n = rows.shape[0]
        if n <= self.max_batch:
            return self._score(rows)
        out = np.empty(n, dtype=np.float64)
        for start in range(0, n, self.max_batch):
            out[start : start + self.max_batch] = self._score(rows[start : start + self.max_batch])
        return out
