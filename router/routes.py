"""The route table (DESIGN.md "Routes"): schema, whole-table validation, ``decide()``.

``decide()`` takes the first route whose ``match`` fits the transaction (a route with
an empty match is the default route, and the table must end with one), then a bucket
in [0, 10000) from ``bucket_of(salt, sticky key)`` picks the arm by cumulative weight.

Buckets are laid out champion first, then the canary, then the other arms in the
order written, whatever the YAML order. The champion and the canary therefore always
share a boundary: raising the canary's weight by what the champion gives up moves
entities from the champion to the canary and nowhere else, rolling it back moves
them home, and promoting it keeps every canary entity on the canary. One account
meets the same model while the table stands.

Validation names every problem at once. Pydantic checks types only; each spec's
``problems()`` checks values and how they fit together, so one refusal lists every
bad weight, threshold and salt of every route, each message naming route and field.
A table with problems cannot be built.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

BUCKETS = 10_000
"""Weights are percentages; a bucket is a hundredth of a percent."""
DEFAULT_EXPLAIN_TOP_K = 4
"""Reason codes per answer unless the route says otherwise: adverse-action notices
(Regulation B) give the key factors, four at most by custom."""
MAX_EXPLAIN_TOP_K = 32
"""Most reason codes a route may ask for per answer."""

StickyKey = Literal["account_id", "card_id", "merchant_id", "device_id", "transaction_id"]
FallbackTrigger = Literal["timeout", "overload", "backend_error"]

_CHANNEL = re.compile(r"[A-Z][A-Z0-9_]*\Z")
_COUNTRY = re.compile(r"[A-Z]{2}\Z")
_MCC = re.compile(r"([0-9]{4})(?:-([0-9]{4}))?\Z")


class ArmRole(enum.StrEnum):
    CHAMPION = "champion"
    CHALLENGER = "challenger"
    CANARY = "canary"


class RouteTableError(ValueError):
    """A route table that failed validation; ``problems`` lists each one."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied, validated like any new spec.

        Pydantic's own model_copy skips validation, which would let a copy carry
        weights that do not sum to 100 (and stale cached layouts) into the router.
        """
        data = {name: getattr(self, name) for name in type(self).model_fields}
        data.update(update or {})
        return type(self).model_validate(data)


def _hundredths(percent: float) -> int:
    return round(percent * 100)


def _finer_than_hundredths(percent: float) -> bool:
    # A tolerance, not equality: 0.29 * 100 is 28.999999999999996.
    return abs(percent * 100 - round(percent * 100)) > 1e-6


def _percent_problems(field: str, value: float) -> list[str]:
    if not 0 <= value <= 100:
        return [f"{field} {value:g} is outside 0..100"]
    if _finer_than_hundredths(value):
        return [f"{field} {value:g} is finer than 0.01 percent"]
    return []


class ArmSpec(_Frozen):
    model: str
    version: int
    weight: float
    """Percent of the route's traffic, in steps of 0.01."""
    role: ArmRole = ArmRole.CHAMPION

    @property
    def label(self) -> str:
        return f"{self.model} v{self.version}"

    def problems(self) -> list[str]:
        problems = []
        if not self.model:
            problems.append("model: missing or empty")
        if self.version < 1:
            problems.append(f"version {self.version} must be >= 1")
        return problems + _percent_problems("weight", self.weight)


class ShadowSpec(_Frozen):
    model: str
    version: int
    percent: float = 100
    """Percent of the route's traffic that the shadow also scores (off the response path)."""

    @property
    def label(self) -> str:
        return f"{self.model} v{self.version}"

    def problems(self) -> list[str]:
        problems = []
        if not self.model:
            problems.append("model: missing or empty")
        if self.version < 1:
            problems.append(f"version {self.version} must be >= 1")
        return problems + _percent_problems("percent", self.percent)


class Thresholds(_Frozen):
    """Score thresholds: APPROVE below review_at, DECLINE at or above decline_at.

    Checked by ``problems()`` as part of their route.
    """

    review_at: float
    decline_at: float

    def problems(self) -> list[str]:
        problems = []
        if not 0 < self.review_at < 1:
            problems.append(f"review_at ({self.review_at}) must be in (0, 1)")
        if not 0 < self.decline_at <= 1:
            problems.append(f"decline_at ({self.decline_at}) must be in (0, 1]")
        if not self.review_at < self.decline_at:
            problems.append(
                f"review_at ({self.review_at}) must be below decline_at ({self.decline_at})"
            )
        return problems


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


class AmountRange(_Frozen):
    """A half-open USD amount range [min, max); either bound may be left out."""

    min: float | None = None
    max: float | None = None

    def contains(self, amount_usd: float) -> bool:
        """False for NaN (an amount the gateway could not convert)."""
        if math.isnan(amount_usd):
            return False
        return (self.min is None or amount_usd >= self.min) and (
            self.max is None or amount_usd < self.max
        )

    def problems(self) -> list[str]:
        problems = []
        for bound, value in (("min", self.min), ("max", self.max)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                problems.append(f"{bound} {value} must be a finite amount >= 0")
        if self.min is not None and self.max is not None and not problems and self.min >= self.max:
            problems.append(
                f"min ({self.min:g}) must be below max ({self.max:g}): [min, max) is half-open"
            )
        return problems


def _mcc_range(entry: str) -> tuple[int, int] | None:
    """``"5411"`` -> (5411, 5411); ``"5960-5969"`` -> (5960, 5969); None if malformed."""
    found = _MCC.match(entry)
    if found is None:
        return None
    low = int(found.group(1))
    high = int(found.group(2)) if found.group(2) else low
    return low, high


class MatchSpec(_Frozen):
    """Which transactions a route takes. Every criterion given must hold; an empty
    criterion matches everything, and a route with none is a default route."""

    channel: tuple[str, ...] = ()
    """Channel enum names (ECOMMERCE, CARD_PRESENT, ...)."""
    country: tuple[str, ...] = ()
    """ISO 3166-1 alpha-2 codes, upper case, compared with the transaction's as sent."""
    mcc: tuple[str, ...] = ()
    """Merchant category codes: four digits ("5411") or an inclusive range ("5960-5969").
    Quote codes with a leading zero: YAML reads 0742 as the octal number 482."""
    amount_usd: AmountRange | None = None
    """[min, max) in USD; an amount that could not be converted (NaN) never matches."""

    @field_validator("channel", "country", "mcc", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        # `mcc: 5411` and `channel: ATM` mean a list of one; YAML gives an int for 5411.
        items = [value] if isinstance(value, str | int) else value
        if isinstance(items, list | tuple):
            return tuple(
                str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in items
            )
        return value

    @field_validator("amount_usd", mode="before")
    @classmethod
    def _empty_amount(cls, value: Any) -> Any:
        return None if value == {} else value

    @property
    def catch_all(self) -> bool:
        """True when the route takes every transaction (a default route)."""
        return not (self.channel or self.country or self.mcc or self.amount_usd is not None)

    @cached_property
    def _mcc_ranges(self) -> tuple[tuple[int, int], ...]:
        return tuple(r for r in map(_mcc_range, self.mcc) if r is not None)

    def matches(self, keys: Mapping[str, str], amount_usd: float = math.nan) -> bool:
        """Does a transaction with these routing keys and USD amount fit?"""
        if self.channel and keys.get("channel", "") not in self.channel:
            return False
        if self.country and keys.get("country", "") not in self.country:
            return False
        if self.mcc:
            code = keys.get("merchant_category_code", "")
            if not (len(code) == 4 and code.isascii() and code.isdigit()):
                return False
            number = int(code)
            if not any(low <= number <= high for low, high in self._mcc_ranges):
                return False
        return self.amount_usd is None or self.amount_usd.contains(amount_usd)

    def problems(self) -> list[str]:
        problems = [
            f"channel {c!r} is not a channel enum name (upper case, like ECOMMERCE)"
            for c in self.channel
            if not _CHANNEL.match(c)
        ]
        problems += [
            f"country {c!r} is not an ISO 3166-1 alpha-2 code (two upper-case letters)"
            for c in self.country
            if not _COUNTRY.match(c)
        ]
        for entry in self.mcc:
            parsed = _mcc_range(entry)
            if parsed is None:
                problems.append(
                    f"mcc {entry!r} is not a 4-digit code or a range like '5960-5969'"
                    " (quote codes with a leading zero: YAML reads 0742 as octal)"
                )
            elif parsed[0] > parsed[1]:
                problems.append(f"mcc range {entry!r} runs backwards: write low-high")
        if self.amount_usd is not None:
            problems += [f"amount_usd: {p}" for p in self.amount_usd.problems()]
        return problems


class CanaryGuards(_Frozen):
    """What a canary must keep to go on; any breach rolls it back (router/canary.py)."""

    p99_ms: float = 10
    """Ceiling on the canary's own p99 latency, milliseconds."""
    error_rate: float = 0.005
    """Ceiling on the canary's share of failed requests."""
    score_psi: float = 0.2
    """Ceiling on the PSI between the champion's and the canary's score histograms."""
    decline_rate_delta: float = 0.02
    """Largest allowed |canary decline rate - champion decline rate|."""

    def problems(self) -> list[str]:
        problems = []
        for name in ("p99_ms", "score_psi"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                problems.append(f"{name} {value} must be > 0")
        for name in ("error_rate", "decline_rate_delta"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                problems.append(f"{name} {value} must be in (0, 1]")
        return problems


class CanarySpec(_Frozen):
    """How a canary arm ramps: its weight climbs ``steps`` while the guards hold."""

    steps: tuple[float, ...] = (1, 5, 25, 50, 100)
    """Canary weights in percent, increasing, ending at 100."""
    interval_s: float = 300
    """Least time at one step before the next."""
    min_requests: int = 2000
    """Least canary requests in the analysis window before a guard may pass."""
    guards: CanaryGuards = CanaryGuards()

    def problems(self) -> list[str]:
        problems = []
        if not self.steps:
            problems.append("steps: at least one step (ending at 100) is needed")
        for step in self.steps:
            if not 0 < step <= 100 or _finer_than_hundredths(step):
                problems.append(f"steps: {step:g} must be in (0, 100], in steps of 0.01")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            shown = ", ".join(f"{step:g}" for step in self.steps)
            problems.append(f"steps [{shown}] must increase")
        if self.steps and self.steps[-1] != 100:
            problems.append(f"steps must end at 100, not {self.steps[-1]:g}")
        if not (math.isfinite(self.interval_s) and self.interval_s > 0):
            problems.append(f"interval_s {self.interval_s} must be > 0")
        if self.min_requests < 1:
            problems.append(f"min_requests {self.min_requests} must be >= 1")
        return problems + [f"guards.{p}" for p in self.guards.problems()]


class RouteSpec(_Frozen):
    name: str = ""
    match: MatchSpec = MatchSpec()
    sticky_key: StickyKey = "account_id"
    salt: str = ""
    """Seeds the sticky split; a new salt reshuffles every entity."""
    deadline_ms: float = 8.0
    """Server-side budget for one call when the caller's deadline is later or unset."""
    arms: tuple[ArmSpec, ...] = ()
    shadows: tuple[ShadowSpec, ...] = ()
    decision: Thresholds | None = None
    """Thresholds; unset: the primary model card's own."""
    fallback: FallbackSpec = FallbackSpec()
    canary: CanarySpec | None = None
    """How the canary arm ramps; required exactly when an arm has role canary."""
    explain: bool = False
    """Reason codes on every model answer of this route, whether the request asks or
    not (a request's own ``explain`` asks for them on its answers alone)."""
    explain_top_k: int = DEFAULT_EXPLAIN_TOP_K
    """Most reason codes per answer, however they were asked for."""

    @model_validator(mode="after")
    def _valid(self) -> RouteSpec:
        problems = self.problems()
        if problems:
            raise RouteTableError(problems)
        return self

    def targets(self, live_only: bool = False) -> list[tuple[str, int]]:
        """Every ``(model, version)`` this route sends traffic to, arms then shadows;
        ``live_only``: the arms alone, whose scores answer callers."""
        arms = [(a.model, a.version) for a in self.arms]
        return arms if live_only else arms + [(s.model, s.version) for s in self.shadows]

    @property
    def champion(self) -> ArmSpec:
        return next(a for a in self.arms if a.role is ArmRole.CHAMPION)

    @property
    def canary_arm(self) -> ArmSpec | None:
        return next((a for a in self.arms if a.role is ArmRole.CANARY), None)

    @cached_property
    def layout(self) -> tuple[tuple[int, ArmSpec], ...]:
        """``(upper bucket edge, arm)`` in bucket order: champion, canary, the rest.

        Arms of weight 0 take no buckets and are left out.
        """
        rank = {ArmRole.CHAMPION: 0, ArmRole.CANARY: 1, ArmRole.CHALLENGER: 2}
        ordered = sorted(self.arms, key=lambda arm: rank[arm.role])  # stable: YAML order
        edges = []
        edge = 0
        for arm in ordered:
            if _hundredths(arm.weight) > 0:
                edge += _hundredths(arm.weight)
                edges.append((edge, arm))
        return tuple(edges)

    def problems(self) -> list[str]:
        """Every problem of this route alone, each naming the route and the field."""
        where = f"route {self.name!r}" if self.name else "route (unnamed)"
        problems = []
        if not self.name:
            problems.append("name: missing or empty")
        if not self.salt.strip():
            problems.append("salt: missing or empty (it seeds the sticky split)")
        if not (math.isfinite(self.deadline_ms) and self.deadline_ms > 0):
            problems.append(f"deadline_ms {self.deadline_ms} must be > 0")
        if not 1 <= self.explain_top_k <= MAX_EXPLAIN_TOP_K:
            problems.append(
                f"explain_top_k {self.explain_top_k} must be in [1, {MAX_EXPLAIN_TOP_K}]"
            )
        problems += [f"match.{p}" for p in self.match.problems()]
        problems += self._arm_problems()
        for i, shadow in enumerate(self.shadows):
            problems += [f"shadows[{i}] {shadow.label}: {p}" for p in shadow.problems()]
        problems += _repeats("shadows", [s.label for s in self.shadows])
        if self.decision is not None:
            problems += [f"decision: {p}" for p in self.decision.problems()]
        if self.canary is not None:
            problems += [f"canary.{p}" for p in self.canary.problems()]
        return [f"{where}: {p}" for p in problems]

    def _arm_problems(self) -> list[str]:
        if not self.arms:
            return ["arms: at least one arm is needed"]
        problems = []
        for i, arm in enumerate(self.arms):
            problems += [f"arms[{i}] {arm.label}: {p}" for p in arm.problems()]
        total = sum(_hundredths(arm.weight) for arm in self.arms)
        if total != BUCKETS:
            problems.append(f"arms: weights sum to {total / 100:g}, not 100")
        champions = [arm for arm in self.arms if arm.role is ArmRole.CHAMPION]
        if len(champions) != 1:
            named = ", ".join(a.label for a in champions) or "none"
            problems.append(f"arms: exactly one champion arm is needed, found {named}")
        canaries = [(i, arm) for i, arm in enumerate(self.arms) if arm.role is ArmRole.CANARY]
        if len(canaries) > 1:
            named = ", ".join(a.label for _, a in canaries)
            problems.append(f"arms: at most one canary arm, found {named}")
        if canaries and self.canary is None:
            problems += [
                f"arms[{i}] {arm.label}: role canary needs a canary spec "
                "(canary: {steps, interval_s, min_requests, guards})"
                for i, arm in canaries
            ]
        if self.canary is not None and not canaries:
            problems.append("canary: the spec needs an arm with role canary")
        return problems + _repeats("arms", [arm.label for arm in self.arms])


def _repeats(field: str, labels: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    repeated: list[str] = []
    for label in labels:
        if label in seen and label not in repeated:
            repeated.append(label)
        seen.add(label)
    return [f"{field}: {label} appears more than once" for label in repeated]


class RouteTable(_Frozen):
    routes: tuple[RouteSpec, ...] = ()

    @cached_property
    def matches_amount(self) -> bool:
        """Does any route match on ``amount_usd``? (Callers skip computing it if not.)"""
        return any(route.match.amount_usd is not None for route in self.routes)

    @model_validator(mode="after")
    def _valid(self) -> RouteTable:
        # Each route checked itself when it was built; what is left spans routes.
        problems = self._table_problems()
        if problems:
            raise RouteTableError(problems)
        return self

    def problems(self) -> list[str]:
        """Every problem of every route and of the table as a whole.

        Empty for any table built normally; a re-check for tables that skipped
        validation (``model_construct``).
        """
        return [p for route in self.routes for p in route.problems()] + self._table_problems()

    def _table_problems(self) -> list[str]:
        return _outline_problems([(r.name, r.match.catch_all) for r in self.routes])

    def route(self, name: str) -> RouteSpec:
        """The route called ``name``.

        Raises:
            LookupError: no route has that name.
        """
        for route in self.routes:
            if route.name == name:
                return route
        raise LookupError(f"route {name!r} does not exist")

    def problems_against(
        self,
        available: Callable[[str, int], str | None],
        channels: Collection[str] | None = None,
        live: Callable[[str, int], str | None] | None = None,
    ) -> list[str]:
        """Check every arm and shadow against the loaded models.

        Args:
            available: returns None when ``(model, version)`` may take the route's
                traffic, otherwise why not ("not loaded"); asked of arms and shadows.
            channels: the channel enum names the gateway knows; when given, a match
                naming any other (a typo that would never match) is a problem.
            live: returns None when ``(model, version)`` may answer callers, otherwise
                why not ("approval is 'pending'"); asked of the arms alone, so that a
                model that may not answer (not approved) can still run as a shadow.

        Returns:
            One message per problem; empty when the table may serve.
        """
        problems = []
        for route in self.routes:
            for model, version in route.targets():
                why = available(model, version)
                if why is not None:
                    problems.append(f"route {route.name!r}: {model} v{version}: {why}")
            if live is not None:
                for model, version in route.targets(live_only=True):
                    why = live(model, version) if available(model, version) is None else None
                    if why is not None:
                        problems.append(
                            f"route {route.name!r}: {model} v{version} as a live arm: {why}"
                        )
            if channels is not None:
                problems += [
                    f"route {route.name!r}: match.channel {c!r} is not a known channel"
                    f" ({', '.join(sorted(channels))})"
                    for c in route.match.channel
                    if c not in channels
                ]
        return problems

    def to_yaml(self) -> str:
        dumped = self.model_dump(mode="json", exclude_none=True)["routes"]
        return yaml.safe_dump({"routes": dumped}, sort_keys=False)


def _outline_problems(outline: Sequence[tuple[str, bool]]) -> list[str]:
    """Problems of the table as a whole, from each route's ``(name, catch_all)``."""
    if not outline:
        return ["routes: none given; a table needs at least a default route (empty match)"]
    problems = []
    first_index: dict[str, int] = {}
    for i, (name, _) in enumerate(outline):
        if name and name in first_index:
            problems.append(
                f"route {name!r}: name: repeated (routes[{first_index[name]}] and "
                f"routes[{i}]); route names must be unique"
            )
        first_index.setdefault(name, i)
    default = next((i for i, (_, catch_all) in enumerate(outline) if catch_all), None)
    if default is None:
        problems.append(
            f"routes: no default route: the last route, {outline[-1][0]!r}, has a match; "
            "end the table with a route whose match is empty"
        )
    else:
        problems += [
            f"route {name!r}: comes after the default route {outline[default][0]!r}, which "
            "takes every transaction, so it could never match; move it above"
            for name, _ in outline[default + 1 :]
        ]
    return problems


def _raw_outline(data: Any) -> list[tuple[str, bool]] | None:
    """``(name, catch_all)`` per route of an unvalidated document; None if unreadable."""
    routes = data.get("routes") if isinstance(data, dict) else None
    if not isinstance(routes, list):
        return None
    outline = []
    for raw in routes:
        raw = raw if isinstance(raw, dict) else {}
        name = raw.get("name")
        try:
            catch_all = MatchSpec.model_validate(raw.get("match") or {}).catch_all
        except ValidationError:
            catch_all = False  # its own problems are reported; it matches something
        outline.append((name if isinstance(name, str) else "", catch_all))
    return outline


def parse_table(data: Any) -> RouteTable:
    """Validate a routes document already parsed from YAML or JSON.

    Raises:
        RouteTableError: naming every problem found, each with its route and field.
    """
    try:
        return RouteTable.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        table_checked = False
        for error in exc.errors():
            cause = error.get("ctx", {}).get("error")
            table_checked = table_checked or error["loc"] == ()
            if isinstance(cause, RouteTableError):
                problems += cause.problems
            else:
                problems.append(f"{_where(error['loc'], data)}: {error['msg']}")
        outline = None if table_checked else _raw_outline(data)
        if outline is not None:
            # A route that failed stops the table's own check; run it on the outline
            # so that one refusal still names every problem.
            problems += _outline_problems(outline)
        raise RouteTableError(problems) from exc


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """Pydantic's location as this module names places: ``route 'cards': arms[1].version``."""
    if len(loc) < 2 or loc[0] != "routes" or not isinstance(loc[1], int):
        return ".".join(map(str, loc)) or "routes"
    try:
        name = data["routes"][loc[1]]["name"]
    except (KeyError, IndexError, TypeError):
        name = None
    where = f"route {name!r}" if isinstance(name, str) and name else f"routes[{loc[1]}]"
    field = ""
    for part in loc[2:]:
        field += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{where}: {field.lstrip('.')}" if field else where


def load_table(text: str) -> RouteTable:
    """Parse and validate a routes YAML document, naming every problem found."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RouteTableError([f"not valid YAML: {exc}"]) from exc
    return parse_table(data)


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


class Assignment(NamedTuple):
    """What ``decide`` chose for one transaction (a NamedTuple: one is built per
    transaction on the serving path, cheaper than a frozen dataclass)."""

    route: RouteSpec
    arm: ArmSpec
    bucket: int
    shadows: tuple[ShadowSpec, ...]


def decide(
    table: RouteTable,
    keys: Mapping[str, str],
    bucket_of: Callable[[str, str], int],
    route_name: str = "",
    *,
    amount_usd: float = math.nan,
) -> Assignment:
    """Choose the route, the primary arm and the shadow arms for one transaction.

    Args:
        table: the validated table in force.
        keys: the transaction's routing keys as strings: ``channel`` (enum name),
            ``country``, ``merchant_category_code`` and the sticky-key fields.
        bucket_of: ``(salt, key) -> bucket in [0, 10000)``; the native or reference
            ``stable_hash64`` based function, chosen once at start-up.
        route_name: a route the caller asked for by name; empty to match.
        amount_usd: the amount in USD for ``match.amount_usd``; NaN (unknown) never
            matches a route with an amount criterion.

    Raises:
        LookupError: ``route_name`` names no route, or no route matches.
    """
    route = table.route(route_name) if route_name else _match(table, keys, amount_usd)
    key = keys.get(route.sticky_key, "")
    bucket = bucket_of(route.salt, key)
    layout = route.layout
    chosen = layout[-1][1]
    for edge, arm in layout:
        if bucket < edge:
            chosen = arm
            break
    shadows: tuple[ShadowSpec, ...] = ()
    if route.shadows:
        shadow_bucket = bucket_of(route.salt + "/shadow", key)
        shadows = tuple(s for s in route.shadows if shadow_bucket < _hundredths(s.percent))
    return Assignment(route=route, arm=chosen, bucket=bucket, shadows=shadows)


def _match(table: RouteTable, keys: Mapping[str, str], amount_usd: float) -> RouteSpec:
    for route in table.routes:
        if route.match.matches(keys, amount_usd):
            return route
    # Only a table that skipped validation lacks a default route.
    raise LookupError(
        f"no route matches channel {keys.get('channel', '')!r} and there is no default route"
    )
