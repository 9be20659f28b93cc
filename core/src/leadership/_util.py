"""Small pieces the core's state machines share: validation, a single-consumer stream, the one
retry loop (:class:`Backoff`) and the one "run this until a flag is set" (:func:`race`)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import InvalidArgumentError, InvalidTTLError, PermanentStoreError, UsageError
from .retry import MIN_RETRY_DELAY, RetryPolicy

_T = TypeVar("_T")

_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_KEY_LENGTH = 512
MAX_NAME_BYTES = 4096


def validate_key(key: object) -> str:
    """A key is ``segment[/segment...]`` with segments of ``[A-Za-z0-9._-]``."""
    if not isinstance(key, str):
        raise InvalidArgumentError(f"election key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidArgumentError("election key must not be empty; e.g. 'service/swarm/leader'")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidArgumentError(f"election key is {len(key)} characters long; at most {MAX_KEY_LENGTH} allowed")
    for segment in key.split("/"):
        if not segment:
            raise InvalidArgumentError(
                f"election key {key!r} has an empty segment (leading, trailing or double '/'); "
                "use segments joined by single slashes, e.g. 'service/swarm/leader'"
            )
        if segment in (".", ".."):
            raise InvalidArgumentError(f"election key {key!r}: '.' and '..' are not allowed as segments")
        if not _SEGMENT.match(segment):
            raise InvalidArgumentError(
                f"election key {key!r}: segment {segment!r} has characters outside [A-Za-z0-9._-]"
            )
    return key


def validate_name(name: object) -> str:
    if not isinstance(name, str):
        raise InvalidArgumentError(f"candidate name must be a str, got {type(name).__name__}")
    if not name or not name.strip():
        raise InvalidArgumentError("candidate name must not be empty or blank")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise InvalidArgumentError(f"candidate name is longer than {MAX_NAME_BYTES} bytes of UTF-8")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidArgumentError(f"candidate name {name!r} contains control characters")
    return name


def validate_ttl(ttl: object, minimum: float, maximum: float | None, backend: str) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)):
        raise InvalidTTLError(f"ttl must be a number of seconds, got {type(ttl).__name__}")
    value = float(ttl)
    if math.isnan(value) or math.isinf(value):
        raise InvalidTTLError(f"ttl must be a finite number of seconds, got {ttl!r}")
    if value < minimum:
        raise InvalidTTLError(
            f"ttl={value:g}s is below the minimum of {minimum:g}s for the {backend} backend "
            f"(allowed: {minimum:g}s" + (f" to {maximum:g}s)" if maximum else " or more)")
        )
    if maximum is not None and value > maximum:
        raise InvalidTTLError(
            f"ttl={value:g}s is above the maximum of {maximum:g}s for the {backend} backend "
            f"(allowed: {minimum:g}s to {maximum:g}s)"
        )
    return value


class Stream(Generic[_T]):
    """An unbounded single-consumer stream: nothing put is ever dropped; ``close`` ends it,
    optionally with an exception the consumer receives after the values already queued."""

    def __init__(self) -> None:
        self._items: collections.deque[_T] = collections.deque()
        self._closed = False
        self._error: BaseException | None = None
        self._wakeup = Flag()
        self._consuming = False
        #: Called after every put and on close when a consumer in another thread is attached.
        self._notify: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: _T) -> None:
        if not self._closed:
            self._items.append(item)
            self._wakeup.set()
            if self._notify is not None:
                self._notify()

    def close(self, error: BaseException | None = None) -> None:
        if not self._closed:
            self._closed = True
            self._error = error
            self._wakeup.set()
            if self._notify is not None:
                self._notify()

    # The consumer in another thread (the sync API): it takes items straight from the deque
    # (append and popleft are atomic) and is woken by ``notify``, set from the loop's side in the
    # same call that puts the item, so a value reaches it without a task or a future in between.

    def attach(self, notify: Callable[[], None]) -> None:
        """Make the caller this stream's consumer, from another thread (call on the loop)."""
        if self._consuming:
            raise UsageError("this stream already has a consumer; iterate it from one place only")
        self._consuming = True
        self._notify = notify

    @contextlib.contextmanager
    def notify_later(self) -> Iterator[None]:
        """Within the block, items are queued at once but the consumer in another thread is
        woken only when the block ends (after the store request the block sends is on its way):
        a woken thread of this process competes for the GIL with whatever runs next."""
        notify, self._notify = self._notify, None
        try:
            yield
        finally:
            if self._notify is None:
                self._notify = notify
            if notify is not None:
                notify()

    def detach(self) -> None:
        """The attached consumer is done (call on the loop)."""
        self._notify = None
        self._consuming = False

    def take(self) -> tuple[bool, _T | None]:
        """For the attached consumer, from its thread: ``(True, item)``, or ``(False, None)``
        when nothing is queued. At the end raises StopIteration, or the closing error once."""
        try:
            return True, self._items.popleft()
        except IndexError:
            pass
        if not self._closed:
            return False, None
        if self._items:  # put just before the close
            return True, self._items.popleft()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        raise StopIteration

    async def get(self) -> _T:
        """The next item; raises StopAsyncIteration at the end (or the closing error)."""
        while not self._items:
            if self._closed:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._items.popleft()

    async def iterate(self) -> AsyncIterator[_T]:
        if self._consuming:
            raise UsageError("this stream already has a consumer; iterate it from one place only")
        self._consuming = True
        try:
            while True:
                try:
                    item = await self.get()
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self._consuming = False


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def abandon(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` without waiting for it, and make sure its outcome is retrieved (no
    "exception was never retrieved" noise when it fails while being torn down)."""
    task.cancel()
    task.add_done_callback(_retrieve)


async def settle(tasks: list[asyncio.Task[Any]], timeout: float) -> None:
    """Give ``tasks`` ``timeout`` seconds to end, cancel the rest and give them as long again to
    finish cancelling; whatever still runs then is left behind (its outcome retrieved). A
    backend call that blocks on cancel (a client closing a connection to a frozen store) must
    not hold up closing."""
    _, pending = await asyncio.wait(tasks, timeout=timeout) if tasks else (set(), set())
    for task in pending:
        task.cancel()
    if pending:
        _, stuck = await asyncio.wait(pending, timeout=max(0.05, timeout))
        for task in stuck:
            abandon(task)


class Flag:
    """An asyncio.Event that can also hand out plain futures, so racing it against other work
    costs no extra task (the core races flags on every handover)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        # A dict, not a list: thousands of elections race the same flag (their session's loss,
        # the store's epoch), and each race discards its future again.
        self._waiters: dict[asyncio.Future[None], None] = {}

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if not self._set:
            self._set = True
            waiters, self._waiters = self._waiters, {}
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def clear(self) -> None:
        self._set = False

    def future(self) -> asyncio.Future[None]:
        """A future resolved when the flag is set (at once if it is)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._set:
            fut.set_result(None)
        else:
            self._waiters[fut] = None
        return fut

    def discard(self, fut: asyncio.Future[None]) -> None:
        self._waiters.pop(fut, None)

    async def wait(self) -> None:
        if self._set:
            return
        fut = self.future()
        try:
            await fut
        finally:
            self.discard(fut)


async def wait_first(*aws: asyncio.Future[Any] | Flag) -> None:
    """Wait until any of the futures/tasks is done or any of the flags is set. Cancels nothing
    it was given."""
    futures: list[asyncio.Future[Any]] = []
    flags: list[tuple[Flag, asyncio.Future[None]]] = []
    try:
        for aw in aws:
            if isinstance(aw, Flag):
                if aw.is_set():
                    return
                fut = aw.future()
                flags.append((aw, fut))
                futures.append(fut)
            else:
                if aw.done():
                    return
                futures.append(aw)
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for flag, fut in flags:
            flag.discard(fut)
            fut.cancel()


async def nap(delay: float, *flags: Flag) -> None:
    """Sleep ``delay`` seconds, or less: until any of ``flags`` is set."""
    pause = asyncio.ensure_future(asyncio.sleep(delay))
    try:
        await wait_first(pause, *flags)
    finally:
        pause.cancel()


def is_permanent(error: BaseException) -> bool:
    """Whether retrying cannot cure ``error``: the store refused us for good (bad credentials,
    bad request) or the caller's input is wrong. Everything else is retried, a backend's
    unexpected exception (a bug: TypeError, a race with its client's state) included."""
    return isinstance(error, (PermanentStoreError, InvalidArgumentError, UsageError))


def describe(error: BaseException) -> str:
    """``Type: text`` for logs (the type alone when the text is empty)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Interrupted(Exception):
    """Raised by :func:`race` when one of its flags was set before the work finished."""

    def __init__(self, flag: Flag) -> None:
        super().__init__("interrupted")
        self.flag = flag


async def race(aw: Awaitable[_T], *flags: Flag) -> _T:
    """Run ``aw`` until it finishes or any of ``flags`` is set. In the second case the work is
    cancelled and awaited, and :class:`Interrupted` names the flag that was set (the first of
    ``flags`` that is). Cancelling the caller cancels the work without waiting for it."""
    task = asyncio.ensure_future(aw)
    try:
        await wait_first(task, *flags)
    except asyncio.CancelledError:
        abandon(task)
        raise
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    raise Interrupted(next(flag for flag in flags if flag.is_set()))


#: report(error, operation, attempt, retry_in): how a retry loop tells the store about a failure.
Reporter = Callable[[BaseException, str, int, "float | None"], None]


class Backoff:
    """The retry loop's state for one operation: counts consecutive failures, reports each one,
    and pauses before the next try. Every retry in the core goes through one of these, so each
    gets the same floor (:data:`~leadership.retry.MIN_RETRY_DELAY`), reporting and early wake-up.

    ``pause(delay)`` sleeps; the default is a plain nap that ends early when a flag returned by
    ``wake()`` is set (the store is reachable again, stop() was called).
    """

    def __init__(
        self,
        report: Reporter,
        operation: str,
        policy: RetryPolicy,
        *,
        wake: Callable[[], tuple[Flag, ...]] = tuple,
        pause: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.report = report
        self.operation = operation
        self.policy = policy
        self.attempt = 0
        self._wake = wake
        self._pause = pause

    def succeeded(self) -> None:
        self.attempt = 0

    def next_delay(self, cap: float | None = None) -> float:
        delay = self.policy.delay(self.attempt + 1)
        if cap is not None:
            delay = min(delay, cap)
        return max(MIN_RETRY_DELAY, delay)

    def note(self, error: BaseException, *, cap: float | None = None) -> float:
        """Count and report ``error`` as a transient failure; return the delay before the next try
        (at most ``cap`` seconds if given, never less than the floor)."""
        delay = self.next_delay(cap)
        self.attempt += 1
        self.report(error, self.operation, self.attempt, delay)
        return delay

    async def failed(self, error: BaseException, *, cap: float | None = None) -> None:
        """:meth:`note` the failure, then wait the delay."""
        delay = self.note(error, cap=cap)
        if self._pause is not None:
            await self._pause(delay)
        else:
            await nap(delay, *self._wake())

    def give_up(self, error: BaseException) -> None:
        """Report ``error`` as the end of this operation: it will not be retried."""
        self.report(error, self.operation, self.attempt + 1, None)
