"""A server's CPU during a load run, per second: what its event-loop thread ran, and
how long it was ready to run but waited for a core that something else held.

A latency table cannot tell a server busy with its own work from one that is not
given a CPU. Linux can: ``/proc/<pid>/task/<tid>/schedstat`` holds, per thread, the
nanoseconds it ran and the nanoseconds it sat runnable on a run queue. Sampled every
``interval_s`` through a run and cut into the run's seconds, with ``/proc/stat`` for
the whole machine, each second gets:

- ``loop_ran_pct`` / ``loop_waited_pct``: the main thread (the gRPC server's event
  loop) ran, and waited for a CPU, this share of the second;
- ``grpc_core_pct``: gRPC core's own threads ran (``event_engine``, ``grpc_*``: they
  read and write every call's frames, the calls refused past the pending bound
  included), in percent of one core;
- ``server_pct``: every thread of the server process ran, in percent of one core;
- ``machine_busy_pct``: all cores' busy time in percent of all cores (the load client
  on the same machine included);
- ``client_ran_pct`` / ``client_waited_pct``: the load client on this machine (this
  process's children other than the server: the native client, or the Python client's
  processes), every thread, in percent of one core.

On the 2-core VM, riskwire's loop thread waited for a CPU 30-40% of each spike second
against 4-8% in the steady phase, while gRPC core's threads went from ~8% to ~42% of
a core and the co-located client from ~15% to 50-70% (2026-11-29): the spike's latency
is largely the loop waiting its turn on a machine with no core to spare
(benchmarks/README.md, "Spikes").

Linux only; where schedstat is missing (or the process is gone) the figures are None.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GRPC_CORE_THREADS = ("event_engine", "grpc_", "lifeguard", "default-executo", "resolver-execut")
"""Name prefixes of the threads gRPC's C core starts in a Python process."""

_PROC = Path("/proc")


@dataclass(frozen=True)
class ThreadTimes:
    name: str
    ran_ns: int
    waited_ns: int


@dataclass(frozen=True)
class Sample:
    t_ns: int
    """``time.monotonic_ns()`` when taken (the load clients' clock)."""
    threads: dict[int, ThreadTimes]
    machine_busy_ns: int
    machine_total_ns: int
    clients: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Each client process's (ns ran, ns waited), summed over its threads."""


def read_threads(pid: int, proc: Path = _PROC) -> dict[int, ThreadTimes]:
    """Every live thread of ``pid``: name, ns ran, ns waited on a run queue. Empty when
    the process is gone or the kernel keeps no schedstat."""
    out: dict[int, ThreadTimes] = {}
    try:
        tids = os.listdir(proc / str(pid) / "task")
    except OSError:
        return out
    for tid in tids:
        task = proc / str(pid) / "task" / tid
        try:
            name = (task / "comm").read_text().strip()
            ran, waited, *_ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue  # ended between the listing and the read, or no schedstat
        out[int(tid)] = ThreadTimes(name, int(ran), int(waited))
    return out


_TICK_NS = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def read_machine(proc: Path = _PROC) -> tuple[int, int]:
    """All CPUs' (busy, total) ns since boot from /proc/stat; (0, 0) where unreadable."""
    try:
        with open(proc / "stat") as f:
            fields = f.readline().split()
    except OSError:
        return 0, 0
    if not fields or fields[0] != "cpu":
        return 0, 0
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy * _TICK_NS, (busy + idle + iowait) * _TICK_NS


def children(proc: Path = _PROC, pid: int | None = None) -> list[int]:
    """The child processes of ``pid`` (default: this process), from every thread's
    ``children`` file; empty where the kernel does not list them."""
    pid = os.getpid() if pid is None else pid
    out: list[int] = []
    try:
        tids = os.listdir(proc / str(pid) / "task")
    except OSError:
        return out
    for tid in tids:
        try:
            out += [
                int(c) for c in (proc / str(pid) / "task" / tid / "children").read_text().split()
            ]
        except (OSError, ValueError):
            continue
    return out


def process_times(pid: int, proc: Path = _PROC) -> tuple[int, int] | None:
    """``pid``'s (ns ran, ns waited), summed over its threads; None once it is gone."""
    threads = read_threads(pid, proc)
    if not threads:
        return None
    return sum(t.ran_ns for t in threads.values()), sum(t.waited_ns for t in threads.values())


def take(pid: int, proc: Path = _PROC, clients: Sequence[int] = ()) -> Sample:
    busy, total = read_machine(proc)
    times = {c: t for c in clients if (t := process_times(c, proc)) is not None}
    return Sample(time.monotonic_ns(), read_threads(pid, proc), busy, total, times)


def is_grpc_core(name: str) -> bool:
    return name.startswith(GRPC_CORE_THREADS)


def per_second(
    samples: Sequence[Sample], pid: int, t0_ns: int, seconds: int
) -> list[dict[str, float | None] | None]:
    """``seconds`` one-second buckets from ``t0_ns`` (see :func:`per_bucket`)."""
    return per_bucket(samples, pid, t0_ns, seconds, 1_000_000_000)


def per_bucket(
    samples: Sequence[Sample], pid: int, start_ns: int, buckets: int, bucket_ns: int
) -> list[dict[str, float | None] | None]:
    """``buckets`` buckets of ``bucket_ns`` from ``start_ns``: each interval between two
    samples counts in the bucket of its midpoint; None for a bucket no interval falls
    in (buckets shorter than the sampling interval leave some empty).

    A thread first seen in an interval counts from zero (it started then); one that
    ended counts up to its last sample.
    """
    keys = ("wall", "loop_ran", "loop_waited", "core", "server", "client_ran", "client_waited")
    sums = [dict.fromkeys(keys, 0) for _ in range(buckets)]
    machine = [[0, 0] for _ in range(buckets)]
    for before, after in itertools.pairwise(samples):
        bucket = ((before.t_ns + after.t_ns) // 2 - start_ns) // bucket_ns
        if not 0 <= bucket < buckets:
            continue
        s = sums[bucket]
        s["wall"] += after.t_ns - before.t_ns
        for tid, now in after.threads.items():
            was = before.threads.get(tid, ThreadTimes(now.name, 0, 0))
            ran = now.ran_ns - was.ran_ns
            s["server"] += ran
            if tid == pid:
                s["loop_ran"] += ran
                s["loop_waited"] += now.waited_ns - was.waited_ns
            elif is_grpc_core(now.name):
                s["core"] += ran
        for client, (ran, waited) in after.clients.items():
            was_ran, was_waited = before.clients.get(client, (0, 0))
            s["client_ran"] += ran - was_ran
            s["client_waited"] += waited - was_waited
        machine[bucket][0] += after.machine_busy_ns - before.machine_busy_ns
        machine[bucket][1] += after.machine_total_ns - before.machine_total_ns
    out: list[dict[str, float | None] | None] = []
    for s, (busy, total) in zip(sums, machine, strict=True):
        wall = s["wall"]
        if not wall:
            out.append(None)
            continue
        out.append(
            {
                "loop_ran_pct": round(100 * s["loop_ran"] / wall, 1),
                "loop_waited_pct": round(100 * s["loop_waited"] / wall, 1),
                "grpc_core_pct": round(100 * s["core"] / wall, 1),
                "server_pct": round(100 * s["server"] / wall, 1),
                "machine_busy_pct": round(100 * busy / total, 1) if total > 0 else None,
                "client_ran_pct": round(100 * s["client_ran"] / wall, 1),
                "client_waited_pct": round(100 * s["client_waited"] / wall, 1),
            }
        )
    return out


def mean_of(rows: Sequence[dict[str, Any] | None]) -> dict[str, float | None] | None:
    """Each figure's mean over the rows that have it (a phase from its seconds)."""
    present = [r for r in rows if r]
    if not present:
        return None
    keys = present[0].keys()
    out = {}
    for key in keys:
        values = [r[key] for r in present if r.get(key) is not None]
        out[key] = round(sum(values) / len(values), 1) if values else None
    return out


class CpuSampler:
    """Samples ``pid``'s threads, the machine and the load client (this process's other
    children) every ``interval_s`` on a thread of its own, from ``start`` (or entering
    the ``with``) to ``stop``."""

    def __init__(self, pid: int, interval_s: float = 0.05, proc: Path = _PROC) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self._proc = proc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    @property
    def supported(self) -> bool:
        """Whether the kernel gives this process's threads their schedstat."""
        return bool(read_threads(self.pid, self._proc))

    def _take(self) -> Sample:
        clients = [c for c in children(self._proc) if c != self.pid]
        return take(self.pid, self._proc, clients)

    def start(self) -> CpuSampler:
        self.samples.append(self._take())
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join()
        return self.samples

    def __enter__(self) -> CpuSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append(self._take())
        self.samples.append(self._take())
