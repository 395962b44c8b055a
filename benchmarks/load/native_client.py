"""The native open-loop load client: spike.run_phases' contract, in C++.

The Python client (spike._Client) costs 300-500 us of CPU per call here, so at a few
thousand calls/s it saturates and its own lateness (late sends, replies handled late)
shows in the latencies it measures. ``benchmarks/load/native/openloop.cc`` makes the
same calls on the same schedule with gRPC C++'s generic stub (no generated code: the
pools' pre-serialized requests go out as they are, replies come back as bytes) at
about a third of that here. This module builds it, runs it, and turns what it records
into the same :class:`spike.RunResult` as :func:`spike.run_phases`: OK replies are
classified here with :func:`spike.classify_reply`, so outcomes mean the same thing.

One process makes every call: ``ClientSpec.procs`` (how many Python processes share
the schedule) is ignored, and ``RunResult.procs`` is 1. ``completion_threads`` picks
how it waits (openloop.cc's header has the measurements):

- 0 (default): one thread sends and takes the replies, waiting on gRPC's completion
  queue in between, whose timeouts are whole milliseconds: calls leave up to ~1 ms
  after their due time (p50 0.15-0.5 ms here, about the Python client's below its
  saturation), at the least CPU: 100-150 us a call on the 2-core VM against the
  Python client's 230-440.
- N >= 1: a sender thread sleeping until each call's due time (~0.1 ms late, p50) and
  N threads taking the replies, at 35-40% more CPU per call.

Run from the repository root, for a quick comparison with the Python client::

    python -m benchmarks.load.native_client --target 127.0.0.1:50051 --rate 4000 --seconds 3
    python -m benchmarks.load.native_client --target 127.0.0.1:50051 --rate 4000 \\
        --seconds 3 --client python

Needs g++ and gRPC C++ (``libgrpc++-dev``; ``make native-client`` installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

import grpc
import numpy as np
import numpy.typing as npt

from benchmarks.load import spike
from benchmarks.load.loadgen import RequestPool

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "benchmarks" / "load" / "native" / "openloop.cc"
BINARY = REPO_ROOT / "build" / "native-client" / "openloop"

RECORD_DTYPE = np.dtype(
    [
        ("intended", "<i8"),
        ("sent", "<i8"),
        ("end", "<i8"),
        ("reply_offset", "<i8"),
        ("reply_len", "<i4"),
        ("status", "<i4"),
        ("pool", "<i2"),
        ("kind", "u1"),
        ("unused", "u1"),
        ("payload", "<i4"),
    ]
)
"""openloop.cc's Record (48 packed bytes): change both together."""
Records = npt.NDArray[np.void]
_MAGIC = b"RWOLREC1"
_HEADER = struct.Struct("<8sQQQ")
_NOT_SENT_STATUS = -1
_RECORDED, _WARM_UP = 0, 1
_STATUS_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


class NativeClientUnavailable(Exception):
    """The native client cannot be built here: no compiler or no gRPC C++."""


def build() -> Path:
    """The client's binary, compiled first if missing or older than its source.

    Raises:
        NativeClientUnavailable: no g++, no pkg-config, or no gRPC C++ (libgrpc++-dev).
        RuntimeError: the compiler failed on the source (a bug, not a missing tool:
            it is not hidden as "unavailable").
    """
    if BINARY.exists() and (
        not SOURCE.exists() or BINARY.stat().st_mtime >= SOURCE.stat().st_mtime
    ):
        return BINARY
    if not SOURCE.exists():
        raise NativeClientUnavailable(f"no source: {SOURCE}")
    compiler = os.environ.get("CXX") or shutil.which("g++")
    if not compiler:
        raise NativeClientUnavailable("no C++ compiler (g++) on PATH")
    if not shutil.which("pkg-config"):
        raise NativeClientUnavailable(
            "pkg-config is not installed (make native-client installs it)"
        )
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "grpc++"], capture_output=True, text=True, check=False
    )
    if flags.returncode != 0:
        raise NativeClientUnavailable(
            "libgrpc++-dev is not installed (make native-client installs it)"
        )
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    # Compile beside the binary, then rename: a concurrent run never sees half a file.
    partial = BINARY.with_name(f"{BINARY.name}.{os.getpid()}.tmp")
    argv = [
        compiler,
        "-O2",
        "-std=c++17",
        str(SOURCE),
        *flags.stdout.split(),
        "-lpthread",
        "-o",
        str(partial),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise RuntimeError(f"compiling {SOURCE} failed:\n{done.stderr[-4000:]}")
    partial.replace(BINARY)
    return BINARY


def available() -> bool:
    """Whether :func:`build` succeeds (a compile error still raises)."""
    try:
        build()
    except NativeClientUnavailable:
        return False
    return True


# --- inputs of the binary ---------------------------------------------------------------


def _write_pools(path: Path, pools: dict[str, RequestPool]) -> None:
    """Every pool of spike.POOLS, by index; one that is not used has no payloads."""
    parts = [struct.pack("<I", len(spike.POOLS))]
    for name in spike.POOLS:
        payloads = pools[name].payloads if name in pools else []
        parts.append(struct.pack("<I", len(payloads)))
        for payload in payloads:
            parts += [struct.pack("<I", len(payload)), payload]
    path.write_bytes(b"".join(parts))


def _schedule_text(spec: spike.ClientSpec, completion_threads: int) -> str:
    lines = [
        f"target {spec.target}",
        f"deadline_ns {int(spec.deadline_ms * 1e6)}",
        f"max_send_lag_ns {int(spec.max_send_lag_ms * 1e6)}",
        f"connect_timeout_ns {int(spec.connect_timeout_s * 1e9)}",
        f"warmup_ns {max(0, int(spec.warmup_s * 1e9))}",
        f"threads {completion_threads}",
    ]
    for phase, (start_s, end_s) in zip(spec.phases, spike.phase_bounds(spec.phases), strict=True):
        # The same integer offsets as _Client.run: t0 + int(start_s * 1e9).
        start, end = int(start_s * 1e9), int(end_s * 1e9)
        if phase.concurrency:
            lines.append(f"phase closed {start} {end} {phase.concurrency}")
        else:
            lines.append(f"phase open {start} {end}")
            # repr: the shortest text that reads back as the same double.
            lines += [f"flow {spike.POOLS.index(f.pool)} {float(f.rate)!r}" for f in phase.flows]
    return "\n".join(lines) + "\n"


# --- running it -------------------------------------------------------------------------


class _Lines:
    """The binary's stdout, line by line, from a thread (so waits can time out)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._q.put(raw.decode(errors="replace").rstrip("\n"))
        self._q.put(None)

    def join(self, timeout_s: float) -> None:
        """Wait for the end of the stream (the process has exited)."""
        self._thread.join(timeout_s)

    def expect(self, word: str, timeout_s: float, proc: subprocess.Popen[bytes], err: Path) -> str:
        """The next line starting with ``word``; SpikeError on a timeout or an exit."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if line is None:
                code = proc.wait()
                raise spike.SpikeError(
                    f"native client exited with {code} before {word}: {_tail(err)}"
                )
            if line.startswith(word):
                return line
        raise spike.SpikeError(f"native client sent no {word} within {timeout_s:.0f} s")


def _tail(path: Path) -> str:
    try:
        text = path.read_text(errors="replace").strip()
    except OSError:
        return "(no stderr)"
    return text[-2000:] or "(no stderr)"


def _fields(line: str) -> dict[str, int]:
    """``DONE a=1 b=2`` -> {"a": 1, "b": 2}."""
    return {k: int(v) for k, v in (item.split("=", 1) for item in line.split()[1:])}


def run_phases(
    spec: spike.ClientSpec, start_delay_s: float = 0.3, *, completion_threads: int = 0
) -> spike.RunResult:
    """Run ``spec.phases`` from the native client; gather every call.

    Same contract as :func:`spike.run_phases` (one process; ``spec.procs`` is ignored;
    ``completion_threads``: see the module's docstring).

    Raises:
        SpikeError: no connection, or the client failed, died or stopped answering.
        NativeClientUnavailable: it cannot be built here.
    """
    binary = build()
    names = {f.pool for p in spec.phases for f in p.flows} | {"normal"}
    pools = spike._build_pools(names, spec.seed, spec.pool_size)
    total_s = sum(p.seconds for p in spec.phases)
    with tempfile.TemporaryDirectory(prefix="riskwire-openloop-") as scratch:
        tmp = Path(scratch)
        schedule, pools_file, out, err = (
            tmp / "schedule.txt",
            tmp / "pools.bin",
            tmp / "records.bin",
            tmp / "stderr.txt",
        )
        schedule.write_text(_schedule_text(spec, completion_threads))
        _write_pools(pools_file, pools)
        with err.open("wb") as err_file:
            proc = subprocess.Popen(
                [str(binary), str(schedule), str(pools_file), str(out)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err_file,
            )
        assert proc.stdin is not None and proc.stdout is not None
        lines = _Lines(proc.stdout)
        try:
            lines.expect("READY", spec.connect_timeout_s + spec.warmup_s + 60.0, proc, err)
            t0 = time.monotonic_ns() + int(start_delay_s * 1e9)
            try:
                proc.stdin.write(f"GO {t0}\n".encode())
                proc.stdin.flush()
            except BrokenPipeError:
                raise spike.SpikeError(f"native client exited before GO: {_tail(err)}") from None
            done = _fields(
                lines.expect("DONE", total_s + spec.deadline_ms / 1000.0 + 60.0, proc, err)
            )
            if (code := proc.wait(timeout=30)) != 0:
                raise spike.SpikeError(f"native client exited with {code}: {_tail(err)}")
        finally:
            # Our own child, by its PID: never left running, pipes closed.
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            lines.join(5.0)
            with contextlib.suppress(OSError):
                proc.stdin.close()
            proc.stdout.close()
        data = out.read_bytes()
    records, blob, examples = _parse(data)
    return _result(spec, pools, records, blob, examples, done, t0)


def _parse(data: bytes) -> tuple[Records, bytes, dict[str, str]]:
    magic, n, blob_len, n_examples = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise spike.SpikeError(f"native client output: bad magic {magic!r}")
    at = _HEADER.size
    records = np.frombuffer(data, dtype=RECORD_DTYPE, count=n, offset=at)
    at += n * RECORD_DTYPE.itemsize
    blob = data[at : at + blob_len]
    at += blob_len
    examples = {}
    for _ in range(n_examples):
        code, length = struct.unpack_from("<iI", data, at)
        at += 8
        examples[_STATUS_BY_VALUE[code].name] = data[at : at + length].decode(errors="replace")
        at += length
    return records, blob, examples


def _outcomes(
    records: Records, blob: bytes, pools: dict[str, RequestPool]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """OUTCOME, DECISION and SERVER_US of each record, as _Client.call sets them."""
    n = len(records)
    outcome = np.empty(n, dtype=np.int64)
    decision = np.zeros(n, dtype=np.int64)
    server_us = np.zeros(n, dtype=np.int64)
    by_index = [pools.get(name) for name in spike.POOLS]
    status = records["status"]
    outcome[status == _NOT_SENT_STATUS] = spike.NOT_SENT
    for value, code in _STATUS_BY_VALUE.items():
        if code is not grpc.StatusCode.OK:
            outcome[status == value] = spike.outcome_code(code.name)
    (ok,) = np.nonzero(status == grpc.StatusCode.OK.value[0])
    ok_records = records[ok]
    for i, pool_index, payload, off, length in zip(
        ok.tolist(),
        ok_records["pool"].tolist(),
        ok_records["payload"].tolist(),
        ok_records["reply_offset"].tolist(),
        ok_records["reply_len"].tolist(),
        strict=True,
    ):
        pool = by_index[pool_index]
        assert pool is not None, "a reply from a pool that was not sent"
        outcome[i], decision[i], server_us[i] = spike.classify_reply(
            blob[off : off + length], pool.expected_ids[payload][0]
        )
    return outcome, decision, server_us


def _result(
    spec: spike.ClientSpec,
    pools: dict[str, RequestPool],
    records: Records,
    blob: bytes,
    examples: dict[str, str],
    done: dict[str, int],
    t0: int,
) -> spike.RunResult:
    outcome, decision, server_us = _outcomes(records, blob, pools)
    warm = records["kind"] == _WARM_UP
    rec = ~warm
    rows = np.empty((int(np.count_nonzero(rec)), 7), dtype=np.int64)
    rows[:, spike.INTENDED] = records["intended"][rec] - t0
    rows[:, spike.SENT] = records["sent"][rec] - t0
    rows[:, spike.END] = records["end"][rec] - t0
    rows[:, spike.OUTCOME] = outcome[rec]
    rows[:, spike.POOL] = records["pool"][rec]
    rows[:, spike.DECISION] = decision[rec]
    rows[:, spike.SERVER_US] = server_us[rec]
    rows = rows[np.argsort(rows[:, spike.INTENDED], kind="stable")]
    return spike.RunResult(
        phases=spec.phases,
        rows=rows,
        procs=1,
        warmup_answered=int(np.count_nonzero(spike.is_answered(outcome[warm]))),
        client_cpu_ns=done["cpu_ns"],
        client_wall_ns=done["wall_ns"],
        max_send_lag_ns=done["max_send_lag_ns"],
        error_examples=examples,
        t0_ns=t0,
    )


# --- by hand ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="One open-loop phase from the native (or the Python) client.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--target", required=True, help="HOST:PORT of a running server")
    p.add_argument("--rate", type=float, required=True, help="calls/s")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--deadline-ms", type=float, default=1000.0)
    p.add_argument("--client", choices=["native", "python"], default="native")
    p.add_argument("--procs", type=int, default=1, help="Python client processes")
    p.add_argument(
        "--threads", type=int, default=0, help="native: completion threads (0: the sender's)"
    )
    args = p.parse_args(argv)
    spec = spike.ClientSpec(
        target=args.target,
        phases=(spike.Phase("open", args.seconds, (spike.Flow("normal", args.rate),)),),
        procs=args.procs,
        deadline_ms=args.deadline_ms,
    )
    try:
        result = (
            run_phases(spec, completion_threads=args.threads)
            if args.client == "native"
            else spike.run_phases(spec)
        )
    except (spike.SpikeError, NativeClientUnavailable) as exc:
        print(f"native_client: {exc}", file=sys.stderr)
        return 1
    for phase in spike.per_phase(result.rows, result.phases):
        print(
            f"{args.client}: intended {phase['intended_per_s']:,.0f}/s, offered "
            f"{phase['offered_per_s']:,.0f}/s, model {phase['model']:,}, errors "
            f"{phase['errors']:,}, p50 {phase['p50_ms']} ms, p99 {phase['p99_ms']} ms, "
            f"max send lag {phase['max_send_lag_ms']} ms"
        )
    calls = max(1, int(result.rows.shape[0]))
    print(
        f"{args.client}: client CPU {result.client_cpu_ns / 1e3 / calls:.1f} us/call, busy "
        f"{result.client_busy}, warm-up answered {result.warmup_answered}"
        + (f", errors {result.error_examples}" if result.error_examples else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
