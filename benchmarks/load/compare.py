"""The `make bench` scenario: riskwire against the floor server, in one run, alternating.

Run from the repository root::

    python -m benchmarks.load.compare --models var/models  # ~2-3 min on 2 cores
    python -m benchmarks.load.compare --duration 20 --reps 5 --with-stream   # longer
    python -m benchmarks.load.compare --floor-as-riskwire  # no riskwire build needed

Starts the floor (benchmarks.load.floor_server) and riskwire (``--models`` or
``--riskwire-cmd``), both on 127.0.0.1 with port 0, waits for each one's ``PORT <n>``
line (and grpc.health.v1 SERVING where served), then runs every scenario against the
floor and then riskwire, ``--reps`` times over, so slow drift of a noisy machine falls
on both alike. Quotes medians over the repetitions and riskwire's throughput at
c=8 as a ratio of the floor's. Writes ``benchmarks/results/<stamp>-<host>.json`` and
``.md``, and the same as ``latest.json`` / ``latest.md``. Servers are stopped by PID
whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.load import machine
from benchmarks.load.loadgen import LoadConfig, LoadError, describe_run, run_load

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
FLOOR_CMD = [sys.executable, "-m", "benchmarks.load.floor_server", "--port", "0"]
# The console script beside this interpreter: .venv/bin/riskwire under `make bench`.
# Every port 0, so a bench never collides with a server already running here.
RISKWIRE_ARGV = [
    str(Path(sys.executable).parent / "riskwire"),
    *("serve", "--port", "0", "--admin-port", "0", "--metrics-port", "0"),
]
RATIO_GOAL = 0.9  # DESIGN: riskwire keeps at least 0.9x the floor's throughput at c=8
_PORT_LINE = re.compile(r"^PORT (\d+)$")


@dataclass(frozen=True)
class Scenario:
    """A closed-loop load shape, run the same way against every server."""

    key: str
    title: str
    method: str
    concurrency: int
    batch_size: int = 256
    stream_depth: int = 1


SCENARIOS = (
    Scenario("score_c1", "Score, c=1", "score", 1),
    Scenario("score_c8", "Score, c=8", "score", 8),
    # Two batches in flight: one per core of the reference 2-core machine.
    Scenario("batch256_c2", "ScoreBatch 256/batch, c=2", "batch", 2, batch_size=256),
)
STREAM_SCENARIO = Scenario(
    "stream_c8_d4", "ScoreStream, 8 streams x 4", "stream", 8, stream_depth=4
)
HEADLINE = "score_c8"


class ServerError(Exception):
    """A server did not start or announce its port."""


class ServerProcess:
    """A server process started from ``argv``, ready once it has printed ``PORT <n>``
    and, where it serves grpc.health.v1, reports SERVING.

    Its stdout and stderr go to ``log_path`` (read continuously, so a chatty server
    never blocks on a full pipe). Stopped by PID: SIGTERM, then SIGKILL after a grace;
    a failed start leaves nothing running.
    """

    def __init__(
        self, name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.port: int | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def start(self, timeout_s: float) -> ServerProcess:
        """Start the server and wait until it is ready (conditions, never a sleep)."""
        log: IO[str] = self.log_path.open("w")
        try:
            self._proc = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=None if self.env is None else {**os.environ, **self.env},
                # Its own session: a Ctrl-C reaches us, and we stop the server ourselves.
                start_new_session=True,
            )
        except OSError as exc:
            log.close()
            raise ServerError(f"{self.name}: cannot run {self.argv[0]}: {exc}") from exc
        self._pump = threading.Thread(target=self._read_output, args=(log,), daemon=True)
        self._pump.start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(timeout=0.2):
            code = self._proc.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                state = "timed out" if code is None else f"exited with {code}"
                raise ServerError(
                    f"{self.name} {state} before printing 'PORT <n>'; last output:\n" + self._tail()
                )
        self._wait_serving(deadline - time.monotonic())
        return self

    def _wait_serving(self, timeout_s: float) -> None:
        """Block until grpc.health.v1 says SERVING, where the server has it.

        riskwire may announce its port before its models are warm; the floor has no
        health service (UNIMPLEMENTED) and serves as soon as it prints its port.
        """
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=""),
                    timeout=max(timeout_s, 1.0),
                    wait_for_ready=True,
                )
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return
                self.stop()
                raise ServerError(f"{self.name}: health check failed: {exc.details()}") from exc
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            self.stop()
            raise ServerError(f"{self.name}: health status {reply.status}, not SERVING")

    def _read_output(self, log: IO[str]) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        with log:
            for line in self._proc.stdout:
                log.write(line)
                log.flush()
                match = _PORT_LINE.match(line.strip())
                if match and self.port is None:
                    self.port = int(match.group(1))
                    self._ready.set()

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no output)"

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, wait up to ``grace_s``, then SIGKILL; idempotent."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 4) if present else None


def summarize(
    runs: list[dict[str, Any]], scenarios: list[Scenario], servers: list[str]
) -> dict[str, Any]:
    """Medians over repetitions, per scenario and server, and riskwire / floor ratios."""
    table: dict[str, Any] = {}
    for sc in scenarios:
        row: dict[str, Any] = {}
        for server in servers:
            mine = [r["summary"] for r in runs if r["scenario"] == sc.key and r["server"] == server]
            row[server] = {
                "reps": len(mine),
                "ok_per_s": _median([s["ok_per_s"] for s in mine]),
                "transactions_per_s": _median([s["transactions_per_s"] for s in mine]),
                "p50_ms": _median([s["latency_ms"]["p50"] for s in mine]),
                "p99_ms": _median([s["latency_ms"]["p99"] for s in mine]),
                "server_cpu_us_per_call": _median([s["server_cpu_us_per_call"] for s in mine]),
                "client_cpu_us_per_call": _median([s["client_cpu_us_per_call"] for s in mine]),
                "ok_per_s_spread": [
                    min(s["ok_per_s"] for s in mine),
                    max(s["ok_per_s"] for s in mine),
                ]
                if mine
                else None,
                "errors": sum(sum(s["errors"].values()) for s in mine),
            }
        floor = row[servers[0]]
        for i, name in enumerate(servers[1:]):
            candidate = row[name]
            # The first candidate's ratios keep their historic keys; variants get theirs.
            suffix = "" if i == 0 else f"/{name}"
            row["throughput_ratio" + suffix] = (
                round(candidate["ok_per_s"] / floor["ok_per_s"], 3)
                if floor["ok_per_s"] and candidate["ok_per_s"]
                else None
            )
            row["server_cpu_ratio" + suffix] = (
                round(candidate["server_cpu_us_per_call"] / floor["server_cpu_us_per_call"], 3)
                if floor["server_cpu_us_per_call"] and candidate["server_cpu_us_per_call"]
                else None
            )
        table[sc.key] = row
    return table


def _fmt(v: float | None, digits: int = 0) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def render_markdown(doc: dict[str, Any]) -> str:
    """The human report: headline ratio, the table of medians, how and where measured."""
    m, cfg, medians = doc["machine"], doc["config"], doc["medians"]
    floor, candidate, *variants = doc["servers"]
    head = medians.get(HEADLINE, {})
    ratio = head.get("throughput_ratio")
    lines = [f"# riskwire against the floor: {doc['started_utc']}, {m['host']}", ""]
    if doc["stand_in"]:
        lines += [
            "> **Stand-in run**: the second server is another floor server, not riskwire "
            "(`--floor-as-riskwire`). The ratio shows the method's noise, nothing else.",
            "",
        ]
    if ratio is not None:
        verdict = "meets" if ratio >= RATIO_GOAL else "**misses**"
        cpu = head.get("server_cpu_ratio")
        lines.append(
            f"{candidate} throughput at c=8: **{ratio:.2f}x** the floor's ({verdict} the "
            f"{RATIO_GOAL}x goal); server CPU per call {_fmt(cpu, 2)}x the floor's."
        )
        lines.append("")
    lines += [
        "| scenario | server | calls/s | transactions/s | p50 ms | p99 ms "
        "| server CPU us/call | errors |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for sc in doc["scenarios"]:
        row = medians[sc["key"]]
        for server in doc["servers"]:
            r = row[server]
            lines.append(
                f"| {sc['title']} | {server} | {_fmt(r['ok_per_s'])} "
                f"| {_fmt(r['transactions_per_s']) if sc['method'] == 'batch' else ''} "
                f"| {_fmt(r['p50_ms'], 3)} | {_fmt(r['p99_ms'], 3)} "
                f"| {_fmt(r['server_cpu_us_per_call'])} | {r['errors']} |"
            )
        for i, server in enumerate([candidate, *variants]):
            suffix = "" if i == 0 else f"/{server}"
            lines.append(
                f"| | {server} / {floor} | {_fmt(row['throughput_ratio' + suffix], 2)}x | | | "
                f"| {_fmt(row['server_cpu_ratio' + suffix], 2)}x | |"
            )
    lines += [
        "",
        f"Medians of {cfg['reps']} repetitions, each scenario run against {floor} then "
        f"{candidate} in turn; closed loop, {cfg['duration_s']:g} s measured after "
        f"{cfg['warmup_s']:g} s of warm-up, {cfg['procs']} client process(es) on the same "
        f"machine, deadline {cfg['deadline_ms']:g} ms. Latency percentiles are over "
        "successful calls (nearest rank); server CPU is the server process tree's "
        "user+system time over the measured window divided by the calls made. Expect "
        "throughput to repeat within a few percent and p99 within ~15% on a noisy machine.",
        "",
        f"- Machine: {m['cpu_model']}, {m['nproc']} cores, {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}",
        f"- Runtime: Python {m['python']}, grpcio {m['grpcio']}, protobuf {m['protobuf']}, "
        f"uvloop {m['uvloop']}",
        f"- Code: {m['git_commit'] or 'no commit'}"
        + (" (uncommitted changes)" if m["git_dirty"] else ""),
        f"- {floor}: `{shlex.join(doc['commands'][floor])}`",
        f"- {candidate}: `{shlex.join(doc['commands'][candidate])}`",
        *(f"- {name}: the same with {' '.join(doc['variant_env'][name])}" for name in variants),
        "",
    ]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    # Written beside, then renamed: a reader never sees half a report.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    # CI cancels with SIGTERM: unwind through the finally blocks that stop the servers.
    raise SystemExit(128 + signum)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per run")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the floor/riskwire pair")
    p.add_argument("--procs", type=int, default=1, help="client processes per run")
    p.add_argument("--deadline-ms", type=float, default=1000.0, help="deadline per call")
    p.add_argument("--seed", type=int, default=7, help="seed of the request pool")
    p.add_argument(
        "--models",
        type=Path,
        default=Path("var/models"),
        help="model repository riskwire serves (ignored with --riskwire-cmd)",
    )
    p.add_argument(
        "--riskwire-cmd",
        help="command that starts riskwire on 127.0.0.1, port 0, printing 'PORT <n>' "
        f"(default: {shlex.join(RISKWIRE_ARGV)} --models MODELS)",
    )
    p.add_argument(
        "--floor-as-riskwire",
        action="store_true",
        help="stand a second floor server in for riskwire (checks the method itself)",
    )
    p.add_argument("--with-stream", action="store_true", help="add the ScoreStream scenario")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:VAR=VALUE[,VAR=VALUE]",
        help="also run riskwire as NAME with these environment settings, side by side "
        "(e.g. wire-protobuf:RISKWIRE_WIRE=python)",
    )
    p.add_argument(
        "--scenario",
        action="append",
        default=[],
        help="run only these scenario keys (default: all)",
    )
    p.add_argument("--server-timeout", type=float, default=120.0, help="seconds to wait for PORT")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return p


def main(argv: list[str] | None = None) -> int:
    """Start both servers, run the alternating scenarios, write the reports."""
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    scenarios = [*SCENARIOS, *([STREAM_SCENARIO] if args.with_stream else [])]
    if args.scenario:
        unknown = set(args.scenario) - {sc.key for sc in scenarios}
        if unknown:
            print(f"compare: unknown scenario(s) {sorted(unknown)}", file=sys.stderr)
            return 2
        scenarios = [sc for sc in scenarios if sc.key in args.scenario]
    variant_env: dict[str, list[str]] = {}
    for spec in args.variant:
        name, _, assignments = spec.partition(":")
        pairs = [a for a in assignments.split(",") if a]
        if not name or not pairs or any("=" not in a for a in pairs):
            print(f"compare: --variant wants NAME:VAR=VALUE[,...], got {spec!r}", file=sys.stderr)
            return 2
        variant_env[name] = pairs
    candidate = "floor-b" if args.floor_as_riskwire else "riskwire"
    if args.floor_as_riskwire:
        riskwire_argv = FLOOR_CMD
    elif args.riskwire_cmd:
        riskwire_argv = shlex.split(args.riskwire_cmd)
    else:
        riskwire_argv = [*RISKWIRE_ARGV, "--models", str(args.models)]
    commands = {"floor": FLOOR_CMD, candidate: riskwire_argv}
    commands.update({name: riskwire_argv for name in variant_env})
    started = datetime.now(UTC)
    runs: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="riskwire-bench-") as logs,
        contextlib.ExitStack() as stack,
    ):
        servers = {}
        for name, argv_ in commands.items():
            # riskwire's state (admin token) goes to the scratch directory, not var/state.
            env = {"RISKWIRE_STATE_DIR": str(Path(logs) / f"{name}-state")}
            for assignment in variant_env.get(name, []):
                key, value = assignment.split("=", 1)
                env[key] = value
            server = stack.enter_context(
                ServerProcess(name, argv_, Path(logs) / f"{name}.log", env=env)
            )
            try:
                server.start(args.server_timeout)
            except ServerError as exc:
                print(f"compare: {exc}", file=sys.stderr)
                if name == "riskwire":
                    print(
                        "compare: pass --riskwire-cmd, or --floor-as-riskwire to check the "
                        "method without riskwire",
                        file=sys.stderr,
                    )
                return 1
            print(f"{name}: pid {server.pid}, port {server.port}", flush=True)
            servers[name] = server
        for rep in range(args.reps):
            for sc in scenarios:
                for name, server in servers.items():
                    cfg = LoadConfig(
                        target=f"127.0.0.1:{server.port}",
                        method=sc.method,
                        concurrency=sc.concurrency,
                        batch_size=sc.batch_size,
                        stream_depth=sc.stream_depth,
                        duration_s=args.duration,
                        warmup_s=args.warmup,
                        procs=min(args.procs, sc.concurrency),
                        deadline_ms=args.deadline_ms,
                        seed=args.seed,
                        server_pid=server.pid,
                    )
                    try:
                        summary = run_load(cfg)
                    except (LoadError, ProcessLookupError) as exc:
                        print(f"compare: {name}, {describe_run(cfg)}: {exc}", file=sys.stderr)
                        return 1
                    runs.append(
                        {"rep": rep, "scenario": sc.key, "server": name, "summary": summary}
                    )
                    lat = summary["latency_ms"]
                    print(
                        f"rep {rep + 1}/{args.reps} {sc.title:<28} {name:<9} "
                        f"{summary['ok_per_s']:>9,.0f}/s  p50 {_fmt(lat['p50'], 3)}  "
                        f"p99 {_fmt(lat['p99'], 3)} ms  server CPU "
                        f"{_fmt(summary['server_cpu_us_per_call'])} us/call"
                        + (f"  errors {summary['errors']}" if summary["errors"] else ""),
                        flush=True,
                    )

    names = list(commands)
    doc = {
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "stand_in": args.floor_as_riskwire,
        "servers": names,
        "commands": commands,
        "variant_env": variant_env,
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "reps": args.reps,
            "procs": args.procs,
            "deadline_ms": args.deadline_ms,
            "seed": args.seed,
        },
        "scenarios": [asdict(sc) for sc in scenarios],
        "machine": machine.describe(),
        "medians": summarize(runs, scenarios, names),
        "runs": runs,
    }
    report = render_markdown(doc)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{started.strftime('%Y-%m-%dT%H%M%SZ')}-{machine.short_host()}"
    for name in (stem, "latest"):
        _write(args.results_dir / f"{name}.json", json.dumps(doc, indent=2) + "\n")
        _write(args.results_dir / f"{name}.md", report)
    print()
    print(report)
    print(f"wrote {args.results_dir / stem}.json and .md (and latest.*)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
