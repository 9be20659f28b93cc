"""Leader election in a SQLite file shared by the processes of one host.

Three tables: ``sessions`` (an expiry time on the host's clock), ``entries`` (the FIFO queue of
each key: the smallest ``seq`` leads) and ``tokens`` (one counter per key). SQLite tells nobody
when a session expires, so every transaction first deletes expired sessions with their entries,
and the head of a queue gets its fencing token from the key's counter the first time a
transaction sees it lead. Waiters and followers poll: a waiter reads only its own queue position
and its predecessor's expiry, and sleeps until that expiry or for ``poll`` seconds, whichever
is sooner (the no-herd rule for stores with silent expiry, see ``leadership.backend``).

Every call runs in one worker thread per backend, so calls on one connection never overlap and
a cancelled call returns at once (its transaction finishes, or fails, in the thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from leadership.backend import Backend, Session, Term
from leadership.errors import ConfigurationError, PermanentStoreError, SessionLostError, StoreUnavailableError
from leadership.url import StoreURL, parse_seconds

__all__ = ["OPTIONS", "SqliteBackend"]

OPTIONS = {
    "poll": "seconds between a waiter's or a follower's reads (default 0.05)",
    "busy_timeout": "seconds a call waits for the file's lock before the store counts as unavailable (default 0.5)",
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    session INTEGER NOT NULL,
    name TEXT NOT NULL,
    token INTEGER,
    UNIQUE (key, session)
);
CREATE INDEX IF NOT EXISTS entries_by_session ON entries (session);
CREATE TABLE IF NOT EXISTS tokens (key TEXT PRIMARY KEY, last INTEGER NOT NULL);
"""

_T = TypeVar("_T")
_Head = tuple[int, int, str, int]  # seq, session, name, token


def _expire(db: sqlite3.Connection, now: float) -> None:
    db.execute("DELETE FROM entries WHERE session IN (SELECT id FROM sessions WHERE expires < ?)", (now,))
    db.execute("DELETE FROM sessions WHERE expires < ?", (now,))


def _head(db: sqlite3.Connection, key: str) -> _Head | None:
    """The entry leading ``key``, with its token (drawn from the key's counter on first sight)."""
    row = db.execute("SELECT seq, session, name, token FROM entries WHERE key = ? ORDER BY seq LIMIT 1", (key,))
    head = row.fetchone()
    if head is None:
        return None
    seq, session, name, token = head
    if token is None:
        (token,) = db.execute(
            "INSERT INTO tokens (key, last) VALUES (?, 1) ON CONFLICT (key) DO UPDATE SET last = last + 1 "
            "RETURNING last",
            (key,),
        ).fetchone()
        db.execute("UPDATE entries SET token = ? WHERE seq = ?", (token, seq))
    return seq, session, name, token


class SqliteSession(Session):
    def __init__(self, backend: SqliteBackend, session_id: int, ttl: float) -> None:
        super().__init__(ttl)
        self._backend = backend
        self._id = session_id

    @property
    def id(self) -> str:
        return str(self._id)

    async def refresh(self) -> None:
        def renew(db: sqlite3.Connection) -> int:
            now = time.time()
            return db.execute(
                "UPDATE sessions SET expires = ? WHERE id = ? AND expires >= ?", (now + self.ttl, self._id, now)
            ).rowcount

        if not await self._backend.transaction(renew):
            raise SessionLostError(f"sqlite session {self._id} expired")

    async def close(self) -> None:
        def revoke(db: sqlite3.Connection) -> None:
            db.execute("DELETE FROM entries WHERE session = ?", (self._id,))
            db.execute("DELETE FROM sessions WHERE id = ?", (self._id,))

        await self._backend.transaction(revoke)


class SqliteBackend(Backend):
    """``sqlite:///path/to/file.db?poll=0.05&busy_timeout=0.5``"""

    min_ttl = 0.5

    def __init__(self, url: StoreURL) -> None:
        if url.endpoints or url.username:
            raise ConfigurationError(
                f"sqlite:// takes a file path, not a host: sqlite:///path/to/file.db, got {url.redacted()!r}"
            )
        if url.path in ("", "/"):
            raise ConfigurationError("sqlite:// needs the database file's path: sqlite:///path/to/file.db")
        self.path = url.path
        self.poll = url.option("poll", parse_seconds, 0.05, allowed="a positive number of seconds")
        self.busy_timeout = url.option("busy_timeout", parse_seconds, 0.5, allowed="a positive number of seconds")
        url.reject_unknown_options(OPTIONS)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-backend")
        self._db: sqlite3.Connection | None = None

    async def _run(self, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._worker, fn)
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreUnavailableError(f"{self.path}: {exc}") from exc
            raise PermanentStoreError(f"{self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise PermanentStoreError(f"{self.path}: {exc}") from exc

    async def transaction(self, body: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``body`` in one write transaction, after expiring dead sessions."""

        def run() -> _T:
            db = self._db
            if db is None:
                raise sqlite3.ProgrammingError("the backend is not open")
            db.execute("BEGIN IMMEDIATE")
            try:
                _expire(db, time.time())
                result = body(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            return result

        return await self._run(run)

    async def open(self) -> None:
        def connect() -> None:
            db = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
            db.executescript(_SCHEMA)
            self._db = db

        await self._run(connect)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
        self._worker.shutdown(wait=False)

    async def create_session(self, ttl: float) -> Session:
        def insert(db: sqlite3.Connection) -> int:
            cursor = db.execute("INSERT INTO sessions (expires) VALUES (?)", (time.time() + ttl,))
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return SqliteSession(self, await self.transaction(insert), ttl)

    async def campaign(self, session: Session, key: str, name: str) -> Term:
        assert isinstance(session, SqliteSession)
        sid = session._id

        def step(db: sqlite3.Connection) -> tuple[int | None, float]:
            """(token, 0) when leading, else (None, the predecessor's expiry)."""
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (sid,)).fetchone() is None:
                raise SessionLostError(f"sqlite session {sid} expired")
            db.execute("INSERT OR IGNORE INTO entries (key, session, name) VALUES (?, ?, ?)", (key, sid, name))
            head = _head(db, key)
            assert head is not None
            if head[1] == sid:
                return head[3], 0.0
            (expires,) = db.execute(
                "SELECT s.expires FROM entries e JOIN sessions s ON s.id = e.session WHERE e.key = ? "
                "AND e.seq < (SELECT seq FROM entries WHERE key = ? AND session = ?) ORDER BY e.seq DESC LIMIT 1",
                (key, key, sid),
            ).fetchone()
            return None, expires

        while True:
            token, predecessor_expires = await self.transaction(step)
            if token is not None:
                return Term(key, name, token)
            await asyncio.sleep(min(self.poll, max(0.0, predecessor_expires - time.time())))

    async def withdraw(self, session: Session, key: str) -> None:
        assert isinstance(session, SqliteSession)
        sid = session._id
        await self.transaction(lambda db: db.execute("DELETE FROM entries WHERE key = ? AND session = ?", (key, sid)))

    async def get_leader(self, key: str) -> Term | None:
        head = await self.transaction(lambda db: _head(db, key))
        return None if head is None else Term(key, head[2], head[3])

    async def observe(self, key: str) -> AsyncIterator[Term | None]:
        last: Term | bool | None = False  # never equal to a term or None
        while True:
            term = await self.get_leader(key)
            if term != last:
                yield term
                last = term
            await asyncio.sleep(self.poll)
