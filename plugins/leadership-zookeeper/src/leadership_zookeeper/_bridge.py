"""Bridging kazoo's thread callbacks into asyncio, and kazoo's exceptions into leadership's.

kazoo completes requests and fires watches on its own worker threads. Nothing here blocks those
threads: each callback only hands its result to the event loop with ``call_soon_threadsafe``.

Because they never block, these callbacks run right on kazoo's connection thread, the one that
reads the reply or the event off the socket (:class:`InlineHandler`), instead of being queued
to kazoo's completion or watch thread first: one thread hop less between the store's answer and
the event loop, on every request and every watch event.
"""

from __future__ import annotations

import asyncio
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from kazoo import exceptions as kz  # type: ignore[import-untyped,unused-ignore]
from kazoo.handlers.threading import SequentialThreadingHandler  # type: ignore[import-untyped,unused-ignore]
from kazoo.protocol.states import EventType  # type: ignore[import-untyped,unused-ignore]

from leadership.backend import call_from_thread
from leadership.errors import (
    AuthenticationError,
    PermanentStoreError,
    SessionLostError,
    StoreError,
    StoreUnavailableError,
)

__all__ = [
    "PASS_THROUGH",
    "PROVEN",
    "InlineHandler",
    "ThreadSlots",
    "drop",
    "fired",
    "link",
    "post",
    "translate",
    "watch_future",
    "watch_then_list",
]

_F = TypeVar("_F", bound=Callable[..., Any])
_INLINE = "_leadership_inline"
_FIRED = "_leadership_fired"


def _inline(fn: _F) -> _F:
    """Mark a callback as safe to run on kazoo's connection thread (it never blocks)."""
    setattr(fn, _INLINE, True)
    return fn


def _is_inline(item: Any) -> bool:
    target = item.func if isinstance(item, functools.partial) else item
    return bool(getattr(target, _INLINE, False))


class _InlineQueue(queue.Queue):  # type: ignore[type-arg]
    """kazoo's completion queue: marked callbacks run at once on the putting thread."""

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if _is_inline(item):
            item()
        else:
            super().put(item, block, timeout)


class InlineHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's threading handler, except that the backend's own (non-blocking) completion and
    watch callbacks run on the connection thread; kazoo's and anyone else's are queued as usual."""

    queue_impl = _InlineQueue

    def dispatch_callback(self, callback: Any) -> None:
        if _is_inline(callback.func):
            callback.func(*callback.args)
        else:
            super().dispatch_callback(callback)

#: Errors the backend handles itself (they describe the data, not the store's health).
PASS_THROUGH: tuple[type[BaseException], ...] = (kz.NoNodeError, kz.NodeExistsError, kz.NotEmptyError)

# Errors that go away by themselves: a reconnect, a quorum, a finished reconfiguration.
_TRANSIENT: tuple[type[BaseException], ...] = (
    kz.ConnectionLoss,
    kz.ConnectionDropped,
    kz.OperationTimeoutError,
    kz.RequestTimeoutError,
    kz.ThrottledOpError,
    kz.SessionMovedError,
    kz.NotReadOnlyCallError,
    kz.ReconfigInProcessError,
    kz.NewConfigNoQuorumError,
    kz.RuntimeInconsistency,
    kz.SystemZookeeperError,
    kz.ZookeeperStoppedError,
    kz.WriterNotClosedException,
)
_AUTH: tuple[type[BaseException], ...] = (
    kz.NoAuthError,
    kz.AuthFailedError,
    kz.InvalidACLError,
    kz.SASLException,
    kz.SessionClosedRequireSaslError,
)


def _settle(fut: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if fut.done():  # the awaiting coroutine was cancelled or timed out
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(value)


def post(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], value: Any, exc: BaseException | None = None
) -> None:
    """Settle ``fut`` from any thread, unless it is done by then. (On the sync API's loop,
    when it is idle, the awaiting coroutine runs on in this thread: see ``call_from_thread``.)"""
    try:
        call_from_thread(loop, _settle, fut, value, exc)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


def link(
    loop: asyncio.AbstractEventLoop, async_result: Any, then: Callable[[], None] | None = None
) -> asyncio.Future[Any]:
    """An asyncio future settled (on ``loop``) by a kazoo ``IAsyncResult``; ``then()`` is called
    first, on kazoo's thread, when the result arrives (it must not block)."""
    fut: asyncio.Future[Any] = loop.create_future()

    @_inline
    def done(result: Any) -> None:
        # Runs on kazoo's completion thread; the result is ready, so get() does not block.
        if then is not None:
            then()
        try:
            value = result.get(block=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            post(loop, fut, None, exc)
        else:
            post(loop, fut, value, None)

    async_result.rawlink(done)
    return fut


def drop(watch: Any) -> None:
    """Make a watch function of :func:`watch_future` drop its event when it comes (on kazoo's
    thread, without waking the loop); its future then stays pending."""
    watch.dropped = True


def watch_future(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Future[Any], Any]:
    """A future and the kazoo watch function that settles it with the WatchedEvent.

    kazoo cannot remove a watch; when the waiter goes away first the watch fires later into a
    future nobody awaits: dropped here when that future is already done (reading its state from
    kazoo's thread is a plain attribute read), else ignored by ``_settle`` on the loop.
    """
    fut: asyncio.Future[Any] = loop.create_future()

    @_inline
    def watch(event: Any) -> None:
        # Read on kazoo's thread by a waiter's proof (see watch_then_list): set before anything
        # else, so that the events that come after this one on the connection see it.
        setattr(watch, _FIRED, True)
        # Settled or cancelled on the loop already, or dropped: nobody is waiting.
        if not fut.done() and not getattr(watch, "dropped", False):
            post(loop, fut, event, None)

    return fut, watch


class ThreadSlots:
    """A cap on requests sent from kazoo's thread (see :func:`watch_then_list`): never blocks."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._used >= self.limit:
                return False
            self._used += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._used -= 1


class _Proven:
    def __repr__(self) -> str:
        return "PROVEN"


#: The ``listing`` of :func:`watch_then_list` when the deletion event itself was the proof.
PROVEN: Any = _Proven()


def fired(watch: Any) -> bool:
    """Whether a watch function of :func:`watch_future` has been called (read on kazoo's thread)."""
    return bool(getattr(watch, _FIRED, False))


def watch_then_list(
    loop: asyncio.AbstractEventLoop,
    client: Any,
    parent: str,
    slots: ThreadSlots,
    proven: Callable[[], bool] | None = None,
) -> tuple[asyncio.Future[tuple[Any, Any]], Any]:
    """A future and the kazoo watch function that settles it with ``(event, listing)``.

    A waiter's watch on its predecessor: when the predecessor is deleted, the listing of
    ``parent`` that decides whether the waiter now leads is sent right from kazoo's connection
    thread, where the event is read, and the loop is woken once, when its answer is back
    (``listing`` = the children, or the exception). Going through the loop first would cost two
    thread hops more on every handover: the event to the loop, and the request back to kazoo's
    thread. ``listing`` is None when no listing was sent: another event type (a data change, a
    lost connection), or ``slots`` were all taken (many handovers at once: those go through the
    loop's own capped queue). The listing is sent after the delete was applied (its event came first), on the watch's
    own client, so it is exactly the read the waiter would otherwise send from the loop.

    ``proven()``, called on kazoo's thread when the deletion event is read: True when that event
    alone proves that the waiter now leads (see ``ZooKeeperBackend.campaign``); then no listing is
    sent and ``listing`` is :data:`PROVEN`.
    """
    fut: asyncio.Future[tuple[Any, Any]] = loop.create_future()

    @_inline
    def watch(event: Any) -> None:
        if fut.done():  # the waiter was cancelled: nobody would read the listing
            return
        if event.type == EventType.DELETED and proven is not None and proven():
            post(loop, fut, (event, PROVEN))
            return
        if event.type != EventType.DELETED or not slots.try_acquire():
            post(loop, fut, (event, None))
            return
        try:
            listing = client.get_children_async(parent)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            slots.release()
            post(loop, fut, (event, exc))
            return

        @_inline
        def listed(result: Any) -> None:
            slots.release()
            try:
                value = result.get(block=False)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                value = exc
            post(loop, fut, (event, value))

        listing.rawlink(listed)

    return fut, watch


def translate(exc: BaseException, what: str, *, session: bool) -> StoreError:
    """Map a kazoo exception to the backend contract's error kinds.

    ``session``: the request ran on a candidate's session, whose expiry is SessionLostError; on the
    shared reader connection kazoo merely opens a new session, which is transient.
    """
    if isinstance(exc, _AUTH):
        return AuthenticationError(f"ZooKeeper refused {what}: {type(exc).__name__} (check credentials and ACLs)")
    # ConnectionClosedError subclasses SessionExpiredError: the client was stopped under us.
    if isinstance(exc, kz.SessionExpiredError):
        if session:
            return SessionLostError(f"ZooKeeper session expired or closed during {what}")
        return StoreUnavailableError(f"ZooKeeper session expired during {what}; reconnecting")
    if isinstance(exc, _TRANSIENT):
        return StoreUnavailableError(f"ZooKeeper unavailable during {what}: {type(exc).__name__} {exc}".rstrip())
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return StoreUnavailableError(f"ZooKeeper did not answer {what} in time")
    return PermanentStoreError(f"ZooKeeper rejected {what}: {type(exc).__name__} {exc}".rstrip())
