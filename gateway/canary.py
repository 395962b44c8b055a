"""The canary controller: collect each canary route's windows, evaluate, step or roll back.

``DataPlane.score`` hands every answered call's results to :meth:`CanaryController.
record_results` (one version check per call; nothing more when no route has a canary).
Per (route, role) with role champion or canary, a window since the route last changed
counts:

- requests, and errors: fallback answers (timeout, overload, backend_error: any
  answer the model did not give) and calls that raised because the route's fallback
  policy did not cover the failure (``record_failure``);
- declines: answers with decision DECLINE, fallbacks included (what the caller got);
- latency: the data plane's own time for the whole call, from the start of
  ``DataPlane.score`` to its results, so every row of one ScoreBatch carries the
  batch's time. A fixed-bucket histogram (``LATENCY_EDGES_SECONDS``, ten buckets a
  decade from 100 us to 10 s) gives p99 as the *upper bound of the bucket holding
  the rank* (``gateway.shadow.bucket_quantile``): an overestimate by at most one
  bucket (26%), never an underestimate; above 10 s it is +inf, which fails any guard;
- scores of model answers only (a fallback's 0.0 is no score), in ``SCORE_BINS``
  equal bins over [0, 1] shared by both arms, for ``router.canary.psi``.

A task on the event loop wakes every ``canary.tick_s``: for each route with a canary
it builds the two ``ArmWindow``s, calls ``router.canary.evaluate`` with the seconds
since the route last changed, and applies a step, promotion or rollback through
``RouteStore.apply_canary(expected_version=<the version evaluated>, actor="canary")``:
a new config_version whose history entry and audit record carry the verdict's reason
and figures. A ``StaleConfigVersion`` (an operator changed the table meanwhile) is
logged and dropped; the next tick sees the new table.

Whenever the route spec in force differs from the one the windows were collected
under (a change by this controller or by anyone else), that route's windows are
emptied and its step clock restarts: results from a call that began under an older
config_version are not counted. Everything runs on the event-loop thread.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from gateway.features.dispatch import EncoderMode
from gateway.settings import CanarySettings
from gateway.shadow import bucket_quantile
from gateway.telemetry.histogram import FixedBucketHistogram, make_histogram
from router.canary import ArmWindow, CanaryAction, CanaryVerdict, evaluate, psi
from router.routes import ArmRole, Decision, RouteSpec, RouteTableError
from router.store import RouteStore, StaleConfigVersion, VersionedTable

if TYPE_CHECKING:
    from gateway.dataplane import ScoreResult

log = logging.getLogger("riskwire.canary")

SCORE_BINS = 20
"""Equal score bins over [0, 1] for the PSI between the arms."""
SCORE_EDGES: tuple[float, ...] = tuple(round(i / SCORE_BINS, 2) for i in range(1, SCORE_BINS))
"""Upper bounds of the first 19 bins (0.05 ... 0.95); the last bin takes (0.95, 1]."""
_R10 = (1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.3, 8.0)
LATENCY_EDGES_SECONDS: tuple[float, ...] = (
    *(round(m * 10.0**e, 9) for e in range(-4, 1) for m in _R10),
    10.0,
)
"""Latency bucket upper bounds, 100 us to 10 s, ten a decade (the R10 series)."""


def _p99_ms(histogram: FixedBucketHistogram) -> float:
    return bucket_quantile(histogram.edges, histogram.counts(), 0.99) * 1000.0


class _Window:
    """One arm's counts since the route last changed."""

    __slots__ = ("declines", "errors", "latency", "requests", "scores")

    def __init__(self, mode: EncoderMode) -> None:
        self.requests = 0
        self.errors = 0
        self.declines = 0
        self.latency = make_histogram(LATENCY_EDGES_SECONDS, mode)
        self.scores = make_histogram(SCORE_EDGES, mode)

    def arm_window(self) -> ArmWindow:
        return ArmWindow(
            requests=self.requests,
            errors=self.errors,
            p99_ms=_p99_ms(self.latency) if self.requests else math.nan,
            declines=self.declines,
            score_counts=tuple(int(c) for c in self.scores.counts()),
        )


class _RouteState:
    """The windows of one canary route, the spec they were collected under, its clock."""

    __slots__ = ("canary", "champion", "changed_at", "spec")

    def __init__(self, spec: RouteSpec, now: float, mode: EncoderMode) -> None:
        self.spec = spec
        self.changed_at = now
        self.champion = _Window(mode)
        self.canary = _Window(mode)


@dataclass(frozen=True, slots=True)
class LastVerdict:
    """The newest verdict for a route, and what became of it."""

    verdict: CanaryVerdict
    at: float
    """The controller's clock (monotonic seconds) when it was reached."""
    config_version: int
    """The version it was reached against."""
    outcome: str
    """"held", "applied as config_version N", "stale: ..." or "refused: ..."."""


class CanaryController:
    """Collects canary windows from the data plane and walks each canary's ramp.

    Args:
        store: the route store the data plane reads; verdicts are applied to it.
        settings: the ``canary`` settings section.
        clock: monotonic seconds (a fake one in tests).
        histogram_mode: which histogram implementation counts latency and scores.
    """

    def __init__(
        self,
        store: RouteStore,
        settings: CanarySettings,
        clock: Callable[[], float] = time.monotonic,
        histogram_mode: EncoderMode = "auto",
    ) -> None:
        self._store = store
        self.settings = settings
        self._clock = clock
        self._mode = histogram_mode
        self._seen: VersionedTable | None = None
        self._routes: dict[str, _RouteState] = {}
        self._last: dict[str, LastVerdict] = {}
        self._transitions: dict[tuple[str, str], int] = {}
        self._task: asyncio.Task[None] | None = None
        self.refresh()

    # -- the data plane's side -----------------------------------------------------

    def watching(self, versioned: VersionedTable) -> bool:
        """True when ``versioned`` is the table in force and one of its routes has a canary.

        A newer table than the one last seen is taken up first (windows of changed
        routes reset); a call that began under an older one is not counted.
        """
        if versioned is not self._seen:
            if versioned is not self._store.current:
                return False
            self.refresh()
        return bool(self._routes)

    def record_results(
        self, versioned: VersionedTable, results: Sequence[ScoreResult], latency_s: float
    ) -> None:
        """Count one call's answers (``DataPlane.score``); O(1) per row."""
        if not self.watching(versioned):
            return
        record = self.record
        for r in results:
            # A fallback answer (any reason) carries its reason; a model answer none.
            record(r.route, r.arm, latency_s, r.decision, r.score, r.fallback_reason is not None)

    def record(
        self,
        route: str,
        arm_role: ArmRole,
        latency_s: float,
        decision: Decision,
        score: float,
        error: bool,
    ) -> None:
        """Count one answered transaction of ``route``'s champion or canary arm.

        Other routes and roles are ignored. ``score`` is not counted for an error.
        """
        state = self._routes.get(route)
        if state is None:
            return
        if arm_role is ArmRole.CANARY:
            window = state.canary
        elif arm_role is ArmRole.CHAMPION:
            window = state.champion
        else:
            return
        window.requests += 1
        window.latency.record(latency_s)
        if decision is Decision.DECLINE:
            window.declines += 1
        if error:
            window.errors += 1
        else:
            window.scores.record(score)

    def record_failure(
        self, versioned: VersionedTable, routes_and_roles: Sequence[tuple[str, ArmRole]]
    ) -> None:
        """Count rows of a call that raised (a failure the fallback policy did not cover)
        as errors, with no latency figure and no decision."""
        if not self.watching(versioned):
            return
        for route, role in routes_and_roles:
            state = self._routes.get(route)
            if state is None:
                continue
            window = state.canary if role is ArmRole.CANARY else state.champion
            if role in (ArmRole.CANARY, ArmRole.CHAMPION):
                window.requests += 1
                window.errors += 1

    # -- the control loop ----------------------------------------------------------

    def start(self) -> None:
        """Start the periodic check on the running loop (unless disabled)."""
        if self._task is None and self.settings.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="canary")

    async def stop(self) -> None:
        """Stop the periodic check; a change being applied finishes first."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            if not task.cancelled() and task.exception() is not None:
                log.error("canary controller failed", exc_info=task.exception())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                self.tick()
            except Exception:  # one bad tick must not end the ramps of every route
                log.exception("canary tick failed")

    def refresh(self) -> None:
        """Take up the table in force: reset the windows of every route that changed."""
        versioned = self._store.current
        if versioned is self._seen:
            return
        now = self._clock()
        routes: dict[str, _RouteState] = {}
        for spec in versioned.table.routes:
            if spec.canary is None or spec.canary_arm is None:
                continue
            old = self._routes.get(spec.name)
            routes[spec.name] = (
                old if old is not None and old.spec == spec else _RouteState(spec, now, self._mode)
            )
        self._routes = routes
        self._seen = versioned

    def tick(self) -> list[CanaryVerdict]:
        """Evaluate every canary route once; apply what is not a hold. Returns the verdicts."""
        self.refresh()
        verdicts = []
        for name in list(self._routes):
            self.refresh()  # a change applied for an earlier route makes a new version
            state = self._routes.get(name)
            versioned = self._seen
            if state is None or versioned is None:
                continue
            verdict = self.evaluate(name)
            if verdict is None:
                continue
            verdicts.append(verdict)
            outcome = "held"
            if verdict.action is not CanaryAction.HOLD:
                outcome = self._apply(name, verdict, versioned.config_version)
            self._last[name] = LastVerdict(
                verdict, self._clock(), versioned.config_version, outcome
            )
        return verdicts

    def evaluate(self, route: str) -> CanaryVerdict | None:
        """The verdict on ``route``'s windows now (not applied); None without a canary."""
        state = self._routes.get(route)
        if state is None:
            return None
        try:
            return evaluate(
                state.spec,
                state.champion.arm_window(),
                state.canary.arm_window(),
                self._clock() - state.changed_at,
            )
        except ValueError as exc:  # psi with no scores on a side: every answer failed
            log.warning("canary %s: not evaluated: %s", route, exc)
            return None

    def _apply(self, route: str, verdict: CanaryVerdict, version: int) -> str:
        try:
            accepted = self._store.apply_canary(
                route, verdict, expected_version=version, actor="canary"
            )
        except StaleConfigVersion as exc:
            log.info("canary %s: %s not applied: %s", route, verdict.action, exc.problems[0])
            return f"stale: {exc.problems[0]}"
        except (RouteTableError, LookupError, ValueError) as exc:
            log.warning("canary %s: %s refused: %s", route, verdict.action, exc)
            return f"refused: {exc}"
        key = (route, str(verdict.action))
        self._transitions[key] = self._transitions.get(key, 0) + 1
        log.info("canary %s: config_version %d: %s", route, accepted.config_version, verdict.reason)
        self.refresh()
        return f"applied as config_version {accepted.config_version}"

    # -- reading -------------------------------------------------------------------

    def status(self, route: str) -> dict[str, Any]:
        """The route's live windows and last verdict; empty when it has no canary."""
        self.refresh()
        state = self._routes.get(route)
        if state is None:
            return {}
        champion = state.champion.arm_window()
        canary = state.canary.arm_window()
        status: dict[str, Any] = {
            "window_s": self._clock() - state.changed_at,
            "champion": _figures(champion),
            "canary": _figures(canary),
        }
        if (
            champion.requests
            and canary.requests
            and sum(champion.score_counts)
            and sum(canary.score_counts)
        ):
            status["score_psi"] = psi(champion.score_counts, canary.score_counts)
        last = self._last.get(route)
        if last is not None:
            status["last_verdict"] = {
                "action": str(last.verdict.action),
                "reason": last.verdict.reason,
                "figures": dict(last.verdict.figures),
                "failed_guards": list(last.verdict.failed_guards),
                "seconds_ago": self._clock() - last.at,
                "config_version": last.config_version,
                "outcome": last.outcome,
            }
        return status

    def transitions(self) -> dict[tuple[str, str], int]:
        """Changes applied so far, per (route, action)."""
        return dict(self._transitions)

    def register_metrics(self, meter: Meter) -> None:
        """The controller's figures as OpenTelemetry observable instruments."""
        meter.create_observable_gauge(
            "riskwire.canary.weight",
            [self._observe_weights],
            unit="",
            description="The canary arm's weight in percent in the table in force",
        )
        meter.create_observable_counter(
            "riskwire.canary.transitions",
            [self._observe_transitions],
            unit="",
            description="Canary steps, promotions and rollbacks applied by the controller",
        )
        meter.create_observable_gauge(
            "riskwire.canary.requests",
            [self._observe_requests],
            unit="",
            description="Requests in the current canary analysis window, per arm role",
        )

    def _observe_weights(self, _: CallbackOptions) -> Iterator[Observation]:
        for spec in self._store.current.table.routes:
            arm = spec.canary_arm
            if arm is not None:
                yield Observation(
                    arm.weight,
                    {"route": spec.name, "model": arm.model, "version": str(arm.version)},
                )

    def _observe_transitions(self, _: CallbackOptions) -> Iterator[Observation]:
        for (route, action), n in sorted(self._transitions.items()):
            yield Observation(n, {"route": route, "action": action})

    def _observe_requests(self, _: CallbackOptions) -> Iterator[Observation]:
        for name, state in sorted(self._routes.items()):
            yield Observation(state.champion.requests, {"route": name, "role": "champion"})
            yield Observation(state.canary.requests, {"route": name, "role": "canary"})


def _figures(window: ArmWindow) -> dict[str, float]:
    return {
        "requests": window.requests,
        "errors": window.errors,
        "error_rate": window.error_rate,
        "declines": window.declines,
        "decline_rate": window.decline_rate,
        "p99_ms": window.p99_ms,
    }
