"""Canary analysis: compare a window of canary traffic with the champion's, then hold,
step, promote or roll back. Pure: the caller collects the windows and applies the
verdict (``apply_verdict``, or ``RouteStore.apply_canary`` for a versioned change).

The rules, in order (``evaluate``):

1. A canary at weight 0 takes no traffic (never started, or rolled back): hold. A
   rollback therefore stays put until an operator raises the weight again.
2. With at least ``min_requests`` canary requests in the window, every guard is
   checked; any breach rolls the canary back to 0 at once, naming each failed guard
   with its figures. ``p99_ms`` and ``error_rate`` judge the canary alone;
   ``score_psi`` and ``decline_rate_delta`` compare it with the champion, and need
   ``min_requests`` champion requests too.
3. Below ``min_requests`` the window is too small to pass anyone: hold. One
   exception, so a broken canary does not serve thousands of errors first: an error
   rate that is already statistically clear rolls back early. "Clear" is a one-sided
   exact binomial test: if the canary's true error rate were at the guard, seeing
   this many errors or more in this many requests would have probability below
   ``EARLY_ROLLBACK_ALPHA`` (0.1%). E.g. with a 0.005 guard: 2 errors in 2 requests,
   5 in 100, 11 in 500.
4. Too few champion requests for the comparative guards: hold, except when the
   canary is at its ceiling, where the champion takes little or no traffic by design
   (they were checked on the way up).
5. Less than ``interval_s`` since the last step: hold.
6. Otherwise step to the next step above the canary's weight, or promote when it is
   already at its ceiling: the last step, or 100 minus the other arms' weights when
   challengers hold traffic too.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from router.routes import (
    BUCKETS,
    ArmRole,
    ArmSpec,
    RouteSpec,
    RouteTable,
    RouteTableError,
    parse_table,
)

PSI_EPSILON = 1e-4
"""Default smoothing for ``psi``: the share given to an empty bin."""

EARLY_ROLLBACK_ALPHA = 1e-3
"""Below ``min_requests``, roll back on errors only when a canary whose true error rate
equals the guard would show this many with less than this probability."""


class CanaryAction(enum.StrEnum):
    HOLD = "hold"
    STEP = "step"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class ArmWindow:
    """One arm's traffic over the analysis window."""

    requests: int
    errors: int = 0
    """Requests that failed (timeouts, backend errors, shed), fallback answers included."""
    p99_ms: float = math.nan
    """Server-side p99 latency; NaN when unknown, which fails the p99 guard."""
    declines: int = 0
    score_counts: tuple[int, ...] = ()
    """Scores per bin, over bins shared by both arms (e.g. the card's frozen edges)."""

    def __post_init__(self) -> None:
        if self.requests < 0 or not 0 <= self.errors <= self.requests:
            raise ValueError(f"need 0 <= errors ({self.errors}) <= requests ({self.requests})")
        if not 0 <= self.declines <= self.requests:
            raise ValueError(f"need 0 <= declines ({self.declines}) <= requests ({self.requests})")
        if self.p99_ms < 0:
            raise ValueError(f"p99_ms {self.p99_ms} must be >= 0 (or NaN when unknown)")
        if any(count < 0 for count in self.score_counts):
            raise ValueError("score_counts must be >= 0")

    @property
    def error_rate(self) -> float:
        """errors / requests; 0 for an empty window."""
        return self.errors / self.requests if self.requests else 0.0

    @property
    def decline_rate(self) -> float:
        """declines / requests; 0 for an empty window."""
        return self.declines / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class CanaryVerdict:
    """What ``evaluate`` concluded for one route's canary."""

    route: str
    action: CanaryAction
    reason: str
    """For people: what was decided and why, with the figures of any failed guard."""
    canary_weight: float
    """The canary arm's weight once the verdict is applied (unchanged for hold)."""
    figures: dict[str, float] = field(default_factory=dict)
    """What was measured: ``{champion,canary}_{requests,p99_ms,error_rate,decline_rate}``,
    ``decline_rate_delta`` and ``score_psi`` when computed, ``canary_weight_before``."""
    failed_guards: tuple[str, ...] = ()


def psi(
    expected_counts: Sequence[int], actual_counts: Sequence[int], epsilon: float = PSI_EPSILON
) -> float:
    """Population stability index of ``actual`` against ``expected``, over the same bins.

    PSI = sum((a - e) * ln(a / e)) over the bins' shares. An empty bin would make the
    log infinite, so each share is smoothed additively, ``(share + epsilon) /
    (1 + bins * epsilon)``: every bin gets at least ``epsilon``, shares still sum to
    1, and bins that are well filled barely move.

    Raises:
        ValueError: the bin counts differ, a count is negative, or an arm has none.
    """
    if len(expected_counts) != len(actual_counts) or not expected_counts:
        raise ValueError(
            f"psi needs the same bins on both sides, got {len(expected_counts)} and "
            f"{len(actual_counts)}"
        )
    if epsilon <= 0:
        raise ValueError(f"epsilon {epsilon} must be > 0")
    total_e = sum(expected_counts)
    total_a = sum(actual_counts)
    if min(*expected_counts, *actual_counts) < 0 or total_e == 0 or total_a == 0:
        raise ValueError("psi needs non-negative counts and at least one count on each side")
    scale = 1 + len(expected_counts) * epsilon
    value = 0.0
    for e_count, a_count in zip(expected_counts, actual_counts, strict=True):
        e = (e_count / total_e + epsilon) / scale
        a = (a_count / total_a + epsilon) / scale
        value += (a - e) * math.log(a / e)
    return value


def binomial_tail(errors: int, requests: int, rate: float) -> float:
    """P(X >= errors) for X ~ Binomial(requests, rate), summed exactly in log space."""
    if errors <= 0:
        return 1.0
    if errors > requests:
        return 0.0
    if rate <= 0:
        return 0.0
    if rate >= 1:
        return 1.0
    log_p, log_q = math.log(rate), math.log1p(-rate)
    log_n = math.lgamma(requests + 1)
    total = 0.0
    for k in range(errors, requests + 1):
        term = math.exp(
            log_n
            - math.lgamma(k + 1)
            - math.lgamma(requests - k + 1)
            + k * log_p
            + (requests - k) * log_q
        )
        total += term
        if k > requests * rate and term < total * 1e-17:
            break  # past the mode the terms only shrink
    return min(total, 1.0)


def _ceiling(route: RouteSpec) -> int:
    """The most the canary can weigh, in hundredths: 100 less the challengers' share."""
    others = sum(
        round(a.weight * 100)
        for a in route.arms
        if a.role not in (ArmRole.CHAMPION, ArmRole.CANARY)
    )
    return BUCKETS - others


def _pct(hundredths: int) -> float:
    return hundredths / 100


def evaluate(
    route: RouteSpec,
    champion: ArmWindow,
    canary: ArmWindow,
    seconds_since_last_step: float,
) -> CanaryVerdict:
    """Decide what the route's canary does next (rules in the module docstring).

    Raises:
        ValueError: the route has no canary, or the arms' score bins differ.
    """
    spec = route.canary
    arm = route.canary_arm
    if spec is None or arm is None:
        raise ValueError(f"route {route.name!r} has no canary")
    guards = spec.guards
    current = round(arm.weight * 100)
    ceiling = _ceiling(route)
    figures: dict[str, float] = {
        "canary_weight_before": _pct(current),
        "champion_requests": champion.requests,
        "canary_requests": canary.requests,
        "champion_p99_ms": champion.p99_ms,
        "canary_p99_ms": canary.p99_ms,
        "champion_error_rate": champion.error_rate,
        "canary_error_rate": canary.error_rate,
        "champion_decline_rate": champion.decline_rate,
        "canary_decline_rate": canary.decline_rate,
    }

    def verdict(
        action: CanaryAction, reason: str, weight: int, failed: tuple[str, ...] = ()
    ) -> CanaryVerdict:
        label = f"{arm.model} v{arm.version}"
        return CanaryVerdict(
            route=route.name,
            action=action,
            reason=f"route {route.name!r} canary {label}: {action}: {reason}",
            canary_weight=_pct(weight),
            figures=figures,
            failed_guards=failed,
        )

    if current == 0:
        return verdict(
            CanaryAction.HOLD,
            "at weight 0 it takes no traffic; raise its weight to (re)start the ramp",
            current,
        )

    enough_canary = canary.requests >= spec.min_requests
    enough_champion = champion.requests >= spec.min_requests
    failures: list[tuple[str, str]] = []
    if enough_canary:
        if not canary.p99_ms <= guards.p99_ms:  # NaN fails: no latency, no pass
            failures.append(
                (
                    "p99_ms",
                    f"p99 {canary.p99_ms:g} ms > {guards.p99_ms:g} ms "
                    f"(champion {champion.p99_ms:g} ms)",
                )
            )
        if not canary.error_rate <= guards.error_rate:
            failures.append(
                (
                    "error_rate",
                    f"error rate {canary.error_rate:.4g} ({canary.errors} of {canary.requests}) "
                    f"> {guards.error_rate:g} (champion {champion.error_rate:.4g})",
                )
            )
    if enough_canary and enough_champion:
        if len(champion.score_counts) != len(canary.score_counts):
            raise ValueError(
                f"score_counts have {len(champion.score_counts)} bins for the champion and "
                f"{len(canary.score_counts)} for the canary; use the same bins"
            )
        score_psi = psi(champion.score_counts, canary.score_counts)
        delta = canary.decline_rate - champion.decline_rate
        figures["score_psi"] = score_psi
        figures["decline_rate_delta"] = delta
        if not score_psi <= guards.score_psi:
            failures.append(("score_psi", f"score PSI {score_psi:.4g} > {guards.score_psi:g}"))
        if not abs(delta) <= guards.decline_rate_delta:
            failures.append(
                (
                    "decline_rate_delta",
                    f"decline rate {canary.decline_rate:.4g} against the champion's "
                    f"{champion.decline_rate:.4g}: delta {delta:+.4g} beyond "
                    f"±{guards.decline_rate_delta:g}",
                )
            )
    if not enough_canary and canary.errors:
        tail = binomial_tail(canary.errors, canary.requests, guards.error_rate)
        figures["early_error_p_value"] = tail
        if tail < EARLY_ROLLBACK_ALPHA:
            failures.append(
                (
                    "error_rate",
                    f"error rate {canary.error_rate:.4g} ({canary.errors} of "
                    f"{canary.requests}) is clearly above {guards.error_rate:g} before "
                    f"min_requests (p = {tail:.2g} < {EARLY_ROLLBACK_ALPHA:g})",
                )
            )
    if failures:
        return verdict(
            CanaryAction.ROLLBACK,
            "; ".join(why for _, why in failures) + f"; weight {_pct(current):g} -> 0",
            0,
            tuple(name for name, _ in failures),
        )
    if not enough_canary:
        return verdict(
            CanaryAction.HOLD,
            f"{canary.requests} of {spec.min_requests} canary requests so far",
            current,
        )
    if not enough_champion and current < ceiling:
        return verdict(
            CanaryAction.HOLD,
            f"{champion.requests} of {spec.min_requests} champion requests so far, "
            "too few to compare scores and decline rates",
            current,
        )
    if seconds_since_last_step < spec.interval_s:
        return verdict(
            CanaryAction.HOLD,
            f"guards hold; {seconds_since_last_step:g} s of {spec.interval_s:g} s at this step",
            current,
        )
    passed = _passed(figures, enough_champion)
    if current >= ceiling:
        return verdict(
            CanaryAction.PROMOTE,
            f"guards hold at its ceiling {_pct(ceiling):g} ({passed}); it becomes the champion",
            ceiling,
        )
    step = next(s for s in (min(round(s * 100), ceiling) for s in spec.steps) if s > current)
    return verdict(
        CanaryAction.STEP,
        f"guards hold ({passed}); weight {_pct(current):g} -> {_pct(step):g}",
        step,
    )


def _passed(figures: dict[str, float], compared: bool) -> str:
    text = (
        f"{figures['canary_requests']:.0f} requests, p99 {figures['canary_p99_ms']:g} ms, "
        f"error rate {figures['canary_error_rate']:.4g}"
    )
    if compared:
        return (
            f"{text}, score PSI {figures['score_psi']:.4g}, "
            f"decline rate delta {figures['decline_rate_delta']:+.4g}"
        )
    return f"{text}; PSI and decline rate not compared: too few champion requests"


def apply_verdict(table: RouteTable, route_name: str, verdict: CanaryVerdict) -> RouteTable:
    """The table with ``verdict`` applied to route ``route_name``'s arms.

    step / rollback: the canary takes ``verdict.canary_weight`` and the champion the
    rest; challengers keep theirs. promote: the canary becomes the champion with
    everything the challengers do not hold; the old champion arm and the canary spec
    go. hold: ``table`` itself.

    Raises:
        LookupError: no such route.
        ValueError: the route has no canary, or the verdict is for another route.
        RouteTableError: the result would not validate (it names why).
    """
    if verdict.action is CanaryAction.HOLD:
        return table
    if verdict.route and verdict.route != route_name:
        raise ValueError(f"the verdict is for route {verdict.route!r}, not {route_name!r}")
    route = table.route(route_name)
    canary = route.canary_arm
    if canary is None or route.canary is None:
        raise ValueError(f"route {route_name!r} has no canary")
    champion = route.champion
    ceiling = _ceiling(route)
    arms: list[ArmSpec] = []
    if verdict.action is CanaryAction.PROMOTE:
        for arm in route.arms:
            if arm is canary:
                arms.append(
                    ArmSpec(
                        model=arm.model,
                        version=arm.version,
                        weight=_pct(ceiling),
                        role=ArmRole.CHAMPION,
                    )
                )
            elif arm is not champion:
                arms.append(arm)
        updated = {"arms": tuple(arms), "canary": None}
    else:
        weight = round(verdict.canary_weight * 100)
        if not 0 <= weight <= ceiling:
            raise RouteTableError(
                [
                    f"route {route_name!r}: canary weight {_pct(weight):g} is outside "
                    f"0..{_pct(ceiling):g} (100 less the challengers' weight)"
                ]
            )
        for arm in route.arms:
            if arm is canary:
                arms.append(_weighed(arm, weight))
            elif arm is champion:
                arms.append(_weighed(arm, ceiling - weight))
            else:
                arms.append(arm)
        updated = {"arms": tuple(arms)}
    data = {name: getattr(route, name) for name in type(route).model_fields} | updated
    routes = [data if r is route else r for r in table.routes]
    return parse_table({"routes": routes})


def _weighed(arm: ArmSpec, hundredths: int) -> ArmSpec:
    return ArmSpec(model=arm.model, version=arm.version, weight=_pct(hundredths), role=arm.role)
