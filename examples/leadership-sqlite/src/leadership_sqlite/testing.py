"""The test server handle for the conformance kit (``pip install 'leadership-sqlite[testing]'``).

A SQLite store has no server process: the handle owns a temporary database file. Its faults
are the file's lock: :meth:`SqliteServer.pause` holds an exclusive lock, so every call of every
process waits ``busy_timeout`` and fails as unavailable, as with a frozen server; ``restart``
is such an outage for :attr:`SqliteServer.restart_outage` seconds, after which the data is
all there, as after a server restart. There are no members, and no request counter.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from leadership_conformance.servers import StoreServer

__all__ = ["SqliteServer"]


class SqliteServer(StoreServer):
    scheme = "sqlite"
    #: How long restart() keeps the file locked.
    restart_outage = 1.0

    def __init__(self, path: Path, *, own_dir: Path | None = None) -> None:
        super().__init__([], url=f"sqlite://{path}")
        self.path = path
        self._own_dir = own_dir
        self.can_inject_faults = own_dir is not None
        self._release: threading.Event | None = None
        self._holder: threading.Thread | None = None

    @classmethod
    def start(cls, members: int = 1) -> SqliteServer:
        if members != 1:
            raise ValueError("a SQLite file has no members to run as a cluster; members must be 1")
        folder = Path(tempfile.mkdtemp(prefix="leadership-sqlite-"))
        return cls(folder / "store.db", own_dir=folder)

    @classmethod
    def external(cls, url: str) -> SqliteServer:
        if not url.startswith("sqlite:///"):
            raise ValueError(f"LEADERSHIP_TEST_SQLITE_URL must be sqlite:///path/to/file.db, got {url!r}")
        return cls(Path(url.removeprefix("sqlite://").partition("?")[0]))

    def _check(self) -> None:
        if not self.can_inject_faults:
            raise self._refuse("lock the file")
        if self._stopped:
            raise RuntimeError(f"{self!r} was stopped")

    def pause(self) -> None:
        """Hold an exclusive lock on the file until :meth:`unpause`; returns once it is held."""
        self._check()
        if self._release is not None:
            return
        held, release = threading.Event(), threading.Event()
        failure: list[BaseException] = []

        def hold() -> None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            try:
                db.execute("BEGIN EXCLUSIVE")  # blocks readers too (rollback-journal mode)
                held.set()
                release.wait()
                db.execute("ROLLBACK")
            except BaseException as exc:  # noqa: BLE001 - handed to pause() below
                failure.append(exc)
                held.set()
            finally:
                db.close()

        self._holder = threading.Thread(target=hold, name="sqlite-test-lock", daemon=True)
        self._holder.start()
        held.wait()
        if failure:
            raise RuntimeError(f"cannot lock {self.path}: {failure[0]}") from failure[0]
        self._release, self._paused = release, True

    def unpause(self) -> None:
        self._check()
        if self._release is not None and self._holder is not None:
            self._release.set()
            self._holder.join()
        self._release = self._holder = None
        self._paused = False

    def restart(self) -> None:
        self.pause()
        time.sleep(self.restart_outage)
        self.unpause()

    def stop(self) -> None:
        if self._stopped:
            return
        if self._release is not None:
            self.unpause()
        self._stopped = True
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
