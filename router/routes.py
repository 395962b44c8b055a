"""The route table (DESIGN.md "Routes") and deterministic, sticky arm assignment.

A bucket in [0, 10000) comes from ``stable_hash64(salt + "\\0" + sticky key)`` and
picks the arm by cumulative weight, so raising a canary's weight only moves
entities from the champion to the canary, and one account always meets the same
model while the table stands.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

BUCKETS = 10_000
"""Weights are percentages; a bucket is a hundredth of a percent."""

StickyKey = Literal["account_id", "card_id", "merchant_id", "device_id", "transaction_id"]
FallbackTrigger = Literal["timeout", "overload", "backend_error"]


class ArmRole(enum.StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"
    CANARY = "canary"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArmSpec(_Frozen):
    model: str
    version: int = Field(ge=1)
    weight: float = Field(ge=0, le=100)
    role: ArmRole = ArmRole.CHAMPION


class ShadowSpec(_Frozen):
    model: str
    version: int = Field(ge=1)
    percent: float = Field(100, ge=0, le=100)


class Thresholds(_Frozen):
    review_at: float = Field(gt=0, lt=1)
    decline_at: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if not self.review_at < self.decline_at:
            raise ValueError(
                f"review_at ({self.review_at}) must be below decline_at ({self.decline_at})"
            )
        return self


class Decision(enum.StrEnum):
    APPROVE = "APPROVE"
    REVIEW = "REVIEW"
    DECLINE = "DECLINE"


class FallbackSpec(_Frozen):
    on: tuple[FallbackTrigger, ...] = ("timeout", "overload", "backend_error")
    """Which failures answer with ``decision`` instead of an error status."""
    decision: Decision = Decision.REVIEW

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean True (DESIGN.md writes `on:`).
        if isinstance(data, dict) and True in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data


class MatchSpec(_Frozen):
    channel: tuple[str, ...] = ()
    """Channel enum names; empty matches every channel."""


class RouteSpec(_Frozen):
    name: str = Field(min_length=1)
    match: MatchSpec = MatchSpec()
    sticky_key: StickyKey = "account_id"
    salt: str = Field(min_length=1)
    deadline_ms: float = Field(8.0, gt=0)
    """Server-side budget for one call when the caller's deadline is later or unset."""
    arms: tuple[ArmSpec, ...] = Field(min_length=1)
    shadows: tuple[ShadowSpec, ...] = ()
    decision: Thresholds | None = None
    """Thresholds; unset: the primary model card's own."""
    fallback: FallbackSpec = FallbackSpec()

    def targets(self) -> list[tuple[str, int]]:
        """Every ``(model, version)`` this route sends traffic to, arms then shadows."""
        return [(a.model, a.version) for a in self.arms] + [
            (s.model, s.version) for s in self.shadows
        ]

    @field_validator("arms")
    @classmethod
    def _weights(cls, arms: tuple[ArmSpec, ...]) -> tuple[ArmSpec, ...]:
        # A field validator, not a model one: it still runs when another field of the
        # route is wrong, so one refusal names every problem.
        total = sum(arm.weight for arm in arms)
        if abs(total - 100.0) > 1e-9:
            raise ValueError(f"arm weights sum to {total:g}, not 100")
        for arm in arms:
            if round(arm.weight * 100) != arm.weight * 100:
                raise ValueError(f"weight {arm.weight} is finer than 0.01 percent")
        return arms


class RouteTable(_Frozen):
    routes: tuple[RouteSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_unique(self) -> RouteTable:
        names = [route.name for route in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names must be unique, repeated: {dupes}")
        return self

    def problems_against(self, available: Callable[[str, int], str | None]) -> list[str]:
        """Check every arm and shadow against the loaded models.

        Args:
            available: returns None when ``(model, version)`` may take live traffic,
                otherwise why not ("not loaded", "approval pending").

        Returns:
            One message per problem; empty when the table may serve.
        """
        problems = []
        for route in self.routes:
            for model, version in route.targets():
                why = available(model, version)
                if why is not None:
                    problems.append(f"route {route.name!r}: {model} v{version}: {why}")
        return problems

    def to_yaml(self) -> str:
        return yaml.safe_dump({"routes": self.model_dump(mode="json")["routes"]}, sort_keys=False)


class RouteTableError(ValueError):
    """A route table that failed validation; ``problems`` lists each one."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def load_table(text: str) -> RouteTable:
    """Parse and validate a routes YAML document, naming every problem found."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RouteTableError([f"not valid YAML: {exc}"]) from exc
    try:
        return RouteTable.model_validate(data)
    except ValidationError as exc:
        raise RouteTableError(
            [f"{'.'.join(str(p) for p in e['loc']) or 'routes'}: {e['msg']}" for e in exc.errors()]
        ) from exc


def load_table_file(path: Path) -> RouteTable:
    return load_table(path.read_text())


def default_table(model: str, version: int) -> RouteTable:
    """One route for every transaction, all traffic to one champion."""
    return RouteTable(
        routes=(
            RouteSpec(
                name="default",
                salt="default",
                arms=(ArmSpec(model=model, version=version, weight=100),),
            ),
        )
    )


@dataclass(frozen=True, slots=True)
class Assignment:
    """What ``decide`` chose for one transaction."""

    route: RouteSpec
    arm: ArmSpec
    bucket: int
    shadows: tuple[ShadowSpec, ...]


def decide(
    table: RouteTable,
    keys: Mapping[str, str],
    bucket_of: Callable[[str, str], int],
    route_name: str = "",
) -> Assignment:
    """Choose the route, the primary arm and the shadow arms for one transaction.

    Args:
        table: the validated table in force.
        keys: the transaction's routing keys (``channel`` and sticky-key fields).
        bucket_of: ``(salt, key) -> bucket in [0, 10000)``; the native or reference
            ``stable_hash64`` based function, chosen once at start-up.
        route_name: a route the caller asked for by name; empty to match.

    Raises:
        LookupError: ``route_name`` names no route, or no route matches.
    """
    route = _match(table, keys, route_name)
    bucket = bucket_of(route.salt, keys.get(route.sticky_key, ""))
    edge = 0
    chosen = route.arms[-1]
    for arm in route.arms:
        edge += round(arm.weight * 100)
        if bucket < edge:
            chosen = arm
            break
    shadows: tuple[ShadowSpec, ...] = ()
    if route.shadows:
        shadow_bucket = bucket_of(route.salt + "/shadow", keys.get(route.sticky_key, ""))
        shadows = tuple(s for s in route.shadows if shadow_bucket < round(s.percent * 100))
    return Assignment(route=route, arm=chosen, bucket=bucket, shadows=shadows)


def _match(table: RouteTable, keys: Mapping[str, str], route_name: str) -> RouteSpec:
    if route_name:
        for route in table.routes:
            if route.name == route_name:
                return route
        raise LookupError(f"route {route_name!r} does not exist")
    channel = keys.get("channel", "")
    for route in table.routes:
        if not route.match.channel or channel in route.match.channel:
            return route
    raise LookupError(f"no route matches channel {channel!r} and there is no catch-all route")
