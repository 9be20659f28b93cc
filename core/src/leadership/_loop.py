"""The engine behind the sync API: an event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import queue
import selectors
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVar

from ._util import Stream
from .errors import UsageError

_T = TypeVar("_T")


#: Turns of the loop a thread may run after its callback (see _run_held): enough for a
#: reply to reach the election and its stream, bounded so that a client's thread is soon back
#: to its own I/O.
_DRAIN_TURNS = 8


def _nothing() -> None:
    pass


def _on_loop() -> UsageError:
    return UsageError(
        "a blocking leadership call was made on the store's own event loop (from an observer hook?); "
        "observers must not call the sync API: use leadership.aio, or hand the work to another thread"
    )


class _HeldSelector(selectors.BaseSelector):
    """The loop's selector, with ``held`` (a lock) released only while the loop waits in
    ``select``: whoever holds it is the only one running the loop's callbacks. So a sync call
    that finds the lock free (the loop is idle) may run its callback at once in its own thread,
    with the loop's thread parked, instead of waking that thread and waiting for it (see
    ``LoopThread.call``)."""

    def __init__(self, inner: selectors.BaseSelector, held: threading.Lock) -> None:
        self._inner = inner
        self._held = held
        #: Bumped by every thread that held the loop (see LoopThread._run_held).
        self.borrowed = 0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return self._inner.select(0)
        seen = self.borrowed
        self._held.release()
        try:
            ready = self._inner.select(timeout)
        finally:
            self._held.acquire()
        if self.borrowed != seen:
            # Another thread held the loop meanwhile and may have changed the registrations:
            # read the answer again, now that the lock is ours.
            return self._inner.select(0)
        return ready

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.get_key(fileobj)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()


class _Loop(asyncio.SelectorEventLoop):
    """The sync API's event loop: a standard selector loop that knows its thread (see
    :func:`call_from_thread`) and, while idle, lets another thread run its ready callbacks."""

    runner: LoopThread

    def drain_held(self, limit: int) -> None:
        """Run what is ready, at most ``limit`` turns, in this thread, which holds the loop.
        (asyncio's own step, ``_run_once``; with something ready it does not wait for I/O.)"""
        for _ in range(limit):
            if not self._ready:  # type: ignore[attr-defined]
                return
            self._run_once()  # type: ignore[attr-defined]

    def next_deadline(self) -> float | None:
        scheduled = self._scheduled  # type: ignore[attr-defined]
        return scheduled[0].when() if scheduled else None

    def needs_turn(self, deadline: float | None, *, ready: bool = True) -> bool:
        """Whether the loop's thread must wake after another thread held the loop: work is
        ready (``ready``: unless that work may wait, see wakes_loop_later), or a timer earlier
        than the one its wait was set for was scheduled."""
        if ready and self._ready:  # type: ignore[attr-defined]
            return True
        now = self.next_deadline()
        return now is not None and (deadline is None or now < deadline)


def _new_loop(held: threading.Lock) -> tuple[asyncio.AbstractEventLoop, _HeldSelector | None]:
    """A new event loop, and its selector if another thread may run its callbacks while it is
    idle: only the standard selector loop on POSIX (not a custom policy's loop, e.g. uvloop's)."""
    policy = asyncio.get_event_loop_policy()
    if sys.platform != "win32" and type(policy) is asyncio.DefaultEventLoopPolicy:
        selector = _HeldSelector(selectors.DefaultSelector(), held)
        loop = _Loop(selector)
        # The asyncio internals _Loop uses (CPython's, unchanged since 3.4).
        if all(hasattr(loop, name) for name in ("_run_once", "_ready", "_scheduled")):
            return loop, selector
        loop.close()
    return asyncio.new_event_loop(), None


def _runner_of(loop: asyncio.AbstractEventLoop) -> LoopThread | None:
    return getattr(loop, "runner", None) if isinstance(loop, _Loop) else None


def call_from_thread(loop: asyncio.AbstractEventLoop, callback: Callable[..., object], *args: Any) -> None:
    """``loop.call_soon_threadsafe(callback, *args)``, for the threads of a store's client.

    On the event loop of a sync :class:`~leadership.Store` that is idle (waiting for I/O), the
    callback runs at once in the calling thread, with the loop held (its own thread stays
    parked: the callback is still the only code running on the loop), followed by what it made
    ready (the coroutine that awaited the result, a few turns at most): a reply reaches the
    election without waking the loop's thread first. Otherwise, and on any other loop, the
    callback is queued as ``call_soon_threadsafe`` does. Raises RuntimeError if the loop is
    closed. The callback must not block, as on the loop itself.
    """
    runner = _runner_of(loop)
    if runner is None or not runner.post_held(callback, args):
        loop.call_soon_threadsafe(callback, *args)


def _held_by_this_thread(loop: asyncio.AbstractEventLoop) -> LoopThread | None:
    """``loop``'s runner if this thread is running the loop's callbacks while the loop's own
    thread is parked (see ``LoopThread.call`` and :func:`call_from_thread`), else None."""
    runner = _runner_of(loop)
    return runner if runner is not None and getattr(runner._local, "borrowing", False) else None


def held_here(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether this thread is running ``loop``'s callbacks while the loop's own thread is parked."""
    return _held_by_this_thread(loop) is not None


def wakes_loop_later(loop: asyncio.AbstractEventLoop) -> None:
    """Say, from a backend call, that it sent a request whose completion will reach ``loop``
    through :func:`call_from_thread` (or ``call_soon_threadsafe``), always: reply, error or
    lost connection. When a sync API call runs on the idle loop in its caller's thread (see
    ``LoopThread.call``), the work it leaves on the loop may then wait for that completion,
    instead of waking the loop's thread at once, where it would compete for the GIL with the
    client's thread that is sending the request. Elsewhere it does nothing."""
    runner = _held_by_this_thread(loop)
    if runner is not None:
        runner._local.woken_later = True


class LoopThread:
    """An event loop running in a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        #: Held by the loop's thread except while it waits for I/O (see _HeldSelector).
        self._held = threading.Lock()
        self.loop, self._selector = _new_loop(self._held)
        if isinstance(self.loop, _Loop):
            self.loop.runner = self
        #: Set in a thread while it runs a callback for the idle loop (see call()).
        self._local = threading.local()
        self._ready = threading.Event()
        #: Set when the loop will never serve callers again although its thread may live on
        #: (``leadership.testing.crash`` leaves it blocked, as a killed process would).
        self.abandoned = False
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self._held.acquire()
        try:
            self.loop.run_forever()
        finally:
            try:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()
            finally:
                self._held.release()

    def _on_loop(self) -> bool:
        """True in the loop's thread, and in a thread running a callback for the idle loop."""
        return threading.current_thread() is self.thread or getattr(self._local, "borrowing", False)

    def submit(self, coro: Coroutine[Any, Any, _T]) -> concurrent.futures.Future[_T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, _T], timeout: float | None = None) -> _T:
        if self._on_loop():
            coro.close()
            raise _on_loop()
        return self.submit(coro).result(timeout)

    def run_until_stopped(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Like run() with no timeout, but raises StopAsyncIteration if the loop stops first
        (the store was closed or abandoned while a caller was blocked on a stream)."""
        if self.gone():
            coro.close()
            raise StopAsyncIteration
        fut = self.submit(coro)
        while True:
            try:
                return fut.result(timeout=0.2)
            except concurrent.futures.TimeoutError:
                if self.gone():
                    fut.cancel()
                    raise StopAsyncIteration from None

    def call(self, fn: Callable[[], _T], *, answer_later: bool = False) -> _T:
        """Run ``fn()`` on the loop and return its result. A plain callback, not a task (a
        handover's resign() goes this way).

        When the loop is idle (waiting for I/O), ``fn`` runs at once in this thread, with the
        loop held: its thread stays parked until ``fn`` returns, so ``fn`` is still the only
        code running on the loop, as a callback in its thread would be, and the loop's thread is
        woken afterwards for whatever ``fn`` scheduled. That saves waking the loop's thread and
        then this one (two thread wake-ups, each a scheduler round and a wait for the GIL)
        before ``fn`` can act. When the loop is busy, in debug mode (asyncio checks that
        callbacks run in the loop's thread) or gone, ``fn`` is handed to the loop's thread.
        ``answer_later`` (then): wake the caller on the loop's next turn, after the work ``fn``
        scheduled (a woken caller competes with it for the GIL)."""
        if self._on_loop():
            raise _on_loop()
        if self._hold():
            return self._run_held(fn)
        fut: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
                fut.set_exception(exc)
                return
            if answer_later:
                self.loop.call_soon(fut.set_result, result)
            else:
                fut.set_result(result)

        self.loop.call_soon_threadsafe(run)
        return fut.result()

    def _hold(self) -> bool:
        """Take the loop if it is idle and may be held by another thread (see call()); the
        caller then runs its work through _run_held, which lets the loop go."""
        if self._selector is not None and not self._on_loop() and self._held.acquire(blocking=False):
            if self.loop.is_running() and not self.abandoned and not self.loop.get_debug():
                return True
            self._held.release()
        return False

    def _run_held(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` in this thread as a callback of the loop, which this thread holds (see
        _hold), then a few turns of what it made ready (none if ``fn`` sent a request that will
        wake the loop: see wakes_loop_later); then let the loop go, and wake its thread if
        something is left for it that cannot wait."""
        loop, selector = self.loop, self._selector
        assert isinstance(loop, _Loop) and selector is not None
        deadline = loop.next_deadline()
        local = self._local
        local.borrowing, local.woken_later = True, False
        selector.borrowed += 1
        # asyncio.get_running_loop() inside fn. (This thread may run a loop of its own, blocked
        # in one of its callbacks on this call: that one is restored.)
        own = asyncio._get_running_loop()
        asyncio._set_running_loop(loop)
        try:
            result = fn()
            if not local.woken_later:
                loop.drain_held(_DRAIN_TURNS)
            return result
        finally:
            asyncio._set_running_loop(own)
            wake = loop.needs_turn(deadline, ready=not local.woken_later)
            local.borrowing = local.woken_later = False
            self._held.release()
            if wake:
                loop.call_soon_threadsafe(_nothing)

    def post_held(self, callback: Callable[..., object], args: tuple[Any, ...]) -> bool:
        """:func:`call_from_thread` on this loop: False if the loop is busy (not run here)."""
        if not self._hold():
            return False
        self._run_held(functools.partial(callback, *args))
        return True

    def iterate(self, open_stream: Callable[[], Stream[_T]]) -> Iterator[_T]:
        """A blocking iterator over the stream ``open_stream()`` returns (called on the loop, now:
        a stream starts at this call). Items come straight from the stream, woken by its
        ``put``: no hop through a task and a future per item. Ends when the stream ends, or
        when the loop stops (the store was closed or abandoned)."""
        # Wake-ups as tokens in a SimpleQueue (C, one lock; a threading.Event is several Python
        # level lock operations on each side, each of them a chance to wait for the GIL). A
        # token put after the consumer looked is still there when it waits: none is lost.
        wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()

        def attach() -> Stream[_T]:
            stream = open_stream()
            stream.attach(functools.partial(wakeups.put_nowait, None))
            return stream

        return self._pull(self.call(attach), wakeups)

    def _pull(self, stream: Stream[_T], wakeups: queue.SimpleQueue[None]) -> Iterator[_T]:
        try:
            while True:
                try:
                    found, item = stream.take()
                except StopIteration:
                    return
                if found:
                    yield item  # type: ignore[misc]
                    continue
                while True:
                    try:
                        wakeups.get(timeout=0.2)
                        break
                    except queue.Empty:
                        if self.gone():
                            return
        finally:
            # Not a blocking call: this may run anywhere, the generator's finalizer included.
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to detach from
                self.loop.call_soon_threadsafe(stream.detach)

    def gone(self) -> bool:
        return self.abandoned or not self.thread.is_alive() or not self.loop.is_running()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)
