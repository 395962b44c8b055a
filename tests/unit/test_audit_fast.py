"""The decision record's direct serializer against the reference (json.dumps).

``decision_json`` writes a decision payload's canonical bytes without building and
serializing an object; a verifier recomputes every digest from the line, so a single
byte of difference from ``canonical(decision_payload(...))`` would be a broken chain.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audit.records import GENESIS, CanonicalJSON, canonical, parse_record, seal
from gateway.audit.sink import decision_json, decision_payload
from gateway.dataplane import FallbackReason, ScoreResult
from gateway.decisions import DecisionSource
from gateway.explain import Reason
from router.routes import ArmRole, Decision

texts = st.text(st.characters(exclude_categories=()), max_size=24)  # lone surrogates too
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
ints = st.integers(min_value=-(2**70), max_value=2**70)

reasons = st.builds(Reason, texts, texts, floats, texts)
results = st.builds(
    ScoreResult,
    transaction_id=texts,
    score=floats,
    decision=st.sampled_from(list(Decision)),
    model_name=texts,
    model_version=ints,
    arm=st.sampled_from(list(ArmRole)),
    source=st.sampled_from(list(DecisionSource)),
    route=texts,
    config_version=ints,
    fallback_reason=st.none() | st.sampled_from(list(FallbackReason)),
    reason_codes=st.lists(reasons, max_size=3).map(tuple),
)
keys = st.fixed_dictionaries(
    {},
    optional={
        "merchant_category_code": texts,
        "channel": texts,
        "country": texts,
        "account_id": texts,
    },
)


@settings(max_examples=400, deadline=None)
@given(results, st.tuples(texts, texts, texts), ints, texts, keys, ints)
def test_direct_bytes_equal_the_reference(
    result: ScoreResult,
    ids: tuple[str, str, str],
    amount: int,
    currency: str,
    routing: dict[str, str],
    latency_us: int,
) -> None:
    fast = decision_json(result, ids, amount, currency, routing, latency_us)
    assert fast is not None
    assert bytes(fast) == canonical(
        decision_payload(result, ids, amount, currency, routing, latency_us)
    )


def result(**changes: Any) -> ScoreResult:
    base: dict[str, Any] = {
        "transaction_id": "tx-1",
        "score": 0.25,
        "decision": Decision.APPROVE,
        "model_name": "fraud-gbdt",
        "model_version": 1,
        "arm": ArmRole.CHAMPION,
        "source": DecisionSource.MODEL,
        "route": "default",
        "config_version": 3,
        "reason_codes": (Reason("R01", "amount_usd", -0.0, "small"),),
    }
    return ScoreResult(**{**base, **changes})


@pytest.mark.parametrize(
    "changes",
    [
        {"score": np.float32(0.25)},  # not a float: json.dumps refuses it
        {"score": np.float64(0.25)},  # a float subclass: left to json.dumps
        {"model_version": True},  # json writes true, not 1
        {"config_version": np.int64(3)},
        {"reason_codes": (Reason("R01", "amount_usd", np.float32(0.5), ""),)},
    ],
    ids=["float32", "float64", "bool", "int64", "float32-contribution"],
)
def test_values_of_other_types_go_to_the_reference(changes: dict[str, Any]) -> None:
    ids = ("a" * 32, "b" * 32, "")
    assert decision_json(result(**changes), ids, 100, "USD", {}, 5) is None
    assert decision_json(result(), ids, np.int64(100), "USD", {}, 5) is None
    assert decision_json(result(), ids, 100, "USD", {}, 5) is not None


@settings(max_examples=100, deadline=None)
@given(results, ints.filter(lambda v: v >= 0), st.integers(0, 2**40), st.integers(0, 255))
def test_a_record_sealed_around_direct_bytes_is_the_reference_record(
    result: ScoreResult, seq: int, ts_ms: int, worker: int
) -> None:
    ids = ("a" * 32, "b" * 32, "c" * 32)
    routing = {"channel": "ECOMMERCE", "country": "DE", "merchant_category_code": "5411"}
    fast = decision_json(result, ids, 1999, "EUR", routing, 812)
    assert isinstance(fast, CanonicalJSON)
    payload = decision_payload(result, ids, 1999, "EUR", routing, 812)
    common: dict[str, Any] = {
        "seq": seq,
        "ts_ms": ts_ms,
        "kind": "decision",
        "worker": worker,
        "key_id": "0123abcd",
        "prev": GENESIS,
    }
    assert seal(payload=fast, **common) == seal(payload=payload, **common)
    digest, line = seal(payload=fast, **common)
    # NaN and infinities are written as their names: every record parses back, in
    # canonical form, its digest right.
    record = parse_record(line[:-1])
    assert record["digest"] == digest
