"""Shared sessions: one per (store connection, ttl), kept alive by one task, with the
self-demotion deadline every leader on it obeys."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from ._util import Backoff, Flag, Interrupted, is_permanent, nap, race, settle
from .backend import Backend, Session
from .errors import ClosedError, SessionLostError, StoreUnavailableError
from .retry import DEFAULT_RETRY, MIN_RETRY_DELAY

if TYPE_CHECKING:
    from ._observers import Observers

log = logging.getLogger(__name__)

#: How long closing may wait for the store (seconds): closing must be prompt whatever the store's
#: state, and the store expires what we could not revoke. A store's close() shares one budget
#: among its steps (withdraws, revocations, the backend's own close): ``close_time_left()``.
CLOSE_BUDGET = 0.6
#: The window over which the load figures in the "ttl too short" warning are taken (seconds),
#: and the shortest interval between two such warnings for one store connection.
LOAD_WINDOW = 60.0


class SessionHost(Protocol):
    """What a shared session needs from its store connection (and nothing more)."""

    backend: Backend
    display_url: str
    safety_margin: float | None
    observers: Observers

    def report_error(self, error: BaseException, operation: str, attempt: int, retry_in: float | None) -> None: ...
    async def ensure_open(self) -> None: ...
    def epoch_event(self) -> Flag: ...
    def mark_healthy(self) -> None: ...
    def mark_unhealthy(self) -> None: ...
    def warn_once(self, topic: str, message: str, *args: object) -> None: ...
    def close_time_left(self) -> float: ...


class LoadGauge:
    """How slow this process is: the worst refresh round trip and the worst lateness of the
    keepalive's own timer over the last :data:`LOAD_WINDOW` seconds."""

    def __init__(self) -> None:
        self._rtt: list[tuple[float, float]] = []
        self._lag: list[tuple[float, float]] = []

    @staticmethod
    def _note(series: list[tuple[float, float]], value: float) -> None:
        now = time.monotonic()
        series.append((now, value))
        while series and series[0][0] < now - LOAD_WINDOW:
            series.pop(0)
        if len(series) > 256:  # a bounded summary: keep the worst half
            series[:] = sorted(series, key=lambda p: p[1])[128:]
            series.sort()

    def round_trip(self, seconds: float) -> None:
        self._note(self._rtt, seconds)

    def lag(self, seconds: float) -> None:
        self._note(self._lag, max(0.0, seconds))

    def worst(self) -> tuple[float, float]:
        """(worst round trip, worst timer lateness) in the window."""
        return max((v for _, v in self._rtt), default=0.0), max((v for _, v in self._lag), default=0.0)


class Generation:
    """One incarnation of a shared session. Once lost it never comes back; the manager opens
    the next generation."""

    def __init__(self, raw: Session, deadline: float) -> None:
        self.raw = raw
        #: Monotonic time after which the store could have expired the session. Leaders on this
        #: generation report False from then on, whether or not the loop got to run.
        self.deadline = deadline
        self.opened = time.monotonic()
        self.confirmed = False
        self.lost = Flag()
        self.reason = ""
        self._dead = False

    def alive(self) -> bool:
        """False for good once the deadline has passed, even if a refresh still in flight later
        succeeds: by then leaders on it have reported False, and a generation that came back to
        life would let them act on entries they no longer track."""
        if self._dead:
            return False
        if self.lost.is_set() or time.monotonic() >= self.deadline:
            self._dead = True  # a plain flag: this may be read from any thread
            return False
        return True

    def lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.reason = reason
            self.lost.set()


class SharedSession:
    """The session every election with this ttl on this store uses. Reference counted: the
    last user's release closes it."""

    def __init__(self, host: SessionHost, ttl: float, gauge: LoadGauge | None = None) -> None:
        self.host = host
        self.ttl = ttl
        #: Keys of the candidates using it: a session holds one entry per key.
        self.keys: set[str] = set()
        #: How many of its users retry transient errors (retry=None users do not).
        self.patient = 0
        self.current: Generation | None = None
        self.gauge = gauge or LoadGauge()
        self._changed = Flag()
        self._failure: BaseException | None = None
        self._transient: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        #: Tasks revoking lost generations' sessions, retried while the store is unreachable.
        self._reapers: set[asyncio.Task[None]] = set()
        #: Tasks removing stopped elections' entries that stop() could not remove at once.
        self._withdrawers: set[asyncio.Task[None]] = set()

    @property
    def closing(self) -> bool:
        return self._closing

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"leadership-session-ttl{self.ttl:g}")

    async def generation(self, *, fail_fast: bool = False) -> Generation:
        """The live generation, waiting for one to be opened if needed. With ``fail_fast`` a
        transient failure to open one is raised instead of waited out."""
        while True:
            if self._failure is not None:
                raise self._failure
            if fail_fast and self._transient is not None:
                raise self._transient
            if self._closing:
                raise ClosedError("the store is closing")
            gen = self.current
            if gen is not None and gen.alive():
                return gen
            self._changed.clear()
            await self._changed.wait()

    def _report(self, error: BaseException, operation: str, attempt: int, retry_in: float | None) -> None:
        # A failure nobody waits out is the retry=None users' story: they raise it themselves.
        if self.patient or retry_in is None:
            self.host.report_error(error, operation, attempt, retry_in)
        else:
            log.debug("%s on %s failed (%r); retrying in %.2fs", operation, self.host.display_url, error, retry_in)

    def _margin(self, raw: Session) -> float:
        if self.host.safety_margin is not None:
            return self.host.safety_margin
        return min(1.0, 0.1 * raw.guaranteed)

    def _arm(self, gen: Generation) -> None:
        """(Re)schedule the self-demotion at the deadline, on the monotonic clock."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, gen.deadline - time.monotonic())
        self._timer = loop.call_later(delay, self._expire, gen, time.monotonic() + delay)

    def _expire(self, gen: Generation, due: float) -> None:
        self.gauge.lag(time.monotonic() - due)
        if gen.lost.is_set():
            return
        if gen.alive():  # extended meanwhile
            self._arm(gen)
            return
        self._unconfirmed(gen)

    def _unconfirmed(self, gen: Generation) -> None:
        """The deadline passed without a confirmed refresh: demote, and say why."""
        if gen.lost.is_set():
            return
        self._warn_unconfirmed(gen)
        gen.lose("session_lost")
        self._changed.set()

    def _warn_unconfirmed(self, gen: Generation) -> None:
        rtt, lag = self.gauge.worst()
        budget = gen.raw.guaranteed - self._margin(gen.raw)
        if max(rtt, lag) >= budget / 3:
            # Overload, not an outage: say it once in a while, with the figures, not per session.
            self.host.warn_once(
                "ttl-too-short",
                "ttl %gs is too short for this process's load on %s: over the last %.0fs refresh round "
                "trips took up to %.2fs and the event loop ran up to %.2fs late, against %.2fs to confirm "
                "each session; leaders are demoted and sessions lost. Use a longer ttl or fewer elections "
                "per process.",
                self.ttl,
                self.host.display_url,
                LOAD_WINDOW,
                rtt,
                lag,
                budget,
            )
        else:
            self.host.warn_once(
                "session-unconfirmed",
                "session %s (ttl %gs) on %s not confirmed in time: demoting its leaders",
                gen.raw.id,
                self.ttl,
                self.host.display_url,
            )

    async def _run(self) -> None:
        opening = Backoff(self._report, "create_session", DEFAULT_RETRY, wake=lambda: (self.host.epoch_event(),))
        # Sessions lost one after the other without living out a ttl are replaced with a growing
        # pause: under CPU starvation replacing them at once only adds to the load.
        replacing = Backoff(self._report, "replace_session", DEFAULT_RETRY, wake=lambda: (self.host.epoch_event(),))
        while not self._closing:
            try:
                await self.host.ensure_open()
                sent = time.monotonic()
                raw = await self.host.backend.create_session(self.ttl)
            except asyncio.CancelledError:
                raise
            except ClosedError:
                return
            except SessionLostError as exc:  # a session lost while being opened: open another
                self._transient = exc
                self._changed.set()
                await opening.failed(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - sorted by is_permanent
                if is_permanent(exc):
                    opening.give_up(exc)
                    self._failure = exc
                    self._changed.set()
                    return
                # Transient, or a backend's unexpected error (a bug): both are retried, not fatal.
                self._transient = exc
                self._changed.set()
                await opening.failed(exc)
                continue
            opening.succeeded()
            self._transient = None
            gen = Generation(raw, sent + raw.guaranteed - self._margin(raw))
            raw.set_lost_callback(functools.partial(self._on_lost, gen))
            log.debug("opened session %s (ttl %gs) on %s", raw.id, self.ttl, self.host.display_url)
            self._arm(gen)
            self._publish(gen)
            try:
                await self._keepalive(gen)
            finally:
                gen.lose(gen.reason or "session_lost")
                self._changed.set()
                if self._timer is not None:
                    self._timer.cancel()
                # The store may still hold it (we merely could not confirm it): revoke, so the
                # next candidate does not wait for the store to expire it. In the background, and
                # retried: a session left behind keeps its place in every queue it joined, and a
                # handover to it would stall the election until the store expires it.
                self._reap(raw)
            if self.closing:
                return
            if gen.confirmed and time.monotonic() - gen.opened >= 2 * self.ttl:
                replacing.succeeded()
            elif replacing.attempt or not gen.confirmed:
                replacing.attempt += 1
                delay = replacing.next_delay(cap=max(MIN_RETRY_DELAY, min(self.ttl, 5.0)))
                lived = time.monotonic() - gen.opened
                log.debug("session %s lost after %.2fs; next one in %.2fs", raw.id, lived, delay)
                await nap(delay, self.host.epoch_event())
            else:
                replacing.attempt = 1

    def _publish(self, gen: Generation | None) -> None:
        self.current = gen
        self._changed.set()

    def _on_lost(self, gen: Generation) -> None:
        self.host.warn_once(
            "session-lost", "store reports session %s (ttl %gs) lost on %s", gen.raw.id, self.ttl, self.host.display_url
        )
        gen.lose("session_lost")
        self._changed.set()

    async def _keepalive(self, gen: Generation) -> None:
        raw = gen.raw
        refreshing = Backoff(self._report, "refresh", DEFAULT_RETRY)
        interval = raw.refresh_interval
        next_at = time.monotonic() + interval
        while not self._closing and not gen.lost.is_set():
            wait = next_at - time.monotonic()
            if wait > 0:
                try:
                    await asyncio.wait_for(gen.lost.wait(), wait)
                    return
                except asyncio.TimeoutError:
                    pass
            sent = time.monotonic()
            self.gauge.lag(sent - next_at)
            budget = gen.deadline - sent
            if budget <= 0:
                self._unconfirmed(gen)
                return
            try:
                await asyncio.wait_for(raw.refresh(), budget)
            except asyncio.CancelledError:
                raise
            except SessionLostError as exc:
                refreshing.give_up(exc)
                return
            except Exception as exc:  # noqa: BLE001 - sorted by is_permanent
                if is_permanent(exc):
                    refreshing.give_up(exc)
                    return
                self.gauge.round_trip(time.monotonic() - sent)  # a timeout is a slow round trip too
                # Retry soon enough to confirm the session before its deadline if the store is back.
                remaining = gen.deadline - time.monotonic()
                delay = refreshing.note(exc, cap=min(interval, remaining / 3))
                if isinstance(exc, (StoreUnavailableError, asyncio.TimeoutError)):
                    self.host.mark_unhealthy()
                next_at = time.monotonic() + delay
                continue
            confirmed = time.monotonic()
            self.gauge.round_trip(confirmed - sent)
            if not gen.alive():  # confirmed too late: the deadline passed meanwhile
                self._unconfirmed(gen)
                return
            self.host.observers.session_refreshed(self.ttl, confirmed - sent)
            if refreshing.attempt:
                self.host.mark_healthy()
            refreshing.succeeded()
            gen.confirmed = True
            gen.deadline = max(gen.deadline, sent + raw.guaranteed - self._margin(raw))
            self._arm(gen)
            next_at = sent + interval

    def _reap(self, raw: Session) -> None:
        task = asyncio.get_running_loop().create_task(self._close_raw(raw), name=f"leadership-reap-{raw.id}")
        self._reapers.add(task)
        task.add_done_callback(self._reapers.discard)

    async def _close_raw(self, raw: Session) -> None:
        """Revoke ``raw``, retrying transient failures until the store must have expired it."""
        give_up = time.monotonic() + self.ttl
        closing = Backoff(
            lambda e, op, n, d: log.debug("closing session %s failed (%r); retrying in %s", raw.id, e, d),
            "close_session",
            DEFAULT_RETRY,
            wake=lambda: (self.host.epoch_event(),),
        )
        while True:
            budget = self.host.close_time_left() if self._closing else max(1.0, raw.refresh_interval)
            try:
                await asyncio.wait_for(raw.close(), timeout=budget)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the store expires it by itself
                if self._closing or is_permanent(exc) or time.monotonic() + closing.next_delay() >= give_up:
                    where = self.host.display_url
                    log.debug("closing session %s on %s failed (%r); it expires by itself", raw.id, where, exc)
                    return
                await closing.failed(exc)

    def withdraw_later(self, gen: Generation, key: str, release: Callable[[], Awaitable[None]]) -> None:
        """Remove the entry for ``key`` on ``gen`` in the background, then ``release()`` the key.

        For a stopped election whose entry stop() could not remove (the store was known to be
        unreachable, or the withdraw failed): while other elections keep this session alive, the
        entry would stay in the store, and a leader keep leading, indefinitely. Retried with
        backoff (and at once when the store is back) until it succeeds or the session is lost —
        a lost session is revoked or expires, entries and all. :meth:`close` ends it (the
        revocation releases the entry). The caller keeps ``key`` in :attr:`keys` meanwhile, so
        that a new election on ``key`` opens another session instead of finding this entry.
        """
        task = asyncio.get_running_loop().create_task(
            self._withdraw(gen, key, release), name=f"leadership-withdraw-{key}"
        )
        self._withdrawers.add(task)
        task.add_done_callback(self._withdrawers.discard)

    async def _withdraw(self, gen: Generation, key: str, release: Callable[[], Awaitable[None]]) -> None:
        where = self.host.display_url
        withdrawing = Backoff(
            self.host.report_error, "withdraw", DEFAULT_RETRY, wake=lambda: (self.host.epoch_event(),)
        )
        try:
            while gen.alive() and not self._closing:
                try:
                    # Bounded like a revocation: a request the store dropped must not stall it.
                    budget = max(1.0, gen.raw.refresh_interval)
                    await race(asyncio.wait_for(self.host.backend.withdraw(gen.raw, key), budget), gen.lost)
                    log.debug("withdrew the stopped election's entry for %r on %s", key, where)
                    break
                except Interrupted:
                    break  # the session is lost: its revocation or expiry removes the entry
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - sorted by is_permanent
                    if is_permanent(exc):
                        withdrawing.give_up(exc)  # reported; the session's end removes the entry
                        break
                    await race(withdrawing.failed(exc), gen.lost)
        except Interrupted:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug in the core: surface it, never die silently
            log.exception("withdrawing the entry for %r on %s failed", key, where)
        if self._closing:
            return  # close() revokes the session, and the store's close drops the key
        try:
            await release()  # may close this session, from this task: close() spares it
        except Exception:  # a bug in the core: surface it, never die silently
            log.exception("releasing the session of %r on %s failed", key, where)

    async def close(self) -> None:
        """Stop the keepalive and revoke the session, within about :data:`CLOSE_BUDGET` seconds
        whatever the store's state: what the store does not confirm by then expires by itself."""
        self._closing = True
        self._changed.set()
        # Revoking the session below removes their entries in one request.
        withdrawers = [task for task in self._withdrawers if task is not asyncio.current_task()]
        for task in withdrawers:
            task.cancel()
        if withdrawers:
            await settle(withdrawers, self.host.close_time_left() / 3)
        if self.current is not None:
            self.current.lose("stopped")
        if self._task is not None:
            # The task ends at once unless it is opening a session on a store that does not answer.
            await settle([self._task], self.host.close_time_left() / 3)
        if self._reapers:
            await settle(list(self._reapers), self.host.close_time_left())
        if self._timer is not None:
            self._timer.cancel()
