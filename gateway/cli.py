"""The ``riskwire`` command: serve, score, routes, data generate, models train."""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from gateway.audit.cli import add_audit_commands
from gateway.drift_cli import add_drift_commands
from gateway.governance_cli import add_governance_commands, add_model_governance_commands
from gateway.routes_cli import add_routes_commands

DEFAULT_MODELS = Path("var/models")
DEFAULT_DATA = Path("var/data/transactions.csv")


def _serve(args: argparse.Namespace) -> int:
    from gateway.server import serve
    from gateway.settings import load_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings(
        args.config,
        **{
            "grpc.port": args.port,
            "grpc.host": args.host,
            "admin.port": args.admin_port,
            "metrics.port": args.metrics_port,
            "models.repository": args.models,
            "routes_file": args.routes,
            "workers": args.workers,
            "encoder": args.encoder,
        },
    )
    return serve(settings)


def _score(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format

    from riskwire.v1 import scoring_pb2, scoring_pb2_grpc

    if args.json:
        txn = json_format.Parse(args.json, scoring_pb2.Transaction())
    else:
        txn = scoring_pb2.Transaction(
            transaction_id=args.transaction_id or f"cli-{uuid.uuid4()}",
            account_id=args.account,
            card_id=args.card,
            merchant_id=args.merchant,
            merchant_category_code=args.mcc,
            amount_minor=args.amount_minor,
            currency=args.currency,
            country=args.country,
            ip_country=args.ip_country or args.country,
            channel=args.channel,
            entry_mode=args.entry_mode,
            timestamp_ms=int(time.time() * 1000),
            device_id=args.device,
        )
    request = scoring_pb2.ScoreRequest(transaction=txn, explain=args.explain, route=args.route)
    with grpc.insecure_channel(args.target) as channel:
        stub = scoring_pb2_grpc.ScoringStub(channel)
        try:
            response = stub.Score(request, timeout=args.timeout_ms / 1000.0)
        except grpc.RpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 2
    print(json_format.MessageToJson(response, preserving_proto_field_name=True))
    return 0


def _generate(args: argparse.Namespace) -> int:
    from gateway.data.synth import SynthOptions, parse_channel_mix, write_dataset
    from gateway.data.table import read_table

    options = SynthOptions(
        fraud_rate=args.fraud_rate,
        amount_shift=args.amount_shift,
        merchant_mix=args.merchant_mix,
        channel_mix=parse_channel_mix(args.channel_mix) if args.channel_mix else {},
        attribute_label_correlation=args.attribute_label_correlation,
        days=args.days,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = write_dataset(args.out, args.rows, args.seed, options)
    labels = read_table(path)["label"]
    print(f"wrote {args.rows} rows to {path} (fraud rate {labels.mean():.4f})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from gateway.models.train import train_demo_models

    for path in train_demo_models(args.data, args.out, args.seed):
        print(f"wrote {path}")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from gateway.models.train import prepare_demo_repository

    prepare_demo_repository(args.models, args.data_dir, args.rows, args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="riskwire", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, help="settings YAML (see README)")
    serve.add_argument("--host", help="data-plane interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="data-plane port (default 50051; 0 = any free)")
    serve.add_argument("--admin-port", type=int, help="admin port (default 50052)")
    serve.add_argument("--metrics-port", type=int, help="HTTP metrics port (default 9464)")
    serve.add_argument("--models", type=Path, help="model repository (default var/models)")
    serve.add_argument("--routes", type=Path, help="routes YAML (default: one route)")
    serve.add_argument("--workers", type=int, help="processes sharing the port (default 1)")
    serve.add_argument("--encoder", choices=["auto", "native", "python"])
    serve.set_defaults(func=_serve)

    score = commands.add_parser("score", help="score one transaction and print the answer")
    score.add_argument("--target", default="127.0.0.1:50051")
    score.add_argument("--json", help="a Transaction as JSON (overrides the field flags)")
    score.add_argument("--transaction-id", default="")
    score.add_argument("--account", default="acct-1")
    score.add_argument("--card", default="card-1")
    score.add_argument("--merchant", default="m-1")
    score.add_argument("--mcc", default="5411")
    score.add_argument("--amount-minor", type=int, default=2599)
    score.add_argument("--currency", default="USD")
    score.add_argument("--country", default="US")
    score.add_argument("--ip-country", default="")
    score.add_argument("--channel", default="ECOMMERCE")
    score.add_argument("--entry-mode", default="CREDENTIAL_ON_FILE")
    score.add_argument("--device", default="dev-1")
    score.add_argument("--route", default="")
    score.add_argument("--explain", action="store_true")
    score.add_argument("--timeout-ms", type=float, default=1000.0)
    score.set_defaults(func=_score)

    add_routes_commands(commands)
    add_audit_commands(commands)
    add_drift_commands(commands)
    add_governance_commands(commands)

    data = commands.add_parser("data", help="synthetic transactions").add_subparsers(
        dest="data_command", required=True
    )
    gen = data.add_parser("generate", help="write a deterministic synthetic CSV")
    gen.add_argument("--rows", type=int, required=True)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--fraud-rate", type=float, default=0.01)
    gen.add_argument("--amount-shift", type=float, default=1.0, help="drift: amount multiplier")
    gen.add_argument("--merchant-mix", type=float, default=0.0, help="drift: 0..1 toward risky")
    gen.add_argument("--channel-mix", default="", help="drift: e.g. ECOMMERCE=0.6,ATM=0.1")
    gen.add_argument("--attribute-label-correlation", type=float, default=0.0)
    gen.add_argument("--days", type=int, default=30)
    gen.set_defaults(func=_generate)

    models = commands.add_parser("models", help="demo models").add_subparsers(
        dest="models_command", required=True
    )
    train = models.add_parser("train", help="train the champion and challenger, write ONNX + cards")
    train.add_argument("--data", type=Path, default=DEFAULT_DATA)
    train.add_argument("--out", type=Path, default=DEFAULT_MODELS)
    train.add_argument("--seed", type=int, default=7)
    train.set_defaults(func=_train)
    prepare = models.add_parser(
        "prepare-demo", help="generate data and train if models are missing"
    )
    prepare.add_argument("--models", type=Path, default=DEFAULT_MODELS)
    prepare.add_argument("--data-dir", type=Path, default=DEFAULT_DATA.parent)
    prepare.add_argument("--rows", type=int, default=200_000)
    prepare.add_argument("--seed", type=int, default=7)
    prepare.set_defaults(func=_prepare)
    add_model_governance_commands(models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, RuntimeError, FileNotFoundError) as error:
        print(f"riskwire: {error}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
