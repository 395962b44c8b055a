"""``kill -9`` a process writing the audit log as fast as it can; the next writer recovers.

Each run is a real child process with a real AuditWriter on a real directory. It
reports, as it goes, how many of its records it has seen fsynced; the parent kills it
with SIGKILL at a different moment each run, then starts the next run on the same
directory (which recovers the chain). At the end: ``verify`` passes, every run's
records are there in order with no gap and no duplicate, and every record a child
saw fsynced survived (records written but not yet fsynced survive too: ``kill -9``
leaves the page cache intact; only a power cut can take those).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from gateway.audit.chain import list_segments
from gateway.audit.settings import AuditSettings
from gateway.audit.verify import verify
from gateway.audit.writer import AuditEvent, AuditWriter

ROOT = Path(__file__).resolve().parents[2]
LINE_WAIT_S = 120.0


def settings(directory: Path) -> AuditSettings:
    return AuditSettings(
        directory=directory / "audit",
        key_file=directory / "audit.key",
        fsync_every_records=64,
        fsync_interval_ms=5,
        queue_records=4096,
        segment_max_bytes=256 * 1024,
    )


def child(directory: str, run: int) -> None:
    """The writer the parent kills: submits forever, printing what it has seen fsynced."""
    writer = AuditWriter(settings(Path(directory)))
    writer.start()
    print("STARTED", flush=True)
    n = 0
    while True:
        for _ in range(200):
            event = AuditEvent("decision", {"run": run, "n": n}, {"transaction_id": f"r{run}-{n}"})
            writer.submit_blocking(event, timeout_ms=60_000)
            n += 1
        print(f"COMMITTED {writer.committed}", flush=True)


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                lines.put(line.strip())
        lines.put("EOF")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _committed(line: str) -> int:
    assert line.startswith("COMMITTED"), line
    return int(line.split()[1])


def run_and_kill(directory: Path, run: int, kill_at: int) -> int:
    """Start a child, SIGKILL it once it has reported ``kill_at`` records fsynced;
    returns the most it reported fsynced."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from tests.integration.test_audit_recovery import child; "
            "child(sys.argv[1], int(sys.argv[2]))",
            str(directory),
            str(run),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = _lines(process)
    seen = 0
    try:
        assert lines.get(timeout=LINE_WAIT_S) == "STARTED"
        while seen < kill_at:
            seen = max(seen, _committed(lines.get(timeout=LINE_WAIT_S)))
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    while (line := lines.get(timeout=LINE_WAIT_S)) != "EOF":
        seen = max(seen, _committed(line))  # printed before it died: fsynced too
    return seen


def test_every_fsynced_record_survives_kill_9(tmp_path: Path) -> None:
    # Killed at different moments: just after its first group commit, then later.
    committed = {}
    for run, kill_at in enumerate((1, 2_000, 10_000)):
        committed[run] = run_and_kill(tmp_path, run, kill_at)
        if run == 1:
            # A kill can also stop a large write() between pages, leaving a partial
            # line: make one after this kill (whole lines are never cut, so nothing
            # fsynced is lost), for the next start to repair.
            newest = list_segments(tmp_path / "audit")[0][-1].path
            last_line = newest.read_bytes().splitlines(True)[-1]
            torn = last_line[: len(last_line) // 2]
            with newest.open("ab") as out:
                out.write(torn)

    last = AuditWriter(settings(tmp_path))
    last.start()  # recovers the third kill
    last.close_blocking()

    report = verify(tmp_path / "audit")
    assert report.ok, report.render()
    records = [
        json.loads(line)
        for segment in list_segments(tmp_path / "audit")[0]
        for line in segment.path.read_bytes().splitlines()
    ]
    assert [r["seq"] for r in records] == list(range(len(records)))
    for run, fsynced in committed.items():
        numbers = [r["payload"]["n"] for r in records if r["payload"].get("run") == run]
        assert numbers == list(range(len(numbers))), f"run {run}: a gap or a duplicate"
        assert len(numbers) >= fsynced, f"run {run}: {fsynced} fsynced, {len(numbers)} kept"
    recoveries = [r for r in records if r["kind"] == "recovery"]
    assert len(recoveries) == 3  # runs 1 and 2, and the last writer
    cut = recoveries[1]["payload"]
    assert (cut["cut_bytes"], cut["cut_lines"]) == (len(torn), 1)
    assert (tmp_path / "audit" / cut["torn_file"]).read_bytes() == torn
    for recovery in recoveries:
        before = records[recovery["seq"] - 1]
        assert recovery["prev"] == before["digest"]
        resumed = recovery["payload"]["resumed_after_seq"]
        if before["kind"] == "segment_start" and resumed == before["seq"] - 1:
            # Killed just after a rotation, before the new segment's segment_start:
            # recovery wrote it first (linked to the head), then its own record.
            assert before["prev"] == records[resumed]["digest"]
        else:
            assert resumed == before["seq"]
