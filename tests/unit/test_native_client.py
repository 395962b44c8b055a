"""The native open-loop load client against the floor server: real calls, real rows.

Skipped where the client cannot be built (no g++ or no libgrpc++-dev; ``make
native-client`` installs them). The floor answers every Score call with decision
APPROVE from the MODEL and the request's transaction id, so any other outcome, or a
MISMATCH, is the client's doing. Times are never pass/fail here: only the shape of
what is recorded (counts, order, the schedule's due times, outcomes).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from benchmarks.load import native_client, spike
from benchmarks.load.spike import INTENDED, OUTCOME, POOL, SENT, ClientSpec, Flow, Phase

if not native_client.available():
    pytest.skip(
        "the native load client cannot be built here (g++ and libgrpc++-dev; "
        "make native-client installs them)",
        allow_module_level=True,
    )

REPO_ROOT = Path(__file__).resolve().parents[2]
APPROVE = 1


@pytest.fixture(scope="module")
def floor() -> Iterator[str]:
    """``127.0.0.1:<port>`` of a floor server, stopped (by its PID) afterwards."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.load.floor_server", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(30.0)
    try:
        if not first or not first[0].startswith("PORT "):
            pytest.fail(f"the floor server did not start: {first!r}")
        yield f"127.0.0.1:{int(first[0].split()[1])}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture
def silent() -> Iterator[str]:
    """``127.0.0.1:<port>`` of a gRPC server whose Score never answers (until the test
    is over): every call ends at its deadline, whatever the machine's speed."""
    release = threading.Event()

    def hang(request: bytes, context: grpc.ServicerContext) -> bytes:
        release.wait(30.0)
        return b""

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "riskwire.v1.Scoring", {"Score": grpc.unary_unary_rpc_method_handler(hang)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        release.set()
        server.stop(grace=None).wait()


def spec(
    target: str,
    *phases: Phase,
    deadline_ms: float = 1000.0,
    max_send_lag_ms: float = 200.0,
    connect_timeout_s: float = 10.0,
) -> ClientSpec:
    return ClientSpec(
        target=target,
        phases=phases,
        deadline_ms=deadline_ms,
        max_send_lag_ms=max_send_lag_ms,
        connect_timeout_s=connect_timeout_s,
        warmup_s=0.2,
    )


@pytest.mark.parametrize("threads", [0, 1], ids=["one-thread", "sender-and-drainer"])
def test_open_loop_follows_the_schedule(floor: str, threads: int) -> None:
    # A numpy float, as the rates computed from a probed capacity can be.
    rate = np.float64(300.0)
    result = native_client.run_phases(
        spec(floor, Phase("open", 1.0, (Flow("normal", rate),))), completion_threads=threads
    )
    rows = result.rows
    # Call k is due at k / rate from the start (to the ns, as Python computes it).
    assert rows.shape == (300, 7)
    expected_due = np.arange(300) * (1e9 / rate)
    assert np.abs(rows[:, INTENDED] - expected_due).max() <= 1
    assert (rows[:, OUTCOME] == spike.MODEL).all(), result.error_examples
    assert (rows[:, spike.DECISION] == APPROVE).all()
    assert (rows[:, POOL] == spike.POOLS.index("normal")).all()
    assert (rows[:, SENT] >= rows[:, INTENDED]).all()
    assert (rows[:, spike.END] >= rows[:, SENT]).all()
    assert result.procs == 1
    assert result.warmup_answered > 0
    assert result.client_cpu_ns > 0 and result.client_wall_ns > 0
    # The lag is taken just before the send time is read: never more than SENT - INTENDED.
    assert 0 <= result.max_send_lag_ns <= int((rows[:, SENT] - rows[:, INTENDED]).max())
    assert result.error_examples == {}
    phase = spike.per_phase(rows, result.phases)[0]
    assert phase["intended"] == phase["offered"] == phase["model"] == 300


def test_two_pools_in_one_phase(floor: str) -> None:
    result = native_client.run_phases(
        spec(
            floor,
            Phase("burst", 0.5, (Flow("normal", 100.0), Flow("card_testing", 60.0))),
        )
    )
    rows = result.rows
    pools = rows[:, POOL]
    assert np.count_nonzero(pools == spike.POOLS.index("normal")) == 50
    assert np.count_nonzero(pools == spike.POOLS.index("card_testing")) == 30
    # MODEL, not MISMATCH: each reply carried the id of the payload sent from that pool.
    assert (rows[:, OUTCOME] == spike.MODEL).all(), result.error_examples
    assert (np.diff(rows[:, INTENDED]) >= 0).all()  # sorted by due time


def test_closed_loop(floor: str) -> None:
    result = native_client.run_phases(
        spec(floor, Phase("warm", 0.2, (Flow("normal", 50.0),)), Phase("probe", 0.5, concurrency=4))
    )
    rows = result.rows
    closed = rows[rows[:, INTENDED] >= int(0.2e9)]
    assert closed.shape[0] > 4
    assert (closed[:, OUTCOME] == spike.MODEL).all(), result.error_examples
    # A caller starts a call only while its phase lasts (it may end after).
    assert (closed[:, INTENDED] < int(0.7e9)).all()
    assert (closed[:, spike.END] >= closed[:, SENT]).all()
    assert rows.shape[0] == 10 + closed.shape[0]


def test_no_server_raises_spike_error() -> None:
    with socket.socket() as s:  # a port nothing listens on (bound, then released)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(spike.SpikeError, match="no connection"):
        native_client.run_phases(
            spec(
                f"127.0.0.1:{port}",
                Phase("open", 0.2, (Flow("normal", 10.0),)),
                connect_timeout_s=0.5,
            )
        )


def test_deadline_exceeded_is_an_error(silent: str) -> None:
    # (Against the floor even a 1 us deadline is not deterministic: gRPC rounds
    # deadlines up to the millisecond, and the floor often answers within it.)
    result = native_client.run_phases(
        spec(silent, Phase("open", 0.3, (Flow("normal", 100.0),)), deadline_ms=50.0)
    )
    rows = result.rows
    assert rows.shape[0] == 30
    deadline = spike.outcome_code("DEADLINE_EXCEEDED")
    assert (rows[:, OUTCOME] == deadline).all()
    assert spike.is_error(rows[:, OUTCOME]).all()
    assert "DEADLINE_EXCEEDED" in result.error_examples
    assert result.warmup_answered == 0
    assert result.answered == 0
    # Each ended at its deadline, not before.
    assert (rows[:, spike.END] - rows[:, SENT] >= 50_000_000).all()


def test_calls_too_late_are_not_sent(floor: str) -> None:
    # A negative allowance: every call is "too late", so none is sent.
    result = native_client.run_phases(
        spec(floor, Phase("open", 0.3, (Flow("normal", 100.0),)), max_send_lag_ms=-1.0)
    )
    rows = result.rows
    assert rows.shape[0] == 30
    assert (rows[:, OUTCOME] == spike.NOT_SENT).all()
    assert (rows[:, SENT] == rows[:, INTENDED]).all()
    assert (rows[:, spike.END] == rows[:, INTENDED]).all()
    assert result.max_send_lag_ns == 0
