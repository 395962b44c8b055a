"""The split, stickiness, ramp stability and salt independence, over 100,000 keys.

Each test judges the reference hash (gateway.features.hashing.bucket) and decide()
with a significance test at alpha = 0.001 instead of hard-coded counts, and checks
that the test has the power to reject a split that is slightly off. The hash is
deterministic, so these tests are too: a failure means a real change in the hash or
the layout, never bad luck on a rerun.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable

import pytest
from scipy import stats

from gateway.features.hashing import bucket
from router.routes import RouteTable, decide, load_table

ALPHA = 0.001
N = 100_000
KEYS = [{"account_id": f"acct-{i:06d}"} for i in range(N)]

HASHED = functools.cache(bucket)
"""The reference hash, computed once per (salt, key) for the whole module: the values
are the hash's own; only the pure-Python cost is paid once. The stickiness test calls
``bucket`` itself again."""


def table(arms: str, salt: str = "cards-2026-11", canary: bool = False) -> RouteTable:
    spec = "    canary: {}\n" if canary else ""
    return load_table(f"routes:\n  - name: r\n    salt: {salt}\n    arms: {arms}\n{spec}")


def arms_of(
    routes: RouteTable, bucket_of: Callable[[str, str], int]
) -> tuple[tuple[str, int], ...]:
    """Each key's arm as (model, version)."""
    chosen = []
    for keys in KEYS:
        arm = decide(routes, keys, bucket_of).arm
        chosen.append((arm.model, arm.version))
    return tuple(chosen)


@functools.cache
def assigned(routes: RouteTable) -> tuple[tuple[str, int], ...]:
    """``arms_of`` with the module's hash, once per table (tables are frozen)."""
    return arms_of(routes, HASHED)


SPLITS = {
    "90/10": "[{model: a, version: 1, weight: 90},"
    " {model: b, version: 1, weight: 10, role: challenger}]",
    "50/30/20": "[{model: a, version: 1, weight: 50},"
    " {model: b, version: 1, weight: 30, role: challenger},"
    " {model: c, version: 1, weight: 20, role: challenger}]",
}


@pytest.mark.parametrize(("split", "weights"), [("90/10", [90, 10]), ("50/30/20", [50, 30, 20])])
def test_the_split_follows_the_weights(split: str, weights: list[int]) -> None:
    counts = Counter(model for model, _ in assigned(table(SPLITS[split])))
    observed = [counts[m] for m in "abc"[: len(weights)]]
    expected = [N * w / 100 for w in weights]
    result = stats.chisquare(observed, expected)
    print(f"{split}: observed {observed}, chi2 {result.statistic:.3f}, p {result.pvalue:.4f}")
    assert result.pvalue > ALPHA
    # Power: a split one point off is rejected at once.
    off = [w + (1 if i == 0 else -1 if i == 1 else 0) for i, w in enumerate(weights)]
    assert stats.chisquare(observed, [N * w / 100 for w in off]).pvalue < 1e-6


def test_buckets_are_uniform() -> None:
    # 100 bins of 100 buckets each: the hash itself, under decide()'s arms.
    counts = Counter(HASHED("cards-2026-11", k["account_id"]) // 100 for k in KEYS)
    result = stats.chisquare([counts[b] for b in range(100)])
    print(f"buckets: chi2 {result.statistic:.1f} on 99 df, p {result.pvalue:.4f}")
    assert result.pvalue > ALPHA


def test_assignments_are_sticky_across_calls_and_reloads() -> None:
    routes = table(SPLITS["50/30/20"])
    first = assigned(routes)
    # The same table again, the hash computed afresh: the first 20,000 keys suffice.
    for keys, arm in zip(KEYS[:20_000], first, strict=False):
        again = decide(routes, keys, bucket).arm
        assert (again.model, again.version) == arm
    # A table reloaded from its YAML, every key, the hash computed afresh again.
    reloaded = load_table(routes.to_yaml())
    assert reloaded is not routes
    assert arms_of(reloaded, bucket) == first


@pytest.mark.parametrize(
    "others",
    [
        "",
        # A challenger written between champion and canary: the layout still puts the
        # canary next to the champion, so the challenger's entities never move.
        "{model: x, version: 1, weight: 30, role: challenger}, ",
    ],
)
def test_raising_the_canary_moves_champion_entities_only(others: str) -> None:
    challenger = 30 if others else 0

    def ramp(canary: int) -> RouteTable:
        champion = 100 - challenger - canary
        return table(
            f"[{{model: a, version: 3, weight: {champion}, role: champion}}, {others}"
            f"{{model: a, version: 4, weight: {canary}, role: canary}}]",
            canary=True,
        )

    before = assigned(ramp(10))
    after = assigned(ramp(20))
    moves = Counter((b, a) for b, a in zip(before, after, strict=True) if b != a)
    assert set(moves) <= {(("a", 3), ("a", 4))}, moves
    moved = moves[("a", 3), ("a", 4)]
    champions_before = before.count(("a", 3))
    # Every key moves with chance 10% (the buckets 10 points wide that change hands).
    test = stats.binomtest(moved, N, 0.10)
    # Of the champion's keys, 10 of its 90 (or 60) points move.
    share = 10 / (90 - challenger)
    within = stats.binomtest(moved, champions_before, share)
    print(
        f"ramp 10->20 (challenger {challenger}): moved {moved} of {N} = {moved / N:.4f},"
        f" p {test.pvalue:.4f}; of the champion's {champions_before}:"
        f" {moved / champions_before:.4f} (expected {share:.4f}), p {within.pvalue:.4f}"
    )
    assert test.pvalue > ALPHA
    assert within.pvalue > ALPHA
    assert stats.binomtest(moved, N, 0.11).pvalue < 1e-6  # power: 11% is rejected


@pytest.mark.parametrize(("split", "levels"), [("90/10", 2), ("50/30/20", 3)])
def test_different_salts_give_independent_assignments(split: str, levels: int) -> None:
    one = assigned(table(SPLITS[split], salt="cards-2026-11"))
    two = assigned(table(SPLITS[split], salt="cards-2026-12"))
    models = "abc"[:levels]
    pairs = Counter(zip(one, two, strict=True))
    contingency = [[pairs[(m, 1), (n, 1)] for n in models] for m in models]
    result = stats.chi2_contingency(contingency, correction=False)
    print(f"salts {split}: {contingency}, chi2 {result.statistic:.3f}, p {result.pvalue:.4f}")
    assert result.pvalue > ALPHA
    # Power: had the salt been ignored, every key would sit on the diagonal.
    same = [[N // 2, 0], [0, N // 2]]
    assert stats.chi2_contingency(same, correction=False).pvalue < 1e-6
