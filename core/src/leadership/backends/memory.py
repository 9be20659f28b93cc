"""The in-process ``memory`` store: real sessions with TTL expiry, FIFO queues, fencing tokens
and watches, without a server — for demos and for unit-testing your own leader logic.

``memory://`` is the process-wide default store; ``memory://NAME`` a separate named one. Every
Store connected to the same name, from any thread or event loop, sees the same data, so
candidates in several threads really compete. Test helpers on :class:`MemoryCluster` (get it
with :func:`cluster`) expire sessions, make the store unavailable, restart it (breaking every
watch) and count requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable
from typing import ClassVar

from ..backend import Backend, Session, Term
from ..errors import ConfigurationError, SessionLostError, StoreUnavailableError
from ..hookspecs import hookimpl
from ..registry import BackendRegistry
from ..url import StoreURL

__all__ = ["MemoryBackend", "MemoryCluster", "cluster", "leadership_register_backends"]


@dataclasses.dataclass(eq=False)
class _Entry:
    session_id: int
    name: str
    revision: int
    on_delete: list[Callable[[], None]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class _MemSession:
    id: int
    ttl: float
    expires_at: float


class MemoryCluster:
    """The shared state of one named memory store. Thread-safe."""

    _clusters: ClassVar[dict[str, MemoryCluster]] = {}
    _clusters_lock = threading.Lock()

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.RLock()
        self._revision = 0
        self._session_ids = itertools.count(1)
        self._sessions: dict[int, _MemSession] = {}
        self._queues: dict[str, list[_Entry]] = {}
        self._key_watchers: dict[str, list[Callable[[], None]]] = {}
        self._available = True
        self._incarnation = 0
        self.requests = 0

    # -- helpers for tests --------------------------------------------------------------------
    def expire_session(self, session_id: str | int) -> None:
        """Expire one session now, as the store would when its keepalives stop."""
        with self._lock:
            self._drop_session(int(session_id))

    def expire_all_sessions(self) -> None:
        with self._lock:
            for sid in list(self._sessions):
                self._drop_session(sid)

    def set_available(self, available: bool) -> None:
        """Refuse (False) or serve (True) every request, like a partitioned store. Time goes on:
        sessions not refreshed expire; open watches break."""
        with self._lock:
            self._available = available
            if not available:
                self._notify_all()

    def restart(self) -> None:
        """Keep the data, break every open watch and change the store's incarnation."""
        with self._lock:
            self._incarnation += 1
            self._notify_all()

    def session_ids(self) -> list[str]:
        with self._lock:
            self._expire()
            return [str(s) for s in self._sessions]

    def session_expires_in(self, session_id: str | int) -> float | None:
        """Seconds until the store expires the session if it is not refreshed; None if gone."""
        with self._lock:
            self._expire()
            session = self._sessions.get(int(session_id))
            return None if session is None else session.expires_at - time.monotonic()

    def queue(self, key: str) -> list[tuple[str, str, int]]:
        """(session id, name, revision) of every entry under ``key``, leader first."""
        with self._lock:
            self._expire()
            return [(str(e.session_id), e.name, e.revision) for e in self._queues.get(key, [])]

    # -- internals (call with the lock held) -------------------------------------------------------
    def _request(self) -> None:
        self.requests += 1
        if not self._available:
            raise StoreUnavailableError(f"memory store {self.name!r} is unavailable (set_available(False))")
        self._expire()

    def _expire(self) -> None:
        now = time.monotonic()
        for s in [s for s in self._sessions.values() if s.expires_at <= now]:
            self._drop_session(s.id)

    def _drop_session(self, sid: int) -> None:
        if self._sessions.pop(sid, None) is None:
            return
        for key, queue in list(self._queues.items()):
            for entry in [e for e in queue if e.session_id == sid]:
                self._remove(key, entry)

    def _remove(self, key: str, entry: _Entry) -> None:
        queue = self._queues[key]
        was_leader = queue[0] is entry
        queue.remove(entry)
        if not queue:
            del self._queues[key]
        for callback in entry.on_delete:
            callback()
        if was_leader:
            for callback in self._key_watchers.get(key, []):
                callback()

    def _notify_all(self) -> None:
        for queue in self._queues.values():
            for entry in queue:
                for callback in entry.on_delete:
                    callback()
        for watchers in self._key_watchers.values():
            for callback in watchers:
                callback()

    def _next_expiry(self, entry: _Entry | None) -> float | None:
        """Seconds until ``entry``'s session expires: a waiter wakes then to let it expire."""
        if entry is None:
            return None
        s = self._sessions.get(entry.session_id)
        return None if s is None else max(0.0, s.expires_at - time.monotonic()) + 0.001

    @classmethod
    def get(cls, name: str) -> MemoryCluster:
        with cls._clusters_lock:
            if name not in cls._clusters:
                cls._clusters[name] = MemoryCluster(name)
            return cls._clusters[name]


def cluster(name: str = "default") -> MemoryCluster:
    """The memory store called ``name`` (``memory://NAME``; ``memory://`` is ``default``)."""
    return MemoryCluster.get(name)


def _waker(loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> Callable[[], None]:
    def wake() -> None:
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # the waiting loop is closed: nobody to wake
            pass

    return wake


class MemorySession(Session):
    def __init__(self, cluster: MemoryCluster, sid: int, ttl: float) -> None:
        super().__init__(ttl)
        self._cluster = cluster
        self._sid = sid

    @property
    def id(self) -> str:
        return str(self._sid)

    async def refresh(self) -> None:
        c = self._cluster
        with c._lock:
            c._request()
            s = c._sessions.get(self._sid)
            if s is None:
                raise SessionLostError(f"memory session {self._sid} expired")
            s.expires_at = time.monotonic() + s.ttl

    async def close(self) -> None:
        c = self._cluster
        with c._lock:
            c._request()
            c._drop_session(self._sid)


class MemoryBackend(Backend):
    """See the module docstring. URL: ``memory://[NAME]``, no options."""

    min_ttl = 0.05
    max_ttl = None

    def __init__(self, url: StoreURL) -> None:
        url.reject_unknown_options()
        if len(url.endpoints) > 1 or (url.endpoints and url.endpoints[0].port is not None):
            raise ConfigurationError(f"memory URL {url.raw!r}: expected 'memory://' or 'memory://NAME'")
        self.cluster = cluster(url.endpoints[0].host if url.endpoints else "default")

    async def close(self) -> None:
        pass

    async def create_session(self, ttl: float) -> Session:
        c = self.cluster
        with c._lock:
            c._request()
            sid = next(c._session_ids)
            c._sessions[sid] = _MemSession(sid, ttl, time.monotonic() + ttl)
        return MemorySession(c, sid, ttl)

    def _own(self, key: str, sid: int) -> tuple[int, _Entry] | None:
        for i, entry in enumerate(self.cluster._queues.get(key, [])):
            if entry.session_id == sid:
                return i, entry
        return None

    async def campaign(self, session: Session, key: str, name: str) -> Term:
        c = self.cluster
        sid = int(session.id)
        loop = asyncio.get_running_loop()
        wakeup = asyncio.Event()
        wake = _waker(loop, wakeup)
        with c._lock:
            c._request()
            if sid not in c._sessions:
                raise SessionLostError(f"memory session {sid} expired")
            if self._own(key, sid) is None:
                c._revision += 1
                queue = c._queues.setdefault(key, [])
                queue.append(_Entry(sid, name, c._revision))
                if len(queue) == 1:  # a new leader: tell the observers
                    for callback in c._key_watchers.get(key, []):
                        callback()
        while True:
            with c._lock:
                c._request()
                own = self._own(key, sid)
                if own is None or sid not in c._sessions:
                    raise SessionLostError(f"memory session {sid} lost its entry for {key!r} while waiting")
                index, entry = own
                if index == 0:
                    return Term(key, entry.name, entry.revision)
                # Wait for the predecessor only: no herd.
                predecessor = c._queues[key][index - 1]
                wakeup.clear()
                predecessor.on_delete.append(wake)
                timeout = c._next_expiry(predecessor)
            try:
                await asyncio.wait_for(wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                pass
            finally:
                with c._lock:
                    if wake in predecessor.on_delete:
                        predecessor.on_delete.remove(wake)

    async def withdraw(self, session: Session, key: str) -> None:
        c = self.cluster
        with c._lock:
            c._request()
            own = self._own(key, int(session.id))
            if own is not None:
                c._remove(key, own[1])

    def _leader_locked(self, key: str) -> tuple[Term | None, _Entry | None]:
        queue = self.cluster._queues.get(key)
        if not queue:
            return None, None
        return Term(key, queue[0].name, queue[0].revision), queue[0]

    async def get_leader(self, key: str) -> Term | None:
        with self.cluster._lock:
            self.cluster._request()
            return self._leader_locked(key)[0]

    async def observe(self, key: str) -> AsyncIterator[Term | None]:
        c = self.cluster
        wakeup = asyncio.Event()
        wake = _waker(asyncio.get_running_loop(), wakeup)
        with c._lock:
            c._request()
            incarnation = c._incarnation
            c._key_watchers.setdefault(key, []).append(wake)
        try:
            while True:
                with c._lock:
                    c._request()
                    if c._incarnation != incarnation:
                        raise StoreUnavailableError(f"memory store {c.name!r} restarted; watch on {key!r} broken")
                    wakeup.clear()
                    term, entry = self._leader_locked(key)
                    timeout = c._next_expiry(entry)
                yield term
                try:
                    await asyncio.wait_for(wakeup.wait(), timeout)
                except asyncio.TimeoutError:
                    pass
        finally:
            with c._lock:
                watchers = c._key_watchers.get(key, [])
                if wake in watchers:
                    watchers.remove(wake)
                if not watchers:
                    c._key_watchers.pop(key, None)

    async def ping(self) -> Hashable:
        with self.cluster._lock:
            self.cluster._request()
            return self.cluster._incarnation


@hookimpl
def leadership_register_backends(register: BackendRegistry) -> None:
    register.add("memory", MemoryBackend, description="in-process store for demos and unit tests")
