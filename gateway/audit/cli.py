"""``riskwire audit verify`` and ``riskwire audit query``: the auditor's side of the log.

Both read the segments directly (no server needed), so they work on a copy of the
directory as well as on a live one; a live worker's newest segment may end mid-line
while it writes, which verify reports as a torn tail at its last line.

Exit codes, for scripts: 0 ok; 1 verify found a problem; 2 usage (bad arguments, no
such directory, unreadable key file).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.audit.query import QueryStats, parse_time, query
from gateway.audit.records import load_key
from gateway.audit.verify import verify

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def _verify(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"riskwire audit verify: no directory {directory}", file=sys.stderr)
        return EXIT_USAGE
    report = verify(directory)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        print(report.render())
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _query(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    if not directory.is_dir():
        print(f"riskwire audit query: no directory {directory}", file=sys.stderr)
        return EXIT_USAGE
    try:
        key = load_key(args.key_file)
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except (OSError, ValueError) as exc:
        print(f"riskwire audit query: {exc}", file=sys.stderr)
        return EXIT_USAGE
    stats = QueryStats()
    records = query(
        directory,
        key,
        transaction_id=args.transaction_id,
        account=args.account,
        card=args.card,
        model=args.model,
        version=args.version,
        since=since,
        until=until,
        decision=args.decision,
        kinds=args.kind or None,
        stats=stats,
    )
    out = sys.stdout
    for n, record in enumerate(records, 1):
        out.write(json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n")
        if args.limit is not None and n >= args.limit:
            break
    out.flush()
    summary: dict[str, Any] = {
        "scanned": stats.scanned,
        "matched": stats.matched,
        "unparsable_lines": stats.unparsable,
        "other_keys": stats.other_keys,
    }
    print(f"riskwire audit query: {json.dumps(summary, sort_keys=True)}", file=sys.stderr)
    if stats.other_keys:
        print(
            f"riskwire audit query: {stats.other_keys} records were hashed under another "
            "key and cannot match these ids; query again with that key file",
            file=sys.stderr,
        )
    return EXIT_OK


def add_audit_commands(commands: Any) -> None:
    """Add ``audit verify`` and ``audit query`` to the top-level subparsers."""
    audit = commands.add_parser(
        "audit", help="verify and read the hash-chained audit log"
    ).add_subparsers(dest="audit_command", required=True)

    check = audit.add_parser(
        "verify",
        help="check every worker's chain; exit 1 at the first broken record",
        description="Check every chain under DIR: digests, links, sequence, segments. "
        "Reports the first problem per chain with its file, line and record.",
    )
    check.add_argument("directory", type=Path, metavar="DIR", help="the audit directory")
    check.add_argument("--json", action="store_true", help="a JSON report instead of text")
    check.set_defaults(func=_verify)

    read = audit.add_parser(
        "query",
        help="print matching records as JSON lines",
        description="Print the records under DIR that match every filter given, as JSON "
        "lines in time order; a summary goes to stderr. Ids are given in clear and hashed "
        "with the key, as the writer stored them.",
    )
    read.add_argument("directory", type=Path, metavar="DIR", help="the audit directory")
    read.add_argument("--key-file", type=Path, required=True, help="the audit key (audit.key_file)")
    read.add_argument("--transaction-id", help="a transaction id, in clear")
    read.add_argument("--account", help="an account id, in clear")
    read.add_argument("--card", help="a card id, in clear")
    read.add_argument("--model", help="model name")
    read.add_argument("--version", type=int, help="model version")
    read.add_argument("--since", help="from this time (ISO 8601, UTC if no zone; or epoch ms)")
    read.add_argument("--until", help="before this time (same forms as --since)")
    read.add_argument(
        "--decision", choices=["APPROVE", "REVIEW", "DECLINE"], type=str.upper, help="decision"
    )
    read.add_argument(
        "--kind",
        action="append",
        help="record kind (decision, shadow_score, config_change, ...); repeatable",
    )
    read.add_argument("--limit", type=int, help="stop after this many records")
    read.set_defaults(func=_query)
