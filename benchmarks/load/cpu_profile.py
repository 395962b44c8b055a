"""Where a Score call's server CPU goes: the floor against riskwire, by thread and by
library, under the same closed-loop load.

Run from the repository root (needs Linux ``perf``; ~1 minute)::

    python -m benchmarks.load.cpu_profile --models var/models

For each server in turn (the floor, then riskwire on the spike's routes with its audit
log, as bench-ci runs it), a closed loop of ``--concurrency`` Score callers over
``--procs`` client processes runs for ``--seconds`` after ``--warmup-s``. Over the
measured window it records:

- every server thread's CPU time (``/proc/<pid>/task/*/schedstat``), per call;
- ``perf record -e cpu-clock`` of the event-loop thread (the main thread: the one
  that bounds throughput), split by the shared object the samples fell in: the
  Python interpreter, the kernel (socket writes and wake-ups), gRPC's Cython layer,
  ONNX Runtime, the event loop, riskwire's native modules, numpy, libc.

Microseconds per call are CPU time over the calls answered in the window, from
client-side throughput. One run; these machines are noisy (figures move ~10%), so
compare the two servers within a run. Writes
``benchmarks/results/cpu-profile/<stamp>-<host>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.load import cpustat, machine, spike
from benchmarks.load.compare import FLOOR_CMD, RESULTS_DIR, ServerProcess
from benchmarks.load.loadgen import LoadConfig, run_load

GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Python interpreter", ("libpython",)),
    ("kernel", ("[kernel",)),
    ("gRPC (cygrpc)", ("cygrpc",)),
    ("ONNX Runtime", ("onnxruntime",)),
    ("event loop (uvloop, _asyncio)", ("loop.cpython", "_asyncio")),
    ("riskwire native", ("_encoder", "_glue", "_audit")),
    ("numpy", ("_multiarray", "_umath")),
    ("libc", ("libc.so", "libm.so")),
)
OTHER = "other"
_DSO_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S.*?)\s*$")
PERF_HZ = 499


def group_of(dso: str) -> str:
    for name, prefixes in GROUPS:
        if any(dso.startswith(p) for p in prefixes):
            return name
    return OTHER


def thread_cpu_s(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread's CPU seconds so far (cpustat.read_threads): {tid: (name, seconds)}."""
    return {tid: (t.name, t.ran_ns / 1e9) for tid, t in cpustat.read_threads(pid).items()}


def perf_by_group(data: Path) -> tuple[int, dict[str, float]]:
    """Samples in ``data`` and the share (0-1) of each library group."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return shares_of_report(report)


def shares_of_report(report: str) -> tuple[int, dict[str, float]]:
    """``perf report --sort dso --stdio``'s sample count and each group's share (0-1)."""
    samples = 0
    shares: dict[str, float] = defaultdict(float)
    for line in report.splitlines():
        if line.startswith("# Samples:"):
            count = line.split(":", 1)[1].split()[0]
            samples = int(float(count[:-1]) * 1000) if count.endswith("K") else int(count)
            continue
        match = _DSO_LINE.match(line)
        if match and not line.startswith("#"):
            shares[group_of(match.group(2))] += float(match.group(1)) / 100.0
    return samples, dict(shares)


def profile_one(
    name: str, server: ServerProcess, args: argparse.Namespace, scratch: Path
) -> dict[str, Any]:
    assert server.port is not None
    cfg = LoadConfig(
        target=f"127.0.0.1:{server.port}",
        concurrency=args.concurrency,
        procs=args.procs,
        duration_s=args.warmup_s + args.seconds + 1.0,
        warmup_s=0.0,
        server_pid=server.pid,
    )
    data = scratch / f"{name}.perf"
    window: dict[str, Any] = {}

    def measure() -> None:
        time.sleep(args.warmup_s)
        before = thread_cpu_s(server.pid)
        started = time.monotonic()
        subprocess.run(
            [
                "perf",
                "record",
                "-q",
                "-e",
                "cpu-clock",
                "-F",
                str(PERF_HZ),
                "-t",
                str(server.pid),
                "-o",
                str(data),
                "--",
                "sleep",
                str(args.seconds),
            ],
            capture_output=True,
            check=True,
        )
        window["seconds"] = time.monotonic() - started
        window["after"] = thread_cpu_s(server.pid)
        window["before"] = before

    sampler = threading.Thread(target=measure)
    sampler.start()
    summary = run_load(cfg)
    sampler.join()
    calls = summary["ok_per_s"] * window["seconds"]
    threads: dict[str, float] = defaultdict(float)
    process_name = window["after"][server.pid][0]
    for tid, (tname, after) in window["after"].items():
        spent = after - window["before"].get(tid, (tname, 0.0))[1]
        if tid == server.pid:
            label = "main (event loop)"
        elif tname == process_name:
            label = "unnamed (gRPC's poller, ...)"
        else:
            label = tname
        threads[label] += spent / calls * 1e6
    samples, shares = perf_by_group(data)
    main_us = threads.get("main (event loop)", 0.0)
    return {
        "server": name,
        "calls_per_s": summary["ok_per_s"],
        "errors": summary["errors"],
        "window_s": round(window["seconds"], 2),
        "threads_us_per_call": {
            k: round(v, 1) for k, v in sorted(threads.items(), key=lambda kv: -kv[1])
        },
        "server_us_per_call": round(sum(threads.values()), 1),
        "main_perf_samples": samples,
        "main_us_per_call_by_library": {
            g: round(share * main_us, 1)
            for g, share in sorted(shares.items(), key=lambda kv: -kv[1])
        },
    }


def render(rows: list[dict[str, Any]], host: str) -> str:
    floor, rw = rows
    lines = [
        f"# Server CPU per Score call, floor against riskwire ({host})",
        "",
        f"Closed loop, {floor['config']['concurrency']} callers over "
        f"{floor['config']['procs']} client processes on the same machine; one run "
        "(`python -m benchmarks.load.cpu_profile`).",
        "",
        "| | floor | riskwire |",
        "|---|--:|--:|",
        f"| answered calls/s | {floor['calls_per_s']:,.0f} | {rw['calls_per_s']:,.0f} |",
        f"| server CPU us/call, all threads | {floor['server_us_per_call']:,.1f} | "
        f"{rw['server_us_per_call']:,.1f} |",
    ]
    names = list(dict.fromkeys([*floor["threads_us_per_call"], *rw["threads_us_per_call"]]))
    for t in names:
        a = floor["threads_us_per_call"].get(t, 0.0)
        b = rw["threads_us_per_call"].get(t, 0.0)
        if max(a, b) >= 1.0:
            lines.append(f"| thread {t} | {a:,.1f} | {b:,.1f} |")
    lines += ["", "The event-loop thread's CPU per call by library (perf cpu-clock samples):", ""]
    lines += ["| library | floor us/call | riskwire us/call |", "|---|--:|--:|"]
    libs = list(
        dict.fromkeys([*rw["main_us_per_call_by_library"], *floor["main_us_per_call_by_library"]])
    )
    for lib in libs:
        a = floor["main_us_per_call_by_library"].get(lib, 0.0)
        b = rw["main_us_per_call_by_library"].get(lib, 0.0)
        lines.append(f"| {lib} | {a:,.1f} | {b:,.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=Path("var/models"))
    parser.add_argument("--routes", type=Path, default=spike.SPIKE_ROUTES)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=6.0, help="measured window")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR / "cpu-profile")
    args = parser.parse_args(argv)
    if shutil.which("perf") is None:
        print("cpu_profile needs Linux perf (linux-perf); not found", file=sys.stderr)
        return 2
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    rows = []
    with tempfile.TemporaryDirectory(prefix="riskwire-cpu-") as tmp:
        scratch = Path(tmp)
        servers = {
            "floor": ServerProcess("floor", FLOOR_CMD, scratch / "floor.log"),
            "riskwire": ServerProcess(
                "riskwire",
                spike.riskwire_argv(args.models, args.routes),
                scratch / "riskwire.log",
                spike.riskwire_env(scratch, "riskwire"),
            ),
        }
        for name, server in servers.items():
            with server:
                server.start(120.0)
                row = profile_one(name, server, args, scratch)
            row["config"] = config
            rows.append(row)
            calls, cpu = row["calls_per_s"], row["server_us_per_call"]
            print(f"{name}: {calls:,.0f} calls/s, {cpu:,.1f} us/call")
    host = machine.describe()["host"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    args.results_dir.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine.describe(), "config": config, "servers": rows}
    (args.results_dir / f"{stamp}-{host}.json").write_text(json.dumps(doc, indent=2) + "\n")
    text = render(rows, host)
    (args.results_dir / f"{stamp}-{host}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
