"""Route table validation and the deterministic, sticky arm choice."""

from __future__ import annotations

import pytest

from gateway.features.hashing import bucket
from router.routes import ArmRole, RouteTableError, decide, default_table, load_table
from router.store import RouteStore

SPLIT = """
routes:
  - name: cards
    match: {channel: [ECOMMERCE, CARD_PRESENT]}
    salt: cards-2026-11
    arms:
      - {model: fraud-gbdt, version: 3, weight: 90, role: champion}
      - {model: fraud-gbdt, version: 4, weight: 10, role: canary}
    canary: {steps: [10, 20, 50, 100]}
  - name: rest
    salt: rest
    arms: [{model: fraud-gbdt, version: 3, weight: 100}]
"""


def test_weights_must_sum_to_100_and_thresholds_be_ordered() -> None:
    bad = """
routes:
  - name: r
    salt: s
    arms: [{model: a, version: 1, weight: 60}, {model: b, version: 1, weight: 30}]
    decision: {review_at: 0.9, decline_at: 0.5}
"""
    with pytest.raises(RouteTableError) as caught:
        load_table(bad)
    text = str(caught.value)
    assert "sum to 90" in text
    assert "review_at (0.9) must be below decline_at (0.5)" in text


def test_missing_salt_and_duplicate_names_are_refused() -> None:
    with pytest.raises(RouteTableError, match="salt"):
        load_table("routes:\n  - {name: r, arms: [{model: a, version: 1, weight: 100}]}\n")
    dup = "routes:\n" + "  - {name: r, salt: s, arms: [{model: a, version: 1, weight: 100}]}\n" * 2
    with pytest.raises(RouteTableError, match="repeated"):
        load_table(dup)


def test_assignment_is_sticky_and_matches_the_split() -> None:
    table = load_table(SPLIT)
    counts = {ArmRole.CHAMPION: 0, ArmRole.CANARY: 0}
    for i in range(20_000):
        keys = {"channel": "ECOMMERCE", "account_id": f"acct-{i}"}
        first = decide(table, keys, bucket)
        assert decide(table, keys, bucket) == first
        assert first.route.name == "cards"
        counts[first.arm.role] += 1
    # 10% canary: 2000 expected, sd ~42; 6 sd either side.
    assert 1750 < counts[ArmRole.CANARY] < 2250


def test_raising_the_canary_only_moves_champion_accounts() -> None:
    before = load_table(SPLIT)
    after = load_table(
        SPLIT.replace("weight: 90, role", "weight: 80, role").replace(
            "weight: 10, role", "weight: 20, role"
        )
    )
    for i in range(5_000):
        keys = {"channel": "CARD_PRESENT", "account_id": f"acct-{i}"}
        if decide(before, keys, bucket).arm.role is ArmRole.CANARY:
            assert decide(after, keys, bucket).arm.role is ArmRole.CANARY


def test_channel_match_falls_through_to_the_catch_all() -> None:
    table = load_table(SPLIT)
    assert decide(table, {"channel": "ATM", "account_id": "a"}, bucket).route.name == "rest"
    with pytest.raises(LookupError, match="nope"):
        decide(table, {"channel": "ATM"}, bucket, route_name="nope")


def test_store_versions_each_accepted_table_and_keeps_the_old_on_refusal() -> None:
    loaded = {("fraud-gbdt", 1)}

    def check(table):  # type: ignore[no-untyped-def]
        return table.problems_against(lambda m, v: None if (m, v) in loaded else "not loaded")

    store = RouteStore(default_table("fraud-gbdt", 1), check)
    assert store.current.config_version == 1
    with pytest.raises(RouteTableError, match="fraud-gbdt v3: not loaded"):
        store.replace(load_table(SPLIT))
    assert store.current.config_version == 1
    accepted = store.replace(default_table("fraud-gbdt", 1))
    assert accepted.config_version == 2 and store.current is accepted


def test_route_explain_is_off_by_default_and_top_k_is_bounded() -> None:
    table = load_table(SPLIT)
    assert [(r.explain, r.explain_top_k) for r in table.routes] == [(False, 4), (False, 4)]
    rest = "    salt: rest\n"
    explained = load_table(SPLIT.replace(rest, rest + "    explain: true\n    explain_top_k: 2\n"))
    assert (explained.routes[1].explain, explained.routes[1].explain_top_k) == (True, 2)
    assert load_table(explained.to_yaml()) == explained
    for bad in (0, 33):
        with pytest.raises(
            RouteTableError, match=rf"'rest': explain_top_k {bad} must be in \[1, 32\]"
        ):
            load_table(SPLIT.replace(rest, rest + f"    explain_top_k: {bad}\n"))
