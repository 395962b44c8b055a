"""``riskwire routes ...``: read and change the traffic split through the admin port.

Exit codes, for scripts: 0 done; 1 refused or invalid (the problems on stderr);
2 usage (bad arguments, unreadable file); 3 a precondition failed (FAILED_PRECONDITION:
a stale ``--expect-version``, re-read and retry; or nothing to promote); 4 the admin
port cannot be reached or refused the credentials (UNAVAILABLE, UNAUTHENTICATED,
DEADLINE_EXCEEDED, no token).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_PRECONDITION = 3
EXIT_UNREACHABLE = 4

DEFAULT_ADMIN = "127.0.0.1:50052"
DEFAULT_TOKEN_FILE = Path("var/state/admin.token")
TOKEN_ENV = "RISKWIRE_ADMIN_TOKEN"


class CommandError(Exception):
    """Ends a command with ``exit_code`` after printing ``message`` to stderr."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def exit_code_for(status_name: str) -> int:
    """The exit code for a gRPC status, by its name (``FAILED_PRECONDITION``)."""
    if status_name == "OK":
        return EXIT_OK
    if status_name == "FAILED_PRECONDITION":
        return EXIT_PRECONDITION
    if status_name in ("UNAVAILABLE", "UNAUTHENTICATED", "DEADLINE_EXCEEDED"):
        return EXIT_UNREACHABLE
    return EXIT_REFUSED


def read_token(token_file: Path | None, environ: dict[str, str] | os._Environ[str]) -> str:
    """``--token-file``, else $RISKWIRE_ADMIN_TOKEN (the token itself), else the
    server's default ``var/state/admin.token``."""
    if token_file is None:
        from_env = environ.get(TOKEN_ENV, "").strip()
        if from_env:
            return from_env
        token_file = DEFAULT_TOKEN_FILE
    try:
        token = token_file.read_text().strip()
    except OSError as exc:
        raise CommandError(
            EXIT_UNREACHABLE,
            f"no admin token: cannot read {token_file} ({exc.strerror}); pass --token-file "
            f"or set {TOKEN_ENV}",
        ) from exc
    if not token:
        raise CommandError(EXIT_UNREACHABLE, f"no admin token: {token_file} is empty")
    return token


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; trailing blanks trimmed."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [list(headers), *rows]
    ]
    return "\n".join(lines)


def _num(value: float) -> str:
    return f"{value:g}"


def format_routes(routes_yaml: str, config_version: int) -> str:
    """The table in force as one row per arm and shadow."""
    from router.routes import load_table

    table = load_table(routes_yaml)
    rows: list[list[str]] = []
    for route in table.routes:
        criteria = route.match.model_dump(mode="json", exclude_defaults=True)
        match = (
            "; ".join(
                f"{key}={','.join(map(str, value)) if isinstance(value, list) else value}"
                for key, value in criteria.items()
            )
            or "(default)"
        )
        first = True
        for arm in route.arms:
            rows.append(
                [
                    route.name if first else "",
                    match if first else "",
                    route.sticky_key if first else "",
                    arm.label,
                    str(arm.role),
                    f"{_num(arm.weight)}%",
                ]
            )
            first = False
        rows += [["", "", "", s.label, "shadow", f"{_num(s.percent)}%"] for s in route.shadows]
    body = format_table(["ROUTE", "MATCH", "STICKY", "MODEL", "ROLE", "TRAFFIC"], rows)
    return f"config_version {config_version}\n{body}"


def format_history(entries: Sequence[Any]) -> str:
    """GetHistory's entries (newest first), each with its diff lines indented below."""
    if not entries:
        return "(no history)"
    rows = [
        [f"v{e.config_version}", e.applied_at, e.kind, e.actor or "-", e.reason or "-"]
        for e in entries
    ]
    header, *lines = format_table(["VERSION", "APPLIED_AT", "KIND", "ACTOR", "REASON"], rows).split(
        "\n"
    )
    out = [header]
    for line, entry in zip(lines, entries, strict=True):
        out.append(line)
        out += [f"    {change}" for change in entry.diff]
    return "\n".join(out)


def format_canaries(config_version: int, canaries: Sequence[Any]) -> str:
    """GetCanaryStatus: one row per route with a canary arm, then its last change."""
    if not canaries:
        return f"config_version {config_version}\n(no route has a canary arm)"
    rows = []
    for c in canaries:
        next_step = "promote" if c.next_is_promote else f"{_num(c.next_step)}%"
        guards = c.guards
        rows.append(
            [
                c.route,
                f"{c.model} v{c.version}",
                f"{_num(c.weight)}%",
                next_step,
                ",".join(_num(s) for s in c.steps),
                f"{_num(c.interval_s)}s/{c.min_requests}",
                f"p99<={_num(guards.p99_ms)}ms err<={_num(guards.error_rate)} "
                f"psi<={_num(guards.score_psi)} decline±{_num(guards.decline_rate_delta)}",
            ]
        )
    lines = [
        f"config_version {config_version}",
        format_table(
            ["ROUTE", "CANARY", "WEIGHT", "NEXT", "STEPS", "INTERVAL/MIN", "GUARDS"], rows
        ),
    ]
    for c in canaries:
        if c.HasField("last_change"):
            last = c.last_change
            lines.append(
                f"{c.route}: last change v{last.config_version} {last.applied_at} {last.kind} "
                f"by {last.actor or '-'}: {last.reason or '-'}"
            )
    return "\n".join(lines)


def format_change(verb: str, config_version: int, diff: Sequence[str]) -> str:
    lines = [f"{verb} config_version {config_version}"]
    lines += [f"  {line}" for line in diff] or ["  (no routing change)"]
    return "\n".join(lines)


class AdminClient:
    """The admin stub with the token and actor on every call."""

    def __init__(self, args: argparse.Namespace) -> None:
        import grpc

        from riskwire.admin.v1 import admin_pb2_grpc

        token = read_token(args.token_file, os.environ)
        self._metadata = [("authorization", f"Bearer {token}")]
        if args.actor:
            self._metadata.append(("x-riskwire-actor", args.actor))
        self._timeout = args.timeout_s
        self._channel = grpc.insecure_channel(args.admin)
        self.stub = admin_pb2_grpc.AdminStub(self._channel)

    def call(self, method: str, request: Any) -> Any:
        import grpc

        try:
            return getattr(self.stub, method)(
                request, timeout=self._timeout, metadata=self._metadata
            )
        except grpc.RpcError as error:
            code = error.code()
            details = error.details()
            raise CommandError(exit_code_for(code.name), f"{code.name}: {details}") from None

    def close(self) -> None:
        self._channel.close()


def _read_file(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise CommandError(EXIT_USAGE, f"cannot read {path}: {exc.strerror}") from exc


def _expected(args: argparse.Namespace) -> int:
    return int(args.expect_version or 0)


def _show(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    from riskwire.admin.v1 import admin_pb2 as pb

    reply = client.call("GetRoutes", pb.GetRoutesRequest())
    if args.yaml:
        out.write(f"# config_version {reply.config_version}\n{reply.routes_yaml}")
    else:
        print(format_routes(reply.routes_yaml, reply.config_version), file=out)
    return EXIT_OK


def _validate(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    from riskwire.admin.v1 import admin_pb2 as pb

    reply = client.call(
        "ValidateRoutes", pb.ValidateRoutesRequest(routes_yaml=_read_file(args.file))
    )
    if not reply.valid:
        problems = "\n".join(f"- {p}" for p in reply.problems)
        raise CommandError(
            EXIT_REFUSED, f"{args.file}: invalid, {len(reply.problems)} problem(s):\n{problems}"
        )
    if args.routes_command == "diff":
        for line in reply.diff:
            print(line, file=out)
    else:
        print(
            format_change(f"{args.file}: valid against", reply.config_version, reply.diff), file=out
        )
    return EXIT_OK


def _apply(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    from riskwire.admin.v1 import admin_pb2 as pb

    request = pb.ApplyRoutesRequest(
        routes_yaml=_read_file(args.file),
        expected_config_version=_expected(args),
        reason=args.reason,
    )
    reply = client.call("ApplyRoutes", request)
    print(format_change("applied as", reply.config_version, reply.diff), file=out)
    return EXIT_OK


def _history(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    from riskwire.admin.v1 import admin_pb2 as pb

    reply = client.call("GetHistory", pb.GetHistoryRequest(limit=args.limit))
    print(format_history(reply.entries), file=out)
    return EXIT_OK


def _rollback(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    from riskwire.admin.v1 import admin_pb2 as pb

    request = pb.RollbackRoutesRequest(
        to_config_version=args.version, expected_config_version=_expected(args), reason=args.reason
    )
    reply = client.call("RollbackRoutes", request)
    print(
        format_change(f"rolled back to v{args.version} as", reply.config_version, reply.diff),
        file=out,
    )
    return EXIT_OK


def _promote(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    from riskwire.admin.v1 import admin_pb2 as pb

    request = pb.PromoteCanaryRequest(
        route=args.route, expected_config_version=_expected(args), reason=args.reason
    )
    reply = client.call("PromoteCanary", request)
    print(
        format_change(f"promoted {args.route}'s canary as", reply.config_version, reply.diff),
        file=out,
    )
    return EXIT_OK


def _canary_status(client: AdminClient, args: argparse.Namespace, out: TextIO) -> int:
    from riskwire.admin.v1 import admin_pb2 as pb

    reply = client.call("GetCanaryStatus", pb.GetCanaryStatusRequest(route=args.route or ""))
    print(format_canaries(reply.config_version, reply.canaries), file=out)
    return EXIT_OK


Command = Callable[[AdminClient, argparse.Namespace, TextIO], int]


def run_routes(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run one ``riskwire routes`` command; print errors to ``err``; return the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    command: Command = args.routes_func
    try:
        client = AdminClient(args)
        try:
            return command(client, args, out)
        finally:
            client.close()
    except CommandError as error:
        print(f"riskwire routes {args.routes_command}: {error.message}", file=err)
        return error.exit_code


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def add_routes_commands(commands: Any) -> None:
    """Add ``routes`` and its subcommands to the top-level subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--admin", default=DEFAULT_ADMIN, help=f"admin HOST:PORT (default {DEFAULT_ADMIN})"
    )
    common.add_argument(
        "--token-file",
        type=Path,
        help=f"bearer token file (default: ${TOKEN_ENV}, else {DEFAULT_TOKEN_FILE})",
    )
    common.add_argument(
        "--actor",
        default=os.environ.get("RISKWIRE_ACTOR") or _login(),
        help="who is asking, recorded in the route history (default: $RISKWIRE_ACTOR or login)",
    )
    common.add_argument("--timeout-s", type=float, default=10.0, help="per call (default 10)")
    change = argparse.ArgumentParser(add_help=False)
    change.add_argument(
        "--expect-version",
        type=positive_int,
        help="refuse (exit 3) unless this config_version is the one in force",
    )
    change.add_argument("--reason", default="", help="why, for the history and the audit log")

    routes = commands.add_parser(
        "routes",
        help="read and change the traffic split (admin port)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = routes.add_subparsers(dest="routes_command", required=True)

    def add(name: str, func: Command, help_text: str, *parents: argparse.ArgumentParser) -> Any:
        parser = sub.add_parser(name, help=help_text, parents=[common, *parents])
        parser.set_defaults(func=run_routes, routes_func=func)
        return parser

    show = add("show", _show, "print the table in force")
    show.add_argument("--yaml", action="store_true", help="print it as YAML")
    add("validate", _validate, "check FILE against the gateway; change nothing").add_argument(
        "file", type=Path
    )
    add("diff", _validate, "print what applying FILE would change").add_argument("file", type=Path)
    add("apply", _apply, "validate FILE and put it in force", change).add_argument(
        "file", type=Path
    )
    history = add("history", _history, "the accepted versions, newest first")
    history.add_argument("--limit", type=int, default=20, help="most entries (0: all)")
    add("rollback", _rollback, "put an earlier version's table back in force", change).add_argument(
        "version", type=positive_int
    )
    add("promote", _promote, "make ROUTE's canary arm its champion", change).add_argument("route")
    add("canary-status", _canary_status, "canary arms, weights and next steps").add_argument(
        "route", nargs="?", default=""
    )


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
