"""Demo-model training: quality, reproducibility, ONNX parity and the model card."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from gateway.data.synth import write_dataset
from gateway.data.table import Table, read_table
from gateway.features import dispatch, reference
from gateway.features.columns import columns_from_transactions, transactions_from_table
from gateway.models import train
from gateway.models.card import CardError, ModelCard

ROWS = 30_000
SEED = 5


@dataclass(frozen=True)
class Trained:
    data: Path
    table: Table
    dirs: list[Path]
    cards: list[ModelCard]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    base = tmp_path_factory.mktemp("train")
    data = write_dataset(base / "data.csv", ROWS, SEED)
    dirs = train.train_demo_models(data, base / "models", SEED)
    cards = [ModelCard.load(d / "card.yaml") for d in dirs]
    return Trained(data=data, table=read_table(data), dirs=dirs, cards=cards)


def _rows(table: Table, mask: npt.NDArray[np.bool_]) -> Table:
    return {name: col[mask] for name, col in table.items()}


def test_writes_the_champion_and_the_challenger(trained: Trained) -> None:
    assert [(c.name, c.version) for c in trained.cards] == [("fraud-gbdt", 1), ("fraud-mlp", 1)]
    for d in trained.dirs:
        assert sorted(p.name for p in d.iterdir()) == ["card.yaml", "model.onnx"]
    assert trained.cards[0].feature_spec != trained.cards[1].feature_spec
    kinds = {f["transform"] for f in trained.cards[1].feature_spec["features"]}
    assert "standardize" in kinds


def test_models_beat_the_one_feature_baseline(trained: Trained) -> None:
    for card in trained.cards:
        m = card.metrics
        assert m.auc >= m.baseline_auc + train.MIN_AUC_LIFT, card.name
        assert 0.85 < m.auc < 0.995, card.name  # good, not implausibly perfect
        assert m.baseline_feature in card.feature_names
        assert m.positives > 20
        assert 0.0 < m.recall_at_decline <= m.recall_at_review
        assert 0.005 < m.review_rate + m.decline_rate < 0.06
        assert sum(b.count for b in m.calibration) == m.rows


def test_reruns_are_byte_identical(trained: Trained, tmp_path: Path) -> None:
    again = train.train_demo_models(trained.data, tmp_path, SEED)
    for first, second in zip(trained.dirs, again, strict=True):
        for name in ("model.onnx", "card.yaml"):
            assert (first / name).read_bytes() == (second / name).read_bytes(), (first, name)


def test_card_validates_and_round_trips(trained: Trained, tmp_path: Path) -> None:
    for card, d in zip(trained.cards, trained.dirs, strict=True):
        card.dump(tmp_path / "card.yaml")
        assert (tmp_path / "card.yaml").read_bytes() == (d / "card.yaml").read_bytes()
        assert ModelCard.from_dict(card.to_dict()) == card
        assert card.approved
        assert card.inputs.width == card.spec.width == len(card.feature_names)
        assert card.outputs.score.name == "probabilities"
        assert 0 < card.thresholds.review_at < card.thresholds.decline_at < 1


def test_card_records_lineage(trained: Trained) -> None:
    digest = "sha256:" + hashlib.sha256(trained.data.read_bytes()).hexdigest()
    for card in trained.cards:
        lineage = card.lineage
        assert lineage.training_data_digest == digest
        assert lineage.rows == ROWS and lineage.seed == SEED
        assert lineage.code_version.startswith("riskwire ")
        assert lineage.generator is not None
        assert lineage.generator["options"]["fraud_rate"] == 0.01
        split = lineage.split
        assert split.train_rows + split.validation_rows + split.held_out_rows == ROWS
        assert split.validation_start_ms < split.held_out_start_ms
        assert split.held_out_rows == card.metrics.rows


def test_held_out_rows_are_the_last_days(trained: Trained) -> None:
    split = train.split_by_time(trained.table["timestamp_ms"])
    ts = trained.table["timestamp_ms"]
    assert ts[split.train].max() < ts[split.validation].min()
    assert ts[split.validation].max() < ts[split.held_out].min()
    assert (split.train.astype(int) + split.validation + split.held_out == 1).all()
    assert split.held_out_start_ms % train.DAY_MS == 0


def test_fairness_reference_and_reason_codes(trained: Trained) -> None:
    for card in trained.cards:
        assert set(card.fairness) == {"age_band", "region"}
        age = card.fairness["age_band"]
        assert set(age) == {"18-24", "25-34", "35-49", "50-64", "65+"}
        assert sum(g.count for g in age.values()) == card.metrics.rows
        assert list(card.reference.features) == list(card.feature_names)
        for hist in [*card.reference.features.values(), card.reference.score]:
            assert len(hist.proportions) == len(hist.edges) + 1
            assert hist.proportions[0] == 0.0 and hist.proportions[-1] == 0.0
        assert len(card.reference.score.edges) == 11  # 10 quantile bins
        assert [f.name for f in card.spec.features] == list(card.reason_codes)
        assert card.reason_codes["velocity_1h"].code.startswith("R")


def _onnx_scores(model_dir: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    return train.onnx_scores((model_dir / "model.onnx").read_bytes(), x)


def test_serving_encodes_training_rows_identically(trained: Trained) -> None:
    """No training/serving skew: protobuf Transactions encode to the training matrix."""
    split = train.split_by_time(trained.table["timestamp_ms"])
    rng = np.random.default_rng(0)
    sample = split.held_out.copy()
    sample[rng.choice(np.flatnonzero(split.train), 1_500, replace=False)] = True
    sample |= trained.table["label"] == 1
    rows = _rows(trained.table, sample)
    txns = transactions_from_table(rows)
    for card in trained.cards:
        spec = card.spec
        training = train.encode_table(spec, trained.table)[sample]
        serving = reference.encode(spec, columns_from_transactions(txns, spec.sources))
        np.testing.assert_array_equal(serving, training)
        # Whichever encoder the gateway runs (native when built) gives the same rows.
        fast = dispatch.make_encoder(spec).encode(columns_from_transactions(txns, spec.sources))
        np.testing.assert_array_equal(fast, training)


def test_onnx_output_is_the_reference_encoded_prediction(trained: Trained) -> None:
    split = train.split_by_time(trained.table["timestamp_ms"])
    held = _rows(trained.table, split.held_out)
    txns = transactions_from_table(held)
    for card, d in zip(trained.cards, trained.dirs, strict=True):
        x = reference.encode(card.spec, columns_from_transactions(txns, card.spec.sources))
        scores = _onnx_scores(d, x)
        assert ((scores >= 0) & (scores <= 1)).all()
        # The card's metrics are exactly what these served scores give.
        assert round(train.auc(held["label"], scores), 6) == card.metrics.auc
        declined = scores >= card.thresholds.decline_at
        assert round(float(declined.mean()), 6) == card.metrics.decline_rate


def test_onnx_mismatch_fails_loudly(trained: Trained) -> None:
    x = train.encode_table(trained.cards[0].spec, _rows(trained.table, np.arange(ROWS) < 50))
    onnx_bytes = (trained.dirs[0] / "model.onnx").read_bytes()
    native = train.onnx_scores(onnx_bytes, x)
    train.check_onnx("fraud-gbdt", onnx_bytes, x, native)
    with pytest.raises(RuntimeError, match="disagrees with the native model"):
        train.check_onnx("fraud-gbdt", onnx_bytes, x, native + 1e-4)


def test_onnx_has_one_input_and_one_output(trained: Trained) -> None:
    import onnx

    for d in trained.dirs:
        model = onnx.load(d / "model.onnx")
        assert [i.name for i in model.graph.input] == ["features"]
        assert [o.name for o in model.graph.output] == ["probabilities"]
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[1].dim_value == ModelCard.load(d / "card.yaml").inputs.width


def _card_dict(trained: Trained) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((trained.dirs[0] / "card.yaml").read_text())
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("thresholds", "review_at"), 0.99, "review_at .* must be below decline_at"),
        (("thresholds", "decline_at"), 1.5, "thresholds.decline_at"),
        (("version",), 0, "version"),
        (("name",), "Fraud GBDT", "name"),
        (("feature_names",), ["a"], "feature_names must equal"),
        (("inputs", "width"), 3, "inputs.width is 3"),
        (("approval",), {"status": "approved"}, "needs an approver and a date"),
        (("lineage", "training_data_digest"), "abc", "sha256"),
        (("metrics", "auc"), 1.5, "metrics.auc"),
        (("reference", "score", "proportions"), [1.0], "len\\(edges\\) \\+ 1"),
        (("reason_codes", "nope"), {"code": "R99", "description": "x"}, "not in the spec"),
        (("surprise",), 1, "surprise"),
    ],
)
def test_invalid_cards_fail_with_the_key_named(
    trained: Trained, path: tuple[str, ...], value: Any, message: str
) -> None:
    data = _card_dict(trained)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(CardError, match=message):
        ModelCard.from_dict(data, source="card.yaml")


def test_load_reports_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(CardError, match="cannot read"):
        ModelCard.load(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(CardError, match="not valid YAML"):
        ModelCard.load(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(CardError, match="must be a mapping"):
        ModelCard.load(tmp_path / "list.yaml")


def test_auc_matches_the_pairwise_definition() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 20, 300).astype(np.float64)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert train.auc(y, s) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)
    with pytest.raises(ValueError, match="both"):
        train.auc(np.zeros(3), np.ones(3))


def test_histogram_bins() -> None:
    binary = train.histogram(np.array([0.0, 1.0, 1.0, 0.0, 1.0]))
    assert binary.edges[:2] == (0.0, 1.0) and binary.edges[2] > 1.0
    assert binary.proportions == (0.0, 0.4, 0.6, 0.0)
    spread = train.histogram(np.arange(1000, dtype=np.float64))
    assert len(spread.edges) == 11
    assert spread.proportions[1:-1] == pytest.approx((0.1,) * 10, abs=0.002)


def test_prepare_demo_repository_trains_only_when_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Path, Path, int]] = []

    def fake_train(data: Path, out_dir: Path, seed: int) -> list[Path]:
        calls.append((data, out_dir, seed))
        for name in (train.GBDT_NAME, train.MLP_NAME):
            (out_dir / name / "1").mkdir(parents=True)
            (out_dir / name / "1" / "model.onnx").write_bytes(b"x")
            (out_dir / name / "1" / "card.yaml").write_text("x")
        return []

    monkeypatch.setattr(train, "train_demo_models", fake_train)
    models, data = tmp_path / "models", tmp_path / "data"
    train.prepare_demo_repository(models, data, rows=1_000, seed=3)
    assert calls == [(data / "transactions-1000-3.csv", models, 3)]
    assert (data / "transactions-1000-3.csv").is_file()
    train.prepare_demo_repository(models, data, rows=1_000, seed=3)
    assert len(calls) == 1
