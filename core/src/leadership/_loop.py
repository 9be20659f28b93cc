"""The engine behind the sync API: an event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ._util import Stream
from .errors import UsageError

_T = TypeVar("_T")


def _on_loop() -> UsageError:
    return UsageError(
        "a blocking leadership call was made on the store's own event loop (from an observer hook?); "
        "observers must not call the sync API: use leadership.aio, or hand the work to another thread"
    )


class LoopThread:
    """An event loop running in a daemon thread of its own."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
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
        """Run ``fn()`` on the loop and return its result. A plain callback, not a task: the
        loop runs it as soon as it wakes (a handover's resign() goes this way).
        ``answer_later``: wake the caller on the loop's next turn, after the work ``fn``
        scheduled (a woken caller competes with it for the GIL)."""
        if threading.current_thread() is self.thread:
            raise _on_loop()
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
