"""The audit writer: what a call pays to submit its record, and what the writer keeps up with.

Three figures, each the median over `--repeats` runs (min beside it):

- submit cost on the calling thread (what the event loop pays per call), with the
  writer thread running and competing for the GIL as it does in the server:
  `event` builds an AuditEvent with two entity ids and submits it; `decision x1`
  builds a one-transaction DecisionRecords (what a Score call queues) and offers it;
  `decision x64` the same for a 64-transaction ScoreBatch (per call, not per row).
- end to end: records per second from the first submit to the flush that makes the
  last one durable, with group commit at `fsync_every_records` in 64, 512 and 4096
  (`fsync_interval_ms` 50), for one-transaction decisions (records hashed, serialized,
  chained and written on the writer thread). The directory is a fresh temporary one
  (the disk of `--dir`, default the system's temp directory).
- sealing: one thread turning one-transaction decisions into sealed lines (ids hashed,
  payload written, digest chained: the writer thread's work per record, which the
  event loop waits out under the GIL), in us per record.

`--sealing python` seals with the Python reference instead of gateway._native._audit
(run both, one after the other, to compare):

    .venv/bin/python -m benchmarks.micro.audit        # ~30 seconds
    .venv/bin/python -m benchmarks.micro.audit --sealing python --no-report

Writes benchmarks/results/micro-audit-latest.json (machine, configuration, results).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.load.machine import REPO_ROOT, write_report
from gateway.audit import records as audit_records
from gateway.audit.records import GENESIS, EntityHasher, RecordKind, seal
from gateway.audit.settings import AuditSettings
from gateway.audit.sink import ChainAuditSink, DecisionRecords
from gateway.audit.writer import AuditEvent, AuditQueueFull, AuditWriter, now_ms
from gateway.dataplane import ScoreResult
from gateway.decisions import DecisionSource
from gateway.grpc.converters import batch_from_transactions
from riskwire.v1 import scoring_pb2 as pb
from router.routes import ArmRole, Decision

RESULTS = REPO_ROOT / "benchmarks" / "results" / "micro-audit-latest.json"
KEY = b"benchmark-key-0123456789abcdef0123"


def decision_item(rows: int, offset: int = 0) -> DecisionRecords:
    txns = [
        pb.Transaction(
            transaction_id=f"txn-{offset + i:012d}",
            account_id=f"acct-{(offset + i) % 5000}",
            card_id=f"card-{(offset + i) % 9000}",
            merchant_id="m-1",
            merchant_category_code="5411",
            amount_minor=2599,
            currency="USD",
            country="US",
            ip_country="US",
            channel=pb.ECOMMERCE,
            timestamp_ms=1_764_356_400_000,
        )
        for i in range(rows)
    ]
    results = [
        ScoreResult(
            transaction_id=t.transaction_id,
            score=0.0731,
            decision=Decision.APPROVE,
            model_name="fraud-gbdt",
            model_version=3,
            arm=ArmRole.CHAMPION,
            source=DecisionSource.MODEL,
            route="default",
            config_version=42,
        )
        for t in txns
    ]
    return DecisionRecords(batch_from_transactions(txns), results, latency_us=850)


def open_writer(directory: Path, fsync_every: int) -> AuditWriter:
    settings = AuditSettings(
        directory=directory / "audit",
        key_file=directory / "audit.key",
        queue_records=1_000_000,
        fsync_every_records=fsync_every,
        fsync_interval_ms=50,
    )
    writer = AuditWriter(settings, key=KEY)
    writer.start()
    return writer


class Hold:
    """A queue item that keeps the writer thread waiting until released: the submits
    timed behind it pay for the calling thread's work alone, no GIL shared."""

    kind: RecordKind = "admin_refused"
    record_count = 1

    def __init__(self) -> None:
        self.taken = threading.Event()
        self.release = threading.Event()

    def expand(self, hash_entity: Callable[[str], str]) -> Iterator[tuple[int, dict[str, Any]]]:
        self.taken.set()
        self.release.wait()
        yield now_ms(), {"benchmark": "hold"}


def submit_cost(base: Path, repeats: int, calls: int, held: bool) -> dict[str, list[float]]:
    """Seconds per submit on this thread, per kind of call, one figure per repeat;
    ``held``: with the writer thread parked, else writing as it goes."""
    writer = open_writer(base / f"submit-{held}", 512)
    sink = ChainAuditSink(writer)
    single = [decision_item(1, i) for i in range(64)]
    batch = decision_item(64)
    items: dict[str, Callable[[int], object]] = {
        "event": lambda i: writer.submit(
            AuditEvent(
                "decision",
                {"model": "fraud-gbdt", "version": 3, "score": 0.0731},
                {"transaction_id": f"txn-{i}", "account_id": "acct-1"},
            )
        ),
        "decision x1": lambda i: sink.offer_decisions(
            DecisionRecords(single[i % 64].batch, single[i % 64].results, 850)
        ),
        "decision x64": lambda i: sink.offer_decisions(
            DecisionRecords(batch.batch, batch.results, 850)
        ),
    }
    runs: dict[str, list[float]] = {name: [] for name in items}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, call in items.items():
                count = calls if name != "decision x64" else max(1, calls // 64)
                hold = Hold()
                if held:
                    writer.submit(hold)
                    hold.taken.wait()
                start = time.perf_counter()
                for i in range(count):
                    call(i)
                runs[name].append((time.perf_counter() - start) / count)
                hold.release.set()
                writer.flush(60)  # untimed: each run starts with the writer caught up
    finally:
        if enabled:
            gc.enable()
    writer.close_blocking()
    return runs


def sealing_cost(records: int, repeats: int) -> list[float]:
    """Seconds per record of expand + seal on this thread (one-transaction decisions)."""
    items = [decision_item(1, offset=i) for i in range(512)]
    hasher = EntityHasher(KEY)
    runs = []
    for _ in range(repeats):
        prev = GENESIS
        start = time.perf_counter()
        for n in range(records):
            for ts_ms, payload in items[n % len(items)].expand(hasher):
                prev, _ = seal(
                    seq=n,
                    ts_ms=ts_ms,
                    kind="decision",
                    worker=0,
                    key_id="bench",
                    payload=payload,
                    prev=prev,
                )
        runs.append((time.perf_counter() - start) / records)
    return runs


def end_to_end(base: Path, fsync_every: int, records: int, repeats: int) -> list[float]:
    """Records per second, submit to durable, one figure per repeat."""
    item = decision_item(1)
    rates = []
    for repeat in range(repeats):
        writer = open_writer(base / f"e2e-{fsync_every}-{repeat}", fsync_every)
        start = time.perf_counter()
        for _ in range(records):
            while True:
                try:
                    writer.submit(DecisionRecords(item.batch, item.results, 850))
                    break
                except AuditQueueFull:  # never with this queue; kept honest anyway
                    time.sleep(0.0001)
        assert writer.flush(120)
        rates.append(records / (time.perf_counter() - start))
        writer.close_blocking()
    return rates


def summary(values: Sequence[float], scale: float, unit: str) -> dict[str, Any]:
    return {
        "median": statistics.median(values) * scale,
        "min": min(values) * scale,
        "max": max(values) * scale,
        "unit": unit,
        "runs": len(values),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20_000, help="submits per timed run")
    parser.add_argument("--records", type=int, default=30_000, help="records per e2e run")
    parser.add_argument("--dir", type=Path, default=None, help="where the segments go")
    parser.add_argument("--no-report", action="store_true", help="print only")
    parser.add_argument(
        "--sealing",
        choices=("native", "python"),
        default="native",
        help="seal with gateway._native._audit (when built) or the Python reference",
    )
    args = parser.parse_args(argv)
    if args.sealing == "python":
        audit_records.NATIVE = None  # before any writer or hasher exists
    print(
        f"sealing: {'gateway._native._audit' if audit_records.NATIVE else 'the Python reference'}"
    )

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        base = Path(tmp)
        for held, title in ((False, "writing as it goes"), (True, "parked")):
            print(f"submit cost on the calling thread, writer thread {title}")
            for name, runs in submit_cost(base, args.repeats, args.calls, held).items():
                s = summary(runs, 1e6, "us/call")
                print(f"  {name:<14} median {s['median']:7.2f} us   min {s['min']:7.2f} us")
                results.append({"figure": "submit", "writer": title, "call": name, **s})
        print("end to end, one-transaction decisions, submit to fsynced")
        for every in (64, 512, 4096):
            s = summary(end_to_end(base, every, args.records, args.repeats), 1.0, "records/s")
            print(
                f"  fsync every {every:>4} records  median {s['median']:9,.0f} records/s   "
                f"min {s['min']:9,.0f}"
            )
            results.append({"figure": "end_to_end", "fsync_every_records": every, **s})
    s = summary(sealing_cost(args.records, args.repeats), 1e6, "us/record")
    print(f"sealing, one thread  median {s['median']:7.2f} us/record   min {s['min']:7.2f}")
    results.append({"figure": "sealing", **s})
    if not args.no_report:
        config = {
            "repeats": args.repeats,
            "calls": args.calls,
            "records": args.records,
            "sealing": "native" if audit_records.NATIVE else "python",
        }
        write_report(RESULTS, "audit", config, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
