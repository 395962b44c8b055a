"""Spike and card-testing scenarios: open-loop load in phases, every call recorded.

Run from the repository root::

    # start riskwire with routes/spike.yaml, probe its capacity, run both scenarios
    python -m benchmarks.load.spike --models var/models
    # against a running server, capacity given, spike only, 2 worker processes
    python -m benchmarks.load.spike --target 127.0.0.1:50051 --capacity 1200 --scenario spike
    python -m benchmarks.load.spike --models var/models --workers 2
    # what one client process can offer on this machine (against the floor server)
    python -m benchmarks.load.spike --client-capacity

- **spike**: open-loop Score calls at ``--base-fraction`` (0.5) of the capacity for
  ``--steady-s``, then ``--multiple`` (10) times that for ``--spike-s``, then back to the
  base rate for ``--after-s``.
- **card-testing**: the base rate of ordinary traffic throughout, and for ``--burst-s``
  on top of it a burst of card testing at ``--burst-multiple`` (5) times the base rate:
  tiny amounts (USD 0.50-1.99) on many cards from three accounts, typed-in e-commerce
  payments at two merchants, with the velocity figures such a run produces.

The capacity is ``--capacity`` calls/s or, without it, what the server answers in a
short closed-loop probe (8 callers, ``--probe-s``) in the same run.

Calls start on a fixed schedule, spread over ``--procs`` client processes, whatever the
server does; for every call the client records when it was due, when it was sent, when
it ended and how: ``MODEL``, ``FALLBACK/<reason>`` (the route's fallback decision), or
an error (the gRPC status; ``MISMATCH`` for a reply to another transaction). A call
the client could not send within 200 ms of its time is not sent at all (``NOT_SENT``):
what the client could not offer shows as such. Reports are per second and per phase,
each call counted in the second it was due: intended calls, offered (sent), answered
by the model, by the fallback, errors, and p50/p99 of every answered call (end minus
send; the send lag, how far the client itself fell behind, and the p99 of the
``server_latency_us`` the server reports are beside it). Writes ``<stamp>-<host>.json``
/ ``.md`` and one PNG timeline per scenario under ``--results-dir`` (and ``latest.*``).

One client process here offers about 2,000 calls/s at most with 500 us of CPU per call
(``--client-capacity`` measures it); ``--procs`` spreads the schedule over several.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import queue as queue_mod
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any, Literal

import grpc
import numpy as np
import numpy.typing as npt
import uvloop
from google.protobuf.message import DecodeError

from benchmarks.load import cpustat, machine
from benchmarks.load.compare import FLOOR_CMD, RISKWIRE_ARGV, ServerError, ServerProcess
from benchmarks.load.loadgen import RequestPool, build_pool
from gateway.data.synth import generate
from gateway.features.columns import transactions_from_table
from riskwire.v1 import scoring_pb2

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results" / "spike"
SPIKE_ROUTES = Path(__file__).resolve().parent / "routes" / "spike.yaml"
SCORE_PATH = "/riskwire.v1.Scoring/Score"
PoolName = Literal["normal", "card_testing"]
POOLS: tuple[PoolName, ...] = ("normal", "card_testing")

# --- outcomes: one small integer per call ------------------------------------------------

# AUDIT_BACKLOG: the audit queue stayed full, and the route's fallback answered instead
# (that call, unlike every other answer, has no decision record).
_FALLBACK_REASONS = ("OVERLOAD", "TIMEOUT", "BACKEND_ERROR", "AUDIT_BACKLOG")
OUTCOMES: tuple[str, ...] = (
    "MODEL",
    *(f"FALLBACK/{r}" for r in _FALLBACK_REASONS),
    "FALLBACK/OTHER",
    "NOT_SENT",
    "MISMATCH",
    *(code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK),
)
"""Outcome names by code: the model's answer, the fallback's (by reason), a call the
client never sent (it fell too far behind its schedule), then errors."""
MODEL = 0
_FALLBACK_CODES = range(1, 2 + len(_FALLBACK_REASONS))
NOT_SENT = OUTCOMES.index("NOT_SENT")
_MISMATCH = OUTCOMES.index("MISMATCH")
_OUTCOME_CODE = {name: i for i, name in enumerate(OUTCOMES)}
DECISIONS = ("UNSPECIFIED", "APPROVE", "REVIEW", "DECLINE")  # ScoreResponse.decision


def outcome_code(name: str) -> int:
    """The code of ``MODEL``, ``FALLBACK/<reason>``, ``MISMATCH`` or a gRPC status name."""
    return _OUTCOME_CODE[name]


def is_fallback(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    return (codes >= _FALLBACK_CODES.start) & (codes < _FALLBACK_CODES.stop)


def is_error(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    return codes >= _MISMATCH


REFUSED_STATUSES = ("RESOURCE_EXHAUSTED", "CANCELLED", "UNAVAILABLE")
"""Errors that are the server refusing a call at once, by its configuration: the
route's policy or grpc.max_concurrent_calls (RESOURCE_EXHAUSTED), gRPC core's bound on
calls the loop has not taken (grpc.max_pending_calls: CANCELLED; this client never
cancels a call itself, it lets the deadline pass) and HTTP/2 REFUSED_STREAM
(UNAVAILABLE)."""
REFUSED = tuple(OUTCOMES.index(name) for name in REFUSED_STATUSES)


def is_refused(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    return np.isin(codes, REFUSED)


def is_answered(codes: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Answered by the server: by the model or by the route's fallback."""
    return codes < NOT_SENT


def classify_reply(response: bytes, expected_id: str) -> tuple[int, int, int]:
    """``(outcome, decision, server_latency_us)`` of a Score reply's bytes: MODEL,
    ``FALLBACK/<reason>``, or MISMATCH (unparseable, or for another transaction)."""
    try:
        reply = scoring_pb2.ScoreResponse.FromString(response)
    except DecodeError:
        return _MISMATCH, 0, 0
    if reply.transaction_id != expected_id:
        outcome = _MISMATCH
    elif reply.decision_source == scoring_pb2.FALLBACK:
        outcome = _OUTCOME_CODE.get(
            f"FALLBACK/{reply.fallback_reason}", _OUTCOME_CODE["FALLBACK/OTHER"]
        )
    else:
        outcome = MODEL
    return outcome, reply.decision, reply.server_latency_us


# --- what is run --------------------------------------------------------------------------


@dataclass(frozen=True)
class Flow:
    """Calls from one request pool at a steady rate, open loop."""

    pool: PoolName
    rate: float
    """Calls per second over all client processes."""


@dataclass(frozen=True)
class Phase:
    """A stretch of the run: open-loop ``flows``, or a closed loop of ``concurrency``."""

    name: str
    seconds: float
    flows: tuple[Flow, ...] = ()
    concurrency: int = 0
    """Closed loop (the capacity probe): this many callers, each calling again when its
    last call ends; ``flows`` must then be empty."""

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"phase {self.name}: seconds must be > 0, got {self.seconds}")
        if bool(self.flows) == bool(self.concurrency):
            raise ValueError(f"phase {self.name}: give flows (open loop) or concurrency")
        if any(f.rate <= 0 for f in self.flows):
            raise ValueError(f"phase {self.name}: every flow needs a rate > 0")

    @property
    def rate(self) -> float:
        return sum(f.rate for f in self.flows)


def phase_bounds(phases: Sequence[Phase]) -> list[tuple[float, float]]:
    """``(start_s, end_s)`` of each phase from the run's start."""
    bounds, t = [], 0.0
    for p in phases:
        bounds.append((t, t + p.seconds))
        t += p.seconds
    return bounds


def spike_phases(
    capacity: float,
    *,
    base_fraction: float = 0.5,
    multiple: float = 10.0,
    steady_s: float = 4.0,
    spike_s: float = 3.0,
    after_s: float = 5.0,
) -> tuple[Phase, ...]:
    """Steady at ``base_fraction`` of capacity, ``multiple`` times that, then back."""
    base = capacity * base_fraction
    return (
        Phase("steady", steady_s, (Flow("normal", base),)),
        Phase("spike", spike_s, (Flow("normal", base * multiple),)),
        Phase("after", after_s, (Flow("normal", base),)),
    )


def card_testing_phases(
    capacity: float,
    *,
    base_fraction: float = 0.5,
    burst_multiple: float = 5.0,
    steady_s: float = 2.0,
    burst_s: float = 3.0,
    after_s: float = 3.0,
) -> tuple[Phase, ...]:
    """Ordinary traffic throughout; card testing on top of it for ``burst_s``."""
    base = capacity * base_fraction
    normal = Flow("normal", base)
    return (
        Phase("steady", steady_s, (normal,)),
        Phase("burst", burst_s, (normal, Flow("card_testing", base * burst_multiple))),
        Phase("after", after_s, (normal,)),
    )


def build_card_testing_pool(seed: int, pool_size: int) -> RequestPool:
    """Card testing: tiny amounts on many stolen cards, from a few accounts.

    Starts from the synthetic generator's transactions (so every field a model reads
    is there) and rewrites what a card-testing run looks like: USD 0.50-1.99, three
    accounts, one card per attempt, two merchants (MCC 5815, digital goods), typed-in
    e-commerce payments from two devices abroad, and the velocity a bot produces.
    """
    rng = np.random.default_rng(seed + 1)
    txns = transactions_from_table(generate(max(pool_size, 100), seed + 1))[:pool_size]
    for i, t in enumerate(txns):
        t.transaction_id = f"ct{seed:03d}{i:09d}"
        t.account_id = f"acct-ct-{i % 3}"
        t.card_id = f"card-ct-{i:06d}"
        t.merchant_id = f"mer-ct-{i % 2}"
        t.merchant_category_code = "5815"
        t.amount_minor = int(rng.integers(50, 200))
        t.currency = "USD"
        t.country = "US"
        t.ip_country = "RO"
        t.channel = scoring_pb2.ECOMMERCE
        t.entry_mode = "MANUAL"
        t.device_id = f"d-ct-{i % 2}"
        t.customer_tenure_days = 3
        extras = t.numeric_extras
        extras["txn_count_1h"] = float(rng.integers(20, 200))
        extras["txn_count_24h"] = extras["txn_count_1h"] + float(rng.integers(0, 100))
        extras["amount_to_avg_ratio"] = round(float(rng.uniform(0.01, 0.05)), 4)
        extras["device_age_days"] = round(float(rng.uniform(0.0, 1.0)), 2)
        extras["distance_from_home_km"] = round(float(rng.uniform(2000, 9000)), 1)
    return RequestPool(
        payloads=[
            scoring_pb2.ScoreRequest(transaction=t).SerializeToString(deterministic=True)
            for t in txns
        ],
        expected_ids=[[t.transaction_id] for t in txns],
    )


def _build_pools(names: set[str], seed: int, pool_size: int) -> dict[str, RequestPool]:
    pools = {}
    if "normal" in names:
        pools["normal"] = build_pool("score", seed, pool_size, 1)
    if "card_testing" in names:
        pools["card_testing"] = build_card_testing_pool(seed, pool_size)
    return pools


# --- one client process --------------------------------------------------------------------


@dataclass(frozen=True)
class ClientSpec:
    target: str
    phases: tuple[Phase, ...]
    procs: int = 1
    deadline_ms: float = 1000.0
    """Each call's gRPC deadline, from the client: long on purpose, so that a late
    answer shows in the latency rather than as the client giving up."""
    seed: int = 7
    pool_size: int = 1024
    warmup_s: float = 0.5
    max_send_lag_ms: float = 200.0
    """A call this far behind its schedule is not sent at all (recorded NOT_SENT): a
    client that cannot keep up shows as a lower offered rate, and the run keeps its
    shape and length, instead of sending a late backlog into the next phase."""
    connect_timeout_s: float = 10.0


# Columns of the per-call record matrix: times in ns (monotonic clock, shared by the
# processes); SERVER_US is the server's own latency from the reply (0 without one).
INTENDED, SENT, END, OUTCOME, POOL, DECISION, SERVER_US = range(7)
_COLUMNS = 7


class _Client:
    """One process's share of the schedule, every call appended to ``rows``."""

    def __init__(
        self,
        spec: ClientSpec,
        index: int,
        channel: grpc.aio.Channel,
        pools: dict[str, RequestPool],
    ) -> None:
        self.spec = spec
        self.index = index
        self.unary = channel.unary_unary(SCORE_PATH, None, None)
        self.pools = pools
        self.cursors = {name: index * len(p.payloads) // spec.procs for name, p in pools.items()}
        self.deadline_s = spec.deadline_ms / 1000.0
        self.rows: list[tuple[int, int, int, int, int, int, int]] = []
        self.tasks: set[asyncio.Task[bool]] = set()
        self.max_lag_ns = 0
        self.error_examples: dict[str, str] = {}
        """The first error message seen for each status: where the errors come from."""

    async def call(self, pool_name: PoolName, intended_ns: int, record: bool = True) -> bool:
        """Make one call; returns whether the server answered it (model or fallback)."""
        pool = self.pools[pool_name]
        i = self.cursors[pool_name] = (self.cursors[pool_name] + 1) % len(pool.payloads)
        decision = server_us = 0
        sent = time.monotonic_ns()
        try:
            response = await self.unary(pool.payloads[i], timeout=self.deadline_s)
        except grpc.aio.AioRpcError as exc:
            outcome = _OUTCOME_CODE[exc.code().name]
            self.error_examples.setdefault(exc.code().name, exc.details() or "")
        else:
            outcome, decision, server_us = classify_reply(response, pool.expected_ids[i][0])
        if record:
            end = time.monotonic_ns()
            pool_index = POOLS.index(pool_name)
            self.rows.append((intended_ns, sent, end, outcome, pool_index, decision, server_us))
        return outcome < NOT_SENT

    async def warm_up(self, seconds: float) -> int:
        """Two callers, closed loop, unrecorded; returns the calls the server answered."""
        end = time.monotonic_ns() + int(seconds * 1e9)
        answered = 0

        async def caller() -> None:
            nonlocal answered
            while time.monotonic_ns() < end:
                answered += await self.call("normal", 0, record=False)

        await asyncio.gather(caller(), caller())
        return answered

    async def run(self, t0_ns: int) -> None:
        for phase, (start_s, end_s) in zip(
            self.spec.phases, phase_bounds(self.spec.phases), strict=True
        ):
            start_ns, end_ns = t0_ns + int(start_s * 1e9), t0_ns + int(end_s * 1e9)
            if phase.concurrency:
                await self._closed(phase, start_ns, end_ns)
            else:
                await asyncio.gather(*(self._arrivals(f, start_ns, end_ns) for f in phase.flows))
        if self.tasks:
            await asyncio.wait(self.tasks)

    async def _closed(self, phase: Phase, start_ns: int, end_ns: int) -> None:
        await _sleep_until(start_ns)
        procs = self.spec.procs
        callers = phase.concurrency // procs + (self.index < phase.concurrency % procs)

        async def caller() -> None:
            while (now := time.monotonic_ns()) < end_ns:
                await self.call("normal", now)

        await asyncio.gather(*(caller() for _ in range(callers)))

    async def _arrivals(self, flow: Flow, start_ns: int, end_ns: int) -> None:
        """Start calls on ``flow``'s schedule, this process's share, until ``end_ns``."""
        interval_ns = 1e9 * self.spec.procs / flow.rate
        max_lag_ns = int(self.spec.max_send_lag_ms * 1e6)
        pool_index = POOLS.index(flow.pool)
        # Processes interleave their arrivals instead of all sending at once.
        first_ns = start_ns + self.index * 1e9 / flow.rate
        k = unyielded = 0
        while (intended := int(first_ns + k * interval_ns)) < end_ns:
            now = time.monotonic_ns()
            if intended > now:
                await asyncio.sleep((intended - now) / 1e9)
                unyielded = 0
            elif unyielded >= 32:
                # Behind schedule: catch up, but let replies in between.
                await asyncio.sleep(0)
                unyielded = 0
            k += 1
            lag = time.monotonic_ns() - intended
            if lag > max_lag_ns:
                self.rows.append((intended, intended, intended, NOT_SENT, pool_index, 0, 0))
                continue
            self.max_lag_ns = max(self.max_lag_ns, lag)
            task = asyncio.create_task(self.call(flow.pool, intended))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            unyielded += 1


async def _sleep_until(t_ns: int) -> None:
    now = time.monotonic_ns()
    if t_ns > now:
        await asyncio.sleep((t_ns - now) / 1e9)


_Message = tuple[str, int, Any]


async def _client_process(
    index: int,
    spec: ClientSpec,
    results: mp.Queue[_Message],
    go: EventType,
    start_at: Synchronized[int],
) -> None:
    names = {f.pool for p in spec.phases for f in p.flows} | {"normal"}
    pools = _build_pools(names, spec.seed, spec.pool_size)
    async with grpc.aio.insecure_channel(spec.target) as channel:
        try:
            await asyncio.wait_for(channel.channel_ready(), spec.connect_timeout_s)
        except TimeoutError:
            raise ConnectionError(
                f"no connection to {spec.target} within {spec.connect_timeout_s:g} s"
            ) from None
        client = _Client(spec, index, channel, pools)
        warm = await client.warm_up(spec.warmup_s) if spec.warmup_s > 0 else 0
        results.put(("ready", index, None))
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, go.wait, 600.0):
            raise TimeoutError("no go signal from the parent in 600 s")
        cpu0, wall0 = time.process_time_ns(), time.monotonic_ns()
        await client.run(start_at.value)
        cpu1, wall1 = time.process_time_ns(), time.monotonic_ns()
    results.put(
        (
            "result",
            index,
            {
                "rows": np.asarray(client.rows, dtype=np.int64).reshape(-1, _COLUMNS),
                "warmup_answered": warm,
                "client_cpu_ns": cpu1 - cpu0,
                "client_wall_ns": wall1 - wall0,
                "max_send_lag_ns": client.max_lag_ns,
                "error_examples": client.error_examples,
            },
        )
    )


def _client_main(
    index: int,
    spec: ClientSpec,
    results: mp.Queue[_Message],
    go: EventType,
    start_at: Synchronized[int],
) -> None:
    """Entry point of a client process; every failure goes back to the parent."""
    try:
        uvloop.run(_client_process(index, spec, results, go, start_at))
    except ConnectionError as exc:
        results.put(("error", index, str(exc)))
    except BaseException:
        results.put(("error", index, traceback.format_exc()))


# --- the parent -------------------------------------------------------------------------------


class SpikeError(Exception):
    """A run could not be completed: no connection, a client process failed."""


@dataclass
class RunResult:
    """Every call of one run; times in ns from the schedule's start (t = 0)."""

    phases: tuple[Phase, ...]
    rows: npt.NDArray[np.int64]
    """One row per call: INTENDED, SENT, END, OUTCOME, POOL, DECISION, SERVER_US."""
    procs: int = 1
    warmup_answered: int = 0
    client_cpu_ns: int = 0
    client_wall_ns: int = 0
    """Summed over the client processes, from the go signal to their last reply."""
    max_send_lag_ns: int = 0
    error_examples: dict[str, str] = field(default_factory=dict)
    """The first message of each error status, from any client process."""
    t0_ns: int = 0
    """The schedule's start, ``time.monotonic_ns()`` (CLOCK_MONOTONIC)."""

    @property
    def client_busy(self) -> float | None:
        """Each client process's CPU over its wall time (1.0: a whole core). Near 1,
        the client's own queueing is in the latencies and it cannot offer more."""
        return round(self.client_cpu_ns / self.client_wall_ns, 2) if self.client_wall_ns else None

    @property
    def answered(self) -> int:
        """Calls the server answered, model or fallback, warm-up included."""
        codes = self.rows[:, OUTCOME]
        return self.warmup_answered + int(np.count_nonzero(is_answered(codes)))

    @property
    def recorded(self) -> int:
        """Answered calls that must have a decision record: all but AUDIT_BACKLOG ones
        (warm-up calls are assumed recorded: the audit queue is empty then)."""
        codes = self.rows[:, OUTCOME]
        return self.answered - int(
            np.count_nonzero(codes == _OUTCOME_CODE["FALLBACK/AUDIT_BACKLOG"])
        )


def run_phases(spec: ClientSpec, start_delay_s: float = 0.3) -> RunResult:
    """Run ``spec.phases`` from ``spec.procs`` client processes; gather every call.

    Raises:
        SpikeError: a client process failed, died or stopped answering.
    """
    ctx = mp.get_context("spawn")  # a forked child would inherit gRPC and loop state
    results: mp.Queue[_Message] = ctx.Queue()
    go = ctx.Event()
    start_at: Synchronized[int] = ctx.Value("q", 0)
    procs = [
        ctx.Process(target=_client_main, args=(i, spec, results, go, start_at), daemon=True)
        for i in range(spec.procs)
    ]
    total_s = sum(p.seconds for p in spec.phases)
    mail: dict[str, dict[int, Any]] = {}

    def expect(kind: str, timeout_s: float) -> dict[int, Any]:
        got = mail.setdefault(kind, {})
        deadline = time.monotonic() + timeout_s
        while len(got) < len(procs):
            try:
                msg_kind, index, payload = results.get(timeout=0.2)
            except queue_mod.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise SpikeError(f"a client process died (exit codes {dead})") from None
                if time.monotonic() > deadline:
                    raise SpikeError(f"clients sent no {kind!r} within {timeout_s:.0f} s") from None
                continue
            if msg_kind == "error":
                raise SpikeError(f"client process {index}: {payload}")
            mail.setdefault(msg_kind, {})[index] = payload
        return mail.pop(kind)

    for p in procs:
        p.start()
    try:
        expect("ready", spec.connect_timeout_s + spec.warmup_s + 60.0)
        t0 = time.monotonic_ns() + int(start_delay_s * 1e9)
        start_at.value = t0
        go.set()
        parts = list(expect("result", total_s + spec.deadline_ms / 1000.0 + 60.0).values())
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
    rows = np.concatenate([part["rows"] for part in parts])
    rows[:, INTENDED:OUTCOME] -= t0
    rows = rows[np.argsort(rows[:, INTENDED], kind="stable")]
    return RunResult(
        phases=spec.phases,
        rows=rows,
        procs=spec.procs,
        warmup_answered=sum(part["warmup_answered"] for part in parts),
        client_cpu_ns=sum(part["client_cpu_ns"] for part in parts),
        client_wall_ns=sum(part["client_wall_ns"] for part in parts),
        max_send_lag_ns=max(part["max_send_lag_ns"] for part in parts),
        error_examples={
            code: text for part in reversed(parts) for code, text in part["error_examples"].items()
        },
        t0_ns=t0,
    )


Runner = Callable[[ClientSpec], RunResult]
"""Runs a ClientSpec's phases and gathers every call: ``run_phases`` (Python client
processes) or ``native_client.run_phases`` (the gRPC C++ client)."""


def client_runner(choice: str) -> tuple[str, Runner]:
    """The load client for ``choice``: ``python`` (this module's), ``native``
    (benchmarks/load/native_client.py), or ``auto``: native where it builds.

    Raises:
        SpikeError: ``native`` asked for and not available.
    """
    if choice == "python":
        return "python", run_phases
    from benchmarks.load import native_client  # imports this module

    try:
        native_client.build()
    except (native_client.NativeClientUnavailable, RuntimeError) as exc:
        # RuntimeError: it failed to compile here. Loud, but a benchmark stage still
        # runs (its report names the client that ran).
        if choice == "native":
            raise SpikeError(f"the native load client: {exc}") from exc
        print(f"native load client unavailable ({exc}); the Python client runs", flush=True)
        return "python", run_phases
    return "native", native_client.run_phases


def probe_capacity(
    target: str,
    *,
    seconds: float = 2.0,
    concurrency: int = 8,
    seed: int = 7,
    runner: Runner = run_phases,
) -> tuple[float, RunResult]:
    """Calls per second the server answers (model or fallback) with ``concurrency``
    callers in a closed loop, from one client process."""
    spec = ClientSpec(
        target=target, phases=(Phase("probe", seconds, concurrency=concurrency),), seed=seed
    )
    result = runner(spec)
    codes = result.rows[:, OUTCOME]
    return float(np.count_nonzero(is_answered(codes))) / seconds, result


# --- aggregation --------------------------------------------------------------------------------


def _pct_ms(latencies_ns: npt.NDArray[np.int64], q: float) -> float | None:
    if latencies_ns.size == 0:
        return None
    # Nearest rank (inverted_cdf): always a latency that was observed.
    return round(float(np.percentile(latencies_ns, q, method="inverted_cdf")) / 1e6, 3)


def outcome_counts(rows: npt.NDArray[np.int64]) -> dict[str, Any]:
    """The fates of ``rows``' calls: offered (sent), answered by model or fallback,
    errors (of them ``refused``: the server refusing at once, with how soon the
    refusal came back), and the latency of the answered ones (end minus send)."""
    codes = rows[:, OUTCOME]
    answered = rows[is_answered(codes)]
    latency = answered[:, END] - answered[:, SENT]
    server_ns = answered[:, SERVER_US] * 1000
    sent = rows[codes != NOT_SENT]
    lag = sent[:, SENT] - sent[:, INTENDED]
    errors = Counter(OUTCOMES[c] for c in codes[is_error(codes)].tolist())
    refused = rows[is_refused(codes)]
    refused_ns = refused[:, END] - refused[:, SENT]
    fallbacks = Counter(OUTCOMES[c].split("/", 1)[1] for c in codes[is_fallback(codes)].tolist())
    return {
        "intended": int(rows.shape[0]),
        "offered": int(sent.shape[0]),
        "model": int(np.count_nonzero(codes == MODEL)),
        "fallback": int(sum(fallbacks.values())),
        "errors": int(sum(errors.values())),
        "refused": int(refused.shape[0]),
        "refused_p99_ms": _pct_ms(refused_ns, 99),
        "fallback_reasons": dict(sorted(fallbacks.items())),
        "error_codes": dict(sorted(errors.items())),
        "p50_ms": _pct_ms(latency, 50),
        "p99_ms": _pct_ms(latency, 99),
        "max_ms": round(float(latency.max()) / 1e6, 3) if latency.size else None,
        "server_p99_ms": _pct_ms(server_ns, 99),
        "max_send_lag_ms": round(float(lag.max()) / 1e6, 3) if lag.size else None,
    }


def _phase_at(phases: Sequence[Phase], t_s: float) -> str:
    for phase, (_, end) in zip(phases, phase_bounds(phases), strict=True):
        if t_s < end - 1e-9:
            return phase.name
    return phases[-1].name


def per_bucket(
    rows: npt.NDArray[np.int64], phases: Sequence[Phase], bucket_s: float = 1.0
) -> list[dict[str, Any]]:
    """One row per ``bucket_s`` of the schedule: the calls it put in that bucket.

    ``intended`` counts the calls due in the bucket, ``offered`` those of them the
    client sent (at most ``max_send_lag_ms`` late); model, fallback, errors and the
    latency percentiles are those calls' fates, so a bucket's row follows its own
    calls however late they end.
    """
    total_s = sum(p.seconds for p in phases)
    n = max(1, math.ceil(round(total_s / bucket_s, 6)))
    bucket = np.clip(rows[:, INTENDED] // int(bucket_s * 1e9), 0, n - 1)
    out = []
    for b in range(n):
        out.append(
            {
                "t_s": round(b * bucket_s, 3),
                "phase": _phase_at(phases, b * bucket_s),
                **outcome_counts(rows[bucket == b]),
            }
        )
    return out


def _window(rows: npt.NDArray[np.int64], start_s: float, end_s: float) -> npt.NDArray[np.int64]:
    due = rows[:, INTENDED]
    return rows[(due >= int(start_s * 1e9)) & (due < int(end_s * 1e9))]


def per_phase(rows: npt.NDArray[np.int64], phases: Sequence[Phase]) -> list[dict[str, Any]]:
    """Each phase's calls (those its schedule put in it); rates per second of phase."""
    seconds = per_bucket(rows, phases, 1.0)
    out = []
    for phase, (start, end) in zip(phases, phase_bounds(phases), strict=True):
        mine = _window(rows, start, end)
        counts = outcome_counts(mine)
        by_pool = {}
        for i, pool in enumerate(POOLS):
            of_pool = mine[mine[:, POOL] == i]
            if of_pool.size:
                model = of_pool[of_pool[:, OUTCOME] == MODEL]
                by_pool[pool] = {
                    **{k: v for k, v in outcome_counts(of_pool).items() if not k.endswith("_ms")},
                    "model_decisions": {
                        DECISIONS[d]: int(np.count_nonzero(model[:, DECISION] == d))
                        for d in range(1, len(DECISIONS))
                    },
                }
        worst = [s["p99_ms"] for s in seconds if s["phase"] == phase.name and s["p99_ms"]]
        intended = counts["intended"]
        out.append(
            {
                "phase": phase.name,
                "seconds": phase.seconds,
                "intended_per_s": round(intended / phase.seconds, 1),
                "offered_per_s": round(counts["offered"] / phase.seconds, 1),
                "offered_ratio": round(counts["offered"] / intended, 3) if intended else None,
                **counts,
                "worst_second_p99_ms": max(worst) if worst else None,
                "by_pool": by_pool,
            }
        )
    return out


def recovery_s(
    rows: npt.NDArray[np.int64],
    phases: Sequence[Phase],
    after: str,
    reference: str,
    *,
    bucket_s: float = 0.25,
    tolerance: float = 1.5,
) -> float | None:
    """How long after phase ``after`` ended the p99 came back to ``reference``'s.

    "Back" means: from that ``bucket_s`` bucket on, to the end of the run, no bucket's
    p99 (of answered calls) exceeds the larger of ``tolerance`` times the
    ``reference`` phase's p99 and the worst p99 of the reference phase's own buckets
    (as good as the steady phase itself was: at a steady p99 of 2-4 ms, this
    machine's stalls alone move a bucket's p99 by more than half). 0.0: never above
    it after the phase; None: still above it in the run's last bucket, or no
    reference p99.
    """
    bounds = dict(zip([p.name for p in phases], phase_bounds(phases), strict=True))
    ref_p99 = outcome_counts(_window(rows, *bounds[reference]))["p99_ms"]
    if ref_p99 is None:
        return None
    buckets = per_bucket(rows, phases, bucket_s)
    ref_start, ref_end = bounds[reference]
    ref_buckets = [
        b["p99_ms"]
        for b in buckets
        if ref_start - 1e-9 <= b["t_s"] < ref_end - 1e-9 and b["p99_ms"] is not None
    ]
    threshold = max([ref_p99 * tolerance, *ref_buckets])
    end_s = bounds[after][1]
    later = [b for b in buckets if b["t_s"] >= end_s - 1e-9]
    back_at = end_s
    for b in later:
        if b["p99_ms"] is not None and b["p99_ms"] > threshold:
            back_at = b["t_s"] + bucket_s
    if later and back_at > later[-1]["t_s"] + 1e-9:
        return None
    return round(back_at - end_s, 3)


@dataclass
class ScenarioReport:
    """A scenario's figures, JSON-ready."""

    name: str
    capacity_per_s: float
    deadline_ms: float | None
    procs: int
    phases: list[dict[str, Any]]
    seconds: list[dict[str, Any]]
    recovery_s: float | None
    goals: dict[str, Any]
    schedule: list[dict[str, Any]] = field(default_factory=list)
    answered_total: int = 0
    client_cpu_us_per_call: float | None = None
    client_busy: float | None = None
    max_send_lag_ms: float = 0.0
    error_examples: dict[str, str] = field(default_factory=dict)
    client: str = "python"
    """The load client: ``native`` (gRPC C++) or ``python`` (``procs`` processes)."""
    cpu_measured: bool = False
    """Whether the server's threads were sampled (cpustat): each second and phase then
    has ``cpu``, None where no sample fell in it."""
    onset: list[dict[str, Any]] = field(default_factory=list)
    """The peak's start in ONSET_BUCKET_S buckets (see :func:`onset`)."""


def report(
    name: str,
    result: RunResult,
    capacity: float,
    deadline_ms: float | None,
    *,
    peak: str,
    reference: str = "steady",
    client: str = "python",
    cpu: Sequence[cpustat.Sample] | None = None,
    server_pid: int | None = None,
) -> ScenarioReport:
    """Per phase and per second figures, recovery and the goals, for one run;
    ``cpu``: the server's samples (cpustat.CpuSampler of ``server_pid``) over it."""
    phases = per_phase(result.rows, result.phases)
    seconds = per_bucket(result.rows, result.phases, 1.0)
    cpu_measured = bool(cpu) and server_pid is not None
    start = onset(result.rows, result.phases, peak, cpu, server_pid, result.t0_ns)
    if cpu and server_pid is not None:
        by_second = cpustat.per_second(cpu, server_pid, result.t0_ns, len(seconds))
        for row, figures in zip(seconds, by_second, strict=True):
            row["cpu"] = figures
        for p in phases:
            p["cpu"] = cpustat.mean_of([s["cpu"] for s in seconds if s["phase"] == p["phase"]])
    rec = recovery_s(result.rows, result.phases, peak, reference)
    errors = sum(p["errors"] for p in phases)
    p99s = [s["p99_ms"] for s in seconds if s["p99_ms"] is not None]
    peak_row = next(p for p in phases if p["phase"] == peak)
    refused = sum(p["refused"] for p in phases)
    goals = {
        "no_errors": errors == 0,
        "no_errors_but_refusals": errors == refused,
        "p99_within_deadline": None
        if deadline_ms is None
        else bool(p99s) and max(p99s) <= deadline_ms,
        "seconds_over_deadline": None
        if deadline_ms is None
        else sum(p > deadline_ms for p in p99s),
        "recovered_within_2s": rec is not None and rec <= 2.0,
        "peak_offered_ratio": peak_row["offered_ratio"],
        "peak_really_offered": (peak_row["offered_ratio"] or 0) >= 0.9,
    }
    calls = int(result.rows.shape[0])
    return ScenarioReport(
        name=name,
        capacity_per_s=round(capacity, 1),
        deadline_ms=deadline_ms,
        procs=result.procs,
        phases=phases,
        seconds=seconds,
        recovery_s=rec,
        goals=goals,
        schedule=[asdict(p) for p in result.phases],
        answered_total=result.answered,
        client_cpu_us_per_call=round(result.client_cpu_ns / 1e3 / calls, 1) if calls else None,
        client_busy=result.client_busy,
        max_send_lag_ms=round(result.max_send_lag_ns / 1e6, 3),
        error_examples=dict(sorted(result.error_examples.items())),
        client=client,
        cpu_measured=cpu_measured,
        onset=start,
    )


ONSET_BUCKET_S = 0.1
ONSET_WINDOW_S = (0.5, 1.0)
"""The onset table's buckets, and how long before and after the peak's start it spans."""


def onset(
    rows: npt.NDArray[np.int64],
    phases: Sequence[Phase],
    peak: str,
    cpu: Sequence[cpustat.Sample] | None = None,
    server_pid: int | None = None,
    t0_ns: int = 0,
) -> list[dict[str, Any]]:
    """The calls due around the ``peak`` phase's start, in ONSET_BUCKET_S buckets:
    a first second that goes wrong does so within a few of them (and a one-second
    row hides how). Each bucket as :func:`outcome_counts` gives it, ``t_s`` from the
    run's start, and ``cpu`` (cpustat) when the server was sampled."""
    bounds = dict(zip((p.name for p in phases), phase_bounds(phases), strict=True))
    start_s = bounds[peak][0]
    before, after = ONSET_WINDOW_S
    first = max(0.0, start_s - before)
    n = round((start_s + after - first) / ONSET_BUCKET_S)
    sampled = bool(cpu) and server_pid is not None
    figures: list[dict[str, float | None] | None] = [None] * n
    if cpu and server_pid is not None:
        bucket_ns = int(ONSET_BUCKET_S * 1e9)
        figures = cpustat.per_bucket(cpu, server_pid, t0_ns + int(first * 1e9), n, bucket_ns)
    out = []
    for b in range(n):
        lo = round(first + b * ONSET_BUCKET_S, 6)
        row = {
            "t_s": lo,
            "phase": _phase_at(phases, lo),
            **outcome_counts(_window(rows, lo, lo + ONSET_BUCKET_S)),
        }
        if sampled:
            row["cpu"] = figures[b]
        out.append(row)
    return out


def _f(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def render_scenario(r: ScenarioReport) -> str:
    """Markdown: the per-phase table, the goals, the per-second table."""
    deadline = f"{r.deadline_ms:g} ms" if r.deadline_ms is not None else "unknown"
    lines = [
        f"### {r.name}: capacity {r.capacity_per_s:,.0f} calls/s, route deadline {deadline}, "
        + (
            "the native load client"
            if r.client == "native"
            else f"{r.procs} Python client process(es)"
        ),
        "",
        "| phase | s | intended/s | offered/s | offered % | model | fallback | errors "
        "| of them refused | p50 ms | p99 ms | worst 1-s p99 ms | server p99 ms |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for p in r.phases:
        ratio = p["offered_ratio"]
        lines.append(
            f"| {p['phase']} | {p['seconds']:g} | {_f(p['intended_per_s'])} "
            f"| {_f(p['offered_per_s'])} | {_f(None if ratio is None else 100 * ratio)} "
            f"| {p['model']:,} | {p['fallback']:,} | {p['errors']:,} | {p['refused']:,} "
            f"| {_f(p['p50_ms'], 2)} | {_f(p['p99_ms'], 2)} | {_f(p['worst_second_p99_ms'], 2)} "
            f"| {_f(p['server_p99_ms'], 2)} |"
        )
    g = r.goals
    rec = "not back by the end" if r.recovery_s is None else f"{r.recovery_s:g} s"
    lines += [
        "",
        f"- errors other than fallbacks: {'none' if g['no_errors'] else '**some**'}"
        + "".join(f"; {p['phase']}: {p['error_codes']}" for p in r.phases if p["error_codes"]),
        "- errors other than fallbacks and refusals: "
        + ("none" if g.get("no_errors_but_refusals") else "**some**")
        + "; refused at once by configuration (RESOURCE_EXHAUSTED; CANCELLED from gRPC "
        "core's grpc.max_pending_calls; REFUSED_STREAM): "
        + (
            "; ".join(
                f"{p['phase']} {p['refused']:,}, p99 {_f(p.get('refused_p99_ms'), 2)} ms "
                "after sending"
                for p in r.phases
                if p.get("refused")
            )
            or "none"
        ),
        "- fallback reasons: "
        + (
            "; ".join(f"{p['phase']}: {p['fallback_reasons']}" for p in r.phases if p["fallback"])
            or "none"
        ),
        f"- p99 of answered calls within the deadline every second: "
        f"{'yes' if g['p99_within_deadline'] else 'no'}"
        + (f" ({g['seconds_over_deadline']} second(s) over)" if g["seconds_over_deadline"] else ""),
        f"- back to the steady p99 (x1.5, 250 ms buckets) after the {r.phases[1]['phase']}: {rec}",
        f"- offered in the {r.phases[1]['phase']}: "
        f"{_f(100 * (g['peak_offered_ratio'] or 0))}% of the intended rate"
        + ("" if g["peak_really_offered"] else " (**the client could not offer it**)")
        + f"; max send lag {r.max_send_lag_ms:g} ms; client CPU "
        f"{_f(r.client_cpu_us_per_call)} us/call, {_f(r.client_busy, 2)} of a core per process"
        + (
            " (**saturated: its own queueing is in the latencies**)"
            if (r.client_busy or 0) >= 0.85
            else ""
        ),
    ]
    lines += cpu_lines(r)
    for code, text in r.error_examples.items():
        lines.append(f"- {code}, as the client saw it: {text[:200]!r}")
    for p in r.phases:
        if "card_testing" in p["by_pool"]:
            for pool, figures in p["by_pool"].items():
                lines.append(
                    f"- {p['phase']}, {pool}: model decisions {figures['model_decisions']}, "
                    f"fallback {figures['fallback']}, errors {figures['errors']}"
                )
    head, rule = _cpu_header(r)
    lines += [
        "",
        "| t s | phase | intended | offered | model | fallback | errors | refused | p50 ms "
        "| p99 ms | server p99 ms | send lag ms |" + head,
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|" + rule,
    ]
    for s in r.seconds:
        lines.append(
            f"| {s['t_s']:g} | {s['phase']} | {s['intended']:,} | {s['offered']:,} "
            f"| {s['model']:,} | {s['fallback']:,} | {s['errors']:,} | {s['refused']:,} "
            f"| {_f(s['p50_ms'], 2)} "
            f"| {_f(s['p99_ms'], 2)} | {_f(s['server_p99_ms'], 2)} "
            f"| {_f(s['max_send_lag_ms'], 1)} |" + _cpu_cells(r, s)
        )
    lines += onset_table(r)
    lines.append("")
    return "\n".join(lines)


def onset_table(r: ScenarioReport) -> list[str]:
    """Markdown: the peak's start in 100 ms buckets (:func:`onset`)."""
    if not r.onset:
        return []
    head, rule = _cpu_header(r)
    lines = [
        "",
        f"The {r.phases[1]['phase']}'s start, {ONSET_BUCKET_S * 1000:g} ms buckets (the "
        "calls due in each; latencies from sending):",
        "",
        "| t s | phase | intended | answered | refused | p50 ms | p99 ms | refused p99 ms "
        "| send lag ms |" + head,
        "|--:|---|--:|--:|--:|--:|--:|--:|--:|" + rule,
    ]
    for b in r.onset:
        lines.append(
            f"| {b['t_s']:g} | {b['phase']} | {b['intended']:,} "
            f"| {b['model'] + b['fallback']:,} | {b['refused']:,} | {_f(b['p50_ms'], 1)} "
            f"| {_f(b['p99_ms'], 1)} | {_f(b['refused_p99_ms'], 1)} "
            f"| {_f(b['max_send_lag_ms'], 1)} |" + _cpu_cells(r, b)
        )
    return lines


def _cpu_header(r: ScenarioReport) -> tuple[str, str]:
    """The CPU columns' header cells and rule cells, empty when not sampled."""
    if not r.cpu_measured:
        return "", ""
    return CPU_HEAD, "--:|" * len(CPU_COLUMNS)


def _cpu_cells(r: ScenarioReport, row: Mapping[str, Any]) -> str:
    """A table row's CPU cells (``row["cpu"]``, dashes where missing)."""
    if not r.cpu_measured:
        return ""
    cpu = row.get("cpu") or {}
    return "".join(f" {_f(cpu.get(k))} |" for k in CPU_COLUMNS)


CPU_COLUMNS = (
    "loop_ran_pct",
    "loop_waited_pct",
    "grpc_core_pct",
    "machine_busy_pct",
    "client_ran_pct",
    "client_waited_pct",
)
"""The per-second and onset tables' CPU columns (cpustat.per_bucket's figures)."""
CPU_HEAD = (
    " loop ran % | loop waited % | gRPC core % | machine busy % | client ran % | client waited % |"
)


def cpu_lines(r: ScenarioReport) -> list[str]:
    """Per phase: the server's event-loop thread's running and waiting share, gRPC
    core's threads, the machine (cpustat); nothing when the CPU was not sampled."""
    if not r.cpu_measured:
        return []
    parts = []
    for p in r.phases:
        cpu = p.get("cpu")
        if cpu:
            parts.append(
                f"{p['phase']}: ran {_f(cpu['loop_ran_pct'])}%, "
                f"waited {_f(cpu['loop_waited_pct'])}%"
                f" (gRPC core's threads {_f(cpu['grpc_core_pct'])}% of a core, the machine "
                f"{_f(cpu['machine_busy_pct'])}% busy, the load client ran "
                f"{_f(cpu.get('client_ran_pct'))}% and waited {_f(cpu.get('client_waited_pct'))}%)"
            )
    return [
        "- the server's event-loop thread ran, and waited for a CPU (runnable, another "
        "thread or process on its core), this share of each phase: " + "; ".join(parts)
    ]


def plot_timeline(
    rows: npt.NDArray[np.int64],
    phases: Sequence[Phase],
    path: Path,
    *,
    title: str,
    deadline_ms: float | None,
    bucket_s: float = 0.1,
) -> None:
    """PNG: p50/p99 of answered calls, and intended/offered/answered rates, per bucket."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = per_bucket(rows, phases, bucket_s)
    t = [b["t_s"] + bucket_s / 2 for b in buckets]
    fig, (lat, rate) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    for key, label, style in (
        ("p50_ms", "p50", "-"),
        ("p99_ms", "p99", "-"),
        ("server_p99_ms", "p99 the server reports", ":"),
    ):
        lat.plot(t, [math.nan if b[key] is None else b[key] for b in buckets], style, label=label)
    if deadline_ms is not None:
        lat.axhline(deadline_ms, color="red", linestyle="--", linewidth=1, label="route deadline")
    lat.set_yscale("log")
    lat.set_ylabel(f"answered calls, ms\n(per {bucket_s * 1000:g} ms, by scheduled time)")
    lat.legend(loc="upper right")
    lat.grid(True, which="both", alpha=0.3)
    for key, label in (
        ("intended", "intended"),
        ("offered", "offered"),
        ("model", "answered by model"),
        ("fallback", "answered by fallback"),
        ("errors", "errors"),
    ):
        rate.plot(t, [b[key] / bucket_s for b in buckets], label=label)
    rate.plot(
        t, [b["refused"] / bucket_s for b in buckets], ":", label="of the errors, refused at once"
    )
    rate.set_ylabel("calls/s")
    rate.set_xlabel("seconds from the start of the schedule")
    rate.legend(loc="upper right")
    rate.grid(True, alpha=0.3)
    for ax in (lat, rate):
        for (_, end), _phase in zip(phase_bounds(phases)[:-1], phases, strict=False):
            ax.axvline(end, color="grey", linewidth=0.8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- servers and the command line ----------------------------------------------------------------


def route_policy(routes_file: Path) -> tuple[float, tuple[str, ...]]:
    """The default route's ``deadline_ms`` and ``fallback.on`` (the table's last route)."""
    from router.routes import load_table_file

    route = load_table_file(routes_file).routes[-1]
    return route.deadline_ms, tuple(route.fallback.on)


MAX_CONCURRENT_CALLS = 32
"""grpc.max_concurrent_calls of the benchmark's riskwire (see riskwire_env)."""
MAX_PENDING_CALLS = (2, 4)
"""grpc.max_pending_calls and _hard of the spike's riskwire (see riskwire_env). A call
waits about one call's loop time (~1 ms here) for each pending call ahead of it, and
the loop holds more it has taken. Measured with the native client at 10x
(2026-11-29, one run each): answered p99 in the spike 15-20 ms at 1 / 2, 20-40 ms at
2 / 4 and 4 / 8, 110-170 ms at 16 / 64, ~1 s with gRPC's defaults. But 1 / 2 also
refuses ordinary traffic: 1-3 calls of 1,760 at 440 calls/s, and 7% of the steady
phase and 14% after the spike in a bench-ci run at 518 calls/s; 2 / 4 refused 2-3 of
1,760 at 440/s."""


def audit_supported() -> bool:
    """Whether this build's settings have the ``audit`` section (RISKWIRE_AUDIT__*)."""
    from gateway.settings import Settings

    return "audit" in Settings.model_fields


def riskwire_env(
    scratch: Path, name: str, pending: tuple[int, int] | None = None
) -> dict[str, str]:
    """Environment for a benchmark's riskwire: state and, where built, the audit log
    in ``scratch`` (never var/); ``pending``: grpc.max_pending_calls and _hard (the
    spike's server: MAX_PENDING_CALLS), None for the defaults."""
    env = {
        "RISKWIRE_STATE_DIR": str(scratch / f"{name}-state"),
        # Shed at the transport beyond this many calls in progress (RESOURCE_EXHAUSTED):
        # the capacity here (~800 calls/s) times the route's 10 ms is ~8 in service.
        "RISKWIRE_GRPC__MAX_CONCURRENT_CALLS": str(MAX_CONCURRENT_CALLS),
    }
    if pending is not None:
        # Calls received but not yet taken by the event loop: past these, gRPC's core
        # refuses new ones at once (CANCELLED) instead of queueing them past the
        # deadline. A closed loop of more callers than this is refused too: capacity
        # is measured on a server with the defaults.
        env["RISKWIRE_GRPC__MAX_PENDING_CALLS"] = str(pending[0])
        env["RISKWIRE_GRPC__MAX_PENDING_CALLS_HARD"] = str(pending[1])
    if audit_supported():
        env["RISKWIRE_AUDIT__DIRECTORY"] = str(scratch / f"{name}-audit")
        env["RISKWIRE_AUDIT__KEY_FILE"] = str(scratch / f"{name}-audit.key")
    return env


def riskwire_argv(models: Path, routes: Path, workers: int = 1) -> list[str]:
    return [*RISKWIRE_ARGV, "--models", str(models), "--routes", str(routes)] + (
        ["--workers", str(workers)] if workers > 1 else []
    )


def measure_client(rates: Sequence[float], seconds: float = 2.0) -> list[dict[str, Any]]:
    """What one client process offers at each open-loop rate, against the floor."""
    out = []
    with (
        tempfile.TemporaryDirectory(prefix="riskwire-spike-") as scratch,
        ServerProcess("floor", FLOOR_CMD, Path(scratch) / "floor.log") as floor,
    ):
        floor.start(60.0)
        for rate in rates:
            spec = ClientSpec(
                target=f"127.0.0.1:{floor.port}",
                phases=(Phase("open", seconds, (Flow("normal", rate),)),),
            )
            result = run_phases(spec)
            phase = per_phase(result.rows, result.phases)[0]
            calls = int(result.rows.shape[0])
            row = {
                "intended_per_s": rate,
                "offered_per_s": phase["offered_per_s"],
                "answered_per_s": round((phase["model"] + phase["fallback"]) / seconds, 1),
                "p99_ms": phase["p99_ms"],
                "max_send_lag_ms": round(result.max_send_lag_ns / 1e6, 1),
                "client_cpu_us_per_call": round(result.client_cpu_ns / 1e3 / calls, 1),
                "client_busy": result.client_busy,
            }
            print(
                f"one client process, intended {rate:>7,.0f}/s: offered "
                f"{row['offered_per_s']:>7,.0f}/s, answered {row['answered_per_s']:>7,.0f}/s, "
                f"p99 {_f(row['p99_ms'], 2)} ms, max send lag {row['max_send_lag_ms']} ms, "
                f"client CPU {row['client_cpu_us_per_call']} us/call, busy {row['client_busy']}",
                flush=True,
            )
            out.append(row)
    return out


@dataclass
class ScenarioRuns:
    capacity: float
    probe: RunResult | None
    """The closed-loop capacity probe; None when the capacity was given."""
    done: list[tuple[ScenarioReport, RunResult]]
    client: str = "python"
    """The load client that ran them: ``native`` or ``python``."""

    @property
    def answered(self) -> int:
        """Calls the server answered in all of it, probe and warm-ups included."""
        return sum(r.answered for _, r in self.done) + (self.probe.answered if self.probe else 0)

    @property
    def recorded(self) -> int:
        """Of those, the ones that must have a decision record (RunResult.recorded)."""
        return sum(r.recorded for _, r in self.done) + (self.probe.recorded if self.probe else 0)


def run_scenarios(
    target: str,
    *,
    scenarios: Sequence[str],
    capacity: float | None,
    deadline_ms: float | None,
    args: argparse.Namespace,
    server_pid: int | None = None,
) -> ScenarioRuns:
    """Probe the capacity (unless given), then run each scenario, with the load client
    ``args.client`` names (see client_runner); ``server_pid``: the server process on
    this machine, whose threads' CPU each scenario samples (cpustat)."""
    client, runner = client_runner(args.client)
    probe = None
    if capacity is None:
        capacity, probe = probe_capacity(
            target, seconds=args.probe_s, seed=args.seed, runner=runner
        )
        print(
            f"capacity probe ({client} client): {capacity:,.0f} answered calls/s at c=8 "
            "closed loop",
            flush=True,
        )
    done = []
    for name in scenarios:
        if name == "spike":
            phases = spike_phases(
                capacity,
                base_fraction=args.base_fraction,
                multiple=args.multiple,
                steady_s=args.steady_s,
                spike_s=args.spike_s,
                after_s=args.after_s,
            )
            peak = "spike"
        else:
            phases = card_testing_phases(
                capacity,
                base_fraction=args.base_fraction,
                burst_multiple=args.burst_multiple,
                burst_s=args.burst_s,
            )
            peak = "burst"
        spec = ClientSpec(
            target=target,
            phases=phases,
            procs=args.procs,
            deadline_ms=args.client_deadline_ms,
            seed=args.seed,
        )
        sampler = None if server_pid is None else cpustat.CpuSampler(server_pid)
        if sampler is not None and not sampler.supported:
            sampler = None
        if sampler is not None:
            with sampler:
                result = runner(spec)
        else:
            result = runner(spec)
        rep = report(
            name,
            result,
            capacity,
            deadline_ms,
            peak=peak,
            client=client,
            cpu=None if sampler is None else sampler.samples,
            server_pid=server_pid,
        )
        for p in rep.phases:
            print(
                f"{name:<12} {p['phase']:<7} intended {p['intended_per_s']:>7,.0f}/s offered "
                f"{p['offered_per_s']:>7,.0f}/s  model {p['model']:>6,}  fallback "
                f"{p['fallback']:>6,}  errors {p['errors']:>4,}  p99 {_f(p['p99_ms'], 2)} ms "
                f"(server {_f(p['server_p99_ms'], 2)} ms)",
                flush=True,
            )
        done.append((rep, result))
    return ScenarioRuns(capacity, probe, done, client)


def add_scenario_arguments(p: argparse.ArgumentParser) -> None:
    """The scenario shape options, shared with benchmarks.load.ci."""
    p.add_argument("--capacity", type=float, help="calls/s; default: a closed-loop probe")
    p.add_argument("--probe-s", type=float, default=2.0, help="seconds of the capacity probe")
    p.add_argument("--procs", type=int, default=2, help="client processes for the open loop")
    p.add_argument("--base-fraction", type=float, default=0.5, help="steady rate / capacity")
    p.add_argument("--multiple", type=float, default=10.0, help="spike rate / steady rate")
    p.add_argument("--steady-s", type=float, default=4.0)
    p.add_argument("--spike-s", type=float, default=3.0)
    p.add_argument("--after-s", type=float, default=5.0)
    p.add_argument(
        "--burst-multiple", type=float, default=5.0, help="card-testing rate / steady rate"
    )
    p.add_argument("--burst-s", type=float, default=3.0)
    p.add_argument(
        "--client-deadline-ms",
        type=float,
        default=1000.0,
        help="gRPC deadline of each call (long: lateness shows as latency, not as errors)",
    )
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--client",
        choices=["auto", "native", "python"],
        default="auto",
        help="load client: native (gRPC C++, make native-client), python, or native "
        "where it builds",
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--target", help="host:port of a running server; default: start riskwire")
    p.add_argument("--models", type=Path, default=Path("var/models"))
    p.add_argument("--routes", type=Path, default=SPIKE_ROUTES)
    p.add_argument("--workers", type=int, default=1, help="riskwire worker processes")
    p.add_argument("--scenario", choices=["spike", "card-testing", "both"], default="both")
    p.add_argument(
        "--max-pending-calls",
        type=int,
        nargs=2,
        metavar=("SOFT", "HARD"),
        default=list(MAX_PENDING_CALLS),
        help="grpc.max_pending_calls and _hard of the riskwire it starts",
    )
    p.add_argument(
        "--client-capacity",
        action="store_true",
        help="only measure what one client process can offer (against the floor)",
    )
    add_scenario_arguments(p)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return p


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _probe_started(command: list[str], scratch: Path, args: argparse.Namespace) -> float:
    """riskwire's capacity (the closed-loop probe) on a server of its own, with the
    default pending bound, stopped before the scenarios' server starts."""
    with ServerProcess(
        "riskwire-probe", command, scratch / "riskwire-probe.log", riskwire_env(scratch, "probe")
    ) as probe_server:
        probe_server.start(120.0)
        _, runner = client_runner(args.client)
        capacity, _ = probe_capacity(
            f"127.0.0.1:{probe_server.port}", seconds=args.probe_s, seed=args.seed, runner=runner
        )
    print(f"capacity probe: {capacity:,.0f} answered calls/s at c=8 closed loop", flush=True)
    return capacity


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    if args.client_capacity:
        rows = measure_client([1000, 2000, 3000, 4000, 6000])
        out = args.results_dir / "client-capacity.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps({"machine": machine.describe(), "one_client_process": rows}, indent=2) + "\n"
        )
        print(f"wrote {out}")
        return 0
    scenarios = ["spike", "card-testing"] if args.scenario == "both" else [args.scenario]
    deadline_ms: float | None = route_policy(args.routes)[0]
    started = datetime.now(UTC)
    cli_args = sys.argv[1:] if argv is None else argv
    command = None
    capacity = args.capacity
    server_pid = None
    with contextlib.ExitStack() as stack:
        target = args.target
        if target is None:
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="riskwire-")))
            command = riskwire_argv(args.models, args.routes, args.workers)
            try:
                if capacity is None:
                    # On a server with the default pending bound: the closed-loop probe
                    # keeps 8 calls in flight, which a bound of 1-2 would refuse.
                    capacity = _probe_started(command, scratch, args)
                server = stack.enter_context(
                    ServerProcess(
                        "riskwire",
                        command,
                        scratch / "riskwire.log",
                        riskwire_env(scratch, "rw", pending=tuple(args.max_pending_calls)),
                    )
                )
                server.start(120.0)
            except (ServerError, SpikeError) as exc:
                print(f"spike: {exc}", file=sys.stderr)
                return 1
            target = f"127.0.0.1:{server.port}"
            server_pid = server.pid if args.workers == 1 else None
            print(f"riskwire: pid {server.pid}, port {server.port}", flush=True)
        else:
            deadline_ms = None if args.routes == SPIKE_ROUTES else deadline_ms
        try:
            runs = run_scenarios(
                target,
                scenarios=scenarios,
                capacity=capacity,
                deadline_ms=deadline_ms,
                args=args,
                server_pid=server_pid,
            )
        except SpikeError as exc:
            print(f"spike: {exc}", file=sys.stderr)
            return 1
    stem = f"{started.strftime('%Y-%m-%dT%H%M%SZ')}-{machine.short_host()}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    md = [
        f"# Spike scenarios: {started.strftime('%Y-%m-%d %H:%M UTC')}, {machine.short_host()}",
        "",
        f"Command: `{shlex.join(['python', '-m', 'benchmarks.load.spike', *cli_args])}`"
        + (f"; riskwire: `{shlex.join(command)}`" if command else f"; target {target}"),
        "",
    ]
    for rep, result in runs.done:
        png = args.results_dir / f"{stem}-{rep.name}.png"
        plot_timeline(
            result.rows,
            result.phases,
            png,
            title=f"{rep.name}: {started.strftime('%Y-%m-%d %H:%M UTC')}",
            deadline_ms=deadline_ms,
        )
        md += [render_scenario(rep), f"![{rep.name}]({png.name})", ""]
    m = machine.describe()
    md.append(
        f"Machine: {m['cpu_model']}, {m['nproc']} cores, Python {m['python']}, grpcio "
        f"{m['grpcio']}, code {m['git_commit']}"
        + (" (uncommitted changes)" if m["git_dirty"] else "")
    )
    doc = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": command,
        "argv": cli_args,
        "capacity_per_s": runs.capacity,
        "machine": m,
        "scenarios": [asdict(rep) for rep, _ in runs.done],
    }
    text = "\n".join(md) + "\n"
    for name in (stem, "latest"):
        (args.results_dir / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        (args.results_dir / f"{name}.md").write_text(text)
    print()
    print(text)
    print(f"wrote {args.results_dir / stem}.json, .md and the plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
