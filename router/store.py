"""The versioned route-table store: every accepted table gets the next config_version.

Readers take ``current`` once per call and use that snapshot throughout, so a swap
never mixes two tables inside one decision. Replacing is one attribute assignment:
atomic for readers on the event loop and in threads alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from router.routes import RouteTable, RouteTableError


@dataclass(frozen=True, slots=True)
class VersionedTable:
    table: RouteTable
    config_version: int


class RouteStore:
    """Holds the route table in force and the history of accepted versions."""

    def __init__(
        self, table: RouteTable, check: Callable[[RouteTable], list[str]] | None = None
    ) -> None:
        self._check = check or (lambda _table: [])
        problems = self._check(table)
        if problems:
            raise RouteTableError(problems)
        self._current = VersionedTable(table, 1)
        self.history: list[VersionedTable] = [self._current]

    @property
    def current(self) -> VersionedTable:
        return self._current

    def replace(self, table: RouteTable) -> VersionedTable:
        """Validate ``table`` whole against the loaded models, then swap it in.

        Raises:
            RouteTableError: naming every problem; the old table keeps serving.
        """
        problems = self._check(table)
        if problems:
            raise RouteTableError(problems)
        accepted = VersionedTable(table, self._current.config_version + 1)
        self.history.append(accepted)
        self._current = accepted
        return accepted
