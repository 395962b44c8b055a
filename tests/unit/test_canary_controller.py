"""The canary controller over a real RouteStore: windows, ramps, rollbacks, races."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from gateway.canary import CanaryController
from gateway.settings import CanarySettings
from router.routes import ArmRole, Decision, RouteTable, load_table
from router.store import ChangeKind, ConfigChange, RouteStore
from tests.unit.otel_scrape import scrape

GUARDS = "{p99_ms: 50, error_rate: 0.05, score_psi: 0.2, decline_rate_delta: 0.05}"


def table(weight: float = 1, interval_s: float = 10, min_requests: int = 50) -> RouteTable:
    return load_table(
        f"""
routes:
  - name: cards
    match: {{channel: [ECOMMERCE]}}
    salt: cards
    arms:
      - {{model: gbdt, version: 3, weight: {100 - weight}, role: champion}}
      - {{model: mlp, version: 1, weight: {weight}, role: canary}}
    canary: {{steps: [1, 5, 25, 50, 100], interval_s: {interval_s},
             min_requests: {min_requests}, guards: {GUARDS}}}
  - name: rest
    salt: rest
    arms: [{{model: gbdt, version: 3, weight: 100}}]
"""
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Rig:
    def __init__(self, first: RouteTable | None = None) -> None:
        self.changes: list[ConfigChange] = []
        self.store = RouteStore(first or table(), listener=self.changes.append)
        self.clock = Clock()
        self.controller = CanaryController(
            self.store, CanarySettings(), clock=self.clock, histogram_mode="python"
        )

    def feed(
        self,
        role: ArmRole,
        n: int,
        *,
        scores: tuple[float, ...] = (0.02, 0.1, 0.3, 0.6),
        declines_every: int = 0,
        errors: int = 0,
        latency_s: float = 0.002,
        route: str = "cards",
    ) -> None:
        for i in range(n):
            decline = bool(declines_every) and i % declines_every == 0
            self.controller.record(
                route,
                role,
                latency_s,
                Decision.DECLINE if decline else Decision.APPROVE,
                scores[i % len(scores)],
                i < errors,
            )

    def feed_both(self, n: int = 50, **canary: Any) -> None:
        self.feed(ArmRole.CHAMPION, n)
        self.feed(ArmRole.CANARY, n, **canary)

    def weight(self) -> float:
        arm = self.store.current.table.route("cards").canary_arm
        assert arm is not None
        return arm.weight


def test_windows_fill_from_record_and_give_p99_as_a_bucket_upper_bound() -> None:
    rig = Rig()
    rig.feed(ArmRole.CHAMPION, 99, latency_s=0.0021, declines_every=10)
    rig.feed(ArmRole.CHAMPION, 1, latency_s=0.3)
    rig.feed(ArmRole.CANARY, 20, errors=3, latency_s=0.0007)
    rig.feed(ArmRole.CHALLENGER, 500)  # not a canary role: ignored
    rig.feed(ArmRole.CANARY, 500, route="rest")  # no canary there: ignored
    status = rig.controller.status("cards")
    champion, canary = status["champion"], status["canary"]
    assert (champion["requests"], champion["errors"], champion["declines"]) == (100, 0, 10)
    # 99 of 100 at 2.1 ms: the rank-99 value lies in the bucket ending at 2.5 ms.
    assert champion["p99_ms"] == pytest.approx(2.5)
    assert (canary["requests"], canary["errors"], canary["error_rate"]) == (20, 3, 0.15)
    assert canary["p99_ms"] == pytest.approx(0.8)
    assert 0 < status["score_psi"] < 0.05  # the same scores; a few canary errors
    assert rig.controller.status("rest") == {}
    assert "last_verdict" not in status


def test_a_healthy_canary_walks_every_step_then_is_promoted() -> None:
    rig = Rig()
    weights = [rig.weight()]
    for _ in range(4):
        rig.feed_both()
        rig.clock.advance(5)
        [held] = rig.controller.tick()
        assert held.reason.endswith("5 s of 10 s at this step")
        rig.clock.advance(5)
        [verdict] = rig.controller.tick()
        assert verdict.action == "step"
        weights.append(rig.weight())
        # The windows start again after every change.
        assert rig.controller.status("cards")["canary"]["requests"] == 0
    assert weights == [1, 5, 25, 50, 100]
    rig.feed(ArmRole.CANARY, 50)  # at 100 the champion takes nothing
    rig.clock.advance(10)
    [verdict] = rig.controller.tick()
    assert verdict.action == "promote"
    route = rig.store.current.table.route("cards")
    assert route.canary is None and route.champion.label == "mlp v1"
    assert route.champion.weight == 100
    assert rig.store.current.config_version == 6
    kinds = [c.kind for c in rig.changes]
    assert kinds == ["apply", *["canary_step"] * 4, "canary_promote"]
    for change in rig.changes[1:]:
        assert change.actor == "canary"
        assert change.figures["canary_requests"] == 50
        assert "score_psi" in change.figures or change.kind == ChangeKind.CANARY_PROMOTE
    assert rig.changes[1].figures["score_psi"] == pytest.approx(0.0, abs=1e-9)
    assert "weight 1 -> 5" in rig.changes[1].reason
    assert rig.controller.transitions() == {("cards", "step"): 4, ("cards", "promote"): 1}
    # Nothing left to watch.
    assert rig.controller.tick() == []


def test_no_step_below_min_requests_whatever_the_time() -> None:
    rig = Rig()
    rig.feed_both(49)
    rig.clock.advance(3600)
    [verdict] = rig.controller.tick()
    assert verdict.action == "hold" and "49 of 50 canary requests" in verdict.reason
    assert rig.store.current.config_version == 1


@pytest.mark.parametrize(
    ("canary", "guard"),
    [
        ({"scores": (0.8, 0.9, 0.97)}, "score_psi"),
        ({"declines_every": 2}, "decline_rate_delta"),
        ({"errors": 10}, "error_rate"),
        ({"latency_s": 0.2}, "p99_ms"),
    ],
)
def test_a_failed_guard_rolls_back_to_zero_at_once(canary: dict[str, Any], guard: str) -> None:
    rig = Rig(table(weight=25))
    rig.feed_both(**canary)
    # No interval to wait for: a rollback is immediate.
    [verdict] = rig.controller.tick()
    assert verdict.action == "rollback"
    assert guard in verdict.failed_guards
    assert rig.weight() == 0
    change = rig.changes[-1]
    assert change.kind == ChangeKind.CANARY_ROLLBACK and change.actor == "canary"
    assert "weight 25 -> 0" in change.reason
    if guard == "score_psi":
        assert change.figures["score_psi"] > 0.2
    last = rig.controller.status("cards")["last_verdict"]
    assert last["action"] == "rollback" and last["outcome"] == "applied as config_version 2"
    # At weight 0 it stays put until an operator raises it again.
    rig.clock.advance(3600)
    [held] = rig.controller.tick()
    assert held.action == "hold" and rig.store.current.config_version == 2


def test_clear_errors_roll_back_before_min_requests() -> None:
    rig = Rig()
    rig.feed(ArmRole.CANARY, 5, errors=5)
    [verdict] = rig.controller.tick()
    assert verdict.action == "rollback" and verdict.failed_guards == ("error_rate",)


def test_an_operator_change_resets_the_windows_and_the_step_clock() -> None:
    rig = Rig()
    rig.feed_both()
    rig.clock.advance(8)
    rig.store.replace(table(weight=5), actor="op", reason="by hand")
    assert rig.controller.status("cards")["canary"]["requests"] == 0
    rig.feed_both()
    rig.clock.advance(8)  # 16 s since start, 8 s since the operator's change
    [verdict] = rig.controller.tick()
    assert verdict.action == "hold" and "8 s of 10 s" in verdict.reason
    rig.clock.advance(2)
    [verdict] = rig.controller.tick()
    assert verdict.action == "step" and rig.weight() == 25
    # A change elsewhere in the table leaves this route's windows alone.
    rig.feed_both(10)
    other = table(weight=25).model_dump()
    other["routes"][1]["salt"] = "rest-2"
    rig.store.replace(RouteTable.model_validate(other), actor="op")
    assert rig.controller.status("cards")["canary"]["requests"] == 10


def test_a_stale_version_is_dropped_and_the_next_tick_starts_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig()
    rig.feed_both()
    rig.clock.advance(10)
    apply_canary = rig.store.apply_canary

    def raced(*args: Any, **kwargs: Any) -> Any:
        # An operator's change lands between the evaluation and the apply.
        rig.store.replace(table(weight=5), actor="op", reason="by hand")
        return apply_canary(*args, **kwargs)

    monkeypatch.setattr(rig.store, "apply_canary", raced)
    [verdict] = rig.controller.tick()
    assert verdict.action == "step"
    assert [c.kind for c in rig.changes] == ["apply", "apply"]
    assert rig.weight() == 5
    last = rig.controller.status("cards")["last_verdict"]
    assert last["outcome"].startswith("stale: the change was made against config_version 1")
    assert rig.controller.transitions() == {}
    monkeypatch.undo()
    assert rig.controller.status("cards")["canary"]["requests"] == 0
    rig.feed_both()
    rig.clock.advance(10)
    [verdict] = rig.controller.tick()
    assert verdict.action == "step" and rig.weight() == 25


def test_results_of_a_call_under_an_older_version_are_not_counted() -> None:
    rig = Rig()
    old = rig.store.current
    assert rig.controller.watching(old)
    rig.store.replace(table(weight=5), actor="op")
    # The first call under the new version takes it up; one that began before is dropped.
    assert rig.controller.watching(rig.store.current)
    assert not rig.controller.watching(old)
    rig.controller.record_failure(old, [("cards", ArmRole.CANARY)])
    rig.controller.record_failure(rig.store.current, [("cards", ArmRole.CANARY)])
    assert rig.controller.status("cards")["canary"]["errors"] == 1
    plain = Rig(
        load_table("routes: [{name: r, salt: s, arms: [{model: m, version: 1, weight: 100}]}]")
    )
    assert not plain.controller.watching(plain.store.current)


def test_metrics() -> None:
    rig = Rig(table(weight=25))
    rig.feed_both(scores=(0.99,))
    rig.controller.tick()
    families = scrape(rig.controller)
    [weight] = families["riskwire_canary_weight"].samples
    assert weight.labels == {"route": "cards", "model": "mlp", "version": "1"}
    assert weight.value == 0
    [transition] = families["riskwire_canary_transitions"].samples
    assert transition.name == "riskwire_canary_transitions_total"
    assert transition.labels == {"route": "cards", "action": "rollback"} and transition.value == 1
    requests = {s.labels["role"]: s.value for s in families["riskwire_canary_requests"].samples}
    assert requests == {"champion": 0, "canary": 0}


def test_the_background_task_applies_verdicts_on_its_own() -> None:
    store = RouteStore(table(weight=50, interval_s=0.01, min_requests=5))
    controller = CanaryController(store, CanarySettings(tick_s=0.01), histogram_mode="python")

    async def run() -> int:
        controller.start()
        try:
            for _ in range(5):
                controller.record("cards", ArmRole.CHAMPION, 0.001, Decision.APPROVE, 0.1, False)
                controller.record("cards", ArmRole.CANARY, 0.001, Decision.APPROVE, 0.1, False)
            deadline = time.monotonic() + 10
            while store.current.config_version == 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return store.current.config_version
        finally:
            await controller.stop()

    assert asyncio.run(run()) == 2
    arm = store.current.table.route("cards").canary_arm
    assert arm is not None and arm.weight == 100
    assert not math.isnan(controller.status("cards")["window_s"])
