"""benchmarks.load.cpustat: a server's threads' CPU, cut into a run's seconds.

The arithmetic runs on samples written by hand, so every share is known in advance;
the readers run against this very process's /proc (Linux), with a thread that spins
beside one that sleeps, and against a /proc laid out by hand.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.load import ci, cpustat, spike
from benchmarks.load.cpustat import Sample, ThreadTimes

S = 1_000_000_000
MS = 1_000_000
PID = 100
T0 = 50 * S


def sample(
    t_s: float,
    loop: tuple[float, float],
    core: float = 0.0,
    other: float = 0.0,
    machine: tuple[float, float] = (0.0, 0.0),
    extra: dict[int, ThreadTimes] | None = None,
    client: tuple[float, float] | None = None,
) -> Sample:
    """Cumulative figures at ``t_s`` after T0: the loop's (ran, waited) seconds, an
    event_engine thread's and an audit writer's ran seconds, the machine's (busy,
    total) seconds, a client process's (ran, waited) seconds."""
    threads = {
        PID: ThreadTimes("riskwire", int(loop[0] * S), int(loop[1] * S)),
        101: ThreadTimes("event_engine", int(core * S), 0),
        102: ThreadTimes("audit-writer-0", int(other * S), 0),
        **(extra or {}),
    }
    clients = {} if client is None else {200: (int(client[0] * S), int(client[1] * S))}
    return Sample(T0 + int(t_s * S), threads, int(machine[0] * S), int(machine[1] * S), clients)


def test_each_second_gets_what_the_threads_did_in_it() -> None:
    samples = [
        sample(0.0, (0.0, 0.0)),
        sample(0.5, (0.25, 0.0), core=0.05, machine=(0.5, 1.0)),
        sample(1.0, (0.5, 0.05), core=0.1, machine=(1.0, 2.0), client=(0.2, 0.1)),
        # Second 1: the loop runs half of it and waits 40%; gRPC core takes 40% of a
        # core, the machine's two cores are 90% busy, the client waits 50% of it.
        sample(2.0, (1.0, 0.45), core=0.5, other=0.1, machine=(2.8, 4.0), client=(0.8, 0.6)),
    ]
    first, second, third = cpustat.per_second(samples, PID, T0, 3)
    assert first == {
        "loop_ran_pct": 50.0,
        "loop_waited_pct": 5.0,
        "grpc_core_pct": 10.0,
        "server_pct": 60.0,
        "machine_busy_pct": 50.0,
        # First seen in the second half: counted from zero.
        "client_ran_pct": 20.0,
        "client_waited_pct": 10.0,
    }
    assert second == {
        "loop_ran_pct": 50.0,
        "loop_waited_pct": 40.0,
        "grpc_core_pct": 40.0,
        "server_pct": 100.0,
        "machine_busy_pct": 90.0,
        "client_ran_pct": 60.0,
        "client_waited_pct": 50.0,
    }
    assert third is None  # no interval falls in it


def test_intervals_count_in_the_second_of_their_midpoint_and_outside_ones_not_at_all() -> None:
    samples = [
        sample(-0.6, (0.0, 0.0)),
        sample(-0.1, (0.3, 0.0)),  # before the schedule: dropped
        sample(0.3, (0.5, 0.0)),  # midpoint 0.1 s: second 0
        sample(1.9, (1.3, 0.0)),  # midpoint 1.1 s: second 1, whole 1.6 s interval
    ]
    first, second = cpustat.per_second(samples, PID, T0, 2)
    assert first is not None and first["loop_ran_pct"] == 50.0  # 0.2 s of 0.4 s
    assert second is not None and second["loop_ran_pct"] == 50.0  # 0.8 s of 1.6 s


def test_a_thread_that_starts_mid_run_counts_from_zero() -> None:
    late = {103: ThreadTimes("grpc_global_tim", int(0.2 * S), 0)}
    samples = [sample(0.0, (0.0, 0.0)), sample(1.0, (0.5, 0.0), extra=late)]
    (only,) = cpustat.per_second(samples, PID, T0, 1)
    assert only is not None
    assert only["grpc_core_pct"] == 20.0
    assert only["server_pct"] == 70.0


def test_phase_means_skip_missing_seconds() -> None:
    rows = [
        {"loop_ran_pct": 50.0, "machine_busy_pct": None},
        None,
        {"loop_ran_pct": 70.0, "machine_busy_pct": 80.0},
    ]
    assert cpustat.mean_of(rows) == {"loop_ran_pct": 60.0, "machine_busy_pct": 80.0}
    assert cpustat.mean_of([None, None]) is None


def test_grpc_core_threads_are_told_apart() -> None:
    assert cpustat.is_grpc_core("event_engine")
    assert cpustat.is_grpc_core("grpc_global_tim")
    assert not cpustat.is_grpc_core("audit-writer-0")
    assert not cpustat.is_grpc_core("riskwire")


def test_readers_parse_a_proc_laid_out_by_hand(tmp_path: Path) -> None:
    task = tmp_path / "7" / "task"
    for tid, name, stat in (("7", "riskwire", "300 40 9"), ("8", "event_engine", "50 5 2")):
        (task / tid).mkdir(parents=True)
        (task / tid / "comm").write_text(name + "\n")
        (task / tid / "schedstat").write_text(stat + "\n")
    (task / "9").mkdir()  # a thread that ended between the listing and the read
    (tmp_path / "stat").write_text("cpu  10 1 4 80 5 2 3 0 0 0\ncpu0 5 0 2 40 2 1 1 0 0 0\n")
    assert cpustat.read_threads(7, tmp_path) == {
        7: ThreadTimes("riskwire", 300, 40),
        8: ThreadTimes("event_engine", 50, 5),
    }
    tick = cpustat._TICK_NS
    assert cpustat.read_machine(tmp_path) == (20 * tick, 105 * tick)
    assert cpustat.read_threads(99, tmp_path) == {}
    assert cpustat.process_times(7, tmp_path) == (350, 45)
    assert cpustat.process_times(99, tmp_path) is None
    (task / "7" / "children").write_text("31 32 \n")
    (task / "8" / "children").write_text("")
    assert sorted(cpustat.children(tmp_path, 7)) == [31, 32]
    assert cpustat.read_machine(tmp_path / "absent") == (0, 0)


@pytest.mark.skipif(
    not Path(f"/proc/self/task/{threading.get_native_id()}/schedstat").exists(),
    reason="needs Linux's per-thread schedstat",
)
def test_sampling_this_process_sees_the_spinning_thread_run() -> None:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(1000))

    def sleep() -> None:
        stop.wait()

    spinner = threading.Thread(target=spin)
    sleeper = threading.Thread(target=sleep)
    spinner.start()
    sleeper.start()
    try:
        with cpustat.CpuSampler(os.getpid(), interval_s=0.02) as sampler:
            time.sleep(0.3)
    finally:
        stop.set()
        spinner.join()
        sleeper.join()
    first, last = sampler.samples[0], sampler.samples[-1]
    assert len(sampler.samples) >= 3
    assert first.machine_total_ns > 0 and last.machine_busy_ns >= first.machine_busy_ns
    ids = (spinner.native_id, sleeper.native_id)
    assert all(i is not None and i in last.threads for i in ids)

    def ran(tid: int | None) -> int:
        assert tid is not None
        was = first.threads.get(tid, ThreadTimes("", 0, 0))
        return last.threads[tid].ran_ns - was.ran_ns

    assert ran(spinner.native_id) > ran(sleeper.native_id)


def test_the_report_and_the_verdict_carry_the_loops_figures() -> None:
    phases = (
        spike.Phase("steady", 1.0, (spike.Flow("normal", 10),)),
        spike.Phase("spike", 1.0, (spike.Flow("normal", 100),)),
    )
    result = spike.RunResult(phases, spike_rows(), t0_ns=T0)
    samples = [
        sample(0.0, (0.0, 0.0)),
        sample(1.0, (0.5, 0.05), core=0.1, machine=(1.0, 2.0)),
        sample(2.0, (1.0, 0.45), core=0.5, machine=(2.8, 4.0)),
    ]
    rep = spike.report(
        "spike", result, 20.0, 10.0, peak="spike", cpu=samples, server_pid=PID, client="native"
    )
    assert rep.cpu_measured
    assert rep.seconds[1]["cpu"]["loop_waited_pct"] == 40.0
    assert rep.phases[1]["cpu"]["grpc_core_pct"] == 40.0
    text = spike.render_scenario(rep)
    assert "| loop ran % | loop waited % | gRPC core % | machine busy % |" in text
    assert "| 50 | 40 | 40 | 90 |" in text
    assert "spike: ran 50%, waited 40%" in text
    lines = ci.cpu_verdict(asdict(rep), asdict(rep))
    assert lines[:1] == [
        "- The event-loop thread in the spike, ready to run but waiting for a core another "
        "thread or process held: riskwire's ran 50% and waited 40% (steady: 50% and 5%), "
        "with gRPC core's threads at 40% of a core and the machine 90% busy; the floor's "
        "ran 50% and waited 40% (steady: 50% and 5%), with gRPC core's threads at 40% of a "
        "core and the machine 90% busy."
    ]
    # Then each server's worst 100 ms at the spike's start that has CPU figures.
    assert lines[1:] == [
        f"- {name}'s worst 100 ms at the spike's start (t = 1.5 s): p99 1.0 ms, refusals' "
        "p99 - ms; the loop ran 50% and waited 40%, the load client ran 0% of a core and "
        "waited 0%, the machine 90% busy."
        for name in ("riskwire", "the floor")
    ]
    # The spike's start in 100 ms buckets, from 0.5 s before it to 1 s after.
    assert [b["t_s"] for b in rep.onset] == [round(0.5 + 0.1 * i, 6) for i in range(15)]
    assert [b["phase"] for b in rep.onset[4:6]] == ["steady", "spike"]
    assert [b["intended"] for b in rep.onset[4:6]] == [1, 10]
    # One-second samples: only the buckets holding an interval's midpoint have figures.
    assert rep.onset[0]["cpu"]["loop_waited_pct"] == 5.0
    assert rep.onset[10]["cpu"]["loop_waited_pct"] == 40.0
    assert rep.onset[1]["cpu"] is None
    assert "The spike's start, 100 ms buckets" in text
    assert "| 1 | spike | 10 | 10 | 0 | 1.0 | 1.0 | - | 0.0 | - | - | - | - |" in text
    # Without samples: no columns, no line, no verdict.
    bare = spike.report("spike", result, 20.0, 10.0, peak="spike")
    assert not bare.cpu_measured and "loop ran %" not in spike.render_scenario(bare)
    assert ci.cpu_verdict(asdict(bare), asdict(rep)) == []


def spike_rows() -> npt.NDArray[np.int64]:
    """10 calls in the steady second, 100 in the spike's, every one a 1 ms model answer."""
    model = spike.outcome_code("MODEL")
    due = [100 * i for i in range(10)] + [1000 + 10 * i for i in range(100)]
    return np.asarray(
        [[d * MS, d * MS, (d + 1) * MS, model, 0, 1, 500] for d in due], dtype=np.int64
    )


@pytest.mark.skipif(
    not Path(f"/proc/self/task/{threading.get_native_id()}/children").exists(),
    reason="needs Linux's /proc/<pid>/task/<tid>/children",
)
def test_the_sampler_counts_child_processes_as_the_client() -> None:
    import subprocess
    import sys

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.time() + 0.4\nwhile time.time() < end: pass",
        ]
    )
    try:
        assert child.pid in cpustat.children()
        with cpustat.CpuSampler(os.getpid(), interval_s=0.02) as sampler:
            time.sleep(0.25)
    finally:
        child.wait()
    assert any(child.pid in s.clients for s in sampler.samples)
    first = next(s for s in sampler.samples if child.pid in s.clients)
    last = [s for s in sampler.samples if child.pid in s.clients][-1]
    assert last.clients[child.pid][0] > first.clients[child.pid][0]  # it spun meanwhile
