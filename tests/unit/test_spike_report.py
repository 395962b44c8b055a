"""The spike scenarios' figures and the CI stage's verdict, on synthetic call records.

No server and no load here: rows are written by hand (times in ns from the schedule's
start), so every count and percentile is known in advance. The verdict's rules:
errors fail, fallbacks do not, RESOURCE_EXHAUSTED (a route's policy or the transport's
limit on calls in progress) is an explicit shed, and no timing ever fails.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.load import ci, spike
from benchmarks.load.spike import Flow, Phase

MS = 1_000_000
PHASES = (
    Phase("steady", 1.0, (Flow("normal", 10),)),
    Phase("spike", 1.0, (Flow("normal", 100),)),
    Phase("after", 1.0, (Flow("normal", 10),)),
)
FALLBACK_ON = ("timeout", "overload")


def row(
    due_ms: float,
    latency_ms: float = 1.0,
    outcome: str = "MODEL",
    *,
    lag_ms: float = 0.0,
    pool: str = "normal",
    decision: int = 1,
    server_us: int = 500,
) -> list[int]:
    due = int(due_ms * MS)
    sent = due + int(lag_ms * MS)
    return [
        due,
        sent,
        sent + int(latency_ms * MS),
        spike.outcome_code(outcome),
        spike.POOLS.index(pool),
        decision,
        server_us,
    ]


def rows(*given: list[int]) -> npt.NDArray[np.int64]:
    return np.asarray(given, dtype=np.int64).reshape(-1, 7)


def steady_spike_after(after_latency_ms: list[float]) -> npt.NDArray[np.int64]:
    """10 calls of 1..10 ms in steady, 100 slow ones in the spike (some fallbacks,
    some errors), then ``after_latency_ms`` spread over the last second."""
    out = [row(100 * i, latency_ms=i + 1) for i in range(10)]
    for i in range(100):
        outcome = "MODEL" if i < 60 else "FALLBACK/OVERLOAD" if i < 90 else "UNAVAILABLE"
        out.append(row(1000 + 10 * i, latency_ms=50, outcome=outcome))
    step = 1000 / len(after_latency_ms)
    out += [row(2000 + step * i, latency_ms=ms) for i, ms in enumerate(after_latency_ms)]
    return rows(*out)


# --- outcomes ---------------------------------------------------------------------------------


def test_outcome_classes_are_disjoint() -> None:
    codes = np.arange(len(spike.OUTCOMES))
    answered, fallback, error = (
        spike.is_answered(codes),
        spike.is_fallback(codes),
        spike.is_error(codes),
    )
    assert spike.OUTCOMES[0] == "MODEL" and answered[0] and not fallback[0]
    assert not (answered & error).any()
    assert (fallback <= answered).all()
    not_sent = spike.outcome_code("NOT_SENT")
    assert not answered[not_sent] and not error[not_sent]
    for name in ("MISMATCH", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "UNAVAILABLE"):
        assert error[spike.outcome_code(name)]


def test_a_phase_is_open_or_closed_loop() -> None:
    with pytest.raises(ValueError, match="flows"):
        Phase("both", 1.0, (Flow("normal", 1),), concurrency=2)
    with pytest.raises(ValueError, match="flows"):
        Phase("neither", 1.0)
    with pytest.raises(ValueError, match="seconds"):
        Phase("empty", 0.0, (Flow("normal", 1),))
    assert spike.phase_bounds(PHASES) == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]


def test_spike_schedule_is_the_multiple_of_half_the_capacity() -> None:
    steady, peak, after = spike.spike_phases(1000.0, steady_s=2, spike_s=3, after_s=4)
    assert (steady.rate, peak.rate, after.rate) == (500.0, 5000.0, 500.0)
    assert [p.seconds for p in (steady, peak, after)] == [2, 3, 4]
    _, burst, _ = spike.card_testing_phases(1000.0, burst_multiple=4)
    assert sorted((f.pool, f.rate) for f in burst.flows) == [
        ("card_testing", 2000.0),
        ("normal", 500.0),
    ]


def test_card_testing_pool_is_tiny_amounts_from_few_accounts() -> None:
    from riskwire.v1 import scoring_pb2

    pool = spike.build_card_testing_pool(seed=7, pool_size=64)
    txns = [scoring_pb2.ScoreRequest.FromString(p).transaction for p in pool.payloads]
    assert len({t.account_id for t in txns}) == 3
    assert len({t.card_id for t in txns}) == 64
    assert all(50 <= t.amount_minor < 200 and t.currency == "USD" for t in txns)
    assert [[t.transaction_id] for t in txns] == pool.expected_ids


# --- per second, per phase ----------------------------------------------------------------------


def test_per_bucket_counts_each_calls_fate_in_its_scheduled_second() -> None:
    records = steady_spike_after([1.0] * 10)
    seconds = spike.per_bucket(records, PHASES, 1.0)
    assert [s["phase"] for s in seconds] == ["steady", "spike", "after"]
    steady, peak, after = seconds
    assert (steady["intended"], steady["offered"], steady["model"]) == (10, 10, 10)
    # Nearest rank over 1..10 ms: p50 is the 5th value, p99 the 10th.
    assert (steady["p50_ms"], steady["p99_ms"], steady["max_ms"]) == (5.0, 10.0, 10.0)
    assert steady["server_p99_ms"] == 0.5
    assert (peak["model"], peak["fallback"], peak["errors"]) == (60, 30, 10)
    assert peak["fallback_reasons"] == {"OVERLOAD": 30}
    assert peak["error_codes"] == {"UNAVAILABLE": 10}
    # Errors are not answers: the latency is over the 90 answered calls.
    assert peak["p99_ms"] == 50.0
    assert after["p99_ms"] == 1.0


def test_a_call_sent_late_stays_in_the_second_it_was_due() -> None:
    records = rows(row(900, latency_ms=2, lag_ms=300), row(1500))
    first, second = spike.per_bucket(records, PHASES[:2], 1.0)
    assert (first["intended"], first["offered"], first["model"]) == (1, 1, 1)
    assert first["max_send_lag_ms"] == 300.0
    assert first["p99_ms"] == 2.0  # end minus send: the client's lag is reported apart
    assert second["intended"] == 1


def test_calls_never_sent_are_intended_not_offered_and_not_errors() -> None:
    records = rows(row(100), row(200, outcome="NOT_SENT"), row(300, outcome="NOT_SENT"))
    (phase,) = spike.per_phase(records, PHASES[:1])
    assert (phase["intended"], phase["offered"], phase["errors"]) == (3, 1, 0)
    assert phase["offered_ratio"] == pytest.approx(1 / 3, abs=1e-3)
    assert phase["intended_per_s"] == 3.0 and phase["offered_per_s"] == 1.0


def test_per_phase_splits_pools_and_model_decisions() -> None:
    phases = (Phase("burst", 1.0, (Flow("normal", 2), Flow("card_testing", 3))),)
    records = rows(
        row(0, decision=1),
        row(100, outcome="FALLBACK/TIMEOUT", decision=2),
        row(200, pool="card_testing", decision=3),
        row(300, pool="card_testing", decision=3),
        row(400, pool="card_testing", outcome="DEADLINE_EXCEEDED", decision=0),
    )
    (burst,) = spike.per_phase(records, phases)
    assert (burst["model"], burst["fallback"], burst["errors"]) == (3, 1, 1)
    normal, testing = burst["by_pool"]["normal"], burst["by_pool"]["card_testing"]
    assert normal["model_decisions"] == {"APPROVE": 1, "REVIEW": 0, "DECLINE": 0}
    assert normal["fallback_reasons"] == {"TIMEOUT": 1}
    assert testing["model_decisions"] == {"APPROVE": 0, "REVIEW": 0, "DECLINE": 2}
    assert testing["error_codes"] == {"DEADLINE_EXCEEDED": 1}


# --- recovery and goals ------------------------------------------------------------------------


def test_recovery_is_the_time_until_p99_stays_near_steady() -> None:
    # Steady p99 is 10 ms; the threshold 15 ms. Slow for the first 0.5 s after.
    slow_then_fast = [80.0] * 5 + [2.0] * 5
    assert spike.recovery_s(steady_spike_after(slow_then_fast), PHASES, "spike", "steady") == 0.5
    assert spike.recovery_s(steady_spike_after([2.0] * 10), PHASES, "spike", "steady") == 0.0
    # A relapse in the run's last bucket: not back.
    relapse = [2.0] * 9 + [80.0]
    assert spike.recovery_s(steady_spike_after(relapse), PHASES, "spike", "steady") is None


def test_recovery_allows_the_stalls_the_steady_phase_had_itself() -> None:
    # Steady: 2 ms calls, but one 250 ms stretch with three 30 ms stalls (its p99 30 ms,
    # the phase's 2 ms). The same kind of stall after the spike is no relapse.
    def phase_rows(start_ms: float, stall_ms: float) -> list[list[int]]:
        out = [row(start_ms + 2.5 * i, latency_ms=2) for i in range(400)]
        out += [row(start_ms + 10 + i, latency_ms=stall_ms) for i in range(3)]
        return out

    spike_rows = [row(1000 + 10 * i, latency_ms=50) for i in range(100)]
    run = rows(*phase_rows(0, 30), *spike_rows, *phase_rows(2600, 20))
    assert spike.recovery_s(run, PHASES, "spike", "steady") == 0.0
    worse = rows(*phase_rows(0, 30), *spike_rows, *phase_rows(2600, 45))
    assert spike.recovery_s(worse, PHASES, "spike", "steady") == 0.75


def test_goals_report_errors_deadline_and_what_was_offered() -> None:
    result = spike.RunResult(PHASES, steady_spike_after([2.0] * 10), procs=2, warmup_answered=4)
    rep = spike.report("spike", result, 20.0, deadline_ms=10.0, peak="spike")
    assert rep.goals["no_errors"] is False
    assert rep.goals["p99_within_deadline"] is False  # the spike's 50 ms
    assert rep.goals["seconds_over_deadline"] == 1
    assert rep.goals["recovered_within_2s"] is True
    assert rep.goals["peak_offered_ratio"] == 1.0
    # Every answered call, warm-up included, is one the audit log must hold.
    assert rep.answered_total == 10 + 90 + 10 + 4
    text = spike.render_scenario(rep)
    assert "| spike | 1 | 100 | 100 | 100 | 60 | 30 | 10 |" in text
    assert "UNAVAILABLE" in text


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = tmp_path / "spike.png"
    spike.plot_timeline(steady_spike_after([2.0] * 10), PHASES, path, title="t", deadline_ms=10.0)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the CI verdict ------------------------------------------------------------------------------


def test_errors_fail_and_fallbacks_do_not() -> None:
    result = spike.RunResult(PHASES, steady_spike_after([2.0] * 10))
    rep = spike.report("spike", result, 20.0, deadline_ms=10.0, peak="spike")
    errors = ci.scenario_errors(rep)
    assert errors == {"UNAVAILABLE": 10}  # the 30 fallbacks are answers
    # Refused streams are the server's shed; an INTERNAL is an error.
    assert ci.failures([("spike", errors, FALLBACK_ON)], [], []) == []
    assert ci.failures([("spike", {"INTERNAL": 2}, FALLBACK_ON)], [], []) == [
        "spike: 2 call(s) failed with INTERNAL"
    ]
    assert ci.failures([("steady", {}, FALLBACK_ON)], [], []) == []


def test_resource_exhausted_is_an_explicit_shed() -> None:
    shed = {"RESOURCE_EXHAUSTED": 7}
    assert ci.failures([("r", shed, ("timeout",))], [], []) == []
    # Even where the route falls back on overload: the transport's limit refuses first.
    assert ci.failures([("r", shed, FALLBACK_ON)], [], []) == []
    assert ci.failures([("r", {**shed, "INTERNAL": 1}, FALLBACK_ON)], [], []) == [
        "r: 1 call(s) failed with INTERNAL"
    ]
    assert ci.is_explicit_shed("RESOURCE_EXHAUSTED", ())
    assert ci.is_explicit_shed("UNAVAILABLE", ())  # a refused stream
    assert ci.is_explicit_shed("CANCELLED", ())  # gRPC core's grpc.max_pending_calls
    assert not ci.is_explicit_shed("DEADLINE_EXCEEDED", ())


def test_late_calls_are_reported_not_failed() -> None:
    late = {"DEADLINE_EXCEEDED": 5, "CANCELLED": 2}
    assert ci.failures([("spike", late, FALLBACK_ON)], [], []) == []
    # CANCELLED is the pending bound's refusal, not lateness.
    assert ci.late_calls("spike", late) == [
        "spike: 5 call(s) ended DEADLINE_EXCEEDED at the client (late: a timing)",
    ]


def test_refusals_are_errors_counted_apart_with_how_soon_they_came() -> None:
    result = spike.RunResult(
        PHASES,
        rows(
            *(row(100 * i, latency_ms=2) for i in range(10)),
            *(row(1000 + 10 * i, latency_ms=1, outcome="CANCELLED") for i in range(50)),
            *(row(1500 + 10 * i, latency_ms=4, outcome="RESOURCE_EXHAUSTED") for i in range(40)),
            *(row(1900 + 10 * i, latency_ms=900, outcome="DEADLINE_EXCEEDED") for i in range(10)),
            *(row(2000 + 100 * i, latency_ms=2) for i in range(10)),
        ),
    )
    rep = spike.report("spike", result, 20.0, deadline_ms=10.0, peak="spike")
    peak = rep.phases[1]
    assert (peak["errors"], peak["refused"]) == (100, 90)
    assert peak["refused_p99_ms"] == 4.0
    assert rep.goals["no_errors"] is False
    assert rep.goals["no_errors_but_refusals"] is False  # the 10 late ones
    text = spike.render_scenario(rep)
    assert "| spike | 1 | 100 | 100 | 100 | 0 | 0 | 100 | 90 |" in text
    assert "spike 90, p99 4.00 ms after sending" in text
    refused_only = spike.RunResult(
        PHASES,
        result.rows[result.rows[:, spike.OUTCOME] != spike.outcome_code("DEADLINE_EXCEEDED")],
    )
    rep = spike.report("spike", refused_only, 20.0, deadline_ms=10.0, peak="spike")
    assert rep.goals["no_errors_but_refusals"] is True


def test_no_timing_ever_fails() -> None:
    # Every answer late by seconds, the client unable to offer a tenth of the spike,
    # never back to the steady p99: figures to read, not failures.
    late = rows(
        *(row(100 * i, latency_ms=5000) for i in range(10)),
        *(row(1000 + 10 * i, outcome="NOT_SENT") for i in range(95)),
        *(row(1950 + i, latency_ms=9000, outcome="FALLBACK/TIMEOUT") for i in range(5)),
        *(row(2000 + 100 * i, latency_ms=7000) for i in range(10)),
    )
    rep = spike.report("spike", spike.RunResult(PHASES, late), 20.0, 10.0, peak="spike")
    assert rep.goals["p99_within_deadline"] is False
    assert rep.goals["peak_really_offered"] is False
    assert ci.failures([("spike", ci.scenario_errors(rep), FALLBACK_ON)], [], []) == []


def test_the_floor_control_says_whether_the_rate_beats_the_bare_server() -> None:
    missed = spike.report(
        "spike", spike.RunResult(PHASES, steady_spike_after([2.0] * 10)), 20.0, 10.0, peak="spike"
    )
    clean = rows(
        *(row(100 * i, latency_ms=2) for i in range(10)),
        *(row(1000 + 10 * i, latency_ms=3) for i in range(100)),
        *(row(2000 + 100 * i, latency_ms=2) for i in range(10)),
    )
    met = spike.report("spike", spike.RunResult(PHASES, clean), 20.0, 10.0, peak="spike")
    assert met.goals["no_errors"] and met.goals["p99_within_deadline"]
    # riskwire misses, the floor meets it: the gap is riskwire's, no excuse printed.
    lines = ci.spike_verdict(asdict(missed), asdict(met))
    assert lines[0].startswith("- riskwire: 10 errors, 100/s offered in the spike")
    assert lines[0].endswith("goal **missed**")
    assert lines[1].endswith("goal met")
    assert len(lines) == 2
    # Both miss by about as much: the bare server cannot take the rate either.
    lines = ci.spike_verdict(asdict(missed), asdict(missed))
    assert lines[1].endswith("goal **missed**")
    assert "misses the goal at this rate too, by about as much" in lines[2]
    # Both miss, riskwire far worse (worst second 200 ms against the floor's 50): the
    # difference is riskwire's, and the report says that instead.
    slow = rows(
        *(row(100 * i, latency_ms=2) for i in range(10)),
        *(row(1000 + 10 * i, latency_ms=200) for i in range(100)),
        *(row(2000 + 100 * i, latency_ms=2) for i in range(10)),
    )
    worse = spike.report("spike", spike.RunResult(PHASES, slow), 20.0, 10.0, peak="spike")
    lines = ci.spike_verdict(asdict(worse), asdict(missed))
    assert "but by less (worst second 50.0 against 200.0 ms" in lines[2]
    assert "riskwire's work per call" in lines[2] and "for the difference" in lines[2]
    # The other way round: a floor far worse than riskwire is the machine's noise.
    lines = ci.spike_verdict(asdict(missed), asdict(worse))
    assert "and by more (worst second 200.0 against riskwire's 50.0 ms)" in lines[2]
    assert ci.spike_verdict(None, asdict(met)) == []
    # The control's figures are compared run to run like the scenarios'.
    met.name = ci.FLOOR_SPIKE
    figures = ci.headline_figures({"scenarios": [asdict(missed)], "floor_spike": asdict(met)})
    assert figures["spike-floor spike errors share"] == 0.0
    assert figures["spike spike errors share"] == 0.1


def test_headroom_sets_the_spike_against_what_the_floor_answered() -> None:
    rep = spike.report(
        "spike", spike.RunResult(PHASES, steady_spike_after([2.0] * 10)), 20.0, 10.0, peak="spike"
    )
    peak = max(p["offered_per_s"] for p in asdict(rep)["phases"])
    assert peak == 100.0  # 10x half of the capacity of 20 calls/s

    def doc(floor_per_s: float, floor_cpu_us: float, cpu_ratio: float) -> dict[str, object]:
        return {
            "machine": {"nproc": 2},
            "capacity_per_s": 20.0,
            "scenarios": [asdict(rep)],
            "closed_loop": {
                "scenarios": [{"key": "score_c8", "title": "Score, c=8"}],
                "medians": {
                    "score_c8": {
                        "floor": {"ok_per_s": floor_per_s, "server_cpu_us_per_call": floor_cpu_us},
                        "server_cpu_ratio": cpu_ratio,
                    }
                },
            },
        }

    # The floor tops out at 40 calls/s at 50 ms of CPU each: 100/s would need 5 cores.
    lines = ci.spike_headroom(doc(40.0, 50_000.0, 2.0))
    assert lines[0].startswith("- What the spike asks of this machine: 100 calls/s offered, 2.5x")
    assert "(40 calls/s, Score, c=8)" in lines[0]
    assert "take 5.0 cores of server CPU at the floor's 50,000 us a call, on 2 cores" in lines[0]
    assert "no server on this gRPC framework answers every call" in lines[1]
    # 5x the capacity needs fallbacks at 1/5 of a model answer; a bare call is 1/2.
    assert "1/5.0 (0.20) of a model answer; a bare gRPC call alone costs 0.50" in lines[2]
    assert "out of reach at any core count" in lines[2]
    # A floor that takes the whole rate, and a model 8x a bare call: neither bound binds.
    lines = ci.spike_headroom(doc(500.0, 1_000.0, 8.0))
    assert len(lines) == 2
    assert "0.2x the most the floor answered" in lines[0]
    assert "bare gRPC call alone costs 0.12" in lines[1]
    assert lines[1].endswith("This bound does not rule the refusal-free spike out.")
    # Without the closed-loop floor there is nothing to set the rate against.
    assert ci.spike_headroom({"scenarios": [asdict(rep)], "capacity_per_s": 20.0}) == []


def test_a_crash_or_a_failed_run_fails() -> None:
    assert ci.failures([], ["riskwire"], []) == ["riskwire: the server exited during the run"]
    assert ci.failures([], [], [], ["riskwire-spike: client died"]) == [
        "riskwire-spike: client died"
    ]


def test_lost_audit_records_fail_and_extra_ones_do_not() -> None:
    exact = ci.AuditCheck("rw", answered=100, decisions=100, chains_ok=True)
    extra = ci.AuditCheck("rw", answered=100, unanswered=5, decisions=103, chains_ok=True)
    lost = ci.AuditCheck("rw", answered=100, decisions=97, chains_ok=True)
    broken = ci.AuditCheck("rw", answered=100, decisions=100, chains_ok=False, note="seq_gap")
    skipped = ci.AuditCheck("rw", answered=100, note="skipped: no audit settings")
    assert ci.failures([], [], [exact, extra, skipped]) == []
    assert ci.failures([], [], [lost]) == [
        "rw: 3 lost audit record(s): 97 decision records for 100 answered transactions"
    ]
    assert ci.failures([], [], [broken]) == ["rw: the audit chain does not verify (seq_gap)"]


def test_decision_records_are_counted_across_segments(tmp_path: Path) -> None:
    def line(kind: str) -> str:
        return json.dumps({"kind": kind, "seq": 0}) + "\n"

    (tmp_path / "w0-000001.jsonl").write_text(
        line("segment_start") + line("decision") * 3 + line("config_change")
    )
    (tmp_path / "w1-000001.jsonl").write_text(line("segment_start") + line("decision") * 2)
    assert ci.count_decision_records(tmp_path) == 5


def test_comparison_with_the_last_committed_result() -> None:
    assert ci.compare_with({}, None) == [
        "no previous result (no benchmarks/results/ci/latest.json in HEAD)"
    ]
    now = {"closed_loop": {"medians": {"score_c8": {"floor": {"ok_per_s": 2000.0}}}}}
    then = {"closed_loop": {"medians": {"score_c8": {"floor": {"ok_per_s": 1000.0}}}}}
    lines = ci.compare_with(now, then)
    assert any("score_c8 floor calls/s" in x and "(2.00x)" in x for x in lines)


def test_audit_backlog_fallbacks_are_answers_without_a_record() -> None:
    records = rows(row(0), row(10, outcome="FALLBACK/AUDIT_BACKLOG"), row(20, outcome="ABORTED"))
    result = spike.RunResult(PHASES[:1], records, warmup_answered=3)
    assert (result.answered, result.recorded) == (5, 4)
