"""Watch the routes file given to ``riskwire serve --routes`` and apply its changes.

Every ``poll_s`` seconds the file's mtime and size are read; when either moved, its
content is hashed, and new content goes through the same path as an Admin
ApplyRoutes (``RouteStore.replace``, actor ``routes-file``): validated whole, then
swapped in atomically. An invalid file is logged with every problem and the table
in force keeps serving; the same bad content is not reported twice. Polling, not
inotify: no extra dependency, and it sees edits through bind mounts and ConfigMap
symlink swaps alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from router.routes import RouteTableError, load_table
from router.store import RouteStore, StaleConfigVersion

log = logging.getLogger("riskwire.routes_watch")

ACTOR = "routes-file"


@dataclass(frozen=True, slots=True)
class _Stamp:
    mtime_ns: int
    size: int


class RoutesFileWatcher:
    """Polls one routes file and applies each new content to a :class:`RouteStore`."""

    def __init__(self, path: Path, store: RouteStore, poll_s: float = 1.0) -> None:
        """Start from the file as it is now: the content the store was built from."""
        if poll_s <= 0:
            raise ValueError(f"poll_s {poll_s} must be > 0")
        self.path = path
        self._store = store
        self._poll_s = poll_s
        self._stamp = self._stat()
        self._digest = self._hash(self._read())
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin polling on the running event loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"routes-watch {self.path}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                await self.check()
            except Exception:  # never let one bad poll end the watch
                log.exception("routes file %s: check failed", self.path)

    async def check(self) -> bool:
        """Look once; apply new content. True when a new table was put in force."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        text = await asyncio.to_thread(self._read)
        digest = self._hash(text)
        if digest == self._digest:
            return False  # touched, or rewritten with the same bytes
        self._digest = digest
        if text is None:
            log.warning(
                "routes file %s: cannot be read; the table in force keeps serving", self.path
            )
            return False
        return self._apply(text, digest)

    def _apply(self, text: str, digest: str) -> bool:
        current = self._store.current
        try:
            table = load_table(text)
            if table == current.table:
                log.info("routes file %s changed but routes alike; nothing to apply", self.path)
                return False
            accepted = self._store.replace(
                table,
                current.config_version,
                ACTOR,
                f"{self.path} changed (sha256 {digest[:12]})",
            )
        except StaleConfigVersion:
            # Someone else changed the table meanwhile: look again next poll.
            self._stamp = _Stamp(-1, -1)
            self._digest = ""
            return False
        except RouteTableError as exc:
            log.warning(
                "routes file %s refused, %d problem(s); config_version %d keeps serving:\n%s",
                self.path,
                len(exc.problems),
                current.config_version,
                "\n".join(f"- {p}" for p in exc.problems),
            )
            return False
        log.info("routes file %s applied as config_version %d", self.path, accepted.config_version)
        return True

    def _stat(self) -> _Stamp:
        try:
            stat = self.path.stat()
        except OSError:
            return _Stamp(-1, -1)
        return _Stamp(stat.st_mtime_ns, stat.st_size)

    def _read(self) -> str | None:
        try:
            return self.path.read_text()
        except (OSError, UnicodeDecodeError):
            return None

    @staticmethod
    def _hash(text: str | None) -> str:
        return "" if text is None else hashlib.sha256(text.encode()).hexdigest()
