"""Candidates: run for election on a key and report every change of leadership as a stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterator

from ._loop import held_here
from ._session import Generation, SharedSession
from ._util import (
    Backoff,
    Flag,
    Interrupted,
    Stream,
    abandon,
    describe,
    is_permanent,
    nap,
    race,
    validate_key,
    validate_name,
    validate_ttl,
    wait_first,
)
from ._watch import watch_terms
from .backend import Backend, Term
from .errors import (
    ClosedError,
    ElectionTimeoutError,
    InvalidArgumentError,
    NotLeaderError,
    SessionLostError,
)
from .retry import DEFAULT_RETRY, RetryPolicy
from .store import AsyncStore, Store

__all__ = ["AsyncCandidate", "AsyncLeadership", "Candidate", "Leadership", "NotLeaderError", "ahold", "hold"]

log = logging.getLogger(__name__)

#: After resigning, how long a candidate waits for its successor to take over before queueing
#: again (it re-queues at once when it sees the successor).
HANDOVER_GRACE = 0.05
#: How long a new leader lets its elected event go first before it sets up its watch.
WATCH_DELAY = 0.001
#: How long stop() waits for the store to remove a leader's entry, outside of store.close().
STOP_WITHDRAW_TIMEOUT = 2.0


class _Stopped(Exception):
    pass


class AsyncCandidate:
    """Runs for election on ``key`` as ``name``, for asyncio code.

    ``async for elected in candidate.run_for_election()`` yields False first, True when elected,
    False when leadership is resigned or lost, and keeps campaigning until :meth:`stop`.

    :param ttl: the longest a crashed leader keeps the key from the others, in seconds.
    :param retry: backoff for transient store errors; None makes a store error end the stream
        (the iterator raises it) so the caller can retry on its own schedule.
    """

    def __init__(
        self,
        store: AsyncStore,
        key: str,
        name: str,
        ttl: float = 15.0,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> None:
        if not isinstance(store, AsyncStore):
            raise InvalidArgumentError(
                f"store must be an AsyncStore (from leadership.aio.connect), got {type(store).__name__}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgumentError(f"retry must be a RetryPolicy or None, got {type(retry).__name__}")
        backend = store.backend
        store._check_open()
        self.store = store
        self.key = validate_key(key)
        self.name = validate_name(name)
        self.ttl = validate_ttl(ttl, type(backend).min_ttl, type(backend).max_ttl, store.scheme)
        self.retry = retry
        self._stream: Stream[bool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._shared: SharedSession | None = None
        self._term: Term | None = None
        self._gen: Generation | None = None
        #: The generation whose entry for our key stop() could not withdraw (see _cleanup).
        self._leftover: Generation | None = None
        self._last: bool | None = None
        self._resign = Flag()
        self._stop = Flag()
        self._stopped = False
        self._elected_waiters: list[asyncio.Future[Term]] = []
        self._lost = Flag()
        #: The withdraw resign() started (see _begin_resign); _lead awaits it.
        self._withdrawal: asyncio.Future[None] | None = None
        self.last_error: BaseException | None = None

    # -- state -----------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True only while elected and the session's deadline has not passed (checked on read)."""
        gen = self._gen
        return self._term is not None and gen is not None and gen.alive()

    @property
    def term(self) -> Term | None:
        """The current term (leader name and fencing token) while leading, else None."""
        return self._term if self.is_leader else None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    # -- the stream ------------------------------------------------------------------------------
    def run_for_election(self) -> AsyncIterator[bool]:
        """Start campaigning (if not already) and return the stream of leadership changes."""
        self._start()
        assert self._stream is not None
        return self._stream.iterate()

    def _open_stream(self) -> Stream[bool]:
        """Start campaigning (if not already) and return the stream (the sync API's)."""
        self._start()
        assert self._stream is not None
        return self._stream

    def _start(self) -> None:
        if self._stopped:
            raise ClosedError(f"candidate {self.name!r} for {self.key!r} was stopped; create a new one")
        if self._task is not None and not self._task.done():
            return
        self.store._register(self)
        self._stream = Stream()
        self._last = None
        if self._shared is None:
            self._shared = self.store.acquire_session(self.ttl, self.key, patient=self.retry is not None)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"leadership-candidate-{self.key}")

    def _emit(self, value: bool) -> None:
        if value != self._last and self._stream is not None:
            self._last = value
            self._stream.put(value)

    async def resign(self) -> None:
        """Give up leadership now and keep campaigning (from the back of the queue). Does nothing
        when not leading. Returns once the stream has reported False."""
        self._begin_resign()

    def _begin_resign(self) -> None:
        """resign() on the loop, synchronously: demote (``is_leader`` False, hooks, stream False)
        and start removing our entry, in this very call. The campaign task wakes up later and
        finds the withdraw under way, instead of the handover waiting for it to wake."""
        task, term, gen = self._task, self._term, self._gen
        if term is None or gen is None or task is None or task.done() or self._resign.is_set():
            return
        self._resign.set()
        stream = self._stream
        # The stream's consumer thread is woken after the withdraw request is on its way, so
        # that it does not compete for the GIL with sending it.
        with stream.notify_later() if stream is not None else contextlib.nullcontext():
            self._set_demoted(term, "resigned")
            # Demoted: now the entry may go. A backend may send its request in this very call
            # (ZooKeeper does); else it goes out first thing on the loop's next turn (a task of
            # its own, not behind the retry loop's first turn).
            first = asyncio.ensure_future(self.store.backend.withdraw(gen.raw, self.key))
        self._withdrawal = asyncio.ensure_future(self._withdraw_with_retry(gen, first))

    async def stop(self) -> None:
        """Release leadership if held, interrupt a pending campaign, end the stream. Idempotent."""
        self._stopped = True
        self._stop.set()
        task = self._task
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        if self._stream is not None:
            self._stream.close()
        if self._shared is not None:
            shared, self._shared = self._shared, None
            await self._release(shared)
        self.store._unregister(self)

    async def _release(self, shared: SharedSession) -> None:
        leftover, self._leftover = self._leftover, None
        await self.store.release_session(shared, self.key, patient=self.retry is not None, entry=leftover)

    async def wait_elected(self, timeout: float | None = None) -> Term:
        """Wait until this candidate leads (starting the campaign if needed) and return the term."""
        self._start()
        term = self.term
        if term is not None:
            return term
        fut: asyncio.Future[Term] = asyncio.get_running_loop().create_future()
        self._elected_waiters.append(fut)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            assert timeout is not None
            raise ElectionTimeoutError(
                f"{self.name!r} was not elected leader of {self.key!r} within {timeout:g}s: {await self._who_leads()}"
            ) from None
        finally:
            if fut in self._elected_waiters:
                self._elected_waiters.remove(fut)

    async def _who_leads(self) -> str:
        """Who leads, for an error message (one quick read; the store may be unreachable)."""
        try:
            term = await asyncio.wait_for(self.store.backend.get_leader(self.key), 0.5)
        except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001 - only for a message
            return f"the leader is unknown (the store did not answer: {describe(exc)})"
        if term is None:
            return "nobody leads it (the candidate may still be connecting or queueing)"
        return f"{term.leader!r} leads it (token {term.token})"

    def leadership(self, timeout: float | None = None) -> AsyncLeadership:
        """``async with candidate.leadership() as lease:`` waits to be elected, runs the block as
        leader and resigns when it ends. ``lease.lost`` is set if leadership is lost meanwhile."""
        return AsyncLeadership(self, timeout)

    # -- the state machine -------------------------------------------------------------------------
    async def _run(self) -> None:
        self._emit(False)
        error: BaseException | None = None
        assert self._shared is not None
        shared = self._shared
        campaigning = Backoff(self.store.report_error, "campaign", self.retry or DEFAULT_RETRY, pause=self._backoff)
        try:
            while not self._stop.is_set():
                gen: Generation | None = None
                try:
                    gen = await race(shared.generation(fail_fast=self.retry is None), self._stop)
                    self._gen = gen
                    # While waiting, the store's health is watched: after an outage or a restart
                    # the campaign is re-issued (campaign is idempotent per session and key), so a
                    # wait the client dropped silently cannot strand this candidate.
                    async with self.store.watching():
                        campaign = self.store.backend.campaign(gen.raw, self.key, self.name)
                        term = await race(campaign, self._stop, gen.lost, self.store.epoch_event())
                    if not gen.alive():
                        raise SessionLostError("session lost while the campaign returned")
                    campaigning.succeeded()
                    await self._lead(gen, term)
                except _Stopped:
                    break
                except Interrupted as interrupted:
                    if interrupted.flag is self._stop:
                        break
                    continue  # the session was lost, or the store came back: campaign again
                except SessionLostError as exc:
                    if gen is not None and not gen.alive():
                        continue  # the shared session opens the next generation; campaign again on it
                    if self.retry is None:
                        campaigning.give_up(exc)
                        error = exc
                        break
                    await campaigning.failed(exc)  # the backend lost the entry, not the session
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - sorted by is_permanent
                    if is_permanent(exc) or self.retry is None:
                        campaigning.give_up(exc)
                        error = exc
                        break
                    # Transient, or a backend's unexpected error (a bug): retried and reported.
                    await campaigning.failed(exc)
        except _Stopped:
            pass
        except Exception as exc:  # a bug in the core: surface it, never die silently
            log.exception("candidate %r for %r failed", self.name, self.key)
            error = exc
        finally:
            await self._cleanup()
            if error is not None and self._shared is shared:
                # The stream is over: a session kept for it alone would retry on, unasked. (Before
                # the stream ends: the caller may start a new one as soon as it sees the end.)
                self._shared = None
                await self._release(shared)
            self.last_error = error
            if self._stream is not None:
                self._stream.close(error)
            for fut in self._elected_waiters:
                if not fut.done():
                    fut.set_exception(error or ClosedError("candidate stopped before it was elected"))

    async def _cleanup(self) -> None:
        self._set_demoted(None, "stopped")
        gen = self._gen
        self._leftover = None
        # Not while the store closes: revoking the session, one request, releases every entry on
        # it; and not while the store is known unreachable. Bounded: stop() is prompt.
        if gen is None or not gen.alive() or self.store.closing:
            return
        if self.store.healthy:
            try:
                budget = STOP_WITHDRAW_TIMEOUT
                await asyncio.wait_for(self.store.backend.withdraw(gen.raw, self.key), timeout=budget)
                return
            except (Exception, asyncio.TimeoutError) as exc:  # noqa: BLE001
                log.debug("withdraw on stop failed: %s", describe(exc))
        # The entry may still be in the store, and other elections may keep the session alive
        # for as long as they run: releasing the session hands it to a background withdraw.
        self._leftover = gen

    async def _lead(self, gen: Generation, term: Term) -> None:
        self._resign.clear()
        self._lost = Flag()
        self._term = term
        log.info("%r elected for %r (token %d)", self.name, self.key, term.token)
        self._emit(True)
        self.store.observers.elected(self.key, self.name, term.token)
        for fut in self._elected_waiters:
            if not fut.done():
                fut.set_result(term)
        replaced, successor = Flag(), Flag()
        watch = asyncio.ensure_future(self._watch_replaced(term, replaced, successor))
        try:
            await wait_first(gen.lost, self._stop, self._resign, replaced, watch)
            # Report False first, then tidy up: the stream must not lag behind the truth.
            if self._stop.is_set():
                reason = "stopped"
            elif self._resign.is_set():
                reason = "resigned"
            elif gen.lost.is_set():
                reason = "session_lost"
            else:
                reason = "replaced"
            if self._term is term:  # not yet demoted by resign()
                self._set_demoted(term, reason)
            if reason in ("resigned", "replaced"):
                # Remove our entry (the next candidate takes over) and campaign again from the
                # back of the queue — after the successor has taken over, so that our new entry
                # does not compete with its first requests.
                if self._withdrawal is not None:
                    await self._withdrawal  # resign() started it
                else:
                    await self._withdraw_with_retry(gen)
                if reason == "resigned":
                    grace = asyncio.ensure_future(asyncio.sleep(HANDOVER_GRACE))
                    try:
                        await wait_first(successor, grace, self._stop, gen.lost)
                    finally:
                        grace.cancel()
        finally:
            watch.cancel()
            withdrawal, self._withdrawal = self._withdrawal, None
            if withdrawal is not None:
                withdrawal.cancel()  # a no-op once done; else stop() or a lost session came first
            await asyncio.gather(watch, *([withdrawal] if withdrawal else []), return_exceptions=True)
        if reason == "stopped":
            raise _Stopped
        if reason == "session_lost":
            raise SessionLostError(gen.reason)

    def _set_demoted(self, term: Term | None, reason: str) -> None:
        term = term or self._term
        self._term = None
        self._lost.set()
        if term is not None:
            log.info("%r no longer leads %r (token %d): %s", self.name, self.key, term.token, reason)
            self.store.observers.demoted(self.key, self.name, term.token, reason)
        self._emit(False)

    async def _withdraw_with_retry(self, gen: Generation, first: asyncio.Future[None] | None = None) -> None:
        """Remove our entry, retrying transient errors; ``first``: the first attempt, already
        under way."""
        withdrawing = Backoff(self.store.report_error, "withdraw", self.retry or DEFAULT_RETRY, pause=self._backoff)
        try:
            while gen.alive() and not self._stop.is_set():
                attempt, first = first or self.store.backend.withdraw(gen.raw, self.key), None
                try:
                    await race(attempt, self._stop, gen.lost)
                    return
                except Interrupted as interrupted:
                    if interrupted.flag is self._stop:
                        raise _Stopped from None
                    return  # the session is gone, and its entry with it
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if is_permanent(exc):
                        raise
                    await withdrawing.failed(exc)
        finally:
            if first is not None:  # never awaited: stopped or lost before it was
                abandon(first)

    async def _backoff(self, delay: float) -> None:
        """Wait ``delay`` seconds before a retry, or less: until the store is reachable again
        (after a long outage the delay may have grown to seconds). _Stopped on stop()."""
        async with self.store.watching():
            await nap(delay, self._stop, self.store.epoch_event())
        if self._stop.is_set():
            raise _Stopped

    async def _watch_replaced(self, term: Term, replaced: Flag, successor: Flag) -> None:
        """Set ``replaced`` when the store shows a leader other than ``term`` (or none), and
        ``successor`` (and return) once it shows another leader."""
        # First let the elected event reach the user (the sync API's thread needs the GIL): setting
        # up the watch costs CPU that would otherwise delay it. Nothing is missed meanwhile: the
        # watch starts from the term itself (its token, or the state read first). Not when the
        # win came in a client thread that holds the idle loop: a timer would wake the loop's
        # own thread at once, to compete for the GIL with that very user thread, and the thread
        # here is about to let go anyway (see LoopThread._run_held).
        if not held_here(asyncio.get_running_loop()):
            await asyncio.sleep(WATCH_DELAY)
        if type(self.store.backend).wait_replaced is not Backend.wait_replaced:
            # The backend watches our own entry: no reads on the handover path. It cannot tell
            # the successor apart, so this returns (ending a resign's grace) once the entry is gone.
            await self._wait_replaced(term)
            replaced.set()
            return
        # Retried without end: during an outage the session deadline is what protects leadership.
        watch = watch_terms(self.store, self.key, retry=DEFAULT_RETRY, stop=self._stop)
        async with contextlib.aclosing(watch) as terms:
            async for current in terms:
                if current is None or current.token != term.token:
                    replaced.set()
                if current is not None and current.token != term.token:
                    successor.set()
                    return

    async def _wait_replaced(self, term: Term) -> None:
        """Return once the backend reports ``term`` replaced; its watch is re-established after
        errors and whenever the store comes back or restarts. Retried without end: during an
        outage the session deadline is what protects leadership."""
        gen = self._gen
        assert gen is not None
        watching = Backoff(self.store.report_error, "observe", DEFAULT_RETRY, pause=self._backoff)
        async with self.store.watching():
            while True:
                try:
                    watch = self.store.backend.wait_replaced(gen.raw, self.key, term)
                    await race(watch, self._stop, gen.lost, self.store.epoch_event())
                    return
                except Interrupted as interrupted:
                    if interrupted.flag is self._stop:
                        raise _Stopped from None
                    if interrupted.flag is gen.lost:
                        return  # _lead sees the session lost
                    continue  # the store came back or restarted: watch again
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if is_permanent(exc):
                        raise
                    await watching.failed(exc)

    def __repr__(self) -> str:
        state = "leader" if self.is_leader else ("running" if self.running else "idle")
        return f"<AsyncCandidate {self.name!r} key={self.key!r} ttl={self.ttl:g} {state}>"


class AsyncLeadership:
    """Holds leadership for an ``async with`` block; resigns when the block ends."""

    def __init__(self, candidate: AsyncCandidate, timeout: float | None) -> None:
        self.candidate = candidate
        self.timeout = timeout
        self.term: Term | None = None
        self.lost = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None

    @property
    def valid(self) -> bool:
        return self.candidate.is_leader and self.candidate.term == self.term

    def check(self) -> Term:
        """Return the term, or raise NotLeaderError if leadership was lost."""
        if not self.valid or self.term is None:
            raise NotLeaderError(f"{self.candidate.name!r} no longer leads {self.candidate.key!r}")
        return self.term

    async def __aenter__(self) -> AsyncLeadership:
        self.term = await self.candidate.wait_elected(self.timeout)
        lost = self.candidate._lost

        async def watch() -> None:
            await lost.wait()
            self.lost.set()

        self._watch = asyncio.ensure_future(watch())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self.valid:
            await self.candidate.resign()


class Candidate:
    """Runs for election on ``key`` as ``name`` (synchronous API).

    >>> store = leadership.connect("memory://")
    >>> candidate = leadership.Candidate(store, "service/swarm/leader", "underwood", ttl=15.0)
    >>> for elected in candidate.run_for_election(): ...

    :param ttl: the longest a crashed leader keeps the key from the others, in seconds.
    :param retry: backoff for transient store errors; None makes a store error end the stream
        (the iterator raises it) so the caller can retry on its own schedule.
    """

    def __init__(
        self,
        store: Store,
        key: str,
        name: str,
        ttl: float = 15.0,
        *,
        retry: RetryPolicy | None = DEFAULT_RETRY,
    ) -> None:
        if not isinstance(store, Store):
            raise InvalidArgumentError(
                f"store must be a Store (from leadership.connect), got {type(store).__name__}; "
                "use leadership.aio.Candidate with an AsyncStore"
            )
        self.store = store
        # Built on the store's loop; a bad key, name or ttl raises here all the same.
        self.aio: AsyncCandidate = store._call(lambda: AsyncCandidate(store.aio, key, name, ttl, retry=retry))

    key = property(lambda self: self.aio.key)
    name = property(lambda self: self.aio.name)
    ttl = property(lambda self: self.aio.ttl)

    @property
    def is_leader(self) -> bool:
        """True only while elected and the session's deadline has not passed (checked on read)."""
        return self.aio.is_leader

    @property
    def term(self) -> Term | None:
        """The current term (leader name and fencing token) while leading, else None."""
        return self.aio.term

    def run_for_election(self) -> Iterator[bool]:
        """Start campaigning and iterate leadership changes: False first, then True/False.

        The iterator ends after :meth:`stop`; with ``retry=None`` it raises the store error that
        ended it, and calling run_for_election() again starts over.
        """
        return self.store._iterate(self.aio._open_stream)

    def resign(self) -> None:
        """Give up leadership now and keep campaigning. Does nothing when not leading. Returns
        once the stream has reported False."""
        # A plain call on the loop, not a coroutine: no task to create and schedule first. On
        # an idle loop it runs right here, with the loop held (LoopThread.call); else this
        # thread is woken after the store request is on its way.
        self.store._call(self.aio._begin_resign, answer_later=True)

    def stop(self) -> None:
        """Release leadership if held, interrupt a pending campaign, end the stream."""
        if self.store.closed:
            return
        self.store._run(self.aio.stop())

    def wait_elected(self, timeout: float | None = None) -> Term:
        return self.store._run(self.aio.wait_elected(timeout))

    @contextlib.contextmanager
    def leadership(self, timeout: float | None = None) -> Iterator[Leadership]:
        """``with candidate.leadership() as lease:`` blocks until elected, runs the block as the
        leader and resigns when it ends. Call ``lease.check()`` before acting on the leadership
        (it raises NotLeaderError once lost); ``lease.lost`` is a threading.Event."""
        term = self.wait_elected(timeout)
        lease = Leadership(self, term)
        lost_async = self.aio._lost

        async def watch() -> None:
            await lost_async.wait()
            lease.lost.set()

        watcher = self.store._runner.submit(watch())
        try:
            yield lease
        finally:
            watcher.cancel()
            if lease.valid:
                self.resign()

    def __enter__(self) -> Candidate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return repr(self.aio).replace("AsyncCandidate", "Candidate")


class Leadership:
    """What ``Candidate.leadership()`` yields: the term, and a way to notice it ended."""

    def __init__(self, candidate: Candidate, term: Term) -> None:
        self.candidate = candidate
        self.term = term
        self.lost = threading.Event()

    @property
    def valid(self) -> bool:
        return self.candidate.is_leader and self.candidate.term == self.term

    def check(self) -> Term:
        if not self.valid:
            raise NotLeaderError(f"{self.candidate.name!r} no longer leads {self.candidate.key!r}")
        return self.term


@contextlib.contextmanager
def hold(store: Store, key: str, name: str, ttl: float = 15.0, *, timeout: float | None = None) -> Iterator[Leadership]:
    """Hold leadership of ``key`` for a block of work, like a lock::

        with leadership.hold(store, "jobs/nightly", "worker-1", ttl=15, timeout=60) as lease:
            do_work(fencing_token=lease.term.token)   # call lease.check() between steps

    Campaigns, waits (up to ``timeout`` seconds) to be elected, runs the block, then stops the
    candidate, releasing the key at once. ``lease.lost`` is set if leadership is lost meanwhile.
    """
    candidate = Candidate(store, key, name, ttl)
    try:
        with candidate.leadership(timeout) as lease:
            yield lease
    finally:
        candidate.stop()


@contextlib.asynccontextmanager
async def ahold(
    store: AsyncStore, key: str, name: str, ttl: float = 15.0, *, timeout: float | None = None
) -> AsyncIterator[AsyncLeadership]:
    """The asyncio form of :func:`hold`."""
    candidate = AsyncCandidate(store, key, name, ttl)
    try:
        async with candidate.leadership(timeout) as lease:
            yield lease
    finally:
        await candidate.stop()
