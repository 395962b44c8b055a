"""Reason codes: occlusion against the card's reference values, on real ONNX Runtime.

Tiny hand-made ONNX models (a linear score, and the same behind a sigmoid) give
attributions whose exact value is known in closed form; the demo models check that
every reason carries its card's code and agrees with a one-at-a-time occlusion; a real
repository behind a real data plane checks who asks for reasons and who gets them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from gateway.backends.onnxruntime import OrtModel
from gateway.data.synth import SynthOptions, generate
from gateway.dataplane import DataPlane, DecisionSource, ScoreOptions
from gateway.explain import Explainer, Reason, histogram_median
from gateway.features import hashing
from gateway.features.columns import columns_from_table, transactions_from_table
from gateway.features.reference import encode
from gateway.features.spec import FeatureSpec, feature_output_names, parse_feature_spec
from gateway.grpc.converters import batch_from_transactions
from gateway.models.card import Histogram, ModelCard, ReasonCode
from gateway.models.repository import ModelRepository
from gateway.models.train import histogram
from gateway.settings import BatchingSettings
from riskwire.v1 import scoring_pb2 as pb
from router.routes import load_table
from router.store import RouteStore

SPEC = parse_feature_spec(
    {
        "version": "explain-test-1",
        "features": [
            {"name": "amount", "transform": "identity", "source": "amount_usd", "default": -1.0},
            {"name": "mcc", "transform": "one_hot", "source": "merchant_category_code",
             "vocabulary": ["5411", "7995"]},
            {"name": "hour", "transform": "cyclical", "source": "timestamp_ms",
             "period": "hour_of_day"},
            {"name": "geo", "transform": "differs", "sources": ["country", "ip_country"]},
            {"name": "velocity", "transform": "identity",
             "source": "numeric_extras.txn_count_1h"},
        ],
    }
)  # fmt: skip
WIDTH = SPEC.width  # 1 + 3 + 2 + 1 + 1
CODES = {
    f.name: ReasonCode(code=f"R{i:02d}", description=f"{f.name} is unusual")
    for i, f in enumerate(SPEC.features, start=1)
}
HOUR_MS = 3_600_000
DAY0_MS = 1_700_006_400_000  # a UTC midnight


def columns(n: int, seed: int) -> dict[str, npt.NDArray[Any]]:
    """Training-like sources: amount 1..n (shuffled), mostly-zero velocity, 5411 the
    commonest merchant category, hours 22:00-02:00 around midnight, one country in five
    abroad."""
    rng = np.random.default_rng(seed)
    mcc = rng.choice(["5411", "7995", "0000"], size=n, p=[0.45, 0.25, 0.30])
    hours = rng.choice([-2, 0, 2], size=n, p=[0.3, 0.4, 0.3])
    abroad = rng.random(n) < 0.2
    velocity = np.where(rng.random(n) < 0.7, 0.0, rng.integers(1, 6, size=n))
    return {
        "amount_usd": rng.permutation(np.arange(1, n + 1, dtype=np.float64)),
        "merchant_category_code": mcc.astype(object),
        "timestamp_ms": (DAY0_MS + hours * HOUR_MS).astype(np.float64),
        "country": np.full(n, "US", dtype=object),
        "ip_country": np.where(abroad, "RO", "US").astype(object),
        "numeric_extras.txn_count_1h": velocity.astype(np.float64),
    }


def reference_histograms(spec: FeatureSpec, x: npt.NDArray[np.float32]) -> dict[str, Histogram]:
    """What the trainer writes in card.yaml: one histogram per output column."""
    return {name: histogram(x[:, j]) for j, name in enumerate(spec.output_names)}


@pytest.fixture(scope="module")
def training() -> npt.NDArray[np.float32]:
    return encode(SPEC, columns(1001, seed=3))


@pytest.fixture(scope="module")
def explainer(training: npt.NDArray[np.float32]) -> Explainer:
    return Explainer(SPEC, reference_histograms(SPEC, training), CODES)


@pytest.fixture(scope="module")
def live() -> npt.NDArray[np.float32]:
    """Rows to explain: a different sample from the same sources."""
    return encode(SPEC, columns(200, seed=4))


def linear_model(
    path: Path, weights: npt.NDArray[np.float32], bias: float, sigmoid: bool = False
) -> OrtModel:
    """An ONNX model scoring ``x @ weights + bias`` (through a sigmoid when asked)."""
    w = numpy_helper.from_array(weights.reshape(-1, 1).astype(np.float32), "w")
    b = numpy_helper.from_array(np.array([bias], dtype=np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["features", "w"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z" if sigmoid else "score"]),
    ]
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", ["z"], ["score"]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, len(weights)])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [None, 1])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8  # what this onnxruntime reads
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return OrtModel(path, input_name="features", score_output="score", score_column=0)


def columns_of(spec: FeatureSpec) -> dict[str, slice]:
    """Each spec feature's columns, from the spec's own output names."""
    out = {}
    start = 0
    for feature in spec.features:
        stop = start + len(feature_output_names(feature))
        out[feature.name] = slice(start, stop)
        start = stop
    return out


# --------------------------------------------------------------------------- references


def test_reference_values_follow_the_training_distribution(
    explainer: Explainer, training: npt.NDArray[np.float32]
) -> None:
    ref = dict(zip(SPEC.output_names, explainer.reference.tolist(), strict=True))
    # Decile-binned amounts: the lower edge of the median's bin is the median itself.
    assert ref["amount"] == np.median(training[:, 0]) == 501.0
    # Mostly zero: the median count, not an interpolated 0.7 of a transaction.
    assert ref["velocity"] == 0.0
    # 5411 is the commonest category: its one-hot vector, all of it.
    assert [ref["mcc=5411"], ref["mcc=7995"], ref["mcc=<OOV>"]] == [1.0, 0.0, 0.0]
    assert ref["geo"] == 0.0
    # 22:00, 00:00 and 02:00: the medians are sin 0 and cos 0.87, off the circle; the
    # reference is midnight, an hour that exists.
    midnight = encode(SPEC, columns(1, seed=0) | {"timestamp_ms": np.array([float(DAY0_MS)])})
    np.testing.assert_allclose(
        [ref["hour_sin"], ref["hour_cos"]], midnight[0, 4:6], rtol=0, atol=1e-6
    )


def test_median_of_a_histogram_is_a_median_of_its_values() -> None:
    rng = np.random.default_rng(5)
    samples = (
        rng.lognormal(3.0, 1.0, 2001),
        rng.lognormal(3.0, 1.0, 2000),  # even: the median is an edge with half below it
        rng.integers(0, 7, 999).astype(np.float64),
    )
    for values in samples:
        assert histogram_median(histogram(values)) == np.median(values)


def test_columns_without_a_histogram_take_the_encoding_of_a_missing_value() -> None:
    bare = Explainer(SPEC, {}, CODES)
    missing = encode(
        SPEC,
        {
            "amount_usd": np.array([np.nan]),
            "merchant_category_code": np.array([""], dtype=object),
            "timestamp_ms": np.array([np.nan]),
            "country": np.array([""], dtype=object),
            "ip_country": np.array([""], dtype=object),
            "numeric_extras.txn_count_1h": np.array([np.nan]),
        },
    )
    np.testing.assert_array_equal(bare.reference, missing[0])
    assert bare.reference[0] == -1.0  # the feature's default, not 0


# --------------------------------------------------------------------------- attributions


def test_a_linear_score_gets_exact_contributions(
    explainer: Explainer, live: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    weights = rng.normal(0.0, 1.0, WIDTH).astype(np.float32)
    model = linear_model(tmp_path / "linear.onnx", weights, 0.25)

    got = explainer.contributions(model.score, live)

    delta = (live.astype(np.float64) - explainer.reference) * weights
    expected = np.column_stack([delta[:, s].sum(axis=1) for s in columns_of(SPEC).values()])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # A feature at its reference value moves nothing, exactly, and costs no model row.
    at_reference = np.column_stack(
        [(live[:, s] == explainer.reference[s]).all(axis=1) for s in columns_of(SPEC).values()]
    )
    assert at_reference.any() and (~at_reference).any()
    assert (got[at_reference] == 0.0).all()
    rows, _, _ = explainer.occlusion_rows(live)
    assert rows.shape[0] == len(live) + int((~at_reference).sum())


def test_a_sigmoid_score_gets_the_difference_of_probabilities(
    explainer: Explainer, live: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    weights = np.array([0.01, -1.0, 2.0, 0.5, 0.3, -0.2, 1.5, 0.4], dtype=np.float32)
    model = linear_model(tmp_path / "sigmoid.onnx", weights, -3.0, sigmoid=True)

    got = explainer.contributions(model.score, live)

    x = live.astype(np.float64)
    z = x @ weights.astype(np.float64) - 3.0
    delta = (x - explainer.reference) * weights
    expected = np.column_stack(
        [
            1 / (1 + np.exp(-z)) - 1 / (1 + np.exp(-(z - delta[:, s].sum(axis=1))))
            for s in columns_of(SPEC).values()
        ]
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_a_one_hot_feature_moves_as_one_and_is_named_once(
    explainer: Explainer, tmp_path: Path
) -> None:
    # Only the merchant category scores: 5411 (the reference) 0, 7995 +2, other +0.5.
    weights = np.zeros(WIDTH, dtype=np.float32)
    weights[1:4] = [0.0, 2.0, 0.5]
    model = linear_model(tmp_path / "mcc.onnx", weights, 0.0)
    rows = np.tile(explainer.reference, (3, 1))
    rows[:, 1:4] = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]  # 5411, 7995, other

    reasons = explainer.explain(model.score, rows, top_k=4)

    assert reasons[0] == ()  # at the reference: nothing to explain
    assert reasons[1] == (Reason("R02", "mcc", 2.0, "mcc is unusual"),)
    assert reasons[2] == (Reason("R02", "mcc", 0.5, "mcc is unusual"),)


def test_reasons_come_positive_first_then_negative_without_zeros(
    explainer: Explainer,
) -> None:
    contributions = np.array(
        [
            [0.1, -0.5, 0.0, 0.3, -0.2],
            [0.0, 0.0, 0.0, 0.0, 0.0],
            [-0.1, -0.3, 0.0, 0.0, 0.0],
            [0.2, 0.2, -0.2, 0.0, 0.0],  # ties keep spec order
        ]
    )
    four = explainer.reasons(contributions, top_k=4)
    assert [[(r.feature, r.contribution) for r in row] for row in four] == [
        [("geo", 0.3), ("amount", 0.1), ("mcc", -0.5), ("velocity", -0.2)],
        [],
        [("mcc", -0.3), ("amount", -0.1)],
        [("amount", 0.2), ("mcc", 0.2), ("hour", -0.2)],
    ]
    two = explainer.reasons(contributions, top_k=2)
    assert [[r.feature for r in row] for row in two] == [
        ["geo", "amount"],
        [],
        ["mcc", "amount"],
        ["amount", "mcc"],
    ]
    assert all(r.code == CODES[r.feature].code for row in four for r in row)


def test_features_without_a_code_are_neither_perturbed_nor_reported(
    training: npt.NDArray[np.float32], live: npt.NDArray[np.float32], tmp_path: Path
) -> None:
    codes = {name: rc for name, rc in CODES.items() if name != "amount"}
    partial = Explainer(SPEC, reference_histograms(SPEC, training), codes)
    weights = np.ones(WIDTH, dtype=np.float32)
    model = linear_model(tmp_path / "ones.onnx", weights, 0.0)

    reasons = partial.explain(model.score, live, top_k=5)

    assert partial.features == ("mcc", "hour", "geo", "velocity")
    assert all(r.feature != "amount" for row in reasons for r in row)
    rows, row_of, _ = partial.occlusion_rows(live)
    # Every live amount but one differs from the median, yet no row replaces it.
    assert (live[:, 0] != partial.reference[0]).sum() >= len(live) - 1
    np.testing.assert_array_equal(rows[len(live) :, 0], live[row_of, 0])


# --------------------------------------------------------------------------- demo models


@pytest.mark.parametrize("name", ["fraud-gbdt", "fraud-mlp"])
def test_demo_model_reasons_carry_card_codes_and_match_single_occlusions(
    name: str, model_repository: Path
) -> None:
    path = model_repository / name / "1"
    card = ModelCard.load(path / "card.yaml")
    spec = parse_feature_spec(card.feature_spec)
    model = OrtModel(
        path / "model.onnx",
        input_name=card.inputs.name,
        score_output=card.outputs.score.name,
        score_column=card.outputs.score.column,
    )
    table = generate(300, 4321, SynthOptions(fraud_rate=0.05))
    x = encode(spec, columns_from_table(table, spec.sources))
    explainer = Explainer.from_card(card)

    reasons = explainer.explain(model.score, x, top_k=4)

    assert len(reasons) == len(x)
    assert sum(len(row) for row in reasons) > len(x)  # over one reason per row on average
    for row in reasons:
        assert len(row) <= 4
        signs = [r.contribution > 0 for r in row]
        assert signs == sorted(signs, reverse=True)  # positive ones first
        for r in row:
            assert r.contribution != 0.0
            assert r.code == card.reason_codes[r.feature].code
            assert r.description == card.reason_codes[r.feature].description
    # The riskiest row leads with what raised its score.
    riskiest = int(np.argmax(model.score(x)))
    assert reasons[riskiest] and reasons[riskiest][0].contribution > 0
    # Each reason is f(x) - f(x with that feature at the reference), one row at a time.
    where = columns_of(spec)
    for i in range(0, len(x), 15):
        for r in reasons[i]:
            moved = x[i].copy()
            moved[where[r.feature]] = explainer.reference[where[r.feature]]
            f_x, f_moved = model.score(np.stack([x[i], moved]))
            assert r.contribution == pytest.approx(f_x - f_moved, abs=1e-5)


# --------------------------------------------------------------------------- data plane

ROUTES = """
routes:
  - name: explained
    match: {channel: [ATM]}
    salt: e
    deadline_ms: 5000
    explain: true
    explain_top_k: 2
    arms: [{model: fraud-mlp, version: 1, weight: 100}]
  - name: late
    match: {channel: [TRANSFER]}
    salt: l
    deadline_ms: 0.001
    arms: [{model: fraud-gbdt, version: 1, weight: 100}]
    fallback: {on: [timeout], decision: REVIEW}
  - name: default
    salt: d
    deadline_ms: 5000
    arms: [{model: fraud-gbdt, version: 1, weight: 100}]
"""


def transactions(channel: int, n: int) -> list[Any]:
    txns = transactions_from_table(generate(max(n, 100), 99, SynthOptions(fraud_rate=0.2)))[:n]
    for txn in txns:
        txn.channel = channel
    return txns


def test_data_plane_explains_when_the_request_or_the_route_asks(model_repository: Path) -> None:
    async def run() -> None:
        repository = ModelRepository(model_repository, BatchingSettings(warmup_batches=1), "python")
        for name in ("fraud-gbdt", "fraud-mlp"):
            await repository.load(name, 1)
        plane = DataPlane(repository, RouteStore(load_table(ROUTES)), hashing.bucket)
        try:
            ecommerce = batch_from_transactions(transactions(pb.ECOMMERCE, 40))
            plain = await plane.score(ecommerce, ScoreOptions())
            asked = await plane.score(ecommerce, ScoreOptions(explain=True))
            atm = await plane.score(
                batch_from_transactions(transactions(pb.ATM, 40)), ScoreOptions()
            )
            late = await plane.score(
                batch_from_transactions(transactions(pb.TRANSFER, 3)), ScoreOptions(explain=True)
            )
            # The same rows through the worker thread give the same reasons.
            plane.explainers.inline_max_rows = 0
            threaded = await plane.score(ecommerce, ScoreOptions(explain=True))
        finally:
            await repository.close()

        assert all(r.reason_codes == () for r in plain)
        assert [r.score for r in asked] == [r.score for r in plain]
        assert sum(len(r.reason_codes) for r in asked) > len(asked)
        assert all(len(r.reason_codes) <= 4 for r in asked)  # the route's default top-k
        assert [r.reason_codes for r in threaded] == [r.reason_codes for r in asked]
        gbdt = repository_card(model_repository, "fraud-gbdt")
        mlp = repository_card(model_repository, "fraud-mlp")
        assert all(rc.code == gbdt[rc.feature] for r in asked for rc in r.reason_codes)
        # The route's own flag, without the request's, and its top-k of 2.
        assert all(r.route == "explained" and r.source is DecisionSource.MODEL for r in atm)
        assert any(r.reason_codes for r in atm)
        assert all(len(r.reason_codes) <= 2 for r in atm)
        assert all(rc.code == mlp[rc.feature] for r in atm for rc in r.reason_codes)
        # A fallback answer has no model score to explain.
        assert [r.source for r in late] == [DecisionSource.FALLBACK] * 3
        assert all(r.reason_codes == () for r in late)

    asyncio.run(run())


def repository_card(root: Path, name: str) -> Mapping[str, str]:
    card = ModelCard.load(root / name / "1" / "card.yaml")
    return {feature: rc.code for feature, rc in card.reason_codes.items()}
