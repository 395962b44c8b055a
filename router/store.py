"""The versioned route-table store: every accepted table gets the next config_version.

Readers take ``current`` once per call and use that snapshot throughout, so a swap
never mixes two tables inside one decision. ``current`` is one attribute read with
no lock: atomic for readers on the event loop and in threads alike.

Writers (``replace``, ``rollback``, ``apply_canary``) run one at a time under a lock:
check ``expected_version`` against the version in force (compare-and-swap, so two
operators editing the same version cannot silently overwrite each other), validate
the table whole, tell the listener, then swap. History is append-only: a rollback
re-applies an old table as a new version.
"""

from __future__ import annotations

import collections
import enum
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from router.canary import CanaryAction, CanaryVerdict, apply_verdict
from router.diff import diff_tables
from router.routes import RouteTable, RouteTableError, load_table

DEFAULT_HISTORY_LIMIT = 1000


def utc_now() -> datetime:
    return datetime.now(UTC)


class ChangeKind(enum.StrEnum):
    APPLY = "apply"
    ROLLBACK = "rollback"
    CANARY_STEP = "canary_step"
    CANARY_PROMOTE = "canary_promote"
    CANARY_ROLLBACK = "canary_rollback"


_CANARY_KIND = {
    CanaryAction.STEP: ChangeKind.CANARY_STEP,
    CanaryAction.PROMOTE: ChangeKind.CANARY_PROMOTE,
    CanaryAction.ROLLBACK: ChangeKind.CANARY_ROLLBACK,
}


class StaleConfigVersion(RouteTableError):
    """The change was made against a config_version that is no longer in force."""

    def __init__(self, expected: int, current: int) -> None:
        super().__init__(
            [
                f"the change was made against config_version {expected}, but "
                f"config_version {current} is in force: read the routes again and retry"
            ]
        )
        self.expected = expected
        self.current = current


@dataclass(frozen=True, slots=True)
class VersionedTable:
    """One accepted table and who put it in force, when and why."""

    table: RouteTable
    config_version: int
    actor: str = ""
    reason: str = ""
    kind: ChangeKind = ChangeKind.APPLY
    applied_at: datetime = field(default_factory=utc_now)
    """UTC."""
    figures: Mapping[str, float] = field(default_factory=dict)
    """The evidence behind a canary change (requests, p99s, rates, PSI); empty otherwise."""


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """What the listener hears for each accepted change (an audit record's content)."""

    config_version: int
    previous_version: int
    """0 for the table the store starts with."""
    actor: str
    reason: str
    kind: ChangeKind
    diff: tuple[str, ...]
    """``diff_tables(previous, new)``; for the first table, every route as added."""
    figures: Mapping[str, float]
    """The canary analysis behind a canary_* change; empty otherwise."""
    table: RouteTable
    applied_at: datetime
    restored_version: int | None = None
    """For a rollback: the version whose table was re-applied."""


class RouteStore:
    """Holds the route table in force and the bounded history of accepted versions."""

    def __init__(
        self,
        table: RouteTable,
        check: Callable[[RouteTable], list[str]] | None = None,
        *,
        history_limit: int = DEFAULT_HISTORY_LIMIT,
        listener: Callable[[ConfigChange], None] | None = None,
        actor: str = "",
        reason: str = "initial table",
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        """Validate ``table`` and put it in force as config_version 1.

        Args:
            table: the first table.
            check: problems of a table against the gateway (models loaded and
                approved); run on every change.
            history_limit: versions kept, newest first; the current one always is.
            listener: told of every accepted change, the first table included, in
                config_version order, under the writers' lock, before the change
                takes effect: if it raises, the change is refused and the exception
                propagates, so no table serves without its audit record.
            actor, reason: recorded for the first table.
            clock: the time of each change (UTC).

        Raises:
            RouteTableError: naming every problem of ``table``.
        """
        if history_limit < 1:
            raise ValueError(f"history_limit {history_limit} must be >= 1")
        self._check = check or (lambda _table: [])
        self._listener = listener
        self._clock = clock
        self._lock = threading.RLock()
        self._history: collections.deque[VersionedTable] = collections.deque(maxlen=history_limit)
        problems = self._problems(table)
        if problems:
            raise RouteTableError(problems)
        first = VersionedTable(table, 1, actor, reason, ChangeKind.APPLY, clock())
        if listener is not None:
            empty = RouteTable.model_construct(routes=())
            listener(self._change(first, 0, diff_tables(empty, table), {}, None))
        self._history.append(first)
        self._current = first

    @property
    def current(self) -> VersionedTable:
        return self._current

    @property
    def history(self) -> list[VersionedTable]:
        """The versions kept, oldest first; the last is ``current``."""
        with self._lock:
            return list(self._history)

    def at(self, config_version: int) -> VersionedTable:
        """The kept version ``config_version``.

        Raises:
            LookupError: never accepted, or dropped from the bounded history.
        """
        with self._lock:
            for entry in self._history:
                if entry.config_version == config_version:
                    return entry
            kept = f"{self._history[0].config_version}..{self._history[-1].config_version}"
        raise LookupError(f"config_version {config_version} is not in the history (kept: {kept})")

    def validate(self, table: RouteTable | str) -> list[str]:
        """Dry run: every problem ``replace`` would refuse ``table`` (or YAML text) for."""
        if isinstance(table, str):
            try:
                table = load_table(table)
            except RouteTableError as exc:
                return exc.problems
        return self._problems(table)

    @staticmethod
    def diff(old: RouteTable, new: RouteTable) -> list[str]:
        """Human-readable changes from ``old`` to ``new`` (``router.diff.diff_tables``)."""
        return diff_tables(old, new)

    def replace(
        self,
        table: RouteTable,
        expected_version: int | None = None,
        actor: str = "",
        reason: str = "",
        *,
        kind: ChangeKind = ChangeKind.APPLY,
        figures: Mapping[str, float] | None = None,
    ) -> VersionedTable:
        """Validate ``table`` whole against the loaded models, then swap it in.

        Args:
            table: the new table.
            expected_version: the config_version the change was made against; None
                to apply over whatever is in force.
            actor, reason: who asked and why, for the history and the listener.
            kind, figures: what kind of change, and the canary figures behind it.

        Raises:
            StaleConfigVersion: ``expected_version`` is not the version in force.
            RouteTableError: naming every problem; the old table keeps serving.
        """
        return self._commit(table, expected_version, actor, reason, kind, figures or {}, None)

    def rollback(
        self,
        to_version: int,
        actor: str = "",
        reason: str = "",
        *,
        expected_version: int | None = None,
    ) -> VersionedTable:
        """Put the table of ``to_version`` back in force as a new config_version.

        Raises:
            LookupError: ``to_version`` is not in the history.
            StaleConfigVersion, RouteTableError: as for ``replace`` (a model the old
                table names may have been unloaded since).
        """
        with self._lock:
            old = self.at(to_version)
            return self._commit(
                old.table, expected_version, actor, reason, ChangeKind.ROLLBACK, {}, to_version
            )

    def apply_canary(
        self,
        route_name: str,
        verdict: CanaryVerdict,
        *,
        expected_version: int | None = None,
        actor: str = "canary",
    ) -> VersionedTable:
        """Apply a canary verdict to the table in force as a new version.

        A hold changes nothing and returns ``current``. The verdict's reason and
        figures go to the history and the listener.

        Raises:
            StaleConfigVersion: the verdict was reached against another version.
            LookupError, ValueError, RouteTableError: as for ``apply_verdict``.
        """
        with self._lock:
            current = self._current
            if expected_version is not None and expected_version != current.config_version:
                raise StaleConfigVersion(expected_version, current.config_version)
            if verdict.action is CanaryAction.HOLD:
                return current
            table = apply_verdict(current.table, route_name, verdict)
            return self._commit(
                table,
                expected_version,
                actor,
                verdict.reason,
                _CANARY_KIND[verdict.action],
                verdict.figures,
                None,
            )

    def _commit(
        self,
        table: RouteTable,
        expected_version: int | None,
        actor: str,
        reason: str,
        kind: ChangeKind,
        figures: Mapping[str, float],
        restored_version: int | None,
    ) -> VersionedTable:
        with self._lock:
            current = self._current
            if expected_version is not None and expected_version != current.config_version:
                raise StaleConfigVersion(expected_version, current.config_version)
            problems = self._problems(table)
            if problems:
                raise RouteTableError(problems)
            accepted = VersionedTable(
                table, current.config_version + 1, actor, reason, kind, self._clock(), dict(figures)
            )
            if self._listener is not None:
                lines = diff_tables(current.table, table)
                self._listener(
                    self._change(accepted, current.config_version, lines, figures, restored_version)
                )
            self._history.append(accepted)
            self._current = accepted
            return accepted

    def _problems(self, table: RouteTable) -> list[str]:
        # table.problems() is empty for any table built normally; it catches one made
        # with model_construct. The check covers what only the gateway knows.
        return table.problems() + self._check(table)

    @staticmethod
    def _change(
        entry: VersionedTable,
        previous: int,
        lines: list[str],
        figures: Mapping[str, float],
        restored_version: int | None,
    ) -> ConfigChange:
        return ConfigChange(
            config_version=entry.config_version,
            previous_version=previous,
            actor=entry.actor,
            reason=entry.reason,
            kind=entry.kind,
            diff=tuple(lines),
            figures=dict(figures),
            table=entry.table,
            applied_at=entry.applied_at,
            restored_version=restored_version,
        )
