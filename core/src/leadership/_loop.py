"""The engine behind the sync API: an event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import UsageError

_T = TypeVar("_T")


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
            raise UsageError(
                "a blocking leadership call was made on the store's own event loop (from an observer hook?); "
                "observers must not call the sync API: use leadership.aio, or hand the work to another thread"
            )
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

    def call(self, fn: Callable[[], _T]) -> _T:
        async def wrapper() -> _T:
            return fn()

        return self.run(wrapper())

    def gone(self) -> bool:
        return self.abandoned or not self.thread.is_alive() or not self.loop.is_running()

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout=10)
