"""The routes-file watcher: a good edit is applied, a bad one logged and ignored."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from gateway.routes_watch import RoutesFileWatcher
from router.routes import load_table
from router.store import RouteStore

ROUTES = """
routes:
  - name: default
    salt: s
    arms:
      - {{model: m, version: 1, weight: {w1}}}
      - {{model: m, version: 2, weight: {w2}, role: challenger}}
"""


def _write(path: Path, text: str, bump_ns: int) -> None:
    path.write_text(text)
    stat = path.stat()
    # A distinct mtime whatever the filesystem's clock granularity.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + bump_ns))


def test_good_edits_apply_and_bad_ones_are_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.format(w1=100, w2=0))
    store = RouteStore(load_table(path.read_text()))
    watcher = RoutesFileWatcher(path, store, poll_s=0.01)

    async def scenario() -> list[bool]:
        results = [await watcher.check()]  # unchanged
        _write(path, ROUTES.format(w1=60, w2=40), 1_000_000)
        results.append(await watcher.check())
        _write(path, ROUTES.format(w1=60, w2=30), 2_000_000)
        results.append(await watcher.check())
        os.utime(path, ns=(0, path.stat().st_mtime_ns + 3_000_000))  # touched, same bytes
        results.append(await watcher.check())
        _write(path, ROUTES.format(w1=60, w2=40), 4_000_000)  # back to the table in force
        results.append(await watcher.check())
        return results

    with caplog.at_level(logging.INFO, logger="riskwire.routes_watch"):
        results = asyncio.run(scenario())
    assert results == [False, True, False, False, False]
    assert store.current.config_version == 2
    assert store.current.actor == "routes-file"
    assert str(path) in store.current.reason
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1
    assert "arms: weights sum to 90, not 100" in refusals[0].getMessage()
    assert "config_version 2 keeps serving" in refusals[0].getMessage()


def test_the_task_polls_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.format(w1=100, w2=0))
    store = RouteStore(load_table(path.read_text()))

    async def scenario() -> None:
        watcher = RoutesFileWatcher(path, store, poll_s=0.01)
        watcher.start()
        _write(path, ROUTES.format(w1=50, w2=50), 1_000_000)
        for _ in range(500):
            if store.current.config_version == 2:
                break
            await asyncio.sleep(0.01)
        await watcher.stop()

    asyncio.run(scenario())
    assert store.current.config_version == 2


def test_poll_interval_must_be_positive(tmp_path: Path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text(ROUTES.format(w1=100, w2=0))
    with pytest.raises(ValueError, match="poll_s"):
        RoutesFileWatcher(path, RouteStore(load_table(path.read_text())), poll_s=0)
