"""Followers: watch an election and report who leads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from ._util import Flag, Stream, validate_key
from ._watch import watch_terms
from .backend import Term
from .errors import ClosedError, InvalidArgumentError
from .retry import DEFAULT_RETRY, RetryPolicy
from .store import AsyncStore, Store

__all__ = ["AsyncFollower", "Follower"]

log = logging.getLogger(__name__)

_NOTHING: Any = object()


class AsyncFollower:
    """Follows the election on ``key``, for asyncio code.

    ``async for leader in follower.follow_election()`` yields the leader's name at start (once
    someone leads) and on every change, consecutive duplicates dropped. ``follower.terms()`` is
    the richer stream: every :class:`Term` observed, or None while nobody leads.

    Both report what the follower observed, not necessarily every term: a term that starts and
    ends between two observations (a polling backend, a watch re-created, a busy process) is
    missed, so ``terms()`` may give the same leader twice in a row with two tokens, while
    ``follow_election()`` gives the name once.
    """

    def __init__(self, store: AsyncStore, key: str, *, retry: RetryPolicy | None = DEFAULT_RETRY) -> None:
        if not isinstance(store, AsyncStore):
            raise InvalidArgumentError(
                f"store must be an AsyncStore (from leadership.aio.connect), got {type(store).__name__}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
        store._check_open()
        self.store = store
        self.key = validate_key(key)
        self.retry = retry
        self.term: Term | None = None
        self._seen: Any = _NOTHING
        self._stream: Stream[Term | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = Flag()
        self._stopped = False
        self.last_error: BaseException | None = None

    @property
    def leader(self) -> str | None:
        """The latest leader's name (None while nobody leads or before the first read)."""
        return self.term.leader if self.term is not None else None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _start(self) -> Stream[Term | None]:
        if self._stopped:
            raise ClosedError(f"follower of {self.key!r} was stopped; create a new one")
        if self._task is None or self._task.done():
            self.store._register(self)
            self._stream = Stream()
            self._seen = _NOTHING
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"leadership-follower-{self.key}")
        assert self._stream is not None
        return self._stream

    def terms(self) -> AsyncIterator[Term | None]:
        """Every change of term observed: a Term, or None while nobody leads; duplicates dropped
        (a term may be missed, see the class docstring)."""
        return self._start().iterate()

    def follow_election(self) -> AsyncIterator[str]:
        """Start following (at this call) and return the leader names, consecutive duplicates
        dropped (no-leader periods are skipped)."""
        return self._names(self._start())

    @staticmethod
    async def _names(stream: Stream[Term | None]) -> AsyncIterator[str]:
        previous: str | None = None
        async for term in stream.iterate():
            if term is not None and term.leader != previous:
                previous = term.leader
                yield term.leader

    async def stop(self) -> None:
        """End the streams and the watch. Idempotent."""
        self._stopped = True
        self._stop.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        if self._stream is not None:
            self._stream.close()
        self.store._unregister(self)

    def _update(self, term: Term | None) -> None:
        if term == self._seen:
            return
        self._seen = term
        self.term = term
        if self._stream is not None:
            self._stream.put(term)
        self.store.observers.leader_changed(self.key, term.leader if term else None, term.token if term else None)

    async def _run(self) -> None:
        error: BaseException | None = None
        try:
            async with contextlib.aclosing(
                watch_terms(self.store, self.key, retry=self.retry, stop=self._stop)
            ) as terms:
                async for term in terms:
                    self._update(term)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - already reported by the watch: a permanent error, or retry=None
            error = exc
        finally:
            self.last_error = error
            if self._stream is not None:
                self._stream.close(error)

    def __repr__(self) -> str:
        return f"<AsyncFollower key={self.key!r} leader={self.leader!r}>"


class Follower:
    """Follows the election on ``key`` (synchronous API).

    >>> for leader in leadership.Follower(store, "service/swarm/leader").follow_election(): ...
    """

    def __init__(self, store: Store, key: str, *, retry: RetryPolicy | None = DEFAULT_RETRY) -> None:
        if not isinstance(store, Store):
            raise InvalidArgumentError(
                f"store must be a Store (from leadership.connect), got {type(store).__name__}; "
                "use leadership.aio.Follower with an AsyncStore"
            )
        self.store = store
        self.aio: AsyncFollower = store._call(lambda: AsyncFollower(store.aio, key, retry=retry))

    key = property(lambda self: self.aio.key)

    @property
    def leader(self) -> str | None:
        return self.aio.leader

    @property
    def term(self) -> Term | None:
        return self.aio.term

    def follow_election(self) -> Iterator[str]:
        """Leader names as they change, consecutive duplicates dropped."""
        return _iterate(self.store, self.aio.follow_election)

    def terms(self) -> Iterator[Term | None]:
        """Every change of term (None while nobody leads)."""
        return _iterate(self.store, self.aio.terms)

    def stop(self) -> None:
        if self.store.closed:
            return
        self.store._run(self.aio.stop())

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return repr(self.aio).replace("AsyncFollower", "Follower")


def _iterate(store: Store, make: Any) -> Iterator[Any]:
    """Start the stream now (in the caller's call), iterate it lazily."""

    async def start() -> AsyncIterator[Any]:
        return make()  # type: ignore[no-any-return]

    agen = store._run(start())
    return _pull(store, agen)


def _pull(store: Store, agen: AsyncIterator[Any]) -> Iterator[Any]:
    async def anext() -> Any:
        return await agen.__anext__()

    while True:
        try:
            item = store._runner.run_until_stopped(anext())
        except StopAsyncIteration:
            return
        yield item
