"""Governance gates and approval, on models trained here and real ONNX Runtime sessions.

The demo models are trained small (30k rows) into a temporary repository; the gates
then rebuild their held-out split from the card's lineage as ``riskwire models
validate`` does. Models that must fail one gate are made from them by real edits (a
swapped model.onnx, a card in the wrong directory, a graph of the wrong width), and
the one model that passes every gate is a real ONNX graph that flags everyone, which
treats every group alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from gateway.audit import AuditSettings, AuditWriter, verify
from gateway.audit.chain import list_segments
from gateway.cli import build_parser, main
from gateway.data.synth import write_dataset
from gateway.governance_cli import GOVERNANCE_AUDIT_WORKER
from gateway.models import governance, train
from gateway.models.card import ModelCard
from gateway.models.governance import (
    ApprovalRecord,
    ApprovalRefused,
    HeldOutData,
    ValidationOptions,
    approve,
    attribute_fairness,
    validate,
)
from gateway.server import Server
from gateway.settings import Settings
from router.routes import load_table

ROWS = 30_000
SEED = 5
FLAT = "fraud-flat"
FLAT_WEIGHT = 1e-6


def train_repository(base: Path) -> Path:
    """Train the demo models on ROWS generated rows; returns the repository root."""
    data = write_dataset(base / "data.csv", ROWS, SEED)
    models = base / "models"
    train.train_demo_models(data, models, SEED)
    return models


def flat_model(width: int, weight: float = FLAT_WEIGHT) -> bytes:
    """An ONNX graph scoring sigmoid(weight * sum(x)): just above 0.5 for every row."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["fraud"]),
            helper.make_node("Sub", ["one", "fraud"], ["legit"]),
            helper.make_node("Concat", ["legit", "fraud"], ["probabilities"], axis=1),
        ],
        "flat",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
        [
            helper.make_tensor("w", TensorProto.FLOAT, [width, 1], [weight] * width),
            helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    data: bytes = model.SerializeToString()
    return data


def flat_scores(rows: npt.NDArray[np.float64], weight: float = FLAT_WEIGHT) -> list[float]:
    """The flat model's scores, computed here without ONNX."""
    return [float(s) for s in 1.0 / (1.0 + np.exp(-(rows @ np.full(rows.shape[1], weight))))]


def add_flat_model(models: Path, approval: str = "pending") -> Path:
    """``fraud-flat`` v1: the champion's card and spec, a flat graph: every row flagged
    for REVIEW (scores above 0.5 >= 0.2), none declined (below 0.9)."""
    source = ModelCard.load(models / train.GBDT_NAME / "1" / "card.yaml")
    assert source.golden is not None
    rows = np.asarray(source.golden.rows, dtype=np.float32).astype(np.float64)
    data = source.to_dict()
    data.update(
        name=FLAT,
        thresholds={"review_at": 0.2, "decline_at": 0.9},
        golden={**data["golden"], "scores": flat_scores(rows)},
        approval={"status": approval},
    )
    target = models / FLAT / "1"
    target.mkdir(parents=True)
    ModelCard.from_dict(data).dump(target / "card.yaml")
    (target / "model.onnx").write_bytes(flat_model(source.inputs.width))
    return target


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained repository; tests copy it before changing anything."""
    models = train_repository(tmp_path_factory.mktemp("governance"))
    add_flat_model(models)
    return models


@pytest.fixture(scope="module")
def held_out() -> HeldOutData:
    """Rebuilt training tables, shared so that the data is regenerated once."""
    return HeldOutData()


@pytest.fixture
def repo(trained: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "models"
    shutil.copytree(trained, copy)
    return copy


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- training


def test_training_records_golden_vectors_from_the_held_out_split(trained: Path) -> None:
    for name in (train.GBDT_NAME, train.MLP_NAME):
        directory = trained / name / "1"
        card = ModelCard.load(directory / "card.yaml")
        golden = card.golden
        assert golden is not None
        assert 8 <= len(golden.rows) <= train.GOLDEN_ROWS
        assert golden.tolerance == train.ONNX_TOLERANCE
        rows = np.asarray(golden.rows, dtype=np.float32)
        scores = train.onnx_scores((directory / "model.onnx").read_bytes(), rows)
        np.testing.assert_array_equal(scores, np.asarray(golden.scores))
        # The rows span the scores: typical traffic and the rare high scores.
        assert min(golden.scores) < card.thresholds.review_at < max(golden.scores)


def test_a_card_without_golden_vectors_loads_and_dumps_as_written(trained: Path) -> None:
    data = yaml.safe_load((trained / train.GBDT_NAME / "1" / "card.yaml").read_text())
    del data["golden"]
    card = ModelCard.from_dict(data)
    assert card.golden is None
    assert "golden" not in card.to_yaml()
    assert yaml.safe_load(card.to_yaml()) == data


# --------------------------------------------------------------------------- gates


def test_the_demo_models_fail_only_the_fairness_gate(trained: Path, held_out: HeldOutData) -> None:
    for name in (train.GBDT_NAME, train.MLP_NAME):
        report = validate(trained, name, 1, held_out=held_out)
        statuses = {c.name: c.status for c in report.checks}
        assert statuses == {
            "card_schema": "pass",
            "onnx_inputs": "pass",
            "golden_vectors": "pass",
            "latency": "pass",
            "fairness": "fail",
        }, report.render()
        assert not report.passed
        fairness = report.check("fairness")
        # The held-out split is the training one: the card's AUC reproduces exactly.
        assert fairness.figures["held_out_auc"] == fairness.figures["card_auc"]
        attributes = {a["attribute"]: a for a in fairness.evidence["attributes"]}
        assert set(attributes) == {"age_band", "region"}
        card = report.card
        assert card is not None
        for attribute, result in attributes.items():
            # The gate's per-group rates are the card's, recomputed from the files.
            for group in result["groups"]:
                recorded = card.fairness[attribute][group["group"]]
                assert group["count"] == recorded.count
                assert group["flag_rate"] == pytest.approx(recorded.flag_rate, abs=1e-6)
                assert group["tpr"] == pytest.approx(recorded.tpr, abs=1e-6)
            assert "DI" in result["verdict"]


def test_a_model_that_flags_everyone_passes_every_gate(
    trained: Path, held_out: HeldOutData
) -> None:
    report = validate(trained, FLAT, 1, held_out=held_out)
    assert report.passed, report.render()
    for attribute in report.check("fairness").evidence["attributes"]:
        for threshold in ("review_at", "decline_at"):
            assert attribute[threshold]["disparate_impact"] == 1.0
            assert attribute[threshold]["equalized_odds"] == 0.0
        assert {g["flag_rate"] for g in attribute["groups"]} == {1.0}
        assert {g["decline_rate"] for g in attribute["groups"]} == {0.0}
    golden = report.check("golden_vectors")
    assert isinstance(golden.figures["max_abs_diff"], float)
    assert golden.figures["max_abs_diff"] <= 1e-5
    latency = report.check("latency")
    assert latency.figures["calls"] == 200
    assert len(latency.evidence["samples_us"]) == 200


def test_a_swapped_model_file_fails_the_golden_vectors(repo: Path, held_out: HeldOutData) -> None:
    shutil.copy(repo / train.MLP_NAME / "1" / "model.onnx", repo / train.GBDT_NAME / "1")
    report = validate(repo, train.GBDT_NAME, 1, held_out=held_out)
    golden = report.check("golden_vectors")
    assert golden.status == "fail"
    assert "golden rows differ by more than 1e-05" in golden.summary
    assert report.check("onnx_inputs").passed  # same width: only the scores tell
    worst = max(row["diff"] for row in golden.evidence["rows"])
    assert golden.figures["max_abs_diff"] == worst > 1e-5


def test_a_graph_of_another_width_fails_the_input_gate(repo: Path) -> None:
    directory = repo / FLAT / "1"
    (directory / "model.onnx").write_bytes(flat_model(40))
    report = validate(repo, FLAT, 1)
    inputs = report.check("onnx_inputs")
    assert inputs.status == "fail"
    assert "input is 40 wide, the card says 47" in inputs.summary
    assert inputs.figures["encoded_width"] == 47
    assert [c.status for c in report.checks[2:]] == ["skipped"] * 3
    assert not report.passed


def test_a_card_in_the_wrong_directory_fails_the_schema_gate(repo: Path) -> None:
    shutil.copytree(repo / train.GBDT_NAME / "1", repo / train.GBDT_NAME / "2")
    report = validate(repo, train.GBDT_NAME, 2)
    schema = report.check("card_schema")
    assert schema.status == "fail"
    assert "describes fraud-gbdt v1" in schema.summary
    assert all(c.status == "skipped" for c in report.checks[1:])


def test_an_invalid_card_names_the_key(repo: Path) -> None:
    path = repo / train.GBDT_NAME / "1" / "card.yaml"
    data = yaml.safe_load(path.read_text())
    data["thresholds"]["review_at"] = 0.99
    path.write_text(yaml.safe_dump(data))
    schema = validate(repo, train.GBDT_NAME, 1).check("card_schema")
    assert schema.status == "fail"
    assert "review_at" in schema.summary and "card.yaml" in schema.summary


def test_a_card_without_golden_vectors_fails_that_gate(repo: Path, held_out: HeldOutData) -> None:
    path = repo / train.MLP_NAME / "1" / "card.yaml"
    data = yaml.safe_load(path.read_text())
    del data["golden"]
    ModelCard.from_dict(data).dump(path)
    report = validate(repo, train.MLP_NAME, 1, held_out=held_out)
    golden = report.check("golden_vectors")
    assert golden.status == "fail"
    assert "no golden vectors" in golden.summary
    assert report.check("latency").passed  # measured on a zero row instead


def test_held_out_data_must_be_the_training_data(repo: Path, tmp_path: Path) -> None:
    other = write_dataset(tmp_path / "other.csv", ROWS, SEED + 1)
    options = ValidationOptions(data=other)
    fairness = validate(repo, FLAT, 1, options).check("fairness")
    assert fairness.status == "fail"
    assert "held-out data unavailable" in fairness.summary
    assert "the card's training data was sha256:" in fairness.summary


def test_the_training_csv_can_stand_in_for_the_generator(repo: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "same.csv", ROWS, SEED)
    report = validate(repo, FLAT, 1, ValidationOptions(data=data))
    assert report.passed, report.render()
    assert report.check("fairness").evidence["source"] == str(data)


def test_the_latency_gate_compares_p99_with_the_budget(trained: Path) -> None:
    # No call takes under a nanosecond: this budget must fail, whatever the machine.
    options = ValidationOptions(latency_budget_ms=1e-6, latency_calls=20)
    latency = validate(trained, FLAT, 1, options).check("latency")
    assert latency.status == "fail"
    assert latency.figures["budget_ms"] == 1e-6
    assert "> budget 1e-06 ms" in latency.summary


def test_a_tighter_equalized_odds_bound_is_applied(trained: Path, held_out: HeldOutData) -> None:
    loose = validate(trained, train.MLP_NAME, 1, ValidationOptions(eo_bound=1.0), held_out)
    fairness = loose.check("fairness")
    for attribute in fairness.evidence["attributes"]:
        assert not any(p.startswith("EO") for p in attribute["problems"])
    assert fairness.figures["eo_bound"] == 1.0


def test_disparate_impact_and_equalized_odds_by_hand() -> None:
    groups = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 2)
    labels = np.array([1, 1, 0, 0, 1, 0, 0, 0, 1, 0], dtype=bool)
    flagged = np.array([1, 0, 1, 0, 1, 0, 0, 0, 1, 1], dtype=bool)
    declined = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    options = ValidationOptions(min_group_size=3, eo_bound=0.5)
    result = attribute_fairness("x", groups, labels, flagged, declined, options)
    by_group = {g["group"]: g for g in result["groups"]}
    assert by_group["a"]["flag_rate"] == 0.5 and by_group["b"]["flag_rate"] == 0.25
    assert (by_group["a"]["tpr"], by_group["a"]["fpr"]) == (0.5, 0.5)
    assert (by_group["b"]["tpr"], by_group["b"]["fpr"]) == (1.0, 0.0)
    assert by_group["a"]["decline_rate"] == by_group["b"]["decline_rate"] == 0.25
    assert (by_group["a"]["decline_tpr"], by_group["b"]["decline_tpr"]) == (0.5, 1.0)
    assert not by_group["c"]["compared"]  # 2 rows < 3: reported, not compared
    review = result["review_at"]
    assert review["disparate_impact"] == 0.5  # 0.25 / 0.5
    assert review["tpr_gap"] == 0.5 and review["fpr_gap"] == 0.5
    assert review["equalized_odds"] == 0.5
    decline = result["decline_at"]
    assert decline["disparate_impact"] == 1.0
    assert (decline["tpr_gap"], decline["fpr_gap"]) == (0.5, 0.0)
    assert (result["disparate_impact"], result["equalized_odds"]) == (0.5, 0.5)
    assert result["problems"] == ["DI 0.500 < 0.8 at REVIEW"]  # EO 0.5 is within its bound
    assert not result["passed"]
    options = ValidationOptions(min_group_size=3, eo_bound=0.4)
    strict = attribute_fairness("x", groups, labels, flagged, declined, options)
    assert strict["problems"] == [
        "DI 0.500 < 0.8 at REVIEW",
        "EO 0.500 > 0.4 at REVIEW",
        "EO 0.500 > 0.4 at DECLINE",
    ]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="latency budget"):
        ValidationOptions(latency_budget_ms=0)
    with pytest.raises(ValueError, match="equalized-odds bound"):
        ValidationOptions(eo_bound=1.5)


# --------------------------------------------------------------------------- approval


def _cli(*argv: str | Path) -> int:
    return main([str(a) for a in argv])


def _approve_args(repo: Path, tmp_path: Path, name: str) -> list[str | Path]:
    return [
        "models",
        "approve",
        name,
        "1",
        "--by",
        "alice@risk.example",
        "--models",
        repo,
        "--audit-dir",
        tmp_path / "audit",
        "--audit-key-file",
        tmp_path / "audit.key",
    ]


def _records(audit: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for segments in list_segments(audit).values()
        for segment in segments
        for line in segment.path.read_bytes().splitlines()
    ]


def test_approve_writes_the_card_and_the_audit_log_when_every_gate_passes(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card_path = repo / FLAT / "1" / "card.yaml"
    before = ModelCard.load(card_path)
    model_sha = _sha(repo / FLAT / "1" / "model.onnx")
    card_sha = _sha(card_path)
    assert before.approval.status == "pending"

    days = {datetime.now(UTC).date().isoformat()}
    assert _cli(*_approve_args(repo, tmp_path, FLAT)) == 0
    days.add(datetime.now(UTC).date().isoformat())  # the run may cross midnight
    assert f"approved {FLAT} v1 by alice@risk.example on " in capsys.readouterr().out

    after = ModelCard.load(card_path)
    assert after.approved
    assert after.approval.approver == "alice@risk.example"
    assert after.approval.date in days
    # Nothing but the approval changed, and no temporary file is left behind.
    assert {**after.to_dict(), "approval": None} == {**before.to_dict(), "approval": None}
    assert sorted(p.name for p in card_path.parent.iterdir()) == ["card.yaml", "model.onnx"]

    audit = tmp_path / "audit"
    assert verify(audit).ok
    assert list(list_segments(audit)) == [GOVERNANCE_AUDIT_WORKER]
    (approval,) = [r for r in _records(audit) if r["kind"] == "model_approval"]
    payload = approval["payload"]
    assert (payload["model"], payload["version"], payload["status"]) == (FLAT, 1, "approved")
    assert (payload["approver"], payload["date"]) == ("alice@risk.example", after.approval.date)
    assert f"model.onnx sha256 {model_sha}" in payload["reason"]
    assert f"card.yaml sha256 {card_sha} before approval" in payload["reason"]
    assert "fairness: age_band: DI 1.000 >= 0.8, EO 0.000 <= 0.1" in payload["reason"]
    assert payload["actor"].startswith("riskwire models approve")


def test_approve_refuses_a_model_that_fails_a_gate_and_writes_nothing(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card_path = repo / train.GBDT_NAME / "1" / "card.yaml"
    before = card_path.read_bytes()
    assert _cli(*_approve_args(repo, tmp_path, train.GBDT_NAME)) == 1
    err = capsys.readouterr().err
    assert "fraud-gbdt v1 not approved: validation failed: fairness (fail)" in err
    assert "FAIL    fairness" in err
    assert card_path.read_bytes() == before
    assert not (tmp_path / "audit").exists()


def test_no_card_is_approved_without_its_audit_record(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card_path = repo / FLAT / "1" / "card.yaml"
    before = card_path.read_bytes()
    blocked = tmp_path / "audit"
    blocked.write_text("a file where the audit directory should be\n")
    assert _cli(*_approve_args(repo, tmp_path, FLAT)) == 1
    err = capsys.readouterr().err
    assert f"{FLAT} v1 not approved: the audit record could not be written to {blocked}" in err
    assert card_path.read_bytes() == before


def test_an_approval_never_shares_its_chain_with_a_running_writer(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    card_path = repo / FLAT / "1" / "card.yaml"
    before = card_path.read_bytes()
    settings = AuditSettings(
        directory=tmp_path / "audit",
        key_file=tmp_path / "audit.key",
        worker_id=GOVERNANCE_AUDIT_WORKER,
    )
    running = AuditWriter(settings)
    running.start()
    try:
        assert _cli(*_approve_args(repo, tmp_path, FLAT)) == 1
    finally:
        running.close_blocking()
    assert "not approved: the audit record could not be written" in capsys.readouterr().err
    assert card_path.read_bytes() == before
    assert verify(tmp_path / "audit").ok
    assert not [r for r in _records(tmp_path / "audit") if r["kind"] == "model_approval"]


def test_approve_in_code_takes_any_recorder(repo: Path, held_out: HeldOutData) -> None:
    recorded: list[ApprovalRecord] = []
    card, report = approve(
        repo, FLAT, 1, " bob ", recorded.append, held_out=held_out, today="2026-12-01"
    )
    assert report.passed
    assert (card.approval.approver, card.approval.date) == ("bob", "2026-12-01")
    (record,) = recorded
    assert (record.model, record.version, record.approver) == (FLAT, 1, "bob")
    assert record.model_sha256 == _sha(repo / FLAT / "1" / "model.onnx")
    assert ModelCard.load(repo / FLAT / "1" / "card.yaml") == card
    with pytest.raises(ValueError, match="approver"):
        approve(repo, FLAT, 1, "  ", recorded.append, held_out=held_out)
    with pytest.raises(ApprovalRefused, match="not approved"):
        approve(repo, train.MLP_NAME, 1, "bob", recorded.append, held_out=held_out)
    assert len(recorded) == 1


def test_validate_command_exit_codes_and_json(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli("models", "validate", FLAT, "1", "--models", trained) == 0
    assert "fraud-flat v1" in capsys.readouterr().out
    assert _cli("models", "validate", train.MLP_NAME, "1", "--models", trained, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["passed"] is False
    assert [c["name"] for c in report["checks"]] == list(governance.CHECKS)
    assert report["options"]["di_min"] == 0.8
    assert "evidence" not in report["checks"][0]


def test_cli_help_states_the_gates_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["models", "validate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {governance.DEFAULT_LATENCY_BUDGET_MS:g})" in text
    assert f"(default {governance.DEFAULT_EO_BOUND:g};" in text
    assert f"must be >= {governance.DI_MIN:g}" in text
    assert f"(default {governance.DEFAULT_MIN_GROUP_SIZE})" in text


# --------------------------------------------------------------------------- routing


def test_the_server_runs_an_unapproved_model_as_a_shadow_only(trained: Path) -> None:
    """The server's own route check, against a repository with a pending model loaded."""
    server = Server(Settings(models={"repository": trained, "load_all": False}))
    shadow = load_table(
        "routes:\n  - name: cards\n    salt: s\n"
        "    arms: [{model: fraud-gbdt, version: 1, weight: 100}]\n"
        "    shadows: [{model: fraud-flat, version: 1, percent: 100}]\n"
    )
    live = load_table(
        "routes:\n  - name: cards\n    salt: s\n"
        "    arms: [{model: fraud-gbdt, version: 1, weight: 90},\n"
        "           {model: fraud-flat, version: 1, weight: 10, role: challenger}]\n"
    )

    async def check() -> tuple[list[str], list[str]]:
        await server.repository.load(train.GBDT_NAME, 1)
        await server.repository.load(FLAT, 1)  # approval: pending
        try:
            return server._route_problems(shadow), server._route_problems(live)
        finally:
            await server.repository.close()

    as_shadow, as_arm = asyncio.run(check())
    assert as_shadow == []
    assert as_arm == [
        "route 'cards': fraud-flat v1 as a live arm: approval is 'pending', not "
        "'approved': an unapproved version may run only as a shadow "
        "(riskwire models approve)"
    ]
