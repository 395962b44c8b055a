"""Whole-table validation: every problem, each naming its route and field, at once."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from router.routes import (
    ArmRole,
    ArmSpec,
    RouteSpec,
    RouteTable,
    RouteTableError,
    default_table,
    load_table,
    parse_table,
)

DESIGN_EXAMPLE = """
routes:
  - name: cards
    match: {channel: [ECOMMERCE, CARD_PRESENT]}
    sticky_key: account_id
    salt: "cards-2026-11"
    deadline_ms: 8
    arms:
      - {model: fraud-gbdt, version: 3, weight: 90, role: champion}
      - {model: fraud-gbdt, version: 4, weight: 10, role: canary}
    shadows:
      - {model: fraud-mlp, version: 1, percent: 100}
    canary: {steps: [1, 5, 25, 50, 100], interval_s: 300, min_requests: 2000,
             guards: {p99_ms: 10, error_rate: 0.005, score_psi: 0.2, decline_rate_delta: 0.02}}
    decision: {review_at: 0.5, decline_at: 0.9}
    fallback: {on: [timeout, overload, backend_error], decision: REVIEW}
"""
"""DESIGN.md's example, verbatim."""

CATCH_ALL = """  - name: rest
    salt: rest
    arms: [{model: fraud-gbdt, version: 3, weight: 100}]
"""


def problems_of(text: str) -> list[str]:
    with pytest.raises(RouteTableError) as caught:
        load_table(text)
    return caught.value.problems


def one_route(body: str) -> str:
    """A table of route ``r`` (YAML lines under it; ATM only by default), then a catch-all."""
    match = "" if "match:" in body else "    match: {channel: [ATM]}\n"
    return "routes:\n  - name: r\n" + match + body + CATCH_ALL


GOOD_ARMS = "    salt: s\n    arms: [{model: a, version: 1, weight: 100}]\n"


def test_the_design_example_round_trips_through_yaml() -> None:
    table = load_table(DESIGN_EXAMPLE + CATCH_ALL)
    cards = table.route("cards")
    assert cards.canary is not None
    assert cards.canary.steps == (1, 5, 25, 50, 100)
    assert cards.canary.guards.decline_rate_delta == 0.02
    assert cards.fallback.on == ("timeout", "overload", "backend_error")
    assert cards.canary_arm is not None and cards.canary_arm.version == 4
    assert cards.champion.version == 3
    again = load_table(table.to_yaml())
    assert again == table
    assert again.to_yaml() == table.to_yaml()


def test_the_design_example_alone_lacks_a_default_route() -> None:
    assert problems_of(DESIGN_EXAMPLE) == [
        "routes: no default route: the last route, 'cards', has a match; "
        "end the table with a route whose match is empty"
    ]


def test_weights_must_sum_to_100_in_hundredths() -> None:
    problems = problems_of(
        one_route(
            "    salt: s\n    arms: [{model: a, version: 1, weight: 60},"
            " {model: b, version: 1, weight: 30, role: challenger}]\n"
        )
    )
    assert problems == ["route 'r': arms: weights sum to 90, not 100"]
    fine = one_route(
        "    salt: s\n    arms: [{model: a, version: 1, weight: 33.33},"
        " {model: b, version: 1, weight: 33.38, role: challenger},"
        " {model: c, version: 1, weight: 33.29, role: challenger}]\n"
    )
    # 0.29 * 100 is 28.999999999999996 in floating point: still whole hundredths.
    assert load_table(fine).routes[0].arms[2].weight == 33.29
    assert problems_of(fine.replace("33.33", "33.325").replace("33.38", "33.385")) == [
        "route 'r': arms[0] a v1: weight 33.325 is finer than 0.01 percent",
        "route 'r': arms[1] b v1: weight 33.385 is finer than 0.01 percent",
    ]


@pytest.mark.parametrize(
    ("arms", "problem"),
    [
        (
            "[{model: a, version: 1, weight: 50}, {model: b, version: 1, weight: 50}]",
            "route 'r': arms: exactly one champion arm is needed, found a v1, b v1",
        ),
        (
            "[{model: a, version: 1, weight: 100, role: challenger}]",
            "route 'r': arms: exactly one champion arm is needed, found none",
        ),
        (
            "[{model: a, version: 1, weight: 100, role: boss}]",
            "route 'r': arms[0].role: Input should be 'champion', 'challenger' or 'canary'",
        ),
        (
            "[{model: a, version: 1, weight: 150}]",
            "route 'r': arms[0] a v1: weight 150 is outside 0..100",
        ),
        (
            "[{model: a, version: 0, weight: 100}]",
            "route 'r': arms[0] a v0: version 0 must be >= 1",
        ),
        (
            "[{model: '', version: 1, weight: 100}]",
            "route 'r': arms[0]  v1: model: missing or empty",
        ),
        (
            "[{model: a, version: 1, weight: 50},"
            " {model: a, version: 1, weight: 50, role: challenger}]",
            "route 'r': arms: a v1 appears more than once",
        ),
        ("[]", "route 'r': arms: at least one arm is needed"),
    ],
)
def test_arm_problems(arms: str, problem: str) -> None:
    problems = problems_of(one_route(f"    salt: s\n    arms: {arms}\n"))
    assert problems[0] == problem
    assert problems[1:] in ([], ["route 'r': arms: weights sum to 150, not 100"])


def test_canary_role_and_spec_need_each_other() -> None:
    canary_arm = (
        "    salt: s\n    arms: [{model: a, version: 1, weight: 90},"
        " {model: b, version: 1, weight: 10, role: canary}]\n"
    )
    assert problems_of(one_route(canary_arm)) == [
        "route 'r': arms[1] b v1: role canary needs a canary spec "
        "(canary: {steps, interval_s, min_requests, guards})"
    ]
    assert load_table(one_route(canary_arm + "    canary: {}\n")).routes[0].canary is not None
    assert problems_of(one_route(GOOD_ARMS + "    canary: {}\n")) == [
        "route 'r': canary: the spec needs an arm with role canary"
    ]
    two = (
        "    salt: s\n    canary: {}\n    arms: [{model: a, version: 1, weight: 80},"
        " {model: b, version: 1, weight: 10, role: canary},"
        " {model: c, version: 1, weight: 10, role: canary}]\n"
    )
    assert problems_of(one_route(two)) == [
        "route 'r': arms: at most one canary arm, found b v1, c v1"
    ]


@pytest.mark.parametrize(
    ("canary", "problems"),
    [
        (
            "{steps: [5, 1, 50]}",
            [
                "route 'r': canary.steps [5, 1, 50] must increase",
                "route 'r': canary.steps must end at 100, not 50",
            ],
        ),
        ("{steps: []}", ["route 'r': canary.steps: at least one step (ending at 100) is needed"]),
        (
            "{steps: [0, 100.001]}",
            [
                "route 'r': canary.steps: 0 must be in (0, 100], in steps of 0.01",
                "route 'r': canary.steps: 100.001 must be in (0, 100], in steps of 0.01",
                "route 'r': canary.steps must end at 100, not 100.001",
            ],
        ),
        ("{interval_s: 0}", ["route 'r': canary.interval_s 0.0 must be > 0"]),
        ("{min_requests: 0}", ["route 'r': canary.min_requests 0 must be >= 1"]),
        (
            "{guards: {p99_ms: 0, error_rate: 1.5, score_psi: -1, decline_rate_delta: 0}}",
            [
                "route 'r': canary.guards.p99_ms 0.0 must be > 0",
                "route 'r': canary.guards.score_psi -1.0 must be > 0",
                "route 'r': canary.guards.error_rate 1.5 must be in (0, 1]",
                "route 'r': canary.guards.decline_rate_delta 0.0 must be in (0, 1]",
            ],
        ),
        (
            "{guards: {p99: 10}}",
            ["route 'r': canary.guards.p99: Extra inputs are not permitted"],
        ),
    ],
)
def test_canary_spec_problems(canary: str, problems: list[str]) -> None:
    body = (
        "    salt: s\n    arms: [{model: a, version: 1, weight: 90},"
        f" {{model: b, version: 1, weight: 10, role: canary}}]\n    canary: {canary}\n"
    )
    assert problems_of(one_route(body)) == problems


@pytest.mark.parametrize(
    ("decision", "problems"),
    [
        (
            "{review_at: 0.9, decline_at: 0.5}",
            ["route 'r': decision: review_at (0.9) must be below decline_at (0.5)"],
        ),
        (
            "{review_at: 0, decline_at: 1.5}",
            [
                "route 'r': decision: review_at (0.0) must be in (0, 1)",
                "route 'r': decision: decline_at (1.5) must be in (0, 1]",
            ],
        ),
    ],
)
def test_thresholds_must_be_ordered_and_in_range(decision: str, problems: list[str]) -> None:
    assert problems_of(one_route(GOOD_ARMS + f"    decision: {decision}\n")) == problems


@pytest.mark.parametrize("salt", ['""', '"  "', None])
def test_salt_must_be_present_and_non_empty(salt: str | None) -> None:
    body = GOOD_ARMS.replace("    salt: s\n", "" if salt is None else f"    salt: {salt}\n")
    assert problems_of(one_route(body)) == [
        "route 'r': salt: missing or empty (it seeds the sticky split)"
    ]


def test_names_must_be_present_and_unique() -> None:
    route = (
        "  - {name: r, match: {channel: [ATM]}, salt: s,"
        " arms: [{model: a, version: 1, weight: 100}]}\n"
    )
    assert problems_of("routes:\n" + route * 2 + CATCH_ALL) == [
        "route 'r': name: repeated (routes[0] and routes[1]); route names must be unique"
    ]
    unnamed = "routes:\n  - {name: '', salt: s, arms: [{model: a, version: 1, weight: 100}]}\n"
    assert problems_of(unnamed) == ["route (unnamed): name: missing or empty"]


def test_the_default_route_must_exist_and_be_last() -> None:
    early = (
        "routes:\n"
        + CATCH_ALL
        + (
            "  - {name: atm, match: {channel: [ATM]}, salt: s,"
            " arms: [{model: a, version: 1, weight: 100}]}\n"
            "  - {name: web, match: {channel: [ECOMMERCE]}, salt: s,"
            " arms: [{model: a, version: 1, weight: 100}]}\n"
        )
    )
    assert problems_of(early) == [
        "route 'atm': comes after the default route 'rest', which takes every transaction, "
        "so it could never match; move it above",
        "route 'web': comes after the default route 'rest', which takes every transaction, "
        "so it could never match; move it above",
    ]
    assert problems_of("routes: []\n") == [
        "routes: none given; a table needs at least a default route (empty match)"
    ]
    assert problems_of("{}\n") == [
        "routes: none given; a table needs at least a default route (empty match)"
    ]


@pytest.mark.parametrize(
    ("match", "problems"),
    [
        (
            "{mcc: ['541', '5411x', 'abcd']}",
            [
                f"route 'r': match.mcc {code!r} is not a 4-digit code or a range like "
                "'5960-5969' (quote codes with a leading zero: YAML reads 0742 as octal)"
                for code in ("541", "5411x", "abcd")
            ],
        ),
        (
            "{mcc: [0742]}",  # YAML 1.1: the octal number 482
            [
                "route 'r': match.mcc '482' is not a 4-digit code or a range like "
                "'5960-5969' (quote codes with a leading zero: YAML reads 0742 as octal)"
            ],
        ),
        (
            "{mcc: ['5969-5960']}",
            ["route 'r': match.mcc range '5969-5960' runs backwards: write low-high"],
        ),
        (
            "{country: [us, USA, U1]}",
            [
                f"route 'r': match.country {c!r} is not an ISO 3166-1 alpha-2 code "
                "(two upper-case letters)"
                for c in ("us", "USA", "U1")
            ],
        ),
        (
            "{channel: [ecommerce, '']}",
            [
                f"route 'r': match.channel {c!r} is not a channel enum name "
                "(upper case, like ECOMMERCE)"
                for c in ("ecommerce", "")
            ],
        ),
        (
            "{amount_usd: {min: 100, max: 100}}",
            [
                "route 'r': match.amount_usd: min (100) must be below max (100): "
                "[min, max) is half-open"
            ],
        ),
        (
            "{amount_usd: {min: -1, max: .nan}}",
            [
                "route 'r': match.amount_usd: min -1.0 must be a finite amount >= 0",
                "route 'r': match.amount_usd: max nan must be a finite amount >= 0",
            ],
        ),
        (
            "{amount_usd: {low: 1}}",
            ["route 'r': match.amount_usd.low: Extra inputs are not permitted"],
        ),
    ],
)
def test_match_problems(match: str, problems: list[str]) -> None:
    assert problems_of(one_route(GOOD_ARMS + f"    match: {match}\n")) == problems


@pytest.mark.parametrize(
    ("shadows", "problem"),
    [
        (
            "[{model: s, version: 1, percent: 101}]",
            "route 'r': shadows[0] s v1: percent 101 is outside 0..100",
        ),
        (
            "[{model: s, version: 1, percent: -1}]",
            "route 'r': shadows[0] s v1: percent -1 is outside 0..100",
        ),
        (
            "[{model: s, version: 1, percent: 0.001}]",
            "route 'r': shadows[0] s v1: percent 0.001 is finer than 0.01 percent",
        ),
        (
            "[{model: s, version: 1}, {model: s, version: 1, percent: 5}]",
            "route 'r': shadows: s v1 appears more than once",
        ),
    ],
)
def test_shadow_problems(shadows: str, problem: str) -> None:
    assert problems_of(one_route(GOOD_ARMS + f"    shadows: {shadows}\n")) == [problem]


def test_deadline_must_be_positive() -> None:
    assert problems_of(one_route(GOOD_ARMS + "    deadline_ms: 0\n")) == [
        "route 'r': deadline_ms 0.0 must be > 0"
    ]


def test_one_refusal_names_every_problem_of_every_route() -> None:
    text = """
routes:
  - name: a
    match: {country: [us]}
    arms: [{model: m, version: 1, weight: 60}]
    decision: {review_at: 0.9, decline_at: 0.5}
  - name: b
    match: {channel: [ATM]}
    salt: b
    arms: [{model: m, version: x, weight: 100}]
  - name: a
    salt: a2
    arms: [{model: m, version: 1, weight: 100}]
  - name: late
    match: {channel: [ATM]}
    salt: late
    arms: [{model: m, version: 1, weight: 100}]
"""
    assert problems_of(text) == [
        "route 'a': salt: missing or empty (it seeds the sticky split)",
        "route 'a': match.country 'us' is not an ISO 3166-1 alpha-2 code (two upper-case letters)",
        "route 'a': arms: weights sum to 60, not 100",
        "route 'a': decision: review_at (0.9) must be below decline_at (0.5)",
        # A type error stops its own route's checks, not the others' or the table's.
        "route 'b': arms[0].version: Input should be a valid integer, unable to parse string "
        "as an integer",
        "route 'a': name: repeated (routes[0] and routes[2]); route names must be unique",
        "route 'late': comes after the default route 'a', which takes every transaction, so "
        "it could never match; move it above",
    ]


def test_unknown_fields_and_bad_yaml_are_named() -> None:
    assert problems_of(one_route(GOOD_ARMS + "    weights: 3\n")) == [
        "route 'r': weights: Extra inputs are not permitted"
    ]
    assert problems_of("routes: [")[0].startswith("not valid YAML")


def test_tables_built_in_python_are_validated_too() -> None:
    with pytest.raises(ValidationError, match="weights sum to 50"):
        RouteSpec(name="r", salt="s", arms=(ArmSpec(model="a", version=1, weight=50),))
    table = default_table("a", 1)
    with pytest.raises(ValidationError, match="weights sum to 50"):
        table.routes[0].model_copy(update={"arms": (ArmSpec(model="a", version=1, weight=50),)})
    with pytest.raises(RouteTableError, match="no default route"):
        parse_table(
            {
                "routes": [
                    {
                        "name": "r",
                        "match": {"channel": ["ATM"]},
                        "salt": "s",
                        "arms": [{"model": "a", "version": 1, "weight": 100}],
                    }
                ]
            }
        )
    # A table that skipped validation is caught by problems(), which the store runs.
    raw = RouteTable.model_construct(routes=())
    assert raw.problems() == [
        "routes: none given; a table needs at least a default route (empty match)"
    ]


def test_problems_against_the_loaded_models_and_known_channels() -> None:
    table = load_table(DESIGN_EXAMPLE + CATCH_ALL)
    loaded = {("fraud-gbdt", 3), ("fraud-gbdt", 4)}
    problems = table.problems_against(lambda m, v: None if (m, v) in loaded else "not loaded")
    assert problems == ["route 'cards': fraud-mlp v1: not loaded"]
    problems = table.problems_against(lambda m, v: None, channels={"ECOMMERCE", "ATM"})
    assert problems == [
        "route 'cards': match.channel 'CARD_PRESENT' is not a known channel (ATM, ECOMMERCE)"
    ]


def test_unapproved_models_may_run_as_shadows_but_not_as_live_arms() -> None:
    table = load_table(DESIGN_EXAMPLE + CATCH_ALL)
    status = {("fraud-gbdt", 3): "approved", ("fraud-gbdt", 4): "approved"}
    status[("fraud-mlp", 1)] = "pending"

    def live(m: str, v: int) -> str | None:
        approval = status[(m, v)]
        return None if approval == "approved" else f"approval is {approval!r}"

    # fraud-mlp v1 is the route's shadow only: pending is no problem there.
    assert table.problems_against(lambda m, v: None, live=live) == []
    # As the canary it would answer callers: refused, naming route, model and status.
    status[("fraud-gbdt", 4)] = "rejected"
    assert table.problems_against(lambda m, v: None, live=live) == [
        "route 'cards': fraud-gbdt v4 as a live arm: approval is 'rejected'"
    ]
    # A model that is not loaded is reported once, as not loaded, arm or shadow.
    loaded = {("fraud-gbdt", 3), ("fraud-gbdt", 4)}
    problems = table.problems_against(
        lambda m, v: None if (m, v) in loaded else "not loaded", live=live
    )
    assert problems == [
        "route 'cards': fraud-mlp v1: not loaded",
        "route 'cards': fraud-gbdt v4 as a live arm: approval is 'rejected'",
    ]


def test_live_targets_are_the_arms_alone() -> None:
    route = load_table(DESIGN_EXAMPLE + CATCH_ALL).route("cards")
    assert route.targets(live_only=True) == [("fraud-gbdt", 3), ("fraud-gbdt", 4)]


def test_route_accessors() -> None:
    route = load_table(DESIGN_EXAMPLE + CATCH_ALL).route("cards")
    assert route.champion.role is ArmRole.CHAMPION
    assert route.targets() == [("fraud-gbdt", 3), ("fraud-gbdt", 4), ("fraud-mlp", 1)]
    assert [arm.version for _, arm in route.layout] == [3, 4]
    assert [edge for edge, _ in route.layout] == [9000, 10000]
    with pytest.raises(LookupError, match="'nope' does not exist"):
        load_table(DESIGN_EXAMPLE + CATCH_ALL).route("nope")
