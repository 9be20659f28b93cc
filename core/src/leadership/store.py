"""Stores: one connection to one backend, the sessions shared by its elections, and store
health (which re-establishes watches after an outage or restart)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any, TypeVar

import pluggy

from ._session import SharedSession
from ._util import Flag
from .backend import Backend
from .errors import ClosedError, InvalidArgumentError, LeadershipError, StoreUnavailableError
from .plugins import default_plugin_manager, find_backend
from .url import StoreURL

__all__ = ["AsyncStore", "Store", "aconnect", "connect"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: How often a store with open watches checks that the store is still the same one.
DEFAULT_HEALTH_INTERVAL = 1.0


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
        self.epoch = 0
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

    async def close(self) -> None:
        """Stop every candidate and follower on this store, release leadership, disconnect."""
        if self._closed:
            return
        for user in list(self._users):
            await user.stop()
        self._closed = True
        if self._health_task is not None:
            self._health_task.cancel()
            await asyncio.gather(self._health_task, return_exceptions=True)
        for pool in list(self._sessions.values()):
            for shared in pool:
                await shared.close()
        self._sessions.clear()
        if self._opened:
            try:
                await self.backend.close()
            except Exception as exc:  # noqa: BLE001 - closing must finish
                log.warning("closing backend for %s failed: %s", self.display_url, exc)

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
    def acquire_session(self, ttl: float, key: str) -> SharedSession:
        self._check_open()
        pool = self._sessions.setdefault(ttl, [])
        for shared in pool:
            if key not in shared.keys:
                break
        else:
            shared = SharedSession(self, ttl)
            pool.append(shared)
            shared.start()
        shared.keys.add(key)
        return shared

    async def release_session(self, shared: SharedSession, key: str) -> None:
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
        self.epoch += 1
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
            except (StoreUnavailableError, asyncio.TimeoutError) as exc:
                failures += 1
                self.report_error(exc, "ping", failures, self.health_interval)
                self._healthy = False
            except asyncio.CancelledError:
                raise
            except LeadershipError as exc:  # permanent errors surface through the watches
                self.report_error(exc, "ping", failures + 1, self.health_interval)
            else:
                failures = 0
                if not self._healthy:
                    self._healthy = True
                    self._bump_epoch("is reachable again")
                elif known and current != incarnation:
                    self._bump_epoch("restarted")
                incarnation, known = current, True
            await asyncio.sleep(self.health_interval)

    # -- observers ----------------------------------------------------------------------------
    def notify(self, hook: str, **kwargs: Any) -> None:
        """Call an observer hook; an observer's exception is logged, never propagated."""
        kwargs["store"] = self.display_url
        # Each observer on its own, so one broken observer cannot hide the event from the others.
        for impl in getattr(self.plugin_manager.hook, hook).get_hookimpls():
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames if name in kwargs})
            except Exception:
                log.exception("observer %s of %s raised; ignored", impl.plugin_name, hook)

    def report_error(self, error: BaseException, operation: str, attempt: int, retry_in: float | None) -> None:
        if retry_in is None:
            log.error("%s on %s failed permanently: %s", operation, self.display_url, error)
        elif attempt == 1:
            log.warning("%s on %s failed (%s); retrying in %.2fs", operation, self.display_url, error, retry_in)
        else:
            log.info(
                "%s on %s failed %d times (%s); retrying in %.2fs",
                operation,
                self.display_url,
                attempt,
                error,
                retry_in,
            )
        self.notify("leadership_store_error", error=error, operation=operation, attempt=attempt, retry_in=retry_in)

    def __repr__(self) -> str:
        return f"<AsyncStore {self.display_url}{' closed' if self._closed else ''}>"


def _make_backend(
    url: str, plugin_manager: pluggy.PluginManager | None
) -> tuple[Backend, StoreURL, pluggy.PluginManager]:
    pm = plugin_manager if plugin_manager is not None else default_plugin_manager()
    parsed = StoreURL.parse(url)
    info = find_backend(pm, parsed.scheme)
    backend = info.factory(parsed)
    if not isinstance(backend, Backend):
        raise LeadershipError(f"backend factory for {parsed.scheme!r} returned {type(backend).__name__}, not a Backend")
    return backend, parsed, pm


async def aconnect(
    url: str,
    *,
    plugin_manager: pluggy.PluginManager | None = None,
    safety_margin: float | None = None,
    health_interval: float = DEFAULT_HEALTH_INTERVAL,
) -> AsyncStore:
    """Connect to the store at ``url`` (``etcd://h1:2379,h2:2379``, ``memory://``, ...), for asyncio.

    The backend is chosen by the URL's scheme among installed plugins. The URL and its options
    are validated here; the store itself need not be reachable yet (the elections retry).

    :raises UnknownBackendError: no installed backend handles the scheme (lists the installed ones).
    :raises ConfigurationError: the URL or an option is malformed.
    """
    backend, parsed, pm = _make_backend(url, plugin_manager)
    store = AsyncStore(backend, parsed, plugin_manager=pm, safety_margin=safety_margin, health_interval=health_interval)
    try:
        await store.ensure_open()
    except StoreUnavailableError as exc:
        log.warning("store %s not reachable yet (%s); elections will retry", store.display_url, exc)
    except BaseException:
        await backend.close()
        raise
    return store


class _LoopThread:
    """An event loop in a daemon thread: the engine behind the sync API."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thaw = threading.Event()
        self.frozen = False
        self.abandoned = False
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise LeadershipError("blocking leadership call made from inside an observer or the store's own loop")
        return self.submit(coro).result(timeout)

    def run_until_stopped(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Like run() with no timeout, but raises StopAsyncIteration if the loop stops first
        (the store was closed or abandoned while a caller was blocked on a stream)."""
        if self._gone():
            coro.close()
            raise StopAsyncIteration
        fut = self.submit(coro)
        while True:
            try:
                return fut.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if self._gone():
                    fut.cancel()
                    raise StopAsyncIteration from None

    def call(self, fn: Callable[[], _T]) -> _T:
        async def wrapper() -> _T:
            return fn()

        return self.run(wrapper())

    def _gone(self) -> bool:
        return self.abandoned or not self.thread.is_alive() or not self.loop.is_running()

    def freeze(self) -> None:
        """Block the loop, as if the process were stopped (SIGSTOP) or killed: nothing runs, nothing
        is cleaned up, until :meth:`thaw`. A frozen daemon thread dies with the process."""
        self.frozen = True
        self._thaw = threading.Event()
        self.loop.call_soon_threadsafe(self._thaw.wait)

    def thaw(self) -> None:
        self.frozen = False
        self._thaw.set()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)


class Store:
    """A connection to a store for synchronous code (the primary API). Use :func:`connect`.

    Everything runs on one event loop in a daemon thread owned by the store; ``close()`` (or
    leaving ``with store:``) stops every candidate and follower on it and ends the thread.
    """

    def __init__(self, async_store_factory: Callable[[], Awaitable[AsyncStore]], name: str) -> None:
        self._runner = _LoopThread(f"leadership-{name}")
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

    def _call(self, fn: Callable[[], _T]) -> _T:
        if self._closed:
            raise ClosedError(f"store {self.url} is closed")
        return self._runner.call(fn)

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

    def _abandon(self) -> None:
        """Stop the loop without releasing anything, as a crashed process would (for tests and demos)."""
        self._closed = True
        self._runner.abandoned = True
        self._runner.thread._leadership_abandoned = True  # type: ignore[attr-defined]
        self._runner.freeze()

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
) -> Store:
    """Connect to the store at ``url`` for synchronous code; see :func:`aconnect`.

    ``safety_margin``: seconds a leader demotes itself before the store could expire its session
    (default: a tenth of the session's guarantee, at most 1 s).
    """
    # Parse and validate in the caller's thread, so a bad URL is an error at this call.
    StoreURL.parse(url)
    return Store(
        lambda: aconnect(
            url, plugin_manager=plugin_manager, safety_margin=safety_margin, health_interval=health_interval
        ),
        StoreURL.parse(url).scheme,
    )
