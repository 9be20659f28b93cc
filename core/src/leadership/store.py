"""Stores: one connection to one backend, the sessions shared by its elections, and store
health (which re-establishes watches after an outage or restart)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterator
from typing import Any, TypeVar

import pluggy

from ._loop import LoopThread
from ._observers import Observers, StoreLog
from ._session import CLOSE_BUDGET, Generation, LoadGauge, SharedSession
from ._util import Backoff, Flag, Stream, describe, is_permanent
from .backend import Backend
from .errors import BackendRegistrationError, ClosedError, InvalidArgumentError, StoreUnavailableError
from .plugins import default_plugin_manager, find_backend
from .retry import DEFAULT_RETRY
from .url import StoreURL

__all__ = ["AsyncStore", "Store", "aconnect", "connect"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How often a store with open watches checks that the store is still the same one.
DEFAULT_HEALTH_INTERVAL = 1.0
#: How long ``connect`` tries to reach a store before giving up (seconds).
DEFAULT_CONNECT_TIMEOUT = 10.0


class AsyncStore:
    """A connection to a store, for asyncio code. Create it with :func:`aconnect` (or use the
    sync :class:`Store`). Bound to the event loop it is first used on."""

    def __init__(
        self,
        backend: Backend,
        url: StoreURL,
        *,
        plugin_manager: pluggy.PluginManager,
        safety_margin: float | None = None,
        health_interval: float = DEFAULT_HEALTH_INTERVAL,
    ) -> None:
        if safety_margin is not None and (not isinstance(safety_margin, (int, float)) or safety_margin < 0):
            raise InvalidArgumentError(f"safety_margin must be a number of seconds >= 0, got {safety_margin!r}")
        if not isinstance(health_interval, (int, float)) or health_interval <= 0:
            raise InvalidArgumentError(f"health_interval must be a positive number of seconds, got {health_interval!r}")
        self.backend = backend
        self.url = url
        self.display_url = url.redacted()
        self.scheme = url.scheme
        self.plugin_manager = plugin_manager
        self.observers = Observers(plugin_manager, self.display_url)
        self._log = StoreLog(self.display_url, self.observers)
        #: report_error(error, operation, attempt, retry_in): log (rate-limited) and tell observers.
        self.report_error = self._log.report_error
        #: warn_once(topic, message, *args): a warning at most once a minute per topic.
        self.warn_once = self._log.warn_once
        #: How slow this process is (shared by the sessions, for the "ttl too short" warning).
        self.load = LoadGauge()
        self.safety_margin = safety_margin
        self.health_interval = float(health_interval)
        # Several sessions per ttl only when one process runs several candidates for the same key
        # on this store: a session holds at most one entry per key.
        self._sessions: dict[float, list[SharedSession]] = {}
        self._open_lock: asyncio.Lock | None = None
        self._opened = False
        self._closed = False
        self._watchers = 0
        self._health_task: asyncio.Task[None] | None = None
        self._epoch_changed = Flag()
        self._healthy = True
        self._close_by: float | None = None
        self._users: set[Any] = set()

    # -- lifecycle ------------------------------------------------------------------------------
    async def ensure_open(self) -> None:
        if self._closed:
            raise ClosedError(f"store {self.display_url} is closed")
        if self._opened:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if not self._opened:
                await self.backend.open()
                self._opened = True

    async def reach(self, timeout: float) -> None:
        """Open the backend and complete one round trip within ``timeout`` seconds, retrying
        refusals meanwhile (a store may be starting); else StoreUnavailableError naming the store."""
        last: list[BaseException] = []
        trying = Backoff(lambda e, *_: last.append(e), "connect", DEFAULT_RETRY)

        async def first_contact() -> None:
            while True:
                try:
                    await self.ensure_open()
                    await self.backend.ping()
                    return
                except StoreUnavailableError as exc:
                    await trying.failed(exc)

        try:
            await asyncio.wait_for(first_contact(), timeout)
        except asyncio.TimeoutError:
            why = f" (last error: {describe(last[-1])})" if last else ""
            raise StoreUnavailableError(
                f"could not reach the {self.scheme} store at {self.display_url} within connect_timeout={timeout:g}s"
                f"{why}; check the address, or pass a longer connect_timeout"
            ) from None

    async def close(self) -> None:
        """Stop every candidate and follower on this store, release leadership, disconnect.
        Prompt whatever the store's state: what the store does not confirm within a fraction of
        a second is left to expire (a leader on an unreachable store has demoted itself anyway)."""
        if self._closed:
            return
        self._close_by = time.monotonic() + CLOSE_BUDGET
        await asyncio.gather(*(user.stop() for user in list(self._users)), return_exceptions=True)
        self._closed = True
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        await asyncio.gather(*(shared.close() for pool in self._sessions.values() for shared in pool))
        self._sessions.clear()
        await self._close_backend()

    async def _close_backend(self) -> None:
        if not self._opened and self._open_lock is None:
            return
        close = asyncio.ensure_future(self.backend.close())
        done, _ = await asyncio.wait([close], timeout=max(0.05, self.close_time_left()))
        if not done:
            close.add_done_callback(lambda f: f.cancelled() or f.exception())
            log.debug("closing the backend for %s takes long; left to finish in the background", self.display_url)
        elif close.exception() is not None:
            log.warning("closing backend for %s failed: %s", self.display_url, describe(close.exception()))  # type: ignore[arg-type]

    @property
    def closing(self) -> bool:
        """True from the start of close()."""
        return self._close_by is not None

    def close_time_left(self) -> float:
        """What is left of the time close() may take (a full budget outside of close())."""
        if self._close_by is None:
            return CLOSE_BUDGET
        return max(0.0, self._close_by - time.monotonic())

    @property
    def healthy(self) -> bool:
        """False while the store is known to be unreachable."""
        return self._healthy

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"store {self.display_url} is closed")

    def _register(self, user: Any) -> None:
        self._check_open()
        self._users.add(user)

    def _unregister(self, user: Any) -> None:
        self._users.discard(user)

    # -- sessions -------------------------------------------------------------------------------
    def acquire_session(self, ttl: float, key: str, *, patient: bool = True) -> SharedSession:
        """A session for one election on ``key``; ``patient``: the election retries store errors."""
        self._check_open()
        pool = self._sessions.setdefault(ttl, [])
        for shared in pool:
            if key not in shared.keys:
                break
        else:
            shared = SharedSession(self, ttl, self.load)
            pool.append(shared)
            shared.start()
        shared.keys.add(key)
        shared.patient += patient
        return shared

    async def release_session(
        self, shared: SharedSession, key: str, *, patient: bool = True, entry: Generation | None = None
    ) -> None:
        """The election on ``key`` is over. ``entry``: the generation on which its entry may still
        be in the store (stop() could not withdraw it); while other elections keep the session
        alive it is withdrawn in the background, and ``key`` is released once it is gone."""
        if key in shared.keys:
            shared.patient -= patient
        if entry is not None and entry.alive() and not self.closing and shared.keys - {key}:
            shared.withdraw_later(entry, key, functools.partial(self.release_session, shared, key, patient=False))
            return
        shared.keys.discard(key)
        pool = self._sessions.get(shared.ttl, [])
        if not shared.keys and shared in pool:
            pool.remove(shared)
            if not pool:
                del self._sessions[shared.ttl]
            await shared.close()

    def session_count(self) -> int:
        """How many store sessions this connection holds open (one per ttl, normally)."""
        return sum(len(pool) for pool in self._sessions.values())

    # -- health: re-establish watches after an outage or restart -----------------------------------
    @contextlib.asynccontextmanager
    async def watching(self) -> Any:
        self._watchers += 1
        if self._health_task is None or self._health_task.done():
            self._health_task = asyncio.get_running_loop().create_task(self._health(), name="leadership-health")
        try:
            yield
        finally:
            self._watchers -= 1

    def epoch_event(self) -> Flag:
        """Set when every watch must be re-established (the store came back or restarted)."""
        return self._epoch_changed

    def _bump_epoch(self, why: str) -> None:
        log.info("store %s %s: re-establishing watches", self.display_url, why)
        self._epoch_changed.set()
        self._epoch_changed = Flag()

    def mark_unhealthy(self) -> None:
        self._healthy = False

    def mark_healthy(self) -> None:
        if not self._healthy:
            self._healthy = True
            self._bump_epoch("is reachable again")

    async def _health(self) -> None:
        incarnation: Hashable = None
        known = False
        failures = 0
        while self._watchers > 0 and not self._closed:
            try:
                await self.ensure_open()
                current = await asyncio.wait_for(self.backend.ping(), timeout=max(1.0, 2 * self.health_interval))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the health check never ends by itself
                failures += 1
                self.report_error(exc, "ping", failures, self.health_interval)
                if not is_permanent(exc):
                    self._healthy = False
            else:
                failures = 0
                if not self._healthy:
                    self._healthy = True
                    self._bump_epoch("is reachable again")
                elif known and current != incarnation:
                    self._bump_epoch("restarted")
                incarnation, known = current, True
            await asyncio.sleep(self.health_interval)

    def __repr__(self) -> str:
        return f"<AsyncStore {self.display_url}{' closed' if self._closed else ''}>"


def _make_backend(url: StoreURL, pm: pluggy.PluginManager) -> Backend:
    info = find_backend(pm, url.scheme)
    backend = info.factory(url)
    if not isinstance(backend, Backend):
        raise BackendRegistrationError(
            f"plugin {info.plugin!r}: the backend factory for {url.scheme!r} returned {type(backend).__name__}, "
            "not a leadership.Backend"
        )
    return backend


def _check_connect_options(connect_timeout: object) -> float:
    if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) or not connect_timeout > 0:
        raise InvalidArgumentError(f"connect_timeout must be a positive number of seconds, got {connect_timeout!r}")
    return float(connect_timeout)


async def _open(
    url: StoreURL,
    plugin_manager: pluggy.PluginManager | None,
    safety_margin: float | None,
    health_interval: float,
    connect_timeout: float,
) -> AsyncStore:
    pm = plugin_manager if plugin_manager is not None else default_plugin_manager()
    backend = _make_backend(url, pm)
    try:
        store = AsyncStore(
            backend, url, plugin_manager=pm, safety_margin=safety_margin, health_interval=health_interval
        )
    except BaseException:
        await backend.close()
        raise
    try:
        await store.reach(connect_timeout)
    except BaseException:
        await store._close_backend()
        raise
    return store


async def aconnect(
    url: str,
    *,
    plugin_manager: pluggy.PluginManager | None = None,
    safety_margin: float | None = None,
    health_interval: float = DEFAULT_HEALTH_INTERVAL,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> AsyncStore:
    """Connect to the store at ``url`` (``etcd://h1:2379,h2:2379``, ``memory://``, ...), for asyncio.

    The backend is chosen by the URL's scheme among installed plugins. ``connect`` returns once
    the store has answered one request, on every backend; a store that does not answer within
    ``connect_timeout`` seconds (refusals are retried meanwhile) is a StoreUnavailableError
    naming it. Once connected, outages are retried and never end a stream.

    :raises UnknownBackendError: no installed backend handles the scheme (lists the installed ones).
    :raises ConfigurationError: the URL or an option is malformed.
    :raises StoreUnavailableError: the store could not be reached within ``connect_timeout``.
    :raises AuthenticationError: the store refused the credentials.
    """
    parsed = StoreURL.parse(url)
    timeout = _check_connect_options(connect_timeout)
    return await _open(parsed, plugin_manager, safety_margin, health_interval, timeout)


class Store:
    """A connection to a store for synchronous code (the primary API). Use :func:`connect`.

    Everything runs on one event loop in a daemon thread owned by the store; ``close()`` (or
    leaving ``with store:``) stops every candidate and follower on it and ends the thread.
    """

    def __init__(self, async_store_factory: Callable[[], Awaitable[AsyncStore]], name: str) -> None:
        self._runner = LoopThread(f"leadership-{name}")
        try:
            self.aio: AsyncStore = self._runner.run(_await(async_store_factory()))
        except BaseException:
            self._runner.stop()
            raise
        self._closed = False

    @property
    def url(self) -> str:
        return self.aio.display_url

    @property
    def closed(self) -> bool:
        return self._closed

    def _run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        if self._closed:
            coro.close()
            raise ClosedError(f"store {self.url} is closed")
        return self._runner.run(coro, timeout)

    def _call(self, fn: Callable[[], _T], *, answer_later: bool = False) -> _T:
        if self._closed:
            raise ClosedError(f"store {self.url} is closed")
        return self._runner.call(fn, answer_later=answer_later)

    def _iterate(self, open_stream: Callable[[], Stream[_T]]) -> Iterator[_T]:
        if self._closed:
            raise ClosedError(f"store {self.url} is closed")
        return self._runner.iterate(open_stream)

    def close(self) -> None:
        """Stop every candidate and follower of this store (releasing leadership) and disconnect."""
        if self._closed:
            return
        try:
            self._runner.run(self.aio.close(), timeout=30)
        finally:
            self._closed = True
            self._runner.stop()

    def session_count(self) -> int:
        """How many store sessions this connection holds open (one per ttl, normally)."""
        return self._runner.call(self.aio.session_count)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.url}{' closed' if self._closed else ''}>"


async def _await(aw: Awaitable[_T]) -> _T:
    return await aw


def connect(
    url: str,
    *,
    plugin_manager: pluggy.PluginManager | None = None,
    safety_margin: float | None = None,
    health_interval: float = DEFAULT_HEALTH_INTERVAL,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
) -> Store:
    """Connect to the store at ``url`` for synchronous code; see :func:`aconnect`.

    ``safety_margin``: seconds a leader demotes itself before the store could expire its session
    (default: a tenth of the session's guarantee, at most 1 s). ``connect_timeout``: how long to
    try reaching the store before raising StoreUnavailableError (default 10 s).
    """
    # Parsed and checked in the caller's thread, so a bad URL is an error at this call.
    parsed = StoreURL.parse(url)
    timeout = _check_connect_options(connect_timeout)
    return Store(lambda: _open(parsed, plugin_manager, safety_margin, health_interval, timeout), parsed.scheme)
