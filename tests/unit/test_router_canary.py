"""Canary analysis: every path of evaluate(), psi(), and apply_verdict()."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from gateway.features.hashing import bucket
from router.canary import (
    EARLY_ROLLBACK_ALPHA,
    ArmWindow,
    CanaryAction,
    CanaryVerdict,
    apply_verdict,
    binomial_tail,
    evaluate,
    psi,
)
from router.routes import ArmRole, RouteTable, RouteTableError, decide, default_table, load_table


def table_with(arms: str, steps: str = "[1, 5, 25, 50, 100]") -> RouteTable:
    return load_table(
        f"""
routes:
  - name: cards
    salt: cards
    arms: {arms}
    canary: {{steps: {steps}, interval_s: 300, min_requests: 2000,
             guards: {{p99_ms: 10, error_rate: 0.005, score_psi: 0.2, decline_rate_delta: 0.02}}}}
"""
    )


def canary_at(weight: float, challenger: float = 0) -> RouteTable:
    arms = [
        f"{{model: gbdt, version: 3, weight: {100 - weight - challenger}, role: champion}}",
        f"{{model: gbdt, version: 4, weight: {weight}, role: canary}}",
    ]
    if challenger:
        arms.insert(1, f"{{model: mlp, version: 1, weight: {challenger}, role: challenger}}")
    return table_with("[" + ", ".join(arms) + "]")


SCORES = (4000, 2500, 1500, 1000, 600, 200, 100, 60, 30, 10)


def window(
    requests: int,
    errors: int = 0,
    p99_ms: float = 6.0,
    decline_rate: float = 0.02,
    scores: tuple[int, ...] = SCORES,
) -> ArmWindow:
    total = sum(scores)
    counts = tuple(round(c * requests / total) for c in scores)
    return ArmWindow(requests, errors, p99_ms, round(decline_rate * requests), counts)


CHAMPION = window(20_000, errors=10, p99_ms=6.2)
GOOD = window(2500, errors=4, p99_ms=7.0, decline_rate=0.025)


def judge(
    table: RouteTable,
    canary: ArmWindow = GOOD,
    champion: ArmWindow = CHAMPION,
    seconds: float = 301,
) -> CanaryVerdict:
    return evaluate(table.route("cards"), champion, canary, seconds)


@pytest.mark.parametrize(("before", "after"), [(1, 5), (5, 25), (10, 25), (25, 50), (50, 100)])
def test_guards_holding_step_to_the_next_step_above(before: float, after: float) -> None:
    verdict = judge(canary_at(before))
    assert verdict.action is CanaryAction.STEP
    assert verdict.canary_weight == after
    assert f"weight {before:g} -> {after:g}" in verdict.reason
    assert verdict.failed_guards == ()
    assert verdict.figures["canary_requests"] == 2500
    assert verdict.figures["score_psi"] < 0.001
    assert verdict.figures["decline_rate_delta"] == pytest.approx(0.005, abs=5e-4)


def test_hold_below_min_requests() -> None:
    verdict = judge(canary_at(5), canary=window(1999, errors=3))
    assert verdict.action is CanaryAction.HOLD
    assert verdict.canary_weight == 5
    assert "1999 of 2000 canary requests so far" in verdict.reason
    # Below min_requests a slow canary is not judged on p99 yet either.
    assert judge(canary_at(5), canary=window(1999, p99_ms=50)).action is CanaryAction.HOLD


def test_hold_before_the_interval_has_passed() -> None:
    verdict = judge(canary_at(5), seconds=299)
    assert verdict.action is CanaryAction.HOLD
    assert "299 s of 300 s at this step" in verdict.reason


def test_hold_at_weight_zero() -> None:
    verdict = judge(canary_at(0))
    assert verdict.action is CanaryAction.HOLD
    assert "at weight 0" in verdict.reason


@pytest.mark.parametrize(
    ("canary", "guard", "text"),
    [
        (window(2500, p99_ms=12.5), "p99_ms", "p99 12.5 ms > 10 ms (champion 6.2 ms)"),
        (window(2500, p99_ms=math.nan), "p99_ms", "p99 nan ms > 10 ms"),
        (
            window(2500, errors=15),
            "error_rate",
            "error rate 0.006 (15 of 2500) > 0.005 (champion 0.0005)",
        ),
        (
            window(2500, scores=tuple(reversed(SCORES))),
            "score_psi",
            "score PSI",
        ),
        (
            window(2500, decline_rate=0.045),
            "decline_rate_delta",
            "decline rate 0.0448 against the champion's 0.02: delta +0.0248 beyond ±0.02",
        ),
    ],
)
def test_any_failed_guard_rolls_back_at_once(canary: ArmWindow, guard: str, text: str) -> None:
    # Even before the interval: a breach does not wait.
    verdict = judge(canary_at(25), canary=canary, seconds=10)
    assert verdict.action is CanaryAction.ROLLBACK
    assert verdict.canary_weight == 0
    assert verdict.failed_guards == (guard,)
    assert text in verdict.reason
    assert verdict.reason.endswith("weight 25 -> 0")
    assert verdict.reason.startswith("route 'cards' canary gbdt v4: rollback: ")


def test_the_decline_delta_at_exactly_the_guard_holds() -> None:
    # 0.04 - 0.02 is not exactly 0.02 in binary; the guard is "no more than".
    champion = ArmWindow(20_000, 0, 6.0, 400, SCORES)
    canary = ArmWindow(2500, 0, 6.0, 100, SCORES)
    verdict = judge(canary_at(5), canary=canary, champion=champion)
    assert abs(verdict.figures["decline_rate_delta"]) == pytest.approx(0.02)
    expected = abs(100 / 2500 - 400 / 20_000) <= 0.02
    assert (verdict.action is CanaryAction.STEP) == expected


def test_a_canary_declining_too_little_rolls_back_too() -> None:
    # Declining far less than the champion can mean missed fraud: the guard is two-sided.
    verdict = judge(canary_at(5), champion=window(20_000, decline_rate=0.05))
    assert verdict.action is CanaryAction.ROLLBACK
    assert "delta -0.0252 beyond ±0.02" in verdict.reason


def test_every_failed_guard_is_named() -> None:
    canary = window(2500, errors=50, p99_ms=30, decline_rate=0.1, scores=(1,) * 10)
    verdict = judge(canary_at(25), canary=canary)
    assert verdict.failed_guards == ("p99_ms", "error_rate", "score_psi", "decline_rate_delta")
    assert verdict.figures["score_psi"] > 0.2


def test_a_clear_error_breach_rolls_back_before_min_requests() -> None:
    verdict = judge(canary_at(1), canary=window(500, errors=11))
    assert verdict.action is CanaryAction.ROLLBACK
    assert verdict.failed_guards == ("error_rate",)
    assert "clearly above 0.005 before min_requests" in verdict.reason
    assert verdict.figures["early_error_p_value"] < EARLY_ROLLBACK_ALPHA
    # A few errors in a small window are not clear yet: hold.
    verdict = judge(canary_at(1), canary=window(500, errors=5))
    assert verdict.action is CanaryAction.HOLD
    assert verdict.figures["early_error_p_value"] > EARLY_ROLLBACK_ALPHA
    # A canary failing everything is caught after two requests.
    assert judge(canary_at(1), canary=window(2, errors=2)).action is CanaryAction.ROLLBACK
    assert judge(canary_at(1), canary=window(1, errors=1)).action is CanaryAction.HOLD


@pytest.mark.parametrize(
    ("errors", "requests", "rate"),
    [(1, 1, 0.005), (2, 2, 0.005), (5, 100, 0.005), (11, 500, 0.005), (3, 500, 0.005),
     (30, 2000, 0.01), (1, 100_000, 0.001), (0, 10, 0.1)],
)  # fmt: skip
def test_binomial_tail_matches_scipy(errors: int, requests: int, rate: float) -> None:
    expected = stats.binom.sf(errors - 1, requests, rate)
    assert binomial_tail(errors, requests, rate) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_promote_at_the_last_step() -> None:
    # At 100 the champion takes no traffic: its window is empty, the comparison is
    # skipped (it was made on the way up), and the canary is promoted.
    verdict = judge(canary_at(100), champion=ArmWindow(0))
    assert verdict.action is CanaryAction.PROMOTE
    assert verdict.canary_weight == 100
    assert "PSI and decline rate not compared" in verdict.reason
    assert "score_psi" not in verdict.figures
    # Absolute guards still apply at 100.
    slow = judge(canary_at(100), canary=window(2500, p99_ms=11), champion=ArmWindow(0))
    assert slow.action is CanaryAction.ROLLBACK


def test_too_few_champion_requests_below_the_ceiling_hold() -> None:
    verdict = judge(canary_at(50), champion=window(1500))
    assert verdict.action is CanaryAction.HOLD
    assert "1500 of 2000 champion requests" in verdict.reason


def test_challengers_cap_the_ramp() -> None:
    table = canary_at(25, challenger=20)
    assert judge(table).canary_weight == 50
    table = apply_verdict(table, "cards", judge(table))
    step = judge(table)
    assert (step.action, step.canary_weight) == (CanaryAction.STEP, 80)  # 100 less 20
    table = apply_verdict(table, "cards", step)
    weights = {(a.model, a.role): a.weight for a in table.route("cards").arms}
    assert weights == {("gbdt", "champion"): 0, ("mlp", "challenger"): 20, ("gbdt", "canary"): 80}
    promote = judge(table, champion=ArmWindow(0))
    assert (promote.action, promote.canary_weight) == (CanaryAction.PROMOTE, 80)
    table = apply_verdict(table, "cards", promote)
    route = table.route("cards")
    assert [(a.model, a.version, a.role, a.weight) for a in route.arms] == [
        ("mlp", 1, ArmRole.CHALLENGER, 20),
        ("gbdt", 4, ArmRole.CHAMPION, 80),
    ]


def test_a_route_without_a_canary_cannot_be_judged() -> None:
    route = default_table("m", 1).routes[0]
    with pytest.raises(ValueError, match="has no canary"):
        evaluate(route, CHAMPION, GOOD, 1000)


def test_score_bins_must_agree() -> None:
    with pytest.raises(ValueError, match="same bins"):
        judge(canary_at(5), canary=ArmWindow(2500, 0, 5.0, 10, (1, 2, 3)))


def test_psi() -> None:
    assert psi([10, 20, 30], [10, 20, 30]) == 0
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0, abs=1e-15)
    # (0.6 - 0.5) ln(0.6 / 0.5) + (0.4 - 0.5) ln(0.4 / 0.5)
    assert psi([50, 50], [60, 40]) == pytest.approx(0.0405465, rel=1e-3)
    # An empty bin is smoothed to epsilon instead of an infinite log.
    with_empty = psi([100, 0], [99, 1])
    assert math.isfinite(with_empty)
    assert with_empty == pytest.approx((0.01 - 1e-4) * math.log(0.01 / 1e-4), rel=0.02)
    assert psi([100, 0], [99, 1], epsilon=1e-6) > with_empty
    for bad in (([1, 2], [1]), ([], []), ([0, 0], [1, 1]), ([1, -1], [1, 1])):
        with pytest.raises(ValueError):
            psi(*bad)


def test_arm_windows_refuse_impossible_figures() -> None:
    for args in ((-1,), (5, 6), (5, 0, 1.0, 6), (5, 0, -1.0), (5, 0, 1.0, 0, (1, -1))):
        with pytest.raises(ValueError):
            ArmWindow(*args)
    assert ArmWindow(0).error_rate == 0
    assert ArmWindow(200, 3, 5.0, 10).decline_rate == 0.05


def test_apply_step_gives_the_champion_the_rest() -> None:
    table = canary_at(10, challenger=5)
    verdict = judge(table)
    stepped = apply_verdict(table, "cards", verdict)
    weights = {a.role: a.weight for a in stepped.route("cards").arms}
    assert weights == {ArmRole.CHAMPION: 70, ArmRole.CHALLENGER: 5, ArmRole.CANARY: 25}
    assert stepped.route("cards").canary == table.route("cards").canary


def test_apply_rollback_returns_the_canary_share_to_the_champion() -> None:
    table = canary_at(50, challenger=5)
    verdict = judge(table, canary=window(2500, p99_ms=20))
    rolled = apply_verdict(table, "cards", verdict)
    weights = {a.role: a.weight for a in rolled.route("cards").arms}
    assert weights == {ArmRole.CHAMPION: 95, ArmRole.CHALLENGER: 5, ArmRole.CANARY: 0}
    assert rolled.problems() == []
    # And there it stays.
    assert judge(rolled).action is CanaryAction.HOLD


def test_apply_promote_keeps_every_canary_entity_on_the_canary() -> None:
    table = canary_at(100)
    promoted = apply_verdict(table, "cards", judge(table, champion=ArmWindow(0)))
    route = promoted.route("cards")
    assert route.canary is None
    assert [(a.version, a.role, a.weight) for a in route.arms] == [(4, ArmRole.CHAMPION, 100)]
    assert promoted.problems() == []
    # From 50: every account on the canary stays on v4 once it is champion at 100.
    half = canary_at(50)
    forced = CanaryVerdict("cards", CanaryAction.PROMOTE, "operator", 100)
    after = apply_verdict(half, "cards", forced)
    for i in range(2000):
        keys = {"account_id": f"acct-{i}"}
        if decide(half, keys, bucket).arm.version == 4:
            assert decide(after, keys, bucket).arm.version == 4


def test_apply_hold_changes_nothing_and_bad_verdicts_are_refused() -> None:
    table = canary_at(5)
    hold = judge(table, seconds=1)
    assert apply_verdict(table, "cards", hold) is table
    too_far = CanaryVerdict("cards", CanaryAction.STEP, "", 120)
    with pytest.raises(RouteTableError, match=r"canary weight 120 is outside 0\.\.100"):
        apply_verdict(table, "cards", too_far)
    with pytest.raises(ValueError, match="for route 'cards', not 'other'"):
        apply_verdict(table, "other", judge(table))
    with pytest.raises(LookupError):
        apply_verdict(table, "other", CanaryVerdict("", CanaryAction.STEP, "", 5))
    with pytest.raises(ValueError, match="has no canary"):
        apply_verdict(default_table("m", 1), "default", CanaryVerdict("", CanaryAction.STEP, "", 5))
