"""Load generator for riskwire.v1.Scoring: closed or open loop, over several processes.

Run from the repository root, against any server speaking riskwire.v1.Scoring::

    python -m benchmarks.load.loadgen --target 127.0.0.1:50051 --method score \\
        --mode closed --concurrency 8 --duration 10 [--server-pid PID] [--out r.json]
    python -m benchmarks.load.loadgen --target ... --mode open --rate 3000 --duration 10

- closed loop: ``--concurrency`` callers, each sending its next call when the last one
  returns, until ``--requests`` calls or ``--duration`` seconds, whichever comes first.
- open loop: calls start at a fixed ``--rate`` whatever the server does; each latency
  is measured from the call's *intended* start, so a server (or client) that falls
  behind shows it in the latency instead of hiding it (coordinated omission).
- ``--method batch`` sends ScoreBatch of ``--batch-size`` transactions (and reports
  transactions/s); ``--method stream`` keeps ``--concurrency`` ScoreStream calls open,
  with up to ``--stream-depth`` messages in flight on each (closed loop).

Requests come from a deterministic pool (``--seed``): realistic transactions from
gateway.data.synth, serialized once up front and sent as raw bytes through a generic
call, so the client spends its CPU on gRPC, not on protobuf. Every process has its own
channel on uvloop; latencies from all of them are merged and the percentiles computed
exactly (nearest rank) over the calls that succeeded; failures are counted by status.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import time
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import uvloop

from benchmarks.load import machine
from gateway.data.synth import generate
from gateway.features.columns import transactions_from_table
from riskwire.v1 import scoring_pb2

SERVICE = "/riskwire.v1.Scoring/"
METHODS = {
    "score": SERVICE + "Score",
    "batch": SERVICE + "ScoreBatch",
    "stream": SERVICE + "ScoreStream",
}
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}
# Responses checked per process during warm-up: catches a server answering the wrong
# transaction before anything is measured, at no cost to the measured phase.
_CHECKED_RESPONSES = 64
_Message = tuple[str, int, Any]  # (kind, process index, payload) from a child process


@dataclass(frozen=True)
class LoadConfig:
    """One load run; see the module docstring and ``--help`` for each field."""

    target: str
    method: str = "score"
    mode: str = "closed"
    concurrency: int = 1
    requests: int | None = None
    duration_s: float | None = 10.0
    rate: float | None = None
    batch_size: int = 256
    stream_depth: int = 1
    procs: int = 1
    deadline_ms: float = 1000.0
    warmup_s: float = 1.0
    seed: int = 7
    pool_size: int = 1024
    server_pid: int | None = None
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        if self.mode not in ("closed", "open"):
            raise ValueError(f"mode must be closed or open, got {self.mode!r}")
        if self.concurrency < self.procs or self.procs < 1:
            raise ValueError(
                f"need 1 <= procs <= concurrency, got procs={self.procs} "
                f"concurrency={self.concurrency}"
            )
        if self.mode == "open":
            if not self.rate or self.rate <= 0:
                raise ValueError("open loop needs --rate > 0")
            if not self.duration_s:
                raise ValueError("open loop needs --duration (it is bounded by time)")
        elif self.requests is None and not self.duration_s:
            raise ValueError("closed loop needs --requests and/or --duration")
        if self.requests is not None and self.requests < self.procs:
            raise ValueError(f"requests must be >= procs, got {self.requests}")
        if self.batch_size < 1 or self.stream_depth < 1 or self.pool_size < 1:
            raise ValueError("batch_size, stream_depth and pool_size must be >= 1")
        if self.deadline_ms <= 0:
            raise ValueError(f"deadline_ms must be > 0, got {self.deadline_ms}")


# --- the request pool ---------------------------------------------------------------


class ResponseMismatch(Exception):
    """The server's reply does not answer the request it was sent for."""


class LoadError(Exception):
    """A load run could not be completed: no connection, a client crash, a bad reply."""


@dataclass
class RequestPool:
    """Pre-serialized requests and the transaction ids each one's reply must carry."""

    payloads: list[bytes]
    expected_ids: list[list[str]]

    def check(self, index: int, response: bytes, method: str) -> None:
        """Raise if ``response`` does not answer ``payloads[index]``, id for id."""

        if method == "batch":
            replies = list(scoring_pb2.ScoreBatchResponse.FromString(response).responses)
        else:
            replies = [scoring_pb2.ScoreResponse.FromString(response)]
        got = [r.transaction_id for r in replies]
        fallbacks = sum(r.decision_source == scoring_pb2.FALLBACK for r in replies)
        if fallbacks:
            # A run answered by the fallback policy would time the shortcut, not the model.
            raise ResponseMismatch(
                f"{fallbacks} of {len(replies)} answers came from the fallback policy "
                f"({replies[0].fallback_reason or 'see decision_source'}), not a model"
            )
        if got != self.expected_ids[index]:
            want = self.expected_ids[index]
            raise ResponseMismatch(
                f"server answered transaction ids {got[:3]}... for {want[:3]}..."
            )


def build_pool(method: str, seed: int, pool_size: int, batch_size: int) -> RequestPool:
    """Build the deterministic request pool: the same arguments give the same bytes.

    Transactions come from the project's synthetic generator (the distribution the demo
    models are trained on), so a real server runs its real paths: several currencies,
    channels, numeric / categorical extras and monitoring attributes.
    """

    # Batches get distinct transactions: at least four different batches to cycle.
    n_txns = max(pool_size, 4 * batch_size) if method == "batch" else pool_size
    txns = transactions_from_table(generate(max(n_txns, 100), seed))[:n_txns]
    if method != "batch":
        return RequestPool(
            # deterministic=True orders map entries, so the bytes are the same every run.
            payloads=[
                scoring_pb2.ScoreRequest(transaction=t).SerializeToString(deterministic=True)
                for t in txns
            ],
            expected_ids=[[t.transaction_id] for t in txns],
        )
    chunks = [txns[i : i + batch_size] for i in range(0, n_txns - batch_size + 1, batch_size)]
    return RequestPool(
        payloads=[
            scoring_pb2.ScoreBatchRequest(transactions=c).SerializeToString(deterministic=True)
            for c in chunks
        ],
        expected_ids=[[t.transaction_id for t in c] for c in chunks],
    )


# --- one client process ---------------------------------------------------------------


@dataclass
class _Recorder:
    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)  # calls / messages, by status
    stream_failures: Counter[str] = field(default_factory=Counter)  # ScoreStream calls
    max_send_lag_ns: int = 0


class _Budget:
    """Whether a caller may start another call: time and request count left."""

    def __init__(self, end_ns: int | None, requests: int | None) -> None:
        self.end_ns = end_ns
        self.remaining = requests

    def take(self) -> bool:
        if self.end_ns is not None and time.perf_counter_ns() >= self.end_ns:
            return False
        if self.remaining is not None:
            if self.remaining <= 0:
                return False
            self.remaining -= 1
        return True


class _Phase:
    """Drives one phase (warm-up or measured) of one process's share of the load."""

    def __init__(
        self,
        cfg: LoadConfig,
        channel: grpc.aio.Channel,
        pool: RequestPool,
        proc_index: int,
        rec: _Recorder,
        check: bool,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.rec = rec
        self.checks_left = _CHECKED_RESPONSES if check else 0
        self.proc_index = proc_index
        self.deadline_s = cfg.deadline_ms / 1000.0
        self.callers = _share(cfg.concurrency, cfg.procs, proc_index)
        # Raw bytes both ways: no serializer, so no protobuf work in the client.
        path = METHODS[cfg.method]
        if cfg.method == "stream":
            self.open_stream = channel.stream_stream(path, None, None)
        else:
            self.unary = channel.unary_unary(path, None, None)

    def _start_index(self, caller: int) -> int:
        """Where a caller starts in the pool: processes and callers spread over it."""
        n = len(self.pool.payloads)
        slot = self.proc_index + caller * self.cfg.procs
        return slot * n // self.cfg.concurrency

    def _ok(self, index: int, started_ns: int, response: bytes) -> None:
        self.rec.latencies_ns.append(time.perf_counter_ns() - started_ns)
        if self.checks_left:
            self.checks_left -= 1
            self.pool.check(index, response, self.cfg.method)

    async def run(self, duration_s: float | None, requests: int | None) -> None:
        start = time.perf_counter_ns()
        end = None if duration_s is None else start + int(duration_s * 1e9)
        if self.cfg.mode == "open":
            assert end is not None
            await self._open(start, end)
            return
        budget = _Budget(end, requests)
        worker = self._closed_stream if self.cfg.method == "stream" else self._closed_unary
        await asyncio.gather(*(worker(budget, c) for c in range(self.callers)))

    # -- closed loop

    async def _closed_unary(self, budget: _Budget, caller: int) -> None:

        n = len(self.pool.payloads)
        index = self._start_index(caller)
        while budget.take():
            index = (index + 1) % n
            started = time.perf_counter_ns()
            try:
                response = await self.unary(self.pool.payloads[index], timeout=self.deadline_s)
            except grpc.aio.AioRpcError as exc:
                self.rec.errors[exc.code().name] += 1
            else:
                self._ok(index, started, response)

    async def _closed_stream(self, budget: _Budget, caller: int) -> None:
        n = len(self.pool.payloads)
        cursor = [self._start_index(caller)]
        while True:
            in_flight = asyncio.Semaphore(self.cfg.stream_depth)

            async def next_item(sem: asyncio.Semaphore = in_flight) -> tuple[int, int] | None:
                await sem.acquire()
                if not budget.take():
                    return None
                cursor[0] = (cursor[0] + 1) % n
                return cursor[0], time.perf_counter_ns()

            done = await self._stream_session(next_item, in_flight.release)
            # A stream that fails before answering anything is not retried: the server
            # refuses it (UNIMPLEMENTED, UNAVAILABLE); the error count says so.
            if done is not False:
                return

    # -- open loop

    async def _open(self, start_ns: int, end_ns: int) -> None:
        assert self.cfg.rate is not None
        interval_ns = 1e9 * self.cfg.procs / self.cfg.rate
        # Processes interleave their arrivals instead of all sending at once.
        first_ns = start_ns + self.proc_index * 1e9 / self.cfg.rate
        if self.cfg.method == "stream":
            await self._open_stream(first_ns, interval_ns, end_ns)
        else:
            await self._open_unary(first_ns, interval_ns, end_ns)

    async def _arrivals(
        self, first_ns: float, interval_ns: float, end_ns: int, send: Callable[[int, int], None]
    ) -> None:
        """Call ``send(pool index, intended start)`` on schedule until ``end_ns``."""
        n = len(self.pool.payloads)
        index = self._start_index(0)
        k = 0
        while (intended := int(first_ns + k * interval_ns)) < end_ns:
            now = time.perf_counter_ns()
            if intended > now:
                await asyncio.sleep((intended - now) / 1e9)
            self.rec.max_send_lag_ns = max(
                self.rec.max_send_lag_ns, time.perf_counter_ns() - intended
            )
            index = (index + 1) % n
            send(index, intended)
            k += 1

    async def _open_unary(self, first_ns: float, interval_ns: float, end_ns: int) -> None:

        tasks: set[asyncio.Task[None]] = set()

        async def call(index: int, intended_ns: int) -> None:
            try:
                response = await self.unary(self.pool.payloads[index], timeout=self.deadline_s)
            except grpc.aio.AioRpcError as exc:
                self.rec.errors[exc.code().name] += 1
            else:
                self._ok(index, intended_ns, response)

        def send(index: int, intended_ns: int) -> None:
            task = asyncio.create_task(call(index, intended_ns))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        await self._arrivals(first_ns, interval_ns, end_ns, send)
        if tasks:
            await asyncio.wait(tasks)

    async def _open_stream(self, first_ns: float, interval_ns: float, end_ns: int) -> None:
        # One queue per stream; arrivals are dealt to the streams in turn.
        queues: list[asyncio.Queue[tuple[int, int] | None]] = [
            asyncio.Queue() for _ in range(self.callers)
        ]
        refused: set[int] = set()
        turn = [0]

        def send(index: int, intended_ns: int) -> None:
            stream_index = turn[0] % len(queues)
            turn[0] += 1
            if stream_index in refused:
                self.rec.errors["NOT_SENT"] += 1
            else:
                queues[stream_index].put_nowait((index, intended_ns))

        async def stream(stream_index: int) -> None:
            q = queues[stream_index]
            while (done := await self._stream_session(q.get, lambda: None)) is not True:
                if done is None:
                    # Refused outright: what waits for this stream is never sent.
                    refused.add(stream_index)
                    while not q.empty():
                        self.rec.errors["NOT_SENT"] += q.get_nowait() is not None
                    return

        streams = [asyncio.create_task(stream(i)) for i in range(len(queues))]
        await self._arrivals(first_ns, interval_ns, end_ns, send)
        for q in queues:
            q.put_nowait(None)
        await asyncio.gather(*streams)

    # -- one ScoreStream call

    async def _stream_session(
        self,
        next_item: Callable[[], Awaitable[tuple[int, int] | None]],
        on_reply: Callable[[], None],
    ) -> bool | None:
        """Run one ScoreStream call until ``next_item`` gives None or the call fails.

        Returns True at the normal end, False when the call failed after answering at
        least once (worth reopening), None when it failed before any answer.
        """

        call = self.open_stream(None)  # no iterator: requests go through call.write()
        # Replies come in request order, so a FIFO pairs each with its start time.
        pending: deque[tuple[int, int]] = deque()
        answered = 0

        async def writer() -> None:
            while (item := await next_item()) is not None:
                pending.append(item)
                await call.write(self.pool.payloads[item[0]])
            await call.done_writing()

        writing = asyncio.create_task(writer())
        try:
            # grpc-stubs lacks grpc.aio.EOF, the end-of-stream sentinel of read().
            while (response := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
                index, started = pending.popleft()
                self._ok(index, started, cast(bytes, response))
                answered += 1
                on_reply()
            await writing
        except grpc.aio.AioRpcError as exc:
            writing.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await writing
            # Every message in flight on the broken stream failed with it.
            self.rec.errors[exc.code().name] += len(pending)
            self.rec.stream_failures[exc.code().name] += 1
            return False if answered else None
        return True


def _share(total: int, parts: int, index: int) -> int:
    """Part ``index`` of ``total`` split as evenly as possible into ``parts``."""
    return total // parts + (1 if index < total % parts else 0)


async def _child(index: int, cfg: LoadConfig, results: mp.Queue[_Message], go: EventType) -> None:
    pool = build_pool(cfg.method, cfg.seed, cfg.pool_size, cfg.batch_size)
    async with grpc.aio.insecure_channel(cfg.target) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), cfg.connect_timeout_s)
        except TimeoutError:
            raise ConnectionError(
                f"no connection to {cfg.target} within {cfg.connect_timeout_s:g} s"
            ) from None
        if cfg.warmup_s > 0:
            # Same load as measured, checked, thrown away: connections, server caches
            # and the client's own code paths are warm when measuring starts.
            await _Phase(cfg, channel, pool, index, _Recorder(), check=True).run(cfg.warmup_s, None)
        results.put(("ready", index, None))
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, go.wait, 600.0):
            raise TimeoutError("no go signal from the parent in 600 s")
        rec = _Recorder()
        requests = None if cfg.requests is None else _share(cfg.requests, cfg.procs, index)
        cpu0, t0 = time.process_time_ns(), time.perf_counter_ns()
        await _Phase(cfg, channel, pool, index, rec, check=False).run(cfg.duration_s, requests)
        t1, cpu1 = time.perf_counter_ns(), time.process_time_ns()
    results.put(("finished", index, None))
    results.put(
        (
            "result",
            index,
            {
                "latencies_ns": np.asarray(rec.latencies_ns, dtype=np.int64),
                "errors": dict(rec.errors),
                "stream_failures": dict(rec.stream_failures),
                "start_ns": t0,
                "end_ns": t1,
                "client_cpu_ns": cpu1 - cpu0,
                "max_send_lag_ns": rec.max_send_lag_ns,
            },
        )
    )


def _child_main(index: int, cfg: LoadConfig, results: mp.Queue[_Message], go: EventType) -> None:
    """Entry point of a client process; every failure goes back to the parent."""
    try:
        uvloop.run(_child(index, cfg, results, go))
    except (ConnectionError, ResponseMismatch) as exc:  # expected: the message says it all
        results.put(("error", index, str(exc)))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))


# --- the parent: processes, server CPU, merged results -------------------------------------


def process_tree_cpu_ns(pid: int) -> int:
    """User + system CPU of ``pid`` and its live descendants (server workers), in ns."""
    stats: dict[int, tuple[int, int]] = {}  # pid -> (ppid, cpu ticks)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the command name, which may itself hold spaces and parentheses.
        rest = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry.name)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    if pid not in stats:
        raise ProcessLookupError(f"no process {pid}")
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (ppid, _) in stats.items() if ppid == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    ticks = sum(stats[p][1] for p in tree)
    return ticks * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


class _Children:
    """The client processes and the messages they send back."""

    def __init__(self, cfg: LoadConfig) -> None:
        # spawn, not fork: a forked child would inherit gRPC and event-loop state.
        ctx = mp.get_context("spawn")
        self.results: mp.Queue[_Message] = ctx.Queue()
        self.go = ctx.Event()
        self.procs = [
            ctx.Process(target=_child_main, args=(i, cfg, self.results, self.go), daemon=True)
            for i in range(cfg.procs)
        ]
        self.mail: dict[str, dict[int, Any]] = {}

    def __enter__(self) -> _Children:
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        # After a failure the others may be waiting for a go signal that never comes.
        for p in self.procs:
            if exc_type is None:
                p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()

    def expect(self, kind: str, timeout_s: float) -> dict[int, Any]:
        """Wait for one ``kind`` message from every child; raise on an error or a death.

        Messages of a later kind (one child's result before another's "finished") are
        kept for the call that expects them.
        """
        got = self.mail.setdefault(kind, {})
        deadline = time.monotonic() + timeout_s
        while len(got) < len(self.procs):
            try:
                msg_kind, index, payload = self.results.get(timeout=0.2)
            except queue_mod.Empty:
                dead = [p.exitcode for p in self.procs if p.exitcode not in (None, 0)]
                if dead:
                    raise LoadError(f"a client process died (exit codes {dead})") from None
                if time.monotonic() > deadline:
                    raise LoadError(f"clients sent no {kind!r} within {timeout_s:.0f} s") from None
                continue
            if msg_kind == "error":
                raise LoadError(f"client process {index}: {payload}")
            self.mail.setdefault(msg_kind, {})[index] = payload
        return self.mail.pop(kind)


def _percentiles_ms(latencies_ns: np.ndarray[Any, Any]) -> dict[str, float | None]:
    if latencies_ns.size == 0:
        return {name: None for name in [*PERCENTILES, "max", "mean"]}
    # inverted_cdf is the nearest-rank percentile: always a latency that was observed.
    values = np.percentile(latencies_ns, list(PERCENTILES.values()), method="inverted_cdf")
    out: dict[str, float | None] = {
        name: round(float(v) / 1e6, 4) for name, v in zip(PERCENTILES, values, strict=True)
    }
    out["max"] = round(float(latencies_ns.max()) / 1e6, 4)
    out["mean"] = round(float(latencies_ns.mean()) / 1e6, 4)
    return out


def run_load(cfg: LoadConfig) -> dict[str, Any]:
    """Run one load test in ``cfg.procs`` client processes and return the summary.

    Raises:
        LoadError: a client process failed or stopped answering.
        ProcessLookupError: ``cfg.server_pid`` is not a running process.
    """
    if cfg.server_pid:
        process_tree_cpu_ns(cfg.server_pid)  # fail before any client starts
    slack_s = cfg.connect_timeout_s + cfg.warmup_s + cfg.deadline_ms / 1000.0 + 60.0
    with _Children(cfg) as children:
        children.expect("ready", slack_s)
        server_cpu0 = process_tree_cpu_ns(cfg.server_pid) if cfg.server_pid else None
        children.go.set()
        # A requests-only run has no known length; the per-process deadline still bounds it.
        run_s = cfg.duration_s if cfg.duration_s is not None else 3600.0
        children.expect("finished", run_s + slack_s)
        server_cpu1 = process_tree_cpu_ns(cfg.server_pid) if cfg.server_pid else None
        parts = list(children.expect("result", 60.0).values())

    latencies = np.concatenate([p["latencies_ns"] for p in parts])
    errors: Counter[str] = Counter()
    stream_failures: Counter[str] = Counter()
    for p in parts:
        errors.update(p["errors"])
        stream_failures.update(p["stream_failures"])
    elapsed_s = (max(p["end_ns"] for p in parts) - min(p["start_ns"] for p in parts)) / 1e9
    ok = int(latencies.size)
    calls = ok + sum(errors.values())
    per_call = cfg.batch_size if cfg.method == "batch" else 1
    summary: dict[str, Any] = {
        "calls": calls,
        "ok": ok,
        "errors": dict(sorted(errors.items())),
        "stream_failures": dict(sorted(stream_failures.items())),
        "elapsed_s": round(elapsed_s, 3),
        "calls_per_s": round(calls / elapsed_s, 1),
        "ok_per_s": round(ok / elapsed_s, 1),
        "transactions_per_s": round(ok * per_call / elapsed_s, 1),
        "latency_ms": _percentiles_ms(latencies),
        "client_cpu_us_per_call": round(sum(p["client_cpu_ns"] for p in parts) / 1e3 / calls, 1)
        if calls
        else None,
        "server_cpu_us_per_call": None,
        "server_cpu_us_per_transaction": None,
        "server_cpu_cores": None,
    }
    if cfg.mode == "open":
        summary["target_rate"] = cfg.rate
        summary["max_send_lag_ms"] = round(max(p["max_send_lag_ns"] for p in parts) / 1e6, 3)
    if server_cpu0 is not None and server_cpu1 is not None and calls:
        cpu_ns = server_cpu1 - server_cpu0
        summary["server_cpu_us_per_call"] = round(cpu_ns / 1e3 / calls, 1)
        summary["server_cpu_us_per_transaction"] = round(cpu_ns / 1e3 / (calls * per_call), 2)
        summary["server_cpu_cores"] = round(cpu_ns / 1e9 / elapsed_s, 2)
    return summary


def describe_run(cfg: LoadConfig) -> str:
    """A one-line name for a run, e.g. ``score closed c=8 procs=1``."""
    shape = f"c={cfg.concurrency}" if cfg.mode == "closed" else f"rate={cfg.rate:g}/s"
    extra = f" batch={cfg.batch_size}" if cfg.method == "batch" else ""
    if cfg.method == "stream":
        extra = (
            f" depth={cfg.stream_depth}" if cfg.mode == "closed" else f" streams={cfg.concurrency}"
        )
    return f"{cfg.method} {cfg.mode} {shape}{extra} procs={cfg.procs}"


def format_summary(cfg: LoadConfig, s: dict[str, Any]) -> str:
    """The short human table printed on stdout."""
    lat = s["latency_ms"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    errors = ", ".join(f"{k} {v}" for k, v in s["errors"].items()) or "none"
    if s["stream_failures"]:
        failed = ", ".join(f"{k} {v}" for k, v in s["stream_failures"].items())
        errors += f"; streams failed: {failed}"
    lines = [
        f"{describe_run(cfg)}: {s['calls']:,} calls in {s['elapsed_s']:.1f} s, errors: {errors}",
        f"  throughput   {s['ok_per_s']:>12,.0f} ok calls/s"
        + (f"   {s['transactions_per_s']:,.0f} transactions/s" if cfg.method == "batch" else ""),
        "  latency ms   "
        + "  ".join(f"{k.replace('_', '.')} {ms(lat[k])}" for k in [*PERCENTILES, "max"]),
    ]
    cpu = f"  client CPU   {s['client_cpu_us_per_call']} us/call"
    if s["server_cpu_us_per_call"] is not None:
        cpu += (
            f"   server CPU {s['server_cpu_us_per_call']} us/call ({s['server_cpu_cores']} cores)"
        )
    lines.append(cpu)
    if cfg.mode == "open":
        lines.append(f"  target rate  {cfg.rate:,.0f}/s, max send lag {s['max_send_lag_ms']} ms")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--target", required=True, help="host:port of the server")
    p.add_argument("--method", choices=sorted(METHODS), default="score")
    p.add_argument("--mode", choices=["closed", "open"], default="closed")
    p.add_argument(
        "--concurrency",
        "-c",
        type=int,
        default=1,
        help="closed: calls in flight; stream: open streams (both modes)",
    )
    p.add_argument("--requests", "-n", type=int, help="closed loop: stop after this many calls")
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds to measure; 0 with --requests for a count-only run",
    )
    p.add_argument("--rate", type=float, help="open loop: calls (or messages) per second")
    p.add_argument("--batch-size", type=int, default=256, help="transactions per ScoreBatch")
    p.add_argument(
        "--stream-depth",
        type=int,
        default=1,
        help="closed-loop ScoreStream: messages in flight per stream",
    )
    p.add_argument("--procs", type=int, default=1, help="client processes")
    p.add_argument(
        "--deadline-ms",
        type=float,
        default=1000.0,
        help="deadline of each unary call (streams: unbounded, they last the run)",
    )
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load first")
    p.add_argument("--seed", type=int, default=7, help="seed of the request pool")
    p.add_argument("--pool-size", type=int, default=1024, help="distinct requests to cycle")
    p.add_argument("--server-pid", type=int, help="report this process tree's CPU per call")
    p.add_argument("--out", type=Path, help="write the JSON result here")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the load test described on the command line."""
    args = _parser().parse_args(argv)
    try:
        cfg = LoadConfig(
            target=args.target,
            method=args.method,
            mode=args.mode,
            concurrency=args.concurrency,
            requests=args.requests,
            duration_s=args.duration or None,
            rate=args.rate,
            batch_size=args.batch_size,
            stream_depth=args.stream_depth,
            procs=args.procs,
            deadline_ms=args.deadline_ms,
            warmup_s=args.warmup,
            seed=args.seed,
            pool_size=args.pool_size,
            server_pid=args.server_pid,
        )
    except ValueError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    try:
        summary = run_load(cfg)
    except (LoadError, ProcessLookupError) as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 1
    print(format_summary(cfg, summary))
    if args.out:
        doc = {"config": asdict(cfg), "summary": summary, "machine": machine.describe()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
