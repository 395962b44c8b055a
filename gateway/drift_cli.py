"""``riskwire drift report``: the gateway's drift table, and a plot of the worst shifts.

It asks the admin port (Admin GetDrift) rather than Prometheus so that an on-call
engineer gets an answer from the one process in question with nothing else running;
Prometheus computes the same PSI fleet-wide from the bin counters
(``gateway.telemetry.drift.promql_psi``).

Exit codes, for scripts and cron alerts: 0 no distribution at "act"; 1 at least one
is at "act" (PSI >= act_psi); 2 usage (bad arguments, an unknown model or version,
--plot without matplotlib or to an unwritable path); 3 drift monitoring is off
(FAILED_PRECONDITION); 4 the admin port cannot be reached or refused the credentials.
They are ``riskwire routes``' codes, except that 1 means "act" here, so the server's
other refusals count as usage errors.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from gateway.routes_cli import (
    DEFAULT_ADMIN,
    DEFAULT_TOKEN_FILE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    TOKEN_ENV,
    CommandError,
    exit_code_for,
    format_table,
    positive_int,
    read_token,
)

if TYPE_CHECKING:
    from riskwire.admin.v1 import admin_pb2 as pb

EXIT_ACT = 1
"""Some distribution is at "act": the same number as routes' EXIT_REFUSED."""

SERVER_TOKEN_ENV = "RISKWIRE_ADMIN__TOKEN"
"""The server's own ``admin.token`` setting, read here too so that one variable serves
the server and the CLI."""


def admin_token(args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]) -> str:
    """``--token``, else $RISKWIRE_ADMIN__TOKEN, else what ``riskwire routes`` reads
    (``--token-file``, $RISKWIRE_ADMIN_TOKEN, ``var/state/admin.token``)."""
    for token in (args.token or "", environ.get(SERVER_TOKEN_ENV, "")):
        if token.strip():
            return token.strip()
    return read_token(args.token_file, environ)


def get_drift(args: argparse.Namespace) -> pb.GetDriftResponse:
    """Call Admin GetDrift with the bearer token.

    Raises:
        CommandError: with ``riskwire routes``' exit code for the status, except that
            a refusal (routes' 1, here "act") is a usage error (2).
    """
    import grpc

    from riskwire.admin.v1 import admin_pb2, admin_pb2_grpc

    token = admin_token(args, os.environ)
    request = admin_pb2.GetDriftRequest(model=args.model or "", version=args.version or 0)
    with grpc.insecure_channel(args.admin) as channel:
        stub = admin_pb2_grpc.AdminStub(channel)
        try:
            reply: pb.GetDriftResponse = stub.GetDrift(
                request,
                timeout=args.timeout_s,
                metadata=(("authorization", f"Bearer {token}"),),
            )
        except grpc.RpcError as error:
            code = error.code()
            exit_code = exit_code_for(code.name)
            raise CommandError(
                EXIT_USAGE if exit_code == EXIT_REFUSED else exit_code,
                f"{code.name}: {error.details()}",
            ) from None
    return reply


def _psi_key(feature: pb.FeatureDrift) -> float:
    """Sort key: highest PSI first, distributions without one last."""
    return -feature.psi if feature.has_psi else math.inf


def format_report(reply: pb.GetDriftResponse) -> str:
    """Per model version, a line of totals and its distributions by PSI, worst first."""
    if not reply.models:
        return "(no model version has drift data yet)"
    blocks = [
        f"thresholds: watch >= {reply.watch_psi:g}, act >= {reply.act_psi:g}; "
        f"PSI from {reply.min_samples} samples"
    ]
    for model in reply.models:
        rows = [
            [f.feature, f"{f.psi:.4f}" if f.has_psi else "-", str(f.samples), f.level]
            for f in sorted(model.features, key=_psi_key)
        ]
        dropped = f", {model.dropped_rows} rows dropped" if model.dropped_rows else ""
        blocks.append(
            f"{model.model} v{model.version}: {model.level} ({model.samples} samples{dropped})\n"
            + format_table(["FEATURE", "PSI", "SAMPLES", "LEVEL"], rows)
        )
    return "\n\n".join(blocks)


def _bin_labels(edges: Sequence[float]) -> list[str]:
    inner = [f"[{a:.3g}, {b:.3g})" for a, b in itertools.pairwise(edges)]
    return [f"< {edges[0]:.3g}", *inner, f">= {edges[-1]:.3g}"]


def write_plot(reply: pb.GetDriftResponse, top: int, path: Path) -> int:
    """Reference against live bars for the ``top`` worst distributions of each model
    version, one row per version; returns how many panels were drawn.

    Raises:
        CommandError: matplotlib is missing, or the file cannot be written (usage).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError(
            EXIT_USAGE, "--plot needs matplotlib: pip install 'riskwire[reports]'"
        ) from None
    import numpy as np

    panels = [sorted(m.features, key=_psi_key)[:top] for m in reply.models]
    columns = max((len(p) for p in panels), default=0)
    if columns == 0:
        raise CommandError(EXIT_USAGE, "nothing to plot: no model version has drift data yet")
    figure = Figure(figsize=(4.2 * columns, 3.4 * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), columns, squeeze=False)
    drawn = 0
    for row, (model, features) in enumerate(zip(reply.models, panels, strict=True)):
        for col in range(columns):
            ax: Any = axes[row][col]
            if col >= len(features):
                ax.set_axis_off()
                continue
            feature = features[col]
            x = np.arange(len(feature.reference_proportions))
            ax.bar(x - 0.2, feature.reference_proportions, 0.4, label="reference")
            ax.bar(x + 0.2, feature.live_proportions, 0.4, label="live")
            ax.set_xticks(x, _bin_labels(feature.edges), rotation=60, ha="right", fontsize=7)
            psi_text = f"PSI {feature.psi:.3f}" if feature.has_psi else "PSI -"
            ax.set_title(
                f"{model.model} v{model.version}: {feature.feature}\n"
                f"{psi_text} ({feature.level}, {feature.samples} samples)",
                fontsize=9,
            )
            ax.set_ylabel("share of rows")
            if col == 0:
                ax.legend(fontsize=8)
            drawn += 1
    try:
        figure.savefig(path, dpi=100)
    except OSError as exc:
        raise CommandError(EXIT_USAGE, f"cannot write {path}: {exc.strerror or exc}") from None
    return drawn


def run_report(
    args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``riskwire drift report``; print errors to ``err``; return the exit code."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        if args.version is not None and not args.model:
            raise CommandError(EXIT_USAGE, "--version needs --model")
        reply = get_drift(args)
        if args.json:
            from google.protobuf import json_format

            print(json_format.MessageToJson(reply, preserving_proto_field_name=True), file=out)
        else:
            print(format_report(reply), file=out)
        if args.plot is not None:
            drawn = write_plot(reply, args.top, args.plot)
            if not args.json:
                print(f"wrote {args.plot} ({drawn} distributions)", file=out)
    except CommandError as error:
        print(f"riskwire drift report: {error.message}", file=err)
        return error.exit_code
    act = any(f.level == "act" for m in reply.models for f in m.features)
    return EXIT_ACT if act else EXIT_OK


def add_drift_commands(commands: Any) -> None:
    """Add ``drift`` and its ``report`` subcommand to the top-level subparsers."""
    drift = commands.add_parser(
        "drift",
        help="feature and score drift against the model cards (admin port)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = drift.add_subparsers(dest="drift_command", required=True)
    report = sub.add_parser("report", help="PSI per feature and score, worst first")
    report.add_argument(
        "--admin", default=DEFAULT_ADMIN, help=f"admin HOST:PORT (default {DEFAULT_ADMIN})"
    )
    report.add_argument(
        "--token",
        help=f"bearer token (default: ${SERVER_TOKEN_ENV}, else --token-file, "
        f"${TOKEN_ENV} or {DEFAULT_TOKEN_FILE})",
    )
    report.add_argument("--token-file", type=Path, help="file holding the bearer token")
    report.add_argument("--timeout-s", type=float, default=10.0, help="per call (default 10)")
    report.add_argument("--model", help="one model (default: every monitored model)")
    report.add_argument("--version", type=positive_int, help="one version of --model")
    report.add_argument(
        "--top", type=positive_int, default=4, help="distributions per version to plot (default 4)"
    )
    report.add_argument("--plot", type=Path, help="write reference vs live bars to this PNG")
    report.add_argument("--json", action="store_true", help="print GetDrift's answer as JSON")
    report.set_defaults(func=run_report)
