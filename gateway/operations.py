"""What operators do to a running gateway: change routes, drive canaries, load models.

The Admin servicer (``gateway.grpc.admin``) converts protos and calls this; the
routes-file watcher goes through the same ``RouteStore``. Router exceptions become
:class:`GatewayError` here, so the transport only maps kinds to statuses: a stale
``expected_version`` is FAILED_PRECONDITION naming both versions, an invalid table
INVALID_ARGUMENT listing every problem, an unknown version or route NOT_FOUND.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from gateway.dataplane import DataPlane
from gateway.errors import ErrorKind, GatewayError
from gateway.models.card import ModelCard
from gateway.shadow import ShadowComparison
from gateway.telemetry.drift import DriftOverview
from gateway.telemetry.fairness import FairnessReport, FairnessSettings
from gateway.telemetry.outcomes import OutcomeStore, PerformanceReport
from router.canary import CanaryAction, CanaryVerdict
from router.diff import diff_tables
from router.routes import (
    BUCKETS,
    ArmRole,
    CanaryGuards,
    RouteSpec,
    RouteTable,
    RouteTableError,
    load_table,
)
from router.store import ChangeKind, RouteStore, StaleConfigVersion, VersionedTable


@dataclass(frozen=True, slots=True)
class Validation:
    """A dry run's outcome against the table in force."""

    problems: list[str]
    diff: list[str]
    config_version: int
    """The version in force it was checked against."""


@dataclass(frozen=True, slots=True)
class Change:
    """An accepted change: the new version and what it changed."""

    config_version: int
    diff: list[str]


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    config_version: int
    applied_at: datetime
    actor: str
    reason: str
    kind: ChangeKind
    diff: list[str]
    """Against the version before it; empty when that one is no longer kept."""
    figures: Mapping[str, float] = field(default_factory=dict)
    """A canary change's evidence (router/canary.py's figures)."""


@dataclass(frozen=True, slots=True)
class CanaryState:
    """One route's canary arm as it stands, and where its ramp goes next."""

    route: str
    model: str
    version: int
    weight: float
    steps: tuple[float, ...]
    next_step: float | None
    """The weight of the next step; None when the next move is promotion."""
    interval_s: float
    min_requests: int
    guards: CanaryGuards
    last_change: HistoryRecord | None
    """The newest kept change that touched this canary arm."""
    live: dict[str, Any] | None = None
    """The canary controller's current windows and last verdict
    (``CanaryController.status``); None when no controller runs."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: int
    ready: bool
    approval_status: str
    """"" when the card cannot be read."""
    routes: tuple[str, ...]
    """Routes in force that send it traffic (arm or shadow)."""


class CanarySource(Protocol):
    def status(self, route: str) -> dict[str, Any]: ...


class ShadowSource(Protocol):
    def comparisons(self, route: str | None = None) -> list[ShadowComparison]: ...


class Operations:
    """Route, canary and model operations over one data plane."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dataplane = dataplane

    @property
    def store(self) -> RouteStore:
        return self._dataplane.routes

    def validate(self, routes_yaml: str) -> Validation:
        """Every problem ``apply`` would refuse for, or the diff it would make."""
        current = self.store.current
        problems = self.store.validate(routes_yaml)
        diff = [] if problems else diff_tables(current.table, load_table(routes_yaml))
        return Validation(problems, diff, current.config_version)

    def apply(
        self, routes_yaml: str, expected_version: int | None, actor: str, reason: str
    ) -> Change:
        """Validate ``routes_yaml`` whole and put it in force as the next version."""
        with _refusals(self.store):
            table = load_table(routes_yaml)
            accepted = self.store.replace(table, expected_version, actor, reason)
        return self._change(accepted)

    def rollback(
        self, to_version: int, expected_version: int | None, actor: str, reason: str
    ) -> Change:
        """Put the table of ``to_version`` back in force as a new version."""
        with _refusals(self.store):
            accepted = self.store.rollback(
                to_version, actor, reason, expected_version=expected_version
            )
        return self._change(accepted)

    def promote(self, route: str, expected_version: int | None, actor: str, reason: str) -> Change:
        """Make the route's canary arm its champion now, whatever its ramp says.

        Raises:
            GatewayError: NOT_FOUND for an unknown route, FAILED_PRECONDITION when the
                route has no canary arm or ``expected_version`` is stale.
        """
        with _refusals(self.store):
            spec = self.store.current.table.route(route)
            arm = spec.canary_arm
            if arm is None or spec.canary is None:
                raise GatewayError(
                    ErrorKind.FAILED_PRECONDITION,
                    f"route {route!r} has no canary arm to promote (arms: "
                    f"{', '.join(f'{a.label} {a.role}' for a in spec.arms)})",
                )
            why = f"route {route!r} canary {arm.label}: promote by {actor}"
            verdict = CanaryVerdict(
                route=route,
                action=CanaryAction.PROMOTE,
                reason=f"{why}: {reason}" if reason else why,
                canary_weight=_ceiling(spec) / 100,
            )
            accepted = self.store.apply_canary(
                route, verdict, expected_version=expected_version, actor=actor
            )
        return self._change(accepted)

    def history(self, limit: int = 0) -> list[HistoryRecord]:
        """Kept versions, newest first; ``limit`` 0 for all of them."""
        entries = self.store.history
        records = [_record(entry, entries[i - 1] if i else None) for i, entry in enumerate(entries)]
        records.reverse()
        return records[:limit] if limit > 0 else records

    def canary_status(self, route: str | None = None) -> tuple[int, list[CanaryState]]:
        """The version in force and each route's canary (only ``route``'s when given).

        Raises:
            GatewayError(NOT_FOUND): ``route`` does not exist.
        """
        current = self.store.current
        if route:
            with _refusals(self.store):
                routes: Sequence[RouteSpec] = [current.table.route(route)]
        else:
            routes = current.table.routes
        history = self.history()
        controller: CanarySource | None = getattr(self._dataplane, "canary", None)
        states = []
        for spec in routes:
            arm = spec.canary_arm
            if arm is None or spec.canary is None:
                continue
            weight = round(arm.weight * 100)
            ceiling = _ceiling(spec)
            upcoming = [min(round(s * 100), ceiling) for s in spec.canary.steps]
            next_step = None if weight >= ceiling else next(s for s in upcoming if s > weight)
            prefix = f"{spec.name}: "
            last = next(
                (
                    record
                    for record in history
                    if any(line.startswith(prefix) and arm.label in line for line in record.diff)
                ),
                None,
            )
            states.append(
                CanaryState(
                    route=spec.name,
                    model=arm.model,
                    version=arm.version,
                    weight=arm.weight,
                    steps=spec.canary.steps,
                    next_step=None if next_step is None else next_step / 100,
                    interval_s=spec.canary.interval_s,
                    min_requests=spec.canary.min_requests,
                    guards=spec.canary.guards,
                    last_change=last,
                    live=None if controller is None else controller.status(spec.name),
                )
            )
        if route and not states:
            raise GatewayError(ErrorKind.FAILED_PRECONDITION, f"route {route!r} has no canary arm")
        return current.config_version, states

    def list_models(self) -> list[ModelInfo]:
        """Every loaded version and every version on disk, with the routes using each."""
        repository = self._dataplane.repository
        users = _users(self.store.current.table)
        loaded = {(m.name, m.version): m for m in repository.loaded()}
        models = []
        for key in sorted(set(loaded) | set(repository.available())):
            model = loaded.get(key)
            approval: str
            if model is not None:
                approval = model.card.approval.status
            else:
                card = repository.root / key[0] / str(key[1]) / "card.yaml"
                approval = _approval_on_disk(card)
            models.append(
                ModelInfo(key[0], key[1], model is not None, approval, users.get(key, ()))
            )
        return models

    def model_info(self, name: str, version: int) -> ModelInfo:
        found = [m for m in self.list_models() if (m.name, m.version) == (name, version)]
        if not found:
            raise GatewayError(ErrorKind.NOT_FOUND, f"model {name!r} version {version} unknown")
        return found[0]

    async def load_model(self, name: str, version: int | None, actor: str = "") -> ModelInfo:
        """Load (and warm) a version, the newest on disk when None."""
        model = await self._dataplane.load_model(name, version, actor)
        return self.model_info(model.name, model.version)

    async def unload_model(self, name: str, version: int | None, actor: str = "") -> None:
        """Unload a version (every version when None) that no route in force uses."""
        await self._dataplane.unload_model(name, version, actor=actor)

    def shadow_comparisons(self, route: str | None = None) -> list[ShadowComparison]:
        """The shadow arms' comparisons with the primary, per route and shadow model.

        Empty when this data plane runs no shadow scoring.
        """
        shadows: ShadowSource | None = getattr(self._dataplane, "shadows", None)
        return [] if shadows is None else shadows.comparisons(route or None)

    async def performance(self, route: str | None = None) -> list[PerformanceReport]:
        """Rolling performance on delayed labels, per (route, model, version, arm).

        Raises:
            GatewayError(FAILED_PRECONDITION): outcome logging is off.
        """
        return await self._outcomes().performance_async(route or None)

    async def fairness(
        self, route: str | None = None
    ) -> tuple[FairnessSettings, list[FairnessReport]]:
        """The fairness settings in force and the reports per monitoring attribute.

        Raises:
            GatewayError(FAILED_PRECONDITION): outcome logging is off.
        """
        monitor = self._outcomes().fairness
        return monitor.settings, await monitor.reports_async(route or None)

    def _outcomes(self) -> OutcomeStore:
        outcomes = self._dataplane.outcomes
        if outcomes is None:
            raise GatewayError(
                ErrorKind.FAILED_PRECONDITION,
                "outcome logging is off (outcomes.enabled: false): no labels to report on",
            )
        return outcomes

    def drift_reports(self, model: str | None = None, version: int | None = None) -> DriftOverview:
        """Drift of the monitored versions: all, one model's, or one version's.

        Raises:
            GatewayError: FAILED_PRECONDITION when drift monitoring is off;
                INVALID_ARGUMENT for a version without a model; NOT_FOUND when no
                monitored version matches the model (and version) asked for.
        """
        drift = self._dataplane.drift
        if drift is None:
            raise GatewayError(
                ErrorKind.FAILED_PRECONDITION, "drift monitoring is off (drift.enabled: false)"
            )
        if version is not None and model is None:
            raise GatewayError(ErrorKind.INVALID_ARGUMENT, f"version {version} needs a model")
        overview = drift.overview(model, version)
        if model is not None and not overview.reports:
            label = model if version is None else f"{model} v{version}"
            monitored = ", ".join(f"{m.name} v{m.version}" for m in drift.monitors())
            raise GatewayError(
                ErrorKind.NOT_FOUND,
                f"no drift monitor for {label}; monitored: {monitored or 'none yet'}",
            )
        return overview

    def _change(self, accepted: VersionedTable) -> Change:
        try:
            before = self.store.at(accepted.config_version - 1).table
        except LookupError:
            return Change(accepted.config_version, [])
        return Change(accepted.config_version, diff_tables(before, accepted.table))


def _ceiling(route: RouteSpec) -> int:
    """The most the canary can weigh, in hundredths: what the challengers leave."""
    others = sum(round(a.weight * 100) for a in route.arms if a.role is ArmRole.CHALLENGER)
    return BUCKETS - others


def _users(table: RouteTable) -> dict[tuple[str, int], tuple[str, ...]]:
    users: dict[tuple[str, int], list[str]] = {}
    for route in table.routes:
        for target in route.targets():
            names = users.setdefault(target, [])
            if route.name not in names:
                names.append(route.name)
    return {key: tuple(names) for key, names in users.items()}


def _approval_on_disk(card: Path) -> str:
    try:
        return ModelCard.load(card).approval.status
    except Exception:  # an unreadable card is shown, not fatal to the listing
        return ""


def _record(entry: VersionedTable, before: VersionedTable | None) -> HistoryRecord:
    if before is not None:
        diff = diff_tables(before.table, entry.table)
    elif entry.config_version == 1:
        diff = diff_tables(RouteTable.model_construct(routes=()), entry.table)
    else:
        diff = []
    return HistoryRecord(
        entry.config_version,
        entry.applied_at,
        entry.actor,
        entry.reason,
        entry.kind,
        diff,
        dict(entry.figures),
    )


@contextmanager
def _refusals(store: RouteStore) -> Iterator[None]:
    """Turn the router's refusals into GatewayErrors a caller can act on."""
    try:
        yield
    except StaleConfigVersion as exc:
        raise GatewayError(ErrorKind.FAILED_PRECONDITION, exc.problems[0]) from exc
    except RouteTableError as exc:
        in_force = store.current.config_version
        lines = "\n".join(f"- {p}" for p in exc.problems)
        raise GatewayError(
            ErrorKind.INVALID_ARGUMENT,
            f"route table refused, {len(exc.problems)} problem(s); config_version "
            f"{in_force} keeps serving:\n{lines}",
        ) from exc
    except LookupError as exc:
        # KeyError's str() is its repr: quoted.
        raise GatewayError(ErrorKind.NOT_FOUND, str(exc.args[0]) if exc.args else "") from exc
    except ValueError as exc:  # apply_verdict: the route has no canary
        raise GatewayError(ErrorKind.FAILED_PRECONDITION, str(exc)) from exc
