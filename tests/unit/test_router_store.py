"""The versioned store: compare-and-swap, rollback, bounded history, listener, diff."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from router.canary import ArmWindow, CanaryAction, CanaryVerdict, evaluate
from router.diff import diff_tables
from router.routes import RouteSpec, RouteTable, RouteTableError, default_table, load_table
from router.store import ChangeKind, ConfigChange, RouteStore, StaleConfigVersion

CARDS = """
routes:
  - name: cards
    match: {channel: [ECOMMERCE, CARD_PRESENT]}
    salt: cards-2026-11
    deadline_ms: 8
    arms:
      - {model: fraud-gbdt, version: 3, weight: 90, role: champion}
      - {model: fraud-gbdt, version: 4, weight: 10, role: canary}
    shadows: [{model: fraud-mlp, version: 1, percent: 100}]
    canary: {steps: [1, 5, 25, 50, 100], interval_s: 300, min_requests: 2000}
    decision: {review_at: 0.5, decline_at: 0.9}
  - name: rest
    salt: rest
    arms: [{model: fraud-gbdt, version: 3, weight: 100}]
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def cards(changes: dict[str, str] | None = None) -> RouteTable:
    """The CARDS table with each text replacement in ``changes`` made."""
    text = CARDS
    for old, new in (changes or {}).items():
        text = text.replace(old, new)
    return load_table(text)


def test_the_first_table_is_version_1_with_who_and_when() -> None:
    clock = Clock()
    store = RouteStore(cards(), actor="ops@bank", reason="boot", clock=clock)
    first = store.current
    assert (first.config_version, first.actor, first.reason) == (1, "ops@bank", "boot")
    assert first.kind is ChangeKind.APPLY
    assert first.applied_at == clock.now and first.applied_at.tzinfo is UTC
    assert store.history == [first]


def test_a_stale_expected_version_is_refused() -> None:
    store = RouteStore(cards())
    store.replace(default_table("fraud-gbdt", 3), expected_version=1, actor="a")
    with pytest.raises(StaleConfigVersion) as caught:
        store.replace(cards(), expected_version=1, actor="b")
    assert isinstance(caught.value, RouteTableError)
    assert (caught.value.expected, caught.value.current) == (1, 2)
    assert str(caught.value) == (
        "the change was made against config_version 1, but config_version 2 is in force: "
        "read the routes again and retry"
    )
    assert store.current.config_version == 2
    assert store.replace(cards(), expected_version=2).config_version == 3
    # None applies over whatever is in force, as before.
    assert store.replace(cards()).config_version == 4


def test_a_refused_table_leaves_the_old_one_serving() -> None:
    loaded = {("fraud-gbdt", 3), ("fraud-gbdt", 4)}

    def check(table: RouteTable) -> list[str]:
        return table.problems_against(lambda m, v: None if (m, v) in loaded else "not loaded")

    store = RouteStore(default_table("fraud-gbdt", 3), check)
    with pytest.raises(RouteTableError, match="route 'cards': fraud-mlp v1: not loaded"):
        store.replace(cards())
    assert store.current.config_version == 1
    assert len(store.history) == 1
    # A table that skipped validation is re-checked whole.
    unchecked = RouteTable.model_construct(routes=())
    with pytest.raises(RouteTableError, match="none given"):
        store.replace(unchecked)


def test_rollback_reapplies_an_old_table_as_a_new_version() -> None:
    store = RouteStore(cards(), actor="boot")
    store.replace(cards({"weight: 90,": "weight: 80,", "weight: 10,": "weight: 20,"}), actor="a")
    store.replace(default_table("fraud-gbdt", 3), actor="b")
    restored = store.rollback(1, actor="oncall", reason="v4 misbehaves")
    assert restored.config_version == 4
    assert restored.table == store.at(1).table
    assert (restored.kind, restored.actor, restored.reason) == (
        ChangeKind.ROLLBACK,
        "oncall",
        "v4 misbehaves",
    )
    assert [e.config_version for e in store.history] == [1, 2, 3, 4]
    assert store.history[1].table != store.history[3].table  # history never rewritten
    with pytest.raises(LookupError, match="config_version 9 is not in the history"):
        store.rollback(9)
    with pytest.raises(StaleConfigVersion):
        store.rollback(2, expected_version=3)


def test_rollback_is_refused_when_the_old_table_no_longer_validates() -> None:
    loaded = {("fraud-gbdt", 3), ("fraud-gbdt", 4), ("fraud-mlp", 1)}

    def check(table: RouteTable) -> list[str]:
        return table.problems_against(lambda m, v: None if (m, v) in loaded else "not loaded")

    store = RouteStore(cards(), check)
    store.replace(default_table("fraud-gbdt", 3))
    loaded.discard(("fraud-gbdt", 4))
    with pytest.raises(RouteTableError, match="fraud-gbdt v4: not loaded"):
        store.rollback(1)
    assert store.current.config_version == 2


def test_history_is_bounded_and_keeps_the_current_version() -> None:
    store = RouteStore(cards(), history_limit=3)
    for _ in range(9):
        store.replace(cards())
    assert [e.config_version for e in store.history] == [8, 9, 10]
    assert store.history[-1] is store.current
    with pytest.raises(
        LookupError, match=r"config_version 7 is not in the history \(kept: 8..10\)"
    ):
        store.at(7)
    assert store.at(9).config_version == 9
    one = RouteStore(cards(), history_limit=1)
    one.replace(cards())
    assert one.history == [one.current]
    with pytest.raises(ValueError, match="history_limit"):
        RouteStore(cards(), history_limit=0)


def test_the_listener_hears_every_accepted_change_in_order() -> None:
    heard: list[ConfigChange] = []
    store = RouteStore(cards(), listener=heard.append, actor="boot", clock=Clock())
    store.replace(
        cards({"weight: 90,": "weight: 80,", "weight: 10,": "weight: 20,"}),
        expected_version=1,
        actor="alice",
        reason="ramp",
    )
    with pytest.raises(RouteTableError):
        store.replace(default_table("fraud-gbdt", 3), expected_version=1)  # stale: not heard
    store.rollback(1, actor="bob", reason="undo")
    champion = ArmWindow(20_000, 0, 5.0, 400, (100, 50, 10))
    canary = ArmWindow(2500, 0, 5.0, 50, (100, 50, 10))
    verdict = evaluate(store.current.table.route("cards"), champion, canary, 400)
    store.apply_canary("cards", verdict, expected_version=3)
    slow = ArmWindow(2500, 0, 50.0, 50, (100, 50, 10))
    verdict = evaluate(store.current.table.route("cards"), champion, slow, 10)
    store.apply_canary("cards", verdict)

    assert [(c.previous_version, c.config_version, c.kind) for c in heard] == [
        (0, 1, ChangeKind.APPLY),
        (1, 2, ChangeKind.APPLY),
        (2, 3, ChangeKind.ROLLBACK),
        (3, 4, ChangeKind.CANARY_STEP),
        (4, 5, ChangeKind.CANARY_ROLLBACK),
    ]
    boot, ramp, undo, step, rollback = heard
    assert boot.diff[0].startswith("cards: route added (match channel=[ECOMMERCE, CARD_PRESENT]")
    assert boot.diff[1] == "rest: route added (arms fraud-gbdt v3 champion 100)"
    assert (ramp.actor, ramp.reason) == ("alice", "ramp")
    assert ramp.diff == (
        "cards: fraud-gbdt v3 champion 90 -> 80",
        "cards: fraud-gbdt v4 canary 10 -> 20",
    )
    assert (undo.restored_version, undo.actor, undo.reason) == (1, "bob", "undo")
    assert undo.diff == (
        "cards: fraud-gbdt v3 champion 80 -> 90",
        "cards: fraud-gbdt v4 canary 20 -> 10",
    )
    assert step.diff == (
        "cards: fraud-gbdt v3 champion 90 -> 75",
        "cards: fraud-gbdt v4 canary 10 -> 25",
    )
    assert step.figures["canary_requests"] == 2500 and step.actor == "canary"
    assert "weight 10 -> 25" in step.reason
    assert rollback.diff[1] == "cards: fraud-gbdt v4 canary 25 -> 0"
    assert "p99 50 ms > 10 ms" in rollback.reason
    assert rollback.table is store.current.table
    assert all(c.applied_at.tzinfo is UTC for c in heard)


def test_a_failing_listener_refuses_the_change() -> None:
    def audit(change: ConfigChange) -> None:
        if change.config_version > 1:
            raise OSError("audit log is full")

    store = RouteStore(cards(), listener=audit)
    with pytest.raises(OSError, match="audit log is full"):
        store.replace(default_table("fraud-gbdt", 3))
    assert store.current.config_version == 1 and len(store.history) == 1


def test_apply_canary_holds_without_a_new_version() -> None:
    store = RouteStore(cards())
    hold = CanaryVerdict("cards", CanaryAction.HOLD, "waiting", 10)
    assert store.apply_canary("cards", hold) is store.current
    assert store.current.config_version == 1
    step = CanaryVerdict("cards", CanaryAction.STEP, "ok", 25)
    with pytest.raises(StaleConfigVersion):
        store.apply_canary("cards", step, expected_version=7)
    promote = CanaryVerdict("cards", CanaryAction.PROMOTE, "done", 100)
    promoted = store.apply_canary("cards", promote, expected_version=1)
    assert promoted.kind is ChangeKind.CANARY_PROMOTE and promoted.reason == "done"
    route = promoted.table.route("cards")
    assert route.canary is None and route.champion.version == 4


def test_validate_is_a_dry_run() -> None:
    store = RouteStore(cards(), lambda t: ["model x is not loaded"] if len(t.routes) > 2 else [])
    assert store.validate(cards()) == []
    assert store.validate(CARDS.replace("weight: 10,", "weight: 15,")) == [
        "route 'cards': arms: weights sum to 105, not 100"
    ]
    assert store.validate("routes: [")[0].startswith("not valid YAML")
    three = CARDS.replace(
        "  - name: rest",
        "  - {name: atm, match: {channel: [ATM]}, salt: a,"
        " arms: [{model: x, version: 1, weight: 100}]}\n  - name: rest",
    )
    assert store.validate(three) == ["model x is not loaded"]
    assert store.current.config_version == 1


def test_concurrent_writers_never_lose_an_update() -> None:
    heard: list[int] = []
    store = RouteStore(cards(), listener=lambda c: heard.append(c.config_version))
    tables = [cards(), default_table("fraud-gbdt", 3)]
    per_thread = 25
    stale = [0]

    def writer(n: int) -> None:
        done = 0
        while done < per_thread:
            seen = store.current.config_version
            try:
                store.replace(tables[n % 2], expected_version=seen, actor=f"w{n}")
            except StaleConfigVersion:
                stale[0] += 1
                continue
            done += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.current.config_version == 1 + 8 * per_thread
    assert [e.config_version for e in store.history] == list(range(1, 2 + 8 * per_thread))
    assert heard == list(range(1, 2 + 8 * per_thread))


def test_diff_names_each_change() -> None:
    old = cards()
    new = load_table(
        CARDS.replace("deadline_ms: 8", "deadline_ms: 10")
        .replace("percent: 100", "percent: 50")
        .replace("review_at: 0.5", "review_at: 0.6")
        .replace("channel: [ECOMMERCE, CARD_PRESENT]", "channel: [ECOMMERCE], country: [US]")
        .replace("salt: cards-2026-11", "salt: cards-2026-12")
        .replace("interval_s: 300", "interval_s: 600")
        .replace(
            "  - name: rest",
            "  - {name: atm, match: {channel: [ATM], amount_usd: {min: 0, max: 500}}, salt: a,"
            " arms: [{model: fraud-gbdt, version: 3, weight: 100}]}\n  - name: rest",
        )
    )
    assert RouteStore.diff(old, new) == [
        "cards: shadow fraud-mlp v1 100% -> 50%",
        "cards: match.channel [ECOMMERCE, CARD_PRESENT] -> [ECOMMERCE]",
        "cards: match.country [] -> [US]",
        "cards: salt cards-2026-11 -> cards-2026-12 (every sticky assignment reshuffles)",
        "cards: deadline_ms 8 -> 10",
        "cards: decision.review_at 0.5 -> 0.6",
        "cards: canary.interval_s 300 -> 600",
        "atm: route added (match channel=[ATM], amount_usd.min=0, amount_usd.max=500; "
        "arms fraud-gbdt v3 champion 100)",
    ]
    assert diff_tables(new, old)[0] == "atm: route removed"
    assert diff_tables(old, old) == []


def test_diff_of_arms_roles_thresholds_and_order() -> None:
    old = cards()
    promoted = CARDS.replace(
        "      - {model: fraud-gbdt, version: 3, weight: 90, role: champion}\n"
        "      - {model: fraud-gbdt, version: 4, weight: 10, role: canary}\n",
        "      - {model: fraud-gbdt, version: 4, weight: 95, role: champion}\n"
        "      - {model: fraud-gbdt, version: 5, weight: 5, role: challenger}\n",
    )
    promoted = promoted.replace(
        "    canary: {steps: [1, 5, 25, 50, 100], interval_s: 300, min_requests: 2000}\n", ""
    ).replace("    decision: {review_at: 0.5, decline_at: 0.9}\n", "")
    lines = diff_tables(old, load_table(promoted))
    assert lines[:3] == [
        "cards: fraud-gbdt v3 champion 90 removed",
        "cards: fraud-gbdt v4 canary 10 -> champion 95",
        "cards: fraud-gbdt v5 challenger 5 added",
    ]
    assert "cards: decision.review_at 0.5 -> (unset)" in lines
    assert "cards: canary.steps [1, 5, 25, 50, 100] -> (unset)" in lines
    reordered_text = """
routes:
  - {name: b, match: {channel: [ATM]}, salt: b, arms: [{model: m, version: 1, weight: 100}]}
  - {name: a, match: {channel: [WALLET]}, salt: a, arms: [{model: m, version: 1, weight: 100}]}
  - {name: z, salt: z, arms: [{model: m, version: 1, weight: 100}]}
"""
    reordered = load_table(reordered_text)
    original = RouteTable(routes=(reordered.routes[1], reordered.routes[0], reordered.routes[2]))
    assert diff_tables(original, reordered) == ["routes reordered: a, b, z -> b, a, z"]
    assert isinstance(reordered.routes[0], RouteSpec)
