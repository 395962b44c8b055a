"""``riskwire routes``: table formatting, token lookup and the exit codes scripts rely on."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import grpc
import pytest

from gateway import routes_cli
from gateway.cli import build_parser, main
from gateway.routes_cli import (
    EXIT_OK,
    EXIT_PRECONDITION,
    EXIT_REFUSED,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CommandError,
    exit_code_for,
    format_canaries,
    format_change,
    format_history,
    format_routes,
    format_table,
    read_token,
)
from riskwire.admin.v1 import admin_pb2 as pb

ROUTES = """
routes:
  - name: cards
    match: {channel: [ECOMMERCE, CARD_PRESENT], country: [US]}
    salt: s
    arms:
      - {model: fraud-gbdt, version: 3, weight: 90, role: champion}
      - {model: fraud-gbdt, version: 4, weight: 10, role: canary}
    shadows: [{model: fraud-mlp, version: 1, percent: 50}]
    canary: {steps: [10, 50, 100]}
  - name: rest
    salt: r
    arms: [{model: fraud-gbdt, version: 3, weight: 100}]
"""


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (grpc.StatusCode.OK, EXIT_OK),
        (grpc.StatusCode.INVALID_ARGUMENT, EXIT_REFUSED),
        (grpc.StatusCode.NOT_FOUND, EXIT_REFUSED),
        (grpc.StatusCode.INTERNAL, EXIT_REFUSED),
        (grpc.StatusCode.FAILED_PRECONDITION, EXIT_PRECONDITION),
        (grpc.StatusCode.UNAVAILABLE, EXIT_UNREACHABLE),
        (grpc.StatusCode.UNAUTHENTICATED, EXIT_UNREACHABLE),
        (grpc.StatusCode.DEADLINE_EXCEEDED, EXIT_UNREACHABLE),
    ],
)
def test_exit_codes_follow_the_status(status: grpc.StatusCode, code: int) -> None:
    assert exit_code_for(status.name) == code


def test_format_table_aligns_columns() -> None:
    text = format_table(["A", "LONGER"], [["xyz", "1"], ["", "22"]])
    assert text.splitlines() == ["A    LONGER", "xyz  1", "     22"]


def test_format_routes_one_row_per_arm_and_shadow() -> None:
    lines = format_routes(ROUTES, 7).splitlines()
    assert lines[0] == "config_version 7"
    assert lines[1].split() == ["ROUTE", "MATCH", "STICKY", "MODEL", "ROLE", "TRAFFIC"]
    assert lines[2].split() == [
        "cards",
        "channel=ECOMMERCE,CARD_PRESENT;",
        "country=US",
        "account_id",
        "fraud-gbdt",
        "v3",
        "champion",
        "90%",
    ]
    assert lines[3].split() == ["fraud-gbdt", "v4", "canary", "10%"]
    assert lines[4].split() == ["fraud-mlp", "v1", "shadow", "50%"]
    assert lines[5].split() == [
        "rest",
        "(default)",
        "account_id",
        "fraud-gbdt",
        "v3",
        "champion",
        "100%",
    ]
    # Columns line up: every MODEL cell starts where the header's does.
    column = lines[1].index("MODEL")
    assert all(line[column:].startswith("fraud-") for line in lines[2:])


def test_format_history_puts_each_diff_under_its_version() -> None:
    entries = [
        pb.HistoryEntry(
            config_version=3,
            applied_at="2026-11-02T10:00:00.000+00:00",
            actor="alice",
            reason="more canary",
            kind="apply",
            diff=["cards: fraud-gbdt v4 canary 10 -> 20", "cards: fraud-gbdt v3 champion 90 -> 80"],
        ),
        pb.HistoryEntry(
            config_version=2, applied_at="2026-11-02T09:00:00.000+00:00", kind="rollback"
        ),
    ]
    lines = format_history(entries).splitlines()
    assert lines[0].split() == ["VERSION", "APPLIED_AT", "KIND", "ACTOR", "REASON"]
    assert lines[1].split() == [
        "v3",
        "2026-11-02T10:00:00.000+00:00",
        "apply",
        "alice",
        "more",
        "canary",
    ]
    assert lines[2:4] == [
        "    cards: fraud-gbdt v4 canary 10 -> 20",
        "    cards: fraud-gbdt v3 champion 90 -> 80",
    ]
    assert lines[4].split() == ["v2", "2026-11-02T09:00:00.000+00:00", "rollback", "-", "-"]
    assert format_history([]) == "(no history)"


def test_format_canaries_shows_next_step_guards_and_last_change() -> None:
    canary = pb.CanaryStatus(
        route="cards",
        model="fraud-gbdt",
        version=4,
        weight=10,
        steps=[10, 50, 100],
        next_step=50,
        interval_s=300,
        min_requests=2000,
        guards=pb.CanaryGuards(p99_ms=10, error_rate=0.005, score_psi=0.2, decline_rate_delta=0.02),
        last_change=pb.HistoryEntry(
            config_version=5, applied_at="t", kind="canary_step", actor="canary", reason="ok"
        ),
    )
    promote = pb.CanaryStatus(route="b", model="m", version=2, weight=100, next_is_promote=True)
    lines = format_canaries(5, [canary, promote]).splitlines()
    assert lines[0] == "config_version 5"
    assert lines[2].split()[:6] == ["cards", "fraud-gbdt", "v4", "10%", "50%", "10,50,100"]
    assert "p99<=10ms err<=0.005 psi<=0.2 decline±0.02" in lines[2]
    assert lines[3].split()[:5] == ["b", "m", "v2", "100%", "promote"]
    assert lines[4] == "cards: last change v5 t canary_step by canary: ok"
    assert format_canaries(5, []).endswith("(no route has a canary arm)")


def test_format_change_says_when_nothing_routes_differently() -> None:
    assert (
        format_change("applied as", 4, []) == "applied as config_version 4\n  (no routing change)"
    )
    assert format_change("applied as", 4, ["a: b"]) == "applied as config_version 4\n  a: b"


def test_token_from_file_then_env_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "t"
    token_file.write_text("from-file\n")
    assert read_token(token_file, {"RISKWIRE_ADMIN_TOKEN": "from-env"}) == "from-file"
    assert read_token(None, {"RISKWIRE_ADMIN_TOKEN": " from-env "}) == "from-env"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "var" / "state").mkdir(parents=True)
    (tmp_path / "var" / "state" / "admin.token").write_text("default\n")
    assert read_token(None, {}) == "default"
    with pytest.raises(CommandError) as missing:
        read_token(tmp_path / "absent", {})
    assert missing.value.exit_code == EXIT_UNREACHABLE
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CommandError) as empty:
        read_token(tmp_path / "empty", {})
    assert empty.value.exit_code == EXIT_UNREACHABLE


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["routes"],
        ["routes", "rollback"],
        ["routes", "rollback", "zero"],
        ["routes", "apply", "f.yaml", "--expect-version", "0"],
        ["routes", "history", "--limit", "x"],
    ):
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        assert stopped.value.code == EXIT_USAGE, argv
    capsys.readouterr()


def test_parser_reads_every_command() -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["routes", "apply", "r.yaml", "--expect-version", "4", "--reason", "why", "--admin", "h:1"]
    )
    assert (args.file, args.expect_version, args.reason, args.admin) == (
        Path("r.yaml"),
        4,
        "why",
        "h:1",
    )
    assert parser.parse_args(["routes", "canary-status"]).route == ""
    assert parser.parse_args(["routes", "promote", "cards"]).route == "cards"
    assert parser.parse_args(["routes", "history"]).limit == 20


class FakeClient:
    """Stands in for AdminClient: answers from a dict, or raises a CommandError."""

    def __init__(self, answers: dict[str, object]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, object]] = []

    def call(self, method: str, request: object) -> object:
        self.requests.append((method, request))
        answer = self.answers[method]
        if isinstance(answer, CommandError):
            raise answer
        return answer

    def close(self) -> None:
        pass


def _run(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], answers: dict[str, object]
) -> tuple[int, str, str, FakeClient]:
    fake = FakeClient(answers)
    monkeypatch.setattr(routes_cli, "AdminClient", lambda _args: fake)
    args: argparse.Namespace = build_parser().parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    code = routes_cli.run_routes(args, out, err)
    return code, out.getvalue(), err.getvalue(), fake


def test_validate_prints_problems_to_stderr_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    routes = tmp_path / "r.yaml"
    routes.write_text("routes: []")
    invalid = pb.ValidateRoutesResponse(valid=False, problems=["p one", "p two"], config_version=3)
    code, out, err, fake = _run(
        monkeypatch, ["routes", "validate", str(routes)], {"ValidateRoutes": invalid}
    )
    assert (code, out) == (EXIT_REFUSED, "")
    assert err.splitlines()[1:] == ["- p one", "- p two"]
    assert fake.requests[0][1] == pb.ValidateRoutesRequest(routes_yaml="routes: []")
    valid = pb.ValidateRoutesResponse(valid=True, diff=["x: y"], config_version=3)
    code, out, err, _ = _run(
        monkeypatch, ["routes", "diff", str(routes)], {"ValidateRoutes": valid}
    )
    assert (code, out, err) == (EXIT_OK, "x: y\n", "")


def test_refusals_keep_their_exit_code(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    routes = tmp_path / "r.yaml"
    routes.write_text("routes: []")
    stale = CommandError(EXIT_PRECONDITION, "FAILED_PRECONDITION: config_version 4 is in force")
    code, out, err, fake = _run(
        monkeypatch,
        ["routes", "apply", str(routes), "--expect-version", "3", "--reason", "r"],
        {"ApplyRoutes": stale},
    )
    assert (code, out) == (EXIT_PRECONDITION, "")
    assert err == "riskwire routes apply: FAILED_PRECONDITION: config_version 4 is in force\n"
    assert fake.requests[0][1] == pb.ApplyRoutesRequest(
        routes_yaml="routes: []", expected_config_version=3, reason="r"
    )
    code, _, err, _ = _run(monkeypatch, ["routes", "apply", str(tmp_path / "nope")], {})
    assert code == EXIT_USAGE and "cannot read" in err


def test_rollback_and_promote_send_what_was_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: dict[str, object] = {
        "RollbackRoutes": pb.RollbackRoutesResponse(config_version=9, diff=["a: b"]),
        "PromoteCanary": pb.PromoteCanaryResponse(config_version=10),
    }
    code, out, _, fake = _run(
        monkeypatch, ["routes", "rollback", "4", "--expect-version", "8"], answers
    )
    assert code == EXIT_OK and out == "rolled back to v4 as config_version 9\n  a: b\n"
    assert fake.requests[0][1] == pb.RollbackRoutesRequest(
        to_config_version=4, expected_config_version=8
    )
    code, out, _, fake = _run(monkeypatch, ["routes", "promote", "cards"], answers)
    assert code == EXIT_OK and out.startswith("promoted cards's canary as config_version 10")
    assert fake.requests[0][1] == pb.PromoteCanaryRequest(route="cards")
