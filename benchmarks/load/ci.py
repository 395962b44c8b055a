"""The CI benchmark stage (`make bench-ci`): floor, steady, batch, spike, card testing.

Run from the repository root::

    python -m benchmarks.load.ci --models var/models        # ~90 s on 2 cores

In one run, on 127.0.0.1 with port 0 throughout:

1. The floor (benchmarks.load.floor_server) and riskwire (routes/champion-only.yaml)
   side by side: Score at c=8 and ScoreBatch of 256 at c=2, closed loop, alternating,
   ``--reps`` times (benchmarks.load.compare's scenarios and medians).
2. riskwire with routes/spike.yaml (a 10 ms deadline, fallback REVIEW on timeout and
   overload) and grpc.max_pending_calls 2 / 4 (spike.MAX_PENDING_CALLS); its capacity
   is riskwire's Score c=8 throughput of step 1; then the spike scenario (steady at
   half the capacity, 10x that, back) and the card-testing burst
   (benchmarks.load.spike); then the control: the spike's schedule, at riskwire's
   capacity, against the floor, which does no work per call (a measurement, never
   judged), and the spike's goals for both side by side.
3. Both riskwire servers write their audit log into a scratch directory (where this
   build has the ``audit`` settings); after they stop, ``riskwire audit verify DIR
   --json`` checks each chain and the decision records are counted against the
   transactions the server answered.

Writes ``benchmarks/results/ci/<stamp>-<host>.json`` and ``.md``, the spike's latency
timeline ``<stamp>-<host>-spike.png`` (card testing's and the control's beside it), and
``latest.*`` copies.
Prints riskwire's ratios against the floor and every headline figure against the last
committed result (``git show HEAD:benchmarks/results/ci/latest.json``).

Exit status: 1 only for errors other than explicit fallbacks and sheds
(RESOURCE_EXHAUSTED, refused streams; late calls are reported, not failing), a server
that exits during the run, a broken audit chain or fewer decision
records than answered transactions; 2 for bad arguments. Never for a timing: CI
machines are noisy, so timings are printed and kept, not judged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.load import machine, spike
from benchmarks.load.compare import (
    FLOOR_CMD,
    HEADLINE,
    SCENARIOS,
    ServerError,
    ServerProcess,
    render_markdown,
    summarize,
)
from benchmarks.load.loadgen import LoadConfig, LoadError, describe_run, run_load

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results" / "ci"
ROUTES_DIR = Path(__file__).resolve().parent / "routes"
STEADY_ROUTES = ROUTES_DIR / "champion-only.yaml"
CLOSED_LOOP = [sc for sc in SCENARIOS if sc.key in (HEADLINE, "batch256_c2")]
PREVIOUS = "benchmarks/results/ci/latest.json"
RISKWIRE_CLI = Path(sys.executable).parent / "riskwire"


# --- pass / fail: errors, crashes, lost audit records; never a timing -------------------------


def is_explicit_shed(code: str, fallback_on: Collection[str]) -> bool:
    """Whether an error status is the server's own, documented answer to overload.

    RESOURCE_EXHAUSTED is: from a route without ``overload`` in ``fallback.on`` (its
    policy sheds with the error), and from the transport's limit on calls in progress
    (``grpc.max_concurrent_calls``), which refuses before any route is chosen, so
    whatever the route's policy (``fallback_on`` is kept for the report). So is
    CANCELLED: gRPC's core refusing a call past ``grpc.max_pending_calls`` (calls it
    received that the event loop has not taken; the benchmark clients never cancel a
    call, they let its deadline pass). So is UNAVAILABLE: the server refusing a
    stream past its ``max_concurrent_streams`` (HTTP/2 REFUSED_STREAM); a server that
    went away is caught as a crash instead.
    """
    del fallback_on  # every kind here is an explicit shed; see the docstring
    return code in spike.REFUSED_STATUSES


LATE = ("DEADLINE_EXCEEDED",)
"""Calls whose caller's deadline passed before an answer arrived: a timing, reported
beside the table, never a failure. On 2 cores shared with the client, a spike past
what the machine can even receive keeps calls in gRPC's core, before the server's
admission control sees them, up to ``grpc.max_pending_calls`` (benchmarks/README.md,
"Spikes")."""


def late_calls(where: str, error_codes: Mapping[str, int]) -> list[str]:
    """One line per kind of late call (reported, not failing)."""
    return [
        f"{where}: {count} call(s) ended {code} at the client (late: a timing)"
        for code, count in sorted(error_codes.items())
        if count and code in LATE
    ]


def error_failures(
    where: str, error_codes: Mapping[str, int], fallback_on: Collection[str]
) -> list[str]:
    """One line per kind of error that fails the stage (fallbacks are answers)."""
    return [
        f"{where}: {count} call(s) failed with {code}"
        for code, count in sorted(error_codes.items())
        if count and not is_explicit_shed(code, fallback_on) and code not in LATE
    ]


@dataclass(frozen=True)
class AuditCheck:
    """A riskwire server's audit log against the transactions it answered."""

    server: str
    answered: int
    """Transactions the clients saw answered (model or fallback), each of which needs a
    decision record: all but the AUDIT_BACKLOG fallbacks, answered because the audit
    queue was full (the spike's client sees those; loadgen's closed loop does not
    read its replies, so there a backlog fallback would count as a lost record)."""
    unanswered: int = 0
    """Calls that failed at the client (its deadline, a cancel): the server may still
    have decided, and recorded, them."""
    decisions: int | None = None
    """Decision records found; None: not checked (see ``note``)."""
    chains_ok: bool | None = None
    note: str = ""

    @property
    def lost(self) -> int:
        return 0 if self.decisions is None else max(0, self.answered - self.decisions)


def audit_failure(check: AuditCheck) -> str | None:
    if check.decisions is None:
        return None
    if check.chains_ok is False:
        return f"{check.server}: the audit chain does not verify ({check.note})"
    if check.lost:
        return (
            f"{check.server}: {check.lost} lost audit record(s): {check.decisions} decision "
            f"records for {check.answered} answered transactions"
        )
    return None


def failures(
    errors: Sequence[tuple[str, Mapping[str, int], Collection[str]]],
    crashed: Sequence[str],
    audits: Sequence[AuditCheck],
    load_failures: Sequence[str] = (),
) -> list[str]:
    """Everything that fails the stage, one line each; empty: it passes.

    Args:
        errors: per scenario, ``(name, {status: count}, the route's fallback.on)``.
        crashed: servers that exited while the stage still needed them.
        audits: one check per riskwire server.
        load_failures: runs that could not complete (a client process died, a reply
            to the wrong transaction).
    """
    out = [f"{name}: the server exited during the run" for name in crashed]
    out += list(load_failures)
    for where, codes, fallback_on in errors:
        out += error_failures(where, codes, fallback_on)
    out += [f for f in map(audit_failure, audits) if f is not None]
    return out


# --- the audit log ----------------------------------------------------------------------------


def audit_verify_available() -> bool:
    """Whether ``riskwire audit verify`` exists in this build."""
    if not RISKWIRE_CLI.exists():
        return False
    probe = subprocess.run(
        [str(RISKWIRE_CLI), "audit", "verify", "--help"], capture_output=True, text=True
    )
    return probe.returncode == 0


def count_decision_records(directory: Path) -> int:
    """Decision records in every segment under ``directory`` (any worker)."""
    n = 0
    for path in sorted(directory.rglob("*.jsonl")):
        with path.open("rb") as segment:
            for line in segment:
                with contextlib.suppress(ValueError):
                    n += json.loads(line).get("kind") == "decision"
    return n


def check_audit(server: str, directory: Path, answered: int, unanswered: int) -> AuditCheck:
    """Verify the chains under ``directory`` and count its decision records."""
    base = AuditCheck(server, answered, unanswered)
    if not spike.audit_supported():
        return AuditCheck(
            **{**asdict(base), "note": "skipped: this build has no audit settings yet"}
        )
    if not audit_verify_available():
        return AuditCheck(
            **{**asdict(base), "note": "skipped: `riskwire audit verify` is not available"}
        )
    if not directory.is_dir():
        return AuditCheck(
            **{**asdict(base), "decisions": 0, "chains_ok": False, "note": f"no {directory}"}
        )
    run = subprocess.run(
        [str(RISKWIRE_CLI), "audit", "verify", str(directory), "--json"],
        capture_output=True,
        text=True,
    )
    try:
        report = json.loads(run.stdout)
    except ValueError:
        note = f"verify exited {run.returncode}: {(run.stderr or run.stdout).strip()[:300]}"
        return AuditCheck(**{**asdict(base), "decisions": 0, "chains_ok": False, "note": note})
    chains = report.get("chains", [])
    problems = [
        f"worker {c['worker']}: {c['problem']['kind']} at {c['problem']['file']} line "
        f"{c['problem']['line']}"
        for c in chains
        if c.get("problem")
    ]
    records = sum(c.get("records", 0) for c in chains)
    return AuditCheck(
        server,
        answered,
        unanswered,
        decisions=count_decision_records(directory),
        chains_ok=bool(report.get("ok")),
        note="; ".join(problems) or f"{len(chains)} chain(s), {records} records in all",
    )


# --- the last committed result ----------------------------------------------------------------


def previous_result() -> dict[str, Any] | None:
    """The committed ``latest.json`` (HEAD), or None when there is none."""
    try:
        shown = subprocess.run(
            ["git", "show", f"HEAD:{PREVIOUS}"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        doc: dict[str, Any] = json.loads(shown.stdout)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None
    return doc


def headline_figures(doc: Mapping[str, Any]) -> dict[str, float | None]:
    """The figures compared run to run, by a stable name."""
    figures: dict[str, float | None] = {}
    medians = doc.get("closed_loop", {}).get("medians", {})
    for key, row in medians.items():
        for server in ("floor", "riskwire"):
            if server in row:
                figures[f"{key} {server} calls/s"] = row[server].get("ok_per_s")
                figures[f"{key} {server} server CPU us/call"] = row[server].get(
                    "server_cpu_us_per_call"
                )
        figures[f"{key} riskwire/floor throughput"] = row.get("throughput_ratio")
    if "batch256_c2" in medians:
        figures["batch256_c2 riskwire transactions/s"] = medians["batch256_c2"]["riskwire"].get(
            "transactions_per_s"
        )
    figures["spike capacity calls/s"] = doc.get("capacity_per_s")
    control = doc.get("floor_spike")
    for scenario in [*doc.get("scenarios", []), *([control] if control else [])]:
        for phase in scenario["phases"]:
            where = f"{scenario['name']} {phase['phase']}"
            figures[f"{where} p99 ms"] = phase.get("p99_ms")
            for kind in ("fallback", "errors"):
                figures[f"{where} {kind} share"] = (
                    round(phase[kind] / phase["offered"], 4) if phase.get("offered") else None
                )
    return figures


def floor_ratios(doc: Mapping[str, Any]) -> list[str]:
    """riskwire against the floor, per closed-loop scenario: throughput and server CPU."""
    lines = []
    for sc in doc.get("closed_loop", {}).get("scenarios", []):
        row = doc["closed_loop"]["medians"].get(sc["key"], {})
        tput, cpu = row.get("throughput_ratio"), row.get("server_cpu_ratio")
        if tput is not None:
            lines.append(
                f"riskwire / floor, {sc['title']}: {tput:.2f}x the throughput, "
                f"{cpu if cpu is None else f'{cpu:.2f}x'} the server CPU per call"
            )
    return lines


def compare_with(current: Mapping[str, Any], previous: Mapping[str, Any] | None) -> list[str]:
    """Lines "figure: now X, last committed Y (X/Y)" for every shared figure."""
    if previous is None:
        return ["no previous result (no benchmarks/results/ci/latest.json in HEAD)"]
    before = headline_figures(previous)
    lines = [
        f"against the last committed result ({previous.get('started_utc', '?')}, "
        f"{previous.get('machine', {}).get('git_commit', '?')}):"
    ]
    for name, now in headline_figures(current).items():
        then = before.get(name)
        if now is None or then is None:
            continue
        ratio = f"{now / then:.2f}x" if then else "-"
        lines.append(f"  {name:<48} now {now:>10,.3f}  then {then:>10,.3f}  ({ratio})")
    return lines


# --- the run ----------------------------------------------------------------------------------


class _Server(ServerProcess):
    """A ServerProcess that can say whether it exited before it was stopped."""

    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def __enter__(self) -> _Server:
        return self


@dataclass
class _Stage:
    """What the run gathered, for the report and the verdict."""

    runs: list[dict[str, Any]]
    answered: dict[str, int]
    unanswered: dict[str, int]
    errors: list[tuple[str, Mapping[str, int], Collection[str]]]
    load_failures: list[str]
    crashed: list[str]


def _closed_loop(
    servers: Mapping[str, _Server],
    args: argparse.Namespace,
    policy: Collection[str],
    stage: _Stage,
) -> None:
    for rep in range(args.reps):
        for sc in CLOSED_LOOP:
            for name, server in servers.items():
                cfg = LoadConfig(
                    target=f"127.0.0.1:{server.port}",
                    method=sc.method,
                    concurrency=sc.concurrency,
                    batch_size=sc.batch_size,
                    duration_s=args.duration,
                    # No warm-up: every call is counted, so the audit log can be
                    # held to the exact number of transactions answered.
                    warmup_s=0.0,
                    server_pid=server.pid,
                    seed=args.seed,
                )
                try:
                    summary = run_load(cfg)
                except (LoadError, ProcessLookupError) as exc:
                    stage.load_failures.append(f"{name}, {describe_run(cfg)}: {exc}")
                    continue
                stage.runs.append(
                    {"rep": rep, "scenario": sc.key, "server": name, "summary": summary}
                )
                per_call = sc.batch_size if sc.method == "batch" else 1
                stage.answered[name] = stage.answered.get(name, 0) + summary["ok"] * per_call
                failed = sum(summary["errors"].values())
                stage.unanswered[name] = stage.unanswered.get(name, 0) + failed * per_call
                if name != "floor":
                    stage.errors.append((f"{name} {describe_run(cfg)}", summary["errors"], policy))
                elif failed:
                    print(f"note: the floor had errors {summary['errors']}", flush=True)
                lat = summary["latency_ms"]
                print(
                    f"rep {rep + 1}/{args.reps} {sc.title:<26} {name:<9} "
                    f"{summary['ok_per_s']:>9,.0f}/s  p50 {lat['p50'] or 0:.3f}  "
                    f"p99 {lat['p99'] or 0:.3f} ms  server CPU "
                    f"{summary['server_cpu_us_per_call']} us/call",
                    flush=True,
                )


def _counts_errors(rows: Any) -> dict[str, int]:
    return dict(spike.outcome_counts(rows)["error_codes"])


def scenario_errors(rep: spike.ScenarioReport) -> dict[str, int]:
    total: dict[str, int] = {}
    for phase in rep.phases:
        for code, n in phase["error_codes"].items():
            total[code] = total.get(code, 0) + n
    return total


def _crash_check(servers: Mapping[str, _Server], stage: _Stage) -> None:
    for name, server in servers.items():
        code = server.exit_code()
        if code is not None and name not in stage.crashed:
            print(f"{name} exited with {code} during the run", file=sys.stderr, flush=True)
            stage.crashed.append(name)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", type=Path, default=Path("var/models"))
    p.add_argument("--duration", type=float, default=3.0, help="seconds per closed-loop run")
    p.add_argument("--reps", type=int, default=2, help="repetitions of the floor/riskwire pair")
    p.add_argument("--workers", type=int, default=1, help="riskwire worker processes")
    p.add_argument("--server-timeout", type=float, default=120.0)
    spike.add_scenario_arguments(p)
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    return p


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Run the stage, write the reports, return 1 on a failure (never on a timing)."""
    args = _parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started, t_start = datetime.now(UTC), time.monotonic()
    steady_policy = spike.route_policy(STEADY_ROUTES)[1]
    deadline_ms, spike_policy = spike.route_policy(spike.SPIKE_ROUTES)
    stage = _Stage([], {}, {}, [], [], [])
    commands = {
        "floor": FLOOR_CMD,
        "riskwire": spike.riskwire_argv(args.models, STEADY_ROUTES, args.workers),
        "riskwire-spike": spike.riskwire_argv(args.models, spike.SPIKE_ROUTES, args.workers),
    }
    runs: spike.ScenarioRuns | None = None
    floor_spike: tuple[spike.ScenarioReport, spike.RunResult] | None = None
    with tempfile.TemporaryDirectory(prefix="riskwire-ci-") as tmp:
        scratch = Path(tmp)
        envs = {
            n: spike.riskwire_env(
                scratch, n, pending=spike.MAX_PENDING_CALLS if n == "riskwire-spike" else None
            )
            for n in commands
            if n != "floor"
        }
        try:
            with contextlib.ExitStack() as stack:
                servers: dict[str, _Server] = {}
                for name in ("floor", "riskwire"):
                    server = stack.enter_context(
                        _Server(name, commands[name], scratch / f"{name}.log", envs.get(name))
                    )
                    server.start(args.server_timeout)
                    print(f"{name}: pid {server.pid}, port {server.port}", flush=True)
                    servers[name] = server
                _closed_loop(servers, args, steady_policy, stage)
                _crash_check(servers, stage)
            # Both stopped before the spike: it has the machine to itself.
            with _Server(
                "riskwire-spike",
                commands["riskwire-spike"],
                scratch / "riskwire-spike.log",
                envs["riskwire-spike"],
            ) as server:
                server.start(args.server_timeout)
                print(f"riskwire-spike: pid {server.pid}, port {server.port}", flush=True)
                try:
                    runs = spike.run_scenarios(
                        f"127.0.0.1:{server.port}",
                        scenarios=["spike", "card-testing"],
                        capacity=args.capacity or closed_loop_capacity(stage.runs),
                        deadline_ms=deadline_ms,
                        args=args,
                        # With workers, server.pid is their parent: no event loop.
                        server_pid=server.pid if args.workers == 1 else None,
                    )
                except spike.SpikeError as exc:
                    stage.load_failures.append(f"riskwire-spike: {exc}")
                _crash_check({"riskwire-spike": server}, stage)
            if runs is not None:
                floor_spike = _floor_control(runs.capacity, deadline_ms, scratch, args, stage)
        except ServerError as exc:
            print(f"ci: {exc}", file=sys.stderr)
            return 1
        reports = runs.done if runs is not None else []
        if runs is not None:
            stage.answered["riskwire-spike"] = runs.recorded
            probe_errors = {} if runs.probe is None else _counts_errors(runs.probe.rows)
            stage.errors.append(("riskwire-spike capacity probe", probe_errors, spike_policy))
            stage.unanswered["riskwire-spike"] = sum(probe_errors.values())
        for rep, _ in reports:
            errors = scenario_errors(rep)
            stage.errors.append((f"riskwire-spike {rep.name}", errors, spike_policy))
            stage.unanswered["riskwire-spike"] += sum(errors.values())
        audits = [
            check_audit(
                name,
                scratch / f"{name}-audit",
                stage.answered.get(name, 0),
                stage.unanswered.get(name, 0),
            )
            for name in envs
        ]
        logs = {
            name: (scratch / f"{name}.log").read_text(errors="replace").splitlines()[-20:]
            for name in commands
            if (scratch / f"{name}.log").exists()
        }
    failed = failures(stage.errors, stage.crashed, audits, stage.load_failures)
    elapsed = time.monotonic() - t_start
    capacity = None if runs is None else runs.capacity
    doc = _document(started, elapsed, args, commands, stage, capacity, reports, audits, failed)
    doc["floor_spike"] = None if floor_spike is None else asdict(floor_spike[0])
    doc["commands"]["floor-spike"] = floor_spike_command()
    doc["config"]["client"] = None if runs is None else runs.client
    if stage.crashed:
        doc["server_logs"] = {name: logs.get(name, []) for name in stage.crashed}
    previous = previous_result()
    comparison = compare_with(doc, previous)
    stem = f"{started.strftime('%Y-%m-%dT%H%M%SZ')}-{machine.short_host()}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    for rep, result in [*reports, *([floor_spike] if floor_spike else [])]:
        spike.plot_timeline(
            result.rows,
            result.phases,
            args.results_dir / f"{stem}-{rep.name}.png",
            title=f"{rep.name}, {machine.describe()['git_commit']}, {doc['started_utc']}",
            deadline_ms=deadline_ms,
        )
        shutil.copy2(
            args.results_dir / f"{stem}-{rep.name}.png",
            args.results_dir / f"latest-{rep.name}.png",
        )
    text = _markdown(doc, comparison, stem)
    for name in (stem, "latest"):
        _write(args.results_dir / f"{name}.json", json.dumps(doc, indent=2) + "\n")
        _write(args.results_dir / f"{name}.md", text.replace(f"]({stem}-", f"]({name}-"))
    print()
    print(text)
    print("\n".join([*floor_ratios(doc), *comparison]))
    print(f"wrote {args.results_dir / stem}.json, .md and .png (and latest.*)")
    print(f"stage took {elapsed:.0f} s")
    late = [line for where, codes, _ in stage.errors for line in late_calls(where, codes)]
    if late:
        print("late (reported, not failing):\n  " + "\n  ".join(late))
    if failed:
        print("FAILED:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    print(
        "PASSED: no errors but explicit fallbacks and sheds (RESOURCE_EXHAUSTED, refused "
        "streams), no crash, no lost audit record"
    )
    return 0


def closed_loop_capacity(runs: list[dict[str, Any]]) -> float | None:
    """riskwire's Score c=8 throughput in this run (median, default settings): the
    spike's capacity. Its server has a pending bound of a few calls, which would
    refuse part of a closed-loop probe's 8 callers. None: not measured (then the
    spike probes its own server)."""
    medians = summarize(runs, CLOSED_LOOP, ["floor", "riskwire"])
    figure = medians.get(HEADLINE, {}).get("riskwire", {}).get("ok_per_s")
    return float(figure) if figure else None


def _floor_control(
    capacity: float,
    deadline_ms: float,
    scratch: Path,
    args: argparse.Namespace,
    stage: _Stage,
) -> tuple[spike.ScenarioReport, spike.RunResult] | None:
    """The spike's schedule (riskwire's capacity) against the floor, which does no work
    per call: what the machine and the gRPC framework alone make of that rate. A
    measurement, never judged; a client failure or a floor crash still fails the stage."""
    with _Server("floor-spike", floor_spike_command(), scratch / "floor-spike.log", None) as server:
        server.start(args.server_timeout)
        print(f"floor-spike: pid {server.pid}, port {server.port}", flush=True)
        try:
            control = spike.run_scenarios(
                f"127.0.0.1:{server.port}",
                scenarios=["spike"],
                capacity=capacity,
                deadline_ms=deadline_ms,
                args=args,
                server_pid=server.pid,
            )
        except spike.SpikeError as exc:
            stage.load_failures.append(f"floor-spike: {exc}")
            return None
        finally:
            _crash_check({"floor-spike": server}, stage)
    rep, result = control.done[0]
    rep.name = FLOOR_SPIKE
    return rep, result


FLOOR_SPIKE = "spike-floor"
"""Name of the control run: the spike's schedule against the floor server."""


def floor_spike_command() -> list[str]:
    """The floor with the spike's riskwire's bound on calls gRPC's core holds: only the
    work per call differs between the two."""
    soft, hard = spike.MAX_PENDING_CALLS
    return [*FLOOR_CMD, "--max-pending-calls", str(soft), str(hard)]


def spike_verdict(
    product: Mapping[str, Any] | None, control: Mapping[str, Any] | None
) -> list[str]:
    """The spike's goals for riskwire beside the same schedule's against the floor."""
    if product is None or control is None:
        return []

    def worst_p99(rep: Mapping[str, Any]) -> float | None:
        return max((s["p99_ms"] for s in rep["seconds"] if s["p99_ms"] is not None), default=None)

    def figures(rep: Mapping[str, Any]) -> str:
        goals, peak = rep["goals"], rep["phases"][1]
        worst = worst_p99(rep)
        recovery = rep["recovery_s"]
        return (
            f"{sum(p['errors'] for p in rep['phases']):,} errors, "
            f"{peak['offered_per_s']:,.0f}/s offered in the {peak['phase']}, worst 1-s p99 "
            f"{'-' if worst is None else f'{worst:,.1f}'} ms, "
            f"{goals['seconds_over_deadline']} s over the deadline, back "
            + ("never" if recovery is None else f"in {recovery:g} s")
        )

    met = {
        name: rep["goals"]["no_errors"]
        and rep["goals"]["p99_within_deadline"]
        and rep["goals"]["recovered_within_2s"]
        for name, rep in (("riskwire", product), ("floor", control))
    }
    lines = [
        f"- riskwire: {figures(product)}: goal {'met' if met['riskwire'] else '**missed**'}",
        f"- the floor, same schedule, no work per call: {figures(control)}: goal "
        + ("met" if met["floor"] else "**missed**"),
    ]
    if not met["floor"]:
        ours, bare = worst_p99(product), worst_p99(control)
        if ours is not None and bare is not None and ours > 1.5 * bare:
            answered = [
                sum(p["model"] + p["fallback"] for p in r["phases"]) for r in (product, control)
            ]
            lines.append(
                "- The bare gRPC server misses the goal at this rate too, but by less (worst "
                f"second {bare:,.1f} against {ours:,.1f} ms; {answered[1]:,} against "
                f"{answered[0]:,} calls answered): the machine, the load client on it and "
                "the gRPC framework account for the floor's miss, riskwire's work per call "
                "(its server CPU per call above) for the difference."
            )
        elif ours is not None and bare is not None and bare > 1.5 * ours:
            lines.append(
                "- The bare gRPC server misses the goal at this rate too, and by more (worst "
                f"second {bare:,.1f} against riskwire's {ours:,.1f} ms): in this run the "
                "machine and the load client on it, not the work per call, made the worst "
                "seconds."
            )
        else:
            lines.append(
                "- The bare gRPC server misses the goal at this rate too, by about as much: "
                "here the limit is the machine (and the load client on it) and what the gRPC "
                "framework takes in, before any handler runs, not riskwire's work per call."
            )
    lines += cpu_verdict(product, control)
    return lines


def spike_headroom(doc: Mapping[str, Any]) -> list[str]:
    """What the spike's rate asks of this machine, from this run's own figures.

    Two bounds, measured, never judged:

    - this machine: the spike's offered rate against the most the floor (no work per
      call) answered closed-loop in the same run, and the server CPU the floor would
      need for all of it;
    - any machine: answered without refusals, a spike of ``m`` times the capacity needs
      a fallback answer to cost at most 1/m of a model answer (with C = 1 / model cost,
      m * C calls a second at fallback cost f fit in one core only if f <= 1/m of it).
      A fallback answer costs at least a bare gRPC call: the floor's CPU per call over
      riskwire's. More cores or workers scale both alike and leave the ratio.
    """
    product = next((r for r in doc.get("scenarios", []) if r["name"] == "spike"), None)
    closed = doc.get("closed_loop", {})
    medians = closed.get("medians", {}).get(HEADLINE, {})
    title = next((sc["title"] for sc in closed.get("scenarios", []) if sc["key"] == HEADLINE), "")
    floor = medians.get("floor") or {}
    floor_max = floor.get("ok_per_s")
    capacity = doc.get("capacity_per_s")
    if product is None or not floor_max or not capacity:
        return []
    offered = max(p["offered_per_s"] for p in product["phases"])
    cores = doc.get("machine", {}).get("nproc")
    floor_cpu = floor.get("server_cpu_us_per_call")
    line = (
        f"- What the spike asks of this machine: {offered:,.0f} calls/s offered, "
        f"{offered / floor_max:.1f}x the most the floor answered closed-loop in this run "
        f"({floor_max:,.0f} calls/s, {title or HEADLINE})"
    )
    if floor_cpu:
        line += (
            f"; answering them all with no work per call would take "
            f"{offered * floor_cpu / 1e6:.1f} cores of server CPU at the floor's "
            f"{floor_cpu:,.0f} us a call, on {cores} cores that also run the load client"
        )
    lines = [line + "."]
    if offered > floor_max:
        lines.append(
            "- So no server on this gRPC framework answers every call of this spike here: "
            "refusals at this rate are the machine's and the framework's, whatever "
            "riskwire does per call."
        )
    ratio = medians.get("server_cpu_ratio")
    multiple = offered / capacity
    if ratio and multiple > 1:
        verdict = (
            "The refusal-free spike is out of reach at any core count for a model this "
            "cheap; more workers scale both costs alike."
            if 1 / ratio > 1 / multiple
            else "This bound does not rule the refusal-free spike out."
        )
        lines.append(
            f"- On any machine: the spike is {multiple:.1f}x riskwire's capacity, so "
            f"answering all of it needs a fallback answer to cost at most "
            f"1/{multiple:.1f} ({1 / multiple:.2f}) of a model answer; a bare gRPC call "
            f"alone costs {1 / ratio:.2f} of one here (riskwire's server CPU per call is "
            f"{ratio:.2f}x the floor's). {verdict}"
        )
    return lines


def _g(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def cpu_verdict(product: Mapping[str, Any], control: Mapping[str, Any]) -> list[str]:
    """Whether the event-loop thread had a core in the spike (spike.cpu_lines' figures):
    waiting for one is the machine's share of the latency, not the work per call."""

    def loop(rep: Mapping[str, Any], phase: int) -> Mapping[str, Any] | None:
        phases = rep["phases"]
        return phases[phase].get("cpu") if len(phases) > phase else None

    figures = []
    for name, rep in (("riskwire", product), ("the floor", control)):
        steady, peak = loop(rep, 0), loop(rep, 1)
        if not steady or not peak:
            return []
        figures.append(
            f"{name}'s ran {_g(peak['loop_ran_pct'])}% and waited "
            f"{_g(peak['loop_waited_pct'])}% (steady: {_g(steady['loop_ran_pct'])}% and "
            f"{_g(steady['loop_waited_pct'])}%), with gRPC core's threads at "
            f"{_g(peak['grpc_core_pct'])}% of a core and the machine "
            f"{_g(peak['machine_busy_pct'])}% busy"
        )
    lines = [
        "- The event-loop thread in the spike, ready to run but waiting for a core another "
        "thread or process held: " + "; ".join(figures) + "."
    ]
    for name, rep in (("riskwire", product), ("the floor", control)):
        worst = worst_onset_bucket(rep)
        if worst is not None:
            cpu = worst["cpu"]
            lines.append(
                f"- {name}'s worst 100 ms at the spike's start (t = {worst['t_s']:g} s): p99 "
                f"{_ms(worst['p99_ms'])} ms, refusals' p99 {_ms(worst['refused_p99_ms'])} ms; the "
                f"loop ran {_g(cpu['loop_ran_pct'])}% and waited {_g(cpu['loop_waited_pct'])}%, "
                f"the load client ran {_g(cpu.get('client_ran_pct'))}% of a core and waited "
                f"{_g(cpu.get('client_waited_pct'))}%, the machine {_g(cpu['machine_busy_pct'])}% "
                "busy."
            )
    return lines


def worst_onset_bucket(rep: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The onset bucket (spike.onset) of the peak with the highest answered p99 and
    CPU figures; None without either."""
    peak = rep["phases"][1]["phase"] if len(rep["phases"]) > 1 else None
    candidates = [
        b
        for b in rep.get("onset", [])
        if b["phase"] == peak and b.get("cpu") and b["p99_ms"] is not None
    ]
    return max(candidates, key=lambda b: b["p99_ms"], default=None)


def _document(
    started: datetime,
    elapsed: float,
    args: argparse.Namespace,
    commands: Mapping[str, list[str]],
    stage: _Stage,
    capacity: float | None,
    reports: Sequence[tuple[spike.ScenarioReport, spike.RunResult]],
    audits: Sequence[AuditCheck],
    failed: Sequence[str],
) -> dict[str, Any]:
    servers = ["floor", "riskwire"]
    return {
        "started_utc": started.strftime("%Y-%m-%d %H:%M UTC"),
        "elapsed_s": round(elapsed, 1),
        "passed": not failed,
        "failures": list(failed),
        "machine": machine.describe(),
        "commands": dict(commands),
        "config": {
            "duration_s": args.duration,
            "reps": args.reps,
            "workers": args.workers,
            "procs": args.procs,
            "client_deadline_ms": args.client_deadline_ms,
            "seed": args.seed,
        },
        "closed_loop": {
            "scenarios": [asdict(sc) for sc in CLOSED_LOOP],
            "medians": summarize(stage.runs, CLOSED_LOOP, servers),
            "runs": stage.runs,
        },
        "capacity_per_s": None if capacity is None else round(capacity, 1),
        "scenarios": [asdict(rep) for rep, _ in reports],
        "audit": [{**asdict(a), "lost": a.lost} for a in audits],
    }


def _markdown(doc: Mapping[str, Any], comparison: Sequence[str], stem: str) -> str:
    m = doc["machine"]
    verdict = "PASSED" if doc["passed"] else "**FAILED**"
    lines = [
        f"# CI benchmark stage: {doc['started_utc']}, {m['host']}: {verdict}",
        "",
        f"`python -m benchmarks.load.ci` took {doc['elapsed_s']:.0f} s. It fails only on "
        "errors other than explicit fallbacks, a server crash or a lost audit record; "
        "timings are kept, never judged.",
        "",
    ]
    lines += [f"- {f}" for f in doc["failures"]]
    closed = doc["closed_loop"]
    compat = {
        "machine": m,
        "config": {
            "reps": doc["config"]["reps"],
            "duration_s": doc["config"]["duration_s"],
            "warmup_s": 0,
            "procs": 1,
            "deadline_ms": 1000,
        },
        "medians": closed["medians"],
        "servers": ["floor", "riskwire"],
        "scenarios": closed["scenarios"],
        "commands": doc["commands"],
        "variant_env": {},
        "stand_in": False,
        "started_utc": doc["started_utc"],
    }
    table = render_markdown(compat).splitlines()
    lines += ["", "## Steady and batch: riskwire against the floor", "", *table[2:], ""]
    lines += ["## Spike and card testing (routes/spike.yaml)", ""]
    for rep in doc["scenarios"]:
        r = spike.ScenarioReport(**rep)
        lines += [spike.render_scenario(r), f"![{r.name}]({stem}-{r.name}.png)", ""]
    control = doc.get("floor_spike")
    if control is not None:
        product = next((r for r in doc["scenarios"] if r["name"] == "spike"), None)
        r = spike.ScenarioReport(**control)
        lines += [
            "## The spike's schedule against the floor (the control)",
            "",
            "The same open-loop schedule, at riskwire's capacity, against the floor server "
            "(it parses each request and answers a fixed reply): what this machine and the "
            "gRPC framework make of the rate with no work per call. Measured, never judged.",
            "",
            *spike_verdict(product, control),
            *spike_headroom(doc),
            "",
            spike.render_scenario(r).replace("### spike-floor:", "### spike, floor:", 1),
            f"![{r.name}]({stem}-{r.name}.png)",
            "",
        ]
    lines += ["## Audit log", ""]
    for a in doc["audit"]:
        if a["decisions"] is None:
            lines.append(f"- {a['server']}: {a['note']}")
        else:
            lines.append(
                f"- {a['server']}: {a['decisions']:,} decision records for {a['answered']:,} "
                f"answered transactions ({a['unanswered']:,} failed at the client); "
                f"chains {'verify' if a['chains_ok'] else '**do not verify**'}: {a['note']}"
            )
    lines += ["", "## Against the last committed result", "", "```", *comparison, "```", ""]
    lines.append(f"- riskwire-spike: `{shlex.join(doc['commands']['riskwire-spike'])}`")
    lines.append(f"- floor: `{shlex.join(doc['commands']['floor'])}`")
    if "floor-spike" in doc["commands"]:
        lines.append(f"- the control: `{shlex.join(doc['commands']['floor-spike'])}`")
    lines.append("")
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
