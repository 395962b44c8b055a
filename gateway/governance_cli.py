"""``riskwire models validate|approve`` and ``riskwire governance report``.

The commands read the model repository directly (no server needed): a reviewer runs
them where the files are, before a version is routed, and an approval is an act on
the files, recorded in the audit log as it is made.

An approval is written to its own chain of the audit log, worker id
``GOVERNANCE_AUDIT_WORKER`` (999) by default, beside the gateway workers' chains
(0 .. workers-1): a chain has one writer at a time, and the gateway may be writing its
own while a reviewer approves. ``riskwire audit verify`` checks it with the rest.

Exit codes: 0 validation passed / approved / report written; 1 validation failed or
approval refused (the failed gates are printed); 2 usage (the top-level ``main``).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.audit.settings import AuditSettings

if TYPE_CHECKING:
    from gateway.models.governance import ApprovalRecorder, ValidationOptions

DEFAULT_MODELS = Path("var/models")
DEFAULT_REPORTS = Path("var/reports/governance")
GOVERNANCE_AUDIT_WORKER = 999
"""The audit chain approvals go to; gateway workers write 0 .. workers-1."""

EXIT_OK = 0
EXIT_FAILED = 1


def _options(args: argparse.Namespace) -> ValidationOptions:
    from gateway.models.governance import ValidationOptions

    given = {
        "latency_budget_ms": args.latency_budget_ms,
        "eo_bound": args.eo_bound,
        "min_group_size": args.min_group_size,
        "data": args.data,
    }
    return ValidationOptions(**{k: v for k, v in given.items() if v is not None})


def _validate(args: argparse.Namespace) -> int:
    from gateway.models.governance import validate

    report = validate(args.models, args.name, args.version, _options(args))
    if args.json:
        print(json.dumps(report.to_json(evidence=args.evidence), indent=2))
    else:
        print(report.render())
    return EXIT_OK if report.passed else EXIT_FAILED


def _actor() -> str:
    try:
        return f"riskwire models approve (user {getpass.getuser()})"
    except (KeyError, OSError):  # no login name in some containers
        return "riskwire models approve"


def audit_recorder(settings: AuditSettings) -> ApprovalRecorder:
    """An ApprovalRecorder writing ``model_approval`` records to the chain that
    ``settings`` names, durably (fsynced) before it returns."""
    from gateway.audit.sink import ChainAuditSink
    from gateway.audit.writer import AuditWriter, AuditWriterFailed
    from gateway.models.governance import ApprovalRecord

    def record(approval: ApprovalRecord) -> None:
        writer = AuditWriter(settings)
        writer.start()
        try:
            ChainAuditSink(writer).model_approval(
                approval.model,
                approval.version,
                "approved",
                approval.approver,
                approval.date,
                actor=_actor(),
                reason=approval.reason,
            )
            if not writer.flush():
                raise AuditWriterFailed("the model_approval record did not reach the disk")
        finally:
            writer.close_blocking()

    return record


def _approve(args: argparse.Namespace) -> int:
    from gateway.audit import AuditRecoveryError, AuditUnavailable
    from gateway.models.governance import ApprovalRefused, approve

    settings = AuditSettings(
        directory=args.audit_dir, key_file=args.audit_key_file, worker_id=args.audit_worker_id
    )
    try:
        card, report = approve(
            args.models, args.name, args.version, args.by, audit_recorder(settings), _options(args)
        )
    except ApprovalRefused as refused:
        print(refused.report.render(), file=sys.stderr)
        print(f"riskwire: {refused}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, AuditUnavailable, AuditRecoveryError) as exc:
        # The record is written before the card: a failure here leaves the card as it was.
        print(
            f"riskwire: {args.name} v{args.version} not approved: the audit record could not "
            f"be written to {settings.directory}: {exc}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(report.render())
    print(
        f"approved {card.name} v{card.version} by {card.approval.approver} on "
        f"{card.approval.date}; recorded in {settings.directory} (chain w{settings.worker_id})"
    )
    return EXIT_OK


def _report(args: argparse.Namespace) -> int:
    from gateway.models.report import LiveSource, write_reports

    live = LiveSource(metrics_url=args.metrics_url, metrics_file=args.metrics_file)
    written = write_reports(
        args.models,
        args.out,
        _options(args),
        live=live if live.configured else None,
        audit_dir=args.audit_dir,
    )
    for path in written:
        print(f"wrote {path}")
    return EXIT_OK


def _gate_arguments(parser: argparse.ArgumentParser) -> None:
    # Defaults stay None here and are ValidationOptions' own: importing the gates
    # (onnxruntime and all) to show them would slow every riskwire command down.
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS, help="model repository")
    parser.add_argument(
        "--latency-budget-ms",
        type=float,
        help="p99 a single-row model call may take on this machine (default 2)",
    )
    parser.add_argument(
        "--eo-bound",
        type=float,
        help="largest equalized-odds difference per monitoring attribute (default 0.1; "
        "the disparate-impact ratio must be >= 0.8, the four-fifths rule)",
    )
    parser.add_argument(
        "--min-group-size",
        type=int,
        help="held-out rows a group needs to be compared (default 100)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="the training CSV (default: regenerated from the card's lineage); its "
        "digest must match the card's",
    )


def add_model_governance_commands(models: Any) -> None:
    """Add ``validate`` and ``approve`` to the ``riskwire models`` subparsers."""
    check = models.add_parser(
        "validate",
        help="run the governance gates on a model version; exit 1 when one fails",
        description="Check card schema, ONNX inputs against the feature spec, golden "
        "vectors, single-row latency and held-out fairness of NAME VERSION.",
    )
    check.add_argument("name", metavar="NAME")
    check.add_argument("version", metavar="VERSION", type=int)
    _gate_arguments(check)
    check.add_argument("--json", action="store_true", help="a JSON report instead of text")
    check.add_argument(
        "--evidence",
        action="store_true",
        help="with --json: include the evidence (latency samples, per-group rates)",
    )
    check.set_defaults(func=_validate)

    sign = models.add_parser(
        "approve",
        help="approve a model version for live traffic when every gate passes",
        description="Validate NAME VERSION; when every gate passes, record the approval "
        "in the audit log, then write approval {status: approved, approver, date} into "
        "its card.yaml. Refused (exit 1, nothing written) when a gate fails.",
    )
    sign.add_argument("name", metavar="NAME")
    sign.add_argument("version", metavar="VERSION", type=int)
    sign.add_argument("--by", required=True, metavar="WHO", help="the approver")
    _gate_arguments(sign)
    defaults = AuditSettings()
    sign.add_argument(
        "--audit-dir",
        type=Path,
        default=defaults.directory,
        help=f"the audit log directory (default {defaults.directory})",
    )
    sign.add_argument(
        "--audit-key-file",
        type=Path,
        default=defaults.key_file,
        help=f"the audit key (default {defaults.key_file}; made when missing)",
    )
    sign.add_argument(
        "--audit-worker-id",
        type=int,
        default=GOVERNANCE_AUDIT_WORKER,
        help=f"the chain approvals are written to (default {GOVERNANCE_AUDIT_WORKER})",
    )
    sign.set_defaults(func=_approve)


def add_governance_commands(commands: Any) -> None:
    """Add ``governance report`` to the top-level subparsers."""
    governance = commands.add_parser("governance", help="model-risk reports").add_subparsers(
        dest="governance_command", required=True
    )
    report = governance.add_parser(
        "report",
        help="write one HTML model-risk report per model version",
        description="For every version in the repository: inventory and owner, lineage, "
        "validation evidence (the gates, run now), approval, monitoring (live figures "
        "from a /metrics scrape when given, else the card's training-time figures) and "
        "the audit log's verification, with plots, as one self-contained HTML file.",
    )
    _gate_arguments(report)
    report.add_argument(
        "--out", type=Path, default=DEFAULT_REPORTS, help=f"directory (default {DEFAULT_REPORTS})"
    )
    live = report.add_mutually_exclusive_group()
    live.add_argument(
        "--metrics-url", help="a gateway's Prometheus endpoint, e.g. http://127.0.0.1:9464/metrics"
    )
    live.add_argument("--metrics-file", type=Path, help="a saved /metrics scrape")
    report.add_argument(
        "--audit-dir", type=Path, help="the audit log to verify (default: not configured)"
    )
    report.set_defaults(func=_report)
