"""The admin plane against a real server: route changes, history, canaries, models,
the routes-file watch, the CLI, and a swap under steady traffic that loses no call."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from gateway.cli import main as cli_main
from gateway.data.synth import SynthOptions, generate
from gateway.features.columns import transactions_from_table
from riskwire.admin.v1 import admin_pb2 as apb
from riskwire.admin.v1 import admin_pb2_grpc as apb_grpc
from riskwire.v1 import scoring_pb2 as pb
from riskwire.v1 import scoring_pb2_grpc as pb_grpc
from tests.integration.serverproc import ROOT, ServerProcess, start_server, write_config

GBDT = "fraud-gbdt"
MLP = "fraud-mlp"


def arm(model: str, version: int, weight: float, role: str = "champion") -> dict[str, Any]:
    return {"model": model, "version": version, "weight": weight, "role": role}


def routes_yaml(
    ecom_arms: list[dict[str, Any]],
    *,
    canary: dict[str, Any] | None = None,
    shadows: list[dict[str, Any]] | None = None,
    rest_arms: list[dict[str, Any]] | None = None,
) -> str:
    """Two routes: ``ecom`` (ECOMMERCE) with the arms given, and a default ``rest``."""
    ecom: dict[str, Any] = {
        "name": "ecom",
        "match": {"channel": ["ECOMMERCE"]},
        "salt": "ecom-1",
        # Generous budgets: this test counts failures, not a busy CI machine's latency.
        "deadline_ms": 2000,
        "arms": ecom_arms,
    }
    if canary is not None:
        ecom["canary"] = canary
    if shadows:
        ecom["shadows"] = shadows
    rest = {
        "name": "rest",
        "salt": "rest-1",
        "deadline_ms": 2000,
        "arms": rest_arms or [arm(GBDT, 1, 100)],
    }
    return yaml.safe_dump({"routes": [ecom, rest]}, sort_keys=False)


# Both demo models loaded at start (load_all is off: fraud-gbdt v2 waits on disk).
START_ROUTES = routes_yaml([arm(GBDT, 1, 100), arm(MLP, 1, 0, "challenger")])
CANARY = {"steps": [5, 25, 50, 100], "interval_s": 60, "min_requests": 100}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, model_repository: Path) -> Path:
    """A copy of the demo repository with fraud-gbdt v1 copied as v2, and the routes."""
    directory = tmp_path_factory.mktemp("admin")
    models = directory / "models"
    shutil.copytree(model_repository, models)
    v2 = models / GBDT / "2"
    shutil.copytree(models / GBDT / "1", v2)
    card = yaml.safe_load((v2 / "card.yaml").read_text())
    card["version"] = 2
    (v2 / "card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
    (directory / "routes.yaml").write_text(START_ROUTES)
    return directory


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[ServerProcess]:
    config = write_config(
        workdir, workdir / "models", routes_file=str(workdir / "routes.yaml"), routes_poll_s=0.1
    )
    settings = yaml.safe_load(config.read_text())
    settings["models"]["load_all"] = False
    config.write_text(yaml.safe_dump(settings))
    running = start_server(config)
    yield running
    assert running.terminate() == 0, running.log()


@pytest.fixture(scope="module")
def admin(server: ServerProcess) -> Iterator[Admin]:
    with grpc.insecure_channel(f"127.0.0.1:{server.admin_port}") as channel:
        yield Admin(apb_grpc.AdminStub(channel), server.admin_token)


@pytest.fixture(scope="module")
def scoring(server: ServerProcess) -> Iterator[pb_grpc.ScoringStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.ScoringStub(channel)


@pytest.fixture(scope="module")
def transactions() -> list[pb.Transaction]:
    return transactions_from_table(generate(400, 11, SynthOptions()))


class Admin:
    """The stub with the token (and an actor) on every call."""

    def __init__(self, stub: apb_grpc.AdminStub, token: str) -> None:
        self.stub = stub
        self.token = token

    def __getattr__(self, method: str) -> Callable[..., Any]:
        call = getattr(self.stub, method)

        def invoke(request: Any, actor: str = "", token: str | None = None) -> Any:
            metadata = [("authorization", f"Bearer {self.token if token is None else token}")]
            if actor:
                metadata.append(("x-riskwire-actor", actor))
            return call(request, timeout=30, metadata=metadata)

        return invoke

    def version(self) -> int:
        return int(self.GetRoutes(apb.GetRoutesRequest()).config_version)

    def apply(self, text: str, expected: int = 0, reason: str = "", actor: str = "") -> Any:
        request = apb.ApplyRoutesRequest(
            routes_yaml=text, expected_config_version=expected, reason=reason
        )
        return self.ApplyRoutes(request, actor=actor)


def refused(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    """Poll a condition (the watcher and the log are asynchronous by design)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_every_call_needs_the_token_and_refusals_are_logged(
    server: ServerProcess, admin: Admin
) -> None:
    for token, reason in (("", "no authorization metadata"), ("nope", "wrong bearer token")):
        metadata = [("authorization", f"Bearer {token}")] if token else []
        error = refused(
            lambda metadata=metadata: admin.stub.ApplyRoutes(
                apb.ApplyRoutesRequest(routes_yaml=START_ROUTES), timeout=10, metadata=metadata
            )
        )
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        wait_until(lambda reason=reason: f'reason="{reason}"' in server.log())
    line = next(line for line in server.log().splitlines() if "admin refused:" in line)
    assert 'method="/riskwire.admin.v1.Admin/ApplyRoutes"' in line
    assert 'peer="ipv4:127.0.0.1:' in line
    # Nothing was applied.
    assert admin.version() == 1


def test_validate_is_a_dry_run(admin: Admin) -> None:
    before = admin.version()
    good = routes_yaml([arm(GBDT, 1, 80), arm(MLP, 1, 20, "challenger")])
    answer = admin.ValidateRoutes(apb.ValidateRoutesRequest(routes_yaml=good))
    assert answer.valid and not answer.problems
    assert answer.config_version == before
    assert list(answer.diff) == [
        "ecom: fraud-gbdt v1 champion 100 -> 80",
        "ecom: fraud-mlp v1 challenger 0 -> 20",
    ]
    bad = routes_yaml([arm(GBDT, 1, 80), arm(MLP, 1, 10, "challenger")])
    answer = admin.ValidateRoutes(apb.ValidateRoutesRequest(routes_yaml=bad))
    assert not answer.valid and not answer.diff
    assert list(answer.problems) == ["route 'ecom': arms: weights sum to 90, not 100"]
    # A table that parses is checked against the gateway: every model not loaded.
    unknown = routes_yaml(
        [arm(GBDT, 1, 80), arm("no-such-model", 3, 20, "challenger")],
        rest_arms=[arm(GBDT, 7, 100)],
    )
    answer = admin.ValidateRoutes(apb.ValidateRoutesRequest(routes_yaml=unknown))
    assert list(answer.problems) == [
        "route 'ecom': no-such-model v3: not loaded",
        "route 'rest': fraud-gbdt v7: not loaded",
    ]
    assert admin.version() == before


def test_apply_history_and_rollback(
    server: ServerProcess,
    admin: Admin,
    scoring: pb_grpc.ScoringStub,
    transactions: list[pb.Transaction],
) -> None:
    before = admin.version()
    old_yaml = admin.GetRoutes(apb.GetRoutesRequest()).routes_yaml
    split = routes_yaml([arm(GBDT, 1, 50), arm(MLP, 1, 50, "challenger")])
    applied = admin.apply(split, expected=before, reason="half to the mlp", actor="alice")
    assert applied.config_version == before + 1
    assert "ecom: fraud-mlp v1 challenger 0 -> 50" in applied.diff
    answer = scoring.Score(pb.ScoreRequest(transaction=transactions[0]), timeout=10)
    assert answer.config_version == before + 1

    back = admin.RollbackRoutes(
        apb.RollbackRoutesRequest(
            to_config_version=before, expected_config_version=before + 1, reason="undo"
        ),
        actor="bob",
    )
    assert back.config_version == before + 2
    assert admin.GetRoutes(apb.GetRoutesRequest()).routes_yaml == old_yaml
    answer = scoring.Score(pb.ScoreRequest(transaction=transactions[0]), timeout=10)
    assert answer.config_version == before + 2

    entries = admin.GetHistory(apb.GetHistoryRequest(limit=2)).entries
    assert [e.config_version for e in entries] == [before + 2, before + 1]
    rollback, apply = entries
    assert (apply.kind, apply.actor, apply.reason) == ("apply", "alice", "half to the mlp")
    assert (rollback.kind, rollback.actor, rollback.reason) == ("rollback", "bob", "undo")
    assert "ecom: fraud-mlp v1 challenger 50 -> 0" in rollback.diff
    for entry in entries:
        applied_at = datetime.fromisoformat(entry.applied_at)
        assert applied_at.utcoffset() is not None and applied_at.utcoffset().total_seconds() == 0
    # Every accepted change reached the audit sink (a log line until the audit log).
    wait_until(lambda: f"config change: config_version={before + 2}" in server.log())
    audit = [line for line in server.log().splitlines() if "config change:" in line]
    assert any(
        f"config_version={before + 1}," in line and 'actor="alice"' in line for line in audit
    )
    assert any('kind=rollback, actor="bob"' in line for line in audit)
    # The first table is in the history too, every route as added.
    first = admin.GetHistory(apb.GetHistoryRequest()).entries[-1]
    assert first.config_version == 1 and first.actor == "startup"
    assert any(line.startswith("ecom: route added") for line in first.diff)


def test_a_stale_version_is_refused_naming_both(admin: Admin) -> None:
    current = admin.version()
    text = routes_yaml([arm(GBDT, 1, 90), arm(MLP, 1, 10, "challenger")])
    error = refused(lambda: admin.apply(text, expected=current - 1))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"config_version {current - 1}" in error.details()
    assert f"config_version {current} is in force" in error.details()
    assert admin.version() == current


def test_an_invalid_table_is_refused_naming_every_problem(
    admin: Admin, scoring: pb_grpc.ScoringStub, transactions: list[pb.Transaction]
) -> None:
    current = admin.version()
    table = yaml.safe_load(routes_yaml([arm(GBDT, 1, 70), arm("ghost", 2, 20, "challenger")]))
    table["routes"][0]["decision"] = {"review_at": 0.9, "decline_at": 0.5}
    table["routes"][1]["salt"] = ""
    error = refused(lambda: admin.apply(yaml.safe_dump(table), expected=current))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details()
    for expected in (
        "arms: weights sum to 90, not 100",
        "review_at (0.9) must be below decline_at (0.5)",
        "route 'rest': salt: missing or empty",
    ):
        assert expected in details, details
    assert f"config_version {current} keeps serving" in details
    # A table that parses but names a model that is not loaded: refused by the gateway check.
    ghost = routes_yaml([arm(GBDT, 1, 80), arm("ghost", 2, 20, "challenger")])
    error = refused(lambda: admin.apply(ghost))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "route 'ecom': ghost v2: not loaded" in error.details()
    assert admin.version() == current
    answer = scoring.Score(pb.ScoreRequest(transaction=transactions[1]), timeout=10)
    assert answer.config_version == current


def test_canary_status_and_promotion(admin: Admin) -> None:
    start = admin.version()
    no_canary = refused(
        lambda: admin.PromoteCanary(apb.PromoteCanaryRequest(route="ecom", reason="x"))
    )
    assert no_canary.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "has no canary arm" in no_canary.details()
    missing = refused(lambda: admin.PromoteCanary(apb.PromoteCanaryRequest(route="nope")))
    assert missing.code() == grpc.StatusCode.NOT_FOUND

    canary = routes_yaml([arm(GBDT, 1, 95), arm(MLP, 1, 5, "canary")], canary=CANARY)
    admin.apply(canary, expected=start, reason="start the mlp canary", actor="carol")
    status = admin.GetCanaryStatus(apb.GetCanaryStatusRequest())
    assert status.config_version == start + 1
    [ecom] = status.canaries
    assert (ecom.route, ecom.model, ecom.version, ecom.weight) == ("ecom", MLP, 1, 5)
    assert list(ecom.steps) == [5, 25, 50, 100]
    assert ecom.next_step == 25 and not ecom.next_is_promote
    assert ecom.min_requests == 100 and ecom.interval_s == 60
    assert ecom.guards.p99_ms == 10 and ecom.guards.error_rate == 0.005
    assert ecom.last_change.config_version == start + 1
    assert ecom.last_change.actor == "carol"
    [again] = admin.GetCanaryStatus(apb.GetCanaryStatusRequest(route="ecom")).canaries
    for status_of in (again, ecom):  # the live window moves on between the two calls
        status_of.ClearField("window_s")
    assert again == ecom

    stale = refused(
        lambda: admin.PromoteCanary(
            apb.PromoteCanaryRequest(route="ecom", expected_config_version=start)
        )
    )
    assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
    promoted = admin.PromoteCanary(
        apb.PromoteCanaryRequest(
            route="ecom", expected_config_version=start + 1, reason="looks good"
        ),
        actor="carol",
    )
    assert promoted.config_version == start + 2
    routes = yaml.safe_load(admin.GetRoutes(apb.GetRoutesRequest()).routes_yaml)["routes"]
    assert routes[0]["arms"] == [arm(MLP, 1, 100)]
    assert "canary" not in routes[0]
    entry = admin.GetHistory(apb.GetHistoryRequest(limit=1)).entries[0]
    assert (entry.kind, entry.actor) == ("canary_promote", "carol")
    assert "looks good" in entry.reason
    assert admin.GetCanaryStatus(apb.GetCanaryStatusRequest()).canaries == []


def test_models_listing_and_shadow_comparison(
    admin: Admin, scoring: pb_grpc.ScoringStub, transactions: list[pb.Transaction]
) -> None:
    shadowed = routes_yaml(
        [arm(GBDT, 1, 100), arm(MLP, 1, 0, "challenger")],
        shadows=[{"model": MLP, "version": 1, "percent": 100}],
    )
    admin.apply(shadowed, reason="shadow the mlp")
    models = {(m.name, m.version): m for m in admin.ListModels(apb.ListModelsRequest()).models}
    gbdt = models[(GBDT, 1)]
    assert gbdt.ready and gbdt.approval_status == "approved" and gbdt.in_use
    assert sorted(gbdt.routes) == ["ecom", "rest"]
    assert list(models[(MLP, 1)].routes) == ["ecom"]
    on_disk = models[(GBDT, 2)]
    assert not on_disk.ready and not on_disk.in_use and on_disk.approval_status == "approved"

    ecommerce = [t for t in transactions if pb.Channel.Name(t.channel) == "ECOMMERCE"][:50]
    assert ecommerce
    scoring.ScoreBatch(pb.ScoreBatchRequest(transactions=ecommerce), timeout=30)

    def compared() -> int:
        answer = admin.GetShadowComparison(apb.GetShadowComparisonRequest(route="ecom"))
        return sum(c.compared for c in answer.comparisons if c.shadow_model == MLP)

    wait_until(lambda: compared() >= len(ecommerce))
    [record] = admin.GetShadowComparison(apb.GetShadowComparisonRequest(route="ecom")).comparisons
    assert (record.route, record.shadow_version) == ("ecom", 1)
    assert record.agreements <= record.compared
    assert 0 <= record.agreement_rate <= 1


def test_the_routes_file_is_watched(server: ServerProcess, workdir: Path, admin: Admin) -> None:
    routes_file = workdir / "routes.yaml"
    before = admin.version()
    routes_file.write_text(routes_yaml([arm(GBDT, 1, 60), arm(MLP, 1, 40, "challenger")]))
    wait_until(lambda: admin.version() == before + 1)
    entry = admin.GetHistory(apb.GetHistoryRequest(limit=1)).entries[0]
    assert entry.actor == "routes-file" and str(routes_file) in entry.reason
    assert "ecom: fraud-mlp v1 challenger 0 -> 40" in entry.diff

    bad = yaml.safe_load(routes_yaml([arm(GBDT, 1, 60), arm(MLP, 1, 30, "challenger")]))
    bad["routes"][1]["deadline_ms"] = -1
    routes_file.write_text(yaml.safe_dump(bad))
    wait_until(lambda: f"routes file {routes_file} refused, 2 problem(s)" in server.log())
    log = server.log()
    assert "route 'ecom': arms: weights sum to 90, not 100" in log
    assert "route 'rest': deadline_ms -1.0 must be > 0" in log
    assert f"config_version {before + 1} keeps serving" in log
    assert admin.version() == before + 1


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli_main(["routes", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_round_trip(
    server: ServerProcess, workdir: Path, admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = workdir / "admin.token"
    where = ["--admin", f"127.0.0.1:{server.admin_port}", "--token-file", str(token_file)]
    current = admin.version()

    code, out, _ = _cli(capsys, "show", *where)
    assert code == 0
    assert out.startswith(f"config_version {current}\n")
    assert "ROUTE" in out and "fraud-gbdt v1" in out and "(default)" in out

    good = workdir / "cli-good.yaml"
    good.write_text(routes_yaml([arm(GBDT, 1, 75), arm(MLP, 1, 25, "challenger")]))
    code, out, _ = _cli(capsys, "diff", str(good), *where)
    assert (code, out) == (
        0,
        "ecom: fraud-gbdt v1 champion 60 -> 75\necom: fraud-mlp v1 challenger 40 -> 25\n",
    )
    code, out, _ = _cli(capsys, "validate", str(good), *where)
    assert code == 0 and f"valid against config_version {current}" in out

    bad = workdir / "cli-bad.yaml"
    bad.write_text(routes_yaml([arm(GBDT, 1, 75), arm(MLP, 1, 5, "challenger")]))
    code, out, err = _cli(capsys, "validate", str(bad), *where)
    assert code == 1 and "weights sum to 80, not 100" in err and not out
    code, _, err = _cli(capsys, "apply", str(bad), *where)
    assert code == 1 and "INVALID_ARGUMENT" in err and "weights sum to 80" in err

    code, _, err = _cli(capsys, "apply", str(good), "--expect-version", str(current - 1), *where)
    assert code == 3 and f"config_version {current} is in force" in err
    code, out, _ = _cli(
        capsys,
        "apply",
        str(good),
        "--expect-version",
        str(current),
        "--reason",
        "cli test",
        "--actor",
        "dave",
        *where,
    )
    assert code == 0 and out.startswith(f"applied as config_version {current + 1}")

    code, out, _ = _cli(capsys, "history", "--limit", "2", *where)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "APPLIED_AT", "KIND", "ACTOR", "REASON"]
    assert lines[1].split()[:4] == [f"v{current + 1}", lines[1].split()[1], "apply", "dave"]
    assert "    ecom: fraud-mlp v1 challenger 40 -> 25" in lines

    code, out, _ = _cli(capsys, "rollback", str(current), *where)
    assert code == 0 and f"config_version {current + 2}" in out
    code, out, _ = _cli(capsys, "canary-status", *where)
    assert code == 0 and "(no route has a canary arm)" in out
    code, _, err = _cli(capsys, "promote", "ecom", *where)
    assert code == 3 and "no canary arm" in err

    wrong = workdir / "wrong.token"
    wrong.write_text("wrong\n")
    code, _, err = _cli(
        capsys, "show", "--admin", f"127.0.0.1:{server.admin_port}", "--token-file", str(wrong)
    )
    assert code == 4 and "UNAUTHENTICATED" in err
    code, _, err = _cli(capsys, "show", "--admin", "127.0.0.1:1", "--token-file", str(wrong))
    assert code == 4 and "UNAVAILABLE" in err
    code, _, err = _cli(capsys, "validate", str(workdir / "absent.yaml"), *where)
    assert code == 2 and "cannot read" in err

    # The installed entry point, once, as a script would run it.
    run = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "routes", "show", *where],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert f"config_version {current + 2}" in run.stdout


@pytest.mark.slow
def test_route_swaps_under_steady_traffic_fail_no_call(
    admin: Admin, scoring: pb_grpc.ScoringStub, transactions: list[pb.Transaction]
) -> None:
    """Apply, roll back, hot-load and unload while calls flow: not one call may fail."""
    calls = 3000
    done = threading.Event()
    progress = [0]
    failures: list[str] = []
    fallbacks: list[str] = []
    seen: set[tuple[str, str, int]] = set()

    def client() -> None:
        try:
            for i in range(calls):
                txn = transactions[i % len(transactions)]
                try:
                    if i % 10 == 9:
                        batch = [transactions[(i + k) % len(transactions)] for k in range(8)]
                        answers = list(
                            scoring.ScoreBatch(
                                pb.ScoreBatchRequest(transactions=batch), timeout=10
                            ).responses
                        )
                    else:
                        answers = [scoring.Score(pb.ScoreRequest(transaction=txn), timeout=10)]
                except grpc.RpcError as error:
                    failures.append(f"call {i}: {error.code().name}: {error.details()}")
                    continue
                finally:
                    progress[0] = i + 1
                for answer in answers:
                    if answer.decision_source != pb.MODEL:
                        fallbacks.append(f"call {i}: {answer.fallback_reason}")
                    seen.add((answer.model_name, answer.model_version, answer.config_version))
        finally:
            done.set()

    def after_more_calls(count: int = 60) -> None:
        # Pace the changes by traffic, not by the clock: each table serves some calls.
        target = progress[0] + count
        while progress[0] < target and not done.is_set():
            time.sleep(0.002)

    thread = threading.Thread(target=client, name="steady-client")
    started = time.monotonic()
    thread.start()
    changes = 0
    first = admin.version()
    splits = [(100, 0), (70, 30), (30, 70), (0, 100), (50, 50)]
    # (a) weight moving between fraud-gbdt v1 and fraud-mlp v1, a canary among them;
    # (b) rollbacks to earlier versions.
    for round_ in range(2):
        for gbdt, mlp in splits:
            if gbdt:
                arms = [arm(GBDT, 1, gbdt), arm(MLP, 1, mlp, "challenger")]
            else:
                arms = [arm(MLP, 1, 100)]
            admin.apply(routes_yaml(arms), reason=f"round {round_}: {gbdt}/{mlp}")
            changes += 1
            after_more_calls()
        canary = routes_yaml([arm(GBDT, 1, 75), arm(MLP, 1, 25, "canary")], canary=CANARY)
        admin.apply(canary, reason="canary")
        changes += 1
        after_more_calls()
        admin.RollbackRoutes(apb.RollbackRoutesRequest(to_config_version=first, reason="back"))
        changes += 1
        after_more_calls()
    # (c) hot-load fraud-gbdt v2, move every route to it, then unload v1.
    loaded = admin.LoadModel(apb.LoadModelRequest(name=GBDT, version=2)).model
    assert (loaded.name, loaded.version, loaded.ready) == (GBDT, 2, True)
    on_v2 = routes_yaml(
        [arm(GBDT, 2, 80), arm(MLP, 1, 20, "challenger")], rest_arms=[arm(GBDT, 2, 100)]
    )
    admin.apply(on_v2, reason="onto v2")
    changes += 1
    after_more_calls()
    in_use = refused(lambda: admin.UnloadModel(apb.UnloadModelRequest(name=GBDT, version=2)))
    assert in_use.code() == grpc.StatusCode.FAILED_PRECONDITION
    admin.UnloadModel(apb.UnloadModelRequest(name=GBDT, version=1))
    after_more_calls()
    for gbdt in (50, 90):
        admin.apply(
            routes_yaml(
                [arm(GBDT, 2, gbdt), arm(MLP, 1, 100 - gbdt, "challenger")],
                rest_arms=[arm(GBDT, 2, 100)],
            ),
            reason=f"v2 {gbdt}",
        )
        changes += 1
        after_more_calls()
    thread.join(timeout=120)
    elapsed = time.monotonic() - started
    assert not thread.is_alive()
    assert progress[0] == calls
    assert failures == [], failures[:5]
    assert fallbacks == [], fallbacks[:5]
    models = {(name, version) for name, version, _ in seen}
    assert {(GBDT, "1"), (GBDT, "2"), (MLP, "1")} <= models
    versions = {v for _, _, v in seen}
    assert len(versions) >= changes // 2, (len(versions), changes)
    print(
        f"\nzero-failure swap: {calls} calls ({calls // 10} ScoreBatch of 8), {changes} "
        f"route changes, {len(versions)} config versions answered, {elapsed:.1f} s, 0 failed"
    )
    # v1 is gone from the repository, and listed as on disk only.
    listed = {(m.name, m.version): m for m in admin.ListModels(apb.ListModelsRequest()).models}
    assert not listed[(GBDT, 1)].ready
