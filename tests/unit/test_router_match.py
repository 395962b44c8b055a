"""Route matching: each criterion, range edges, first-match order, the default route."""

from __future__ import annotations

import math

import pytest

from gateway.features.hashing import bucket
from router.routes import MatchSpec, RouteTable, decide, load_table

TABLE = """
routes:
  - name: atm
    match: {channel: [ATM]}
    salt: atm
    arms: [{model: m, version: 1, weight: 100}]
  - name: north-america
    match: {country: [US, CA]}
    salt: na
    arms: [{model: m, version: 2, weight: 100}]
  - name: gambling
    match: {mcc: ["7995", "5960-5969"]}
    salt: gambling
    arms: [{model: m, version: 3, weight: 100}]
  - name: large
    match: {amount_usd: {min: 1000}}
    salt: large
    arms: [{model: m, version: 4, weight: 100}]
  - name: small-web
    match: {channel: [ECOMMERCE], amount_usd: {max: 10}}
    salt: small
    arms: [{model: m, version: 5, weight: 100}]
  - name: default
    salt: default
    arms: [{model: m, version: 6, weight: 100}]
"""


def route_for(
    table: RouteTable, amount_usd: float = math.nan, route_name: str = "", **keys: str
) -> str:
    base = {"channel": "ECOMMERCE", "country": "FR", "merchant_category_code": "5411"}
    merged = base | {"account_id": "acct-1"} | keys
    return decide(table, merged, bucket, route_name, amount_usd=amount_usd).route.name


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return load_table(TABLE)


def test_channel(table: RouteTable) -> None:
    assert route_for(table, channel="ATM") == "atm"
    assert route_for(table, channel="WALLET") == "default"
    assert route_for(table, channel="") == "default"


def test_country(table: RouteTable) -> None:
    assert route_for(table, country="US") == "north-america"
    assert route_for(table, country="CA") == "north-america"
    assert route_for(table, country="MX") == "default"
    # Compared as sent: the data plane passes ISO codes in upper case.
    assert route_for(table, country="us") == "default"


@pytest.mark.parametrize(
    ("mcc", "route"),
    [
        ("7995", "gambling"),
        ("7994", "default"),
        ("5960", "gambling"),  # a range is inclusive at both ends
        ("5965", "gambling"),
        ("5969", "gambling"),
        ("5959", "default"),
        ("5970", "default"),
        ("", "default"),
        ("596", "default"),
        ("59650", "default"),
        ("59a5", "default"),
        ("٥٩٦٥", "default"),  # Arabic-Indic digits: isdigit() but not an MCC
    ],
)
def test_mcc_codes_and_inclusive_ranges(table: RouteTable, mcc: str, route: str) -> None:
    assert route_for(table, merchant_category_code=mcc) == route


@pytest.mark.parametrize(
    ("amount", "route"),
    [
        (999.99, "default"),
        (1000.0, "large"),  # min is inclusive
        (1e9, "large"),
        (math.inf, "large"),
        (9.99, "small-web"),
        (10.0, "default"),  # max is exclusive
        (0.0, "small-web"),
        (math.nan, "default"),  # an unknown amount never matches an amount criterion
    ],
)
def test_amount_range_is_half_open(table: RouteTable, amount: float, route: str) -> None:
    assert route_for(table, amount_usd=amount) == route


def test_every_criterion_of_a_route_must_hold(table: RouteTable) -> None:
    assert route_for(table, channel="CARD_PRESENT", amount_usd=5.0) == "default"
    assert route_for(table, channel="ECOMMERCE", amount_usd=5.0) == "small-web"


def test_the_first_matching_route_wins(table: RouteTable) -> None:
    # Matches atm, north-america, gambling and large: atm is listed first.
    keys = {"channel": "ATM", "country": "US", "merchant_category_code": "7995"}
    assert route_for(table, amount_usd=5000.0, **keys) == "atm"
    keys["channel"] = "ECOMMERCE"
    assert route_for(table, amount_usd=5000.0, **keys) == "north-america"
    keys["country"] = "DE"
    assert route_for(table, amount_usd=5000.0, **keys) == "gambling"


def test_missing_keys_fall_through_to_the_default_route(table: RouteTable) -> None:
    assert decide(table, {}, bucket).route.name == "default"


def test_a_route_can_be_forced_by_name(table: RouteTable) -> None:
    assert route_for(table, route_name="gambling", channel="ATM") == "gambling"
    with pytest.raises(LookupError, match="'nope' does not exist"):
        route_for(table, route_name="nope")


def test_empty_criteria_match_everything() -> None:
    match = MatchSpec()
    assert match.catch_all
    assert match.matches({}, math.nan)
    assert MatchSpec.model_validate({"amount_usd": {}}).catch_all
    assert not MatchSpec(country=("US",)).catch_all


def test_single_values_and_yaml_integers_are_accepted() -> None:
    match = MatchSpec.model_validate({"channel": "ATM", "mcc": 5411})
    assert match.channel == ("ATM",)
    assert match.mcc == ("5411",)
    assert MatchSpec.model_validate({"mcc": [5411, "5960-5969"]}).mcc == ("5411", "5960-5969")


def test_the_default_route_takes_what_nothing_else_does() -> None:
    table = load_table(TABLE)
    assert table.routes[-1].match.catch_all
    assert [r.match.catch_all for r in table.routes[:-1]] == [False] * 5
