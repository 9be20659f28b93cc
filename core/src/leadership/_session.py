"""Shared sessions: one per (store connection, ttl), kept alive by one task, with the
self-demotion deadline every leader on it obeys."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import TYPE_CHECKING

from ._util import DEFAULT_RETRY, Flag, nap
from .backend import Session
from .errors import ClosedError, SessionLostError, StoreUnavailableError

if TYPE_CHECKING:
    from .store import AsyncStore

log = logging.getLogger(__name__)


class Generation:
    """One incarnation of a shared session. Once lost it never comes back; the manager opens
    the next generation."""

    def __init__(self, raw: Session, deadline: float) -> None:
        self.raw = raw
        #: Monotonic time after which the store could have expired the session. Leaders on this
        #: generation report False from then on, whether or not the loop got to run.
        self.deadline = deadline
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

    def __init__(self, store: AsyncStore, ttl: float) -> None:
        self.store = store
        self.ttl = ttl
        #: Keys of the candidates using it: a session holds one entry per key.
        self.keys: set[str] = set()
        self.current: Generation | None = None
        self._changed = Flag()
        self._failure: BaseException | None = None
        self._transient: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        #: Tasks revoking lost generations' sessions, retried while the store is unreachable.
        self._reapers: set[asyncio.Task[None]] = set()

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

    def _publish(self, gen: Generation | None) -> None:
        self.current = gen
        self._changed.set()

    def _margin(self, raw: Session) -> float:
        if self.store.safety_margin is not None:
            return self.store.safety_margin
        return min(1.0, 0.1 * raw.guaranteed)

    def _arm(self, gen: Generation) -> None:
        """(Re)schedule the self-demotion at the deadline, on the monotonic clock."""
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, gen.deadline - time.monotonic())
        self._timer = loop.call_later(delay, self._expire, gen)

    def _expire(self, gen: Generation) -> None:
        if gen.lost.is_set():
            return
        if gen.alive():  # extended meanwhile
            self._arm(gen)
            return
        log.warning(
            "session %s (ttl %gs) on %s not confirmed in time: demoting its leaders",
            gen.raw.id,
            self.ttl,
            self.store.display_url,
        )
        gen.lose("session_lost")
        self._changed.set()

    async def _run(self) -> None:
        retry = DEFAULT_RETRY
        attempt = 0
        while not self._closing:
            try:
                await self.store.ensure_open()
                sent = time.monotonic()
                raw = await self.store.backend.create_session(self.ttl)
            except StoreUnavailableError as exc:
                attempt += 1
                delay = retry.delay(attempt)
                self.store.report_error(exc, "create_session", attempt, delay)
                self._transient = exc
                self._changed.set()
                await nap(delay, self.store.epoch_event())  # early once the store is back
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - permanent: every waiting user gets it
                self.store.report_error(exc, "create_session", attempt + 1, None)
                self._failure = exc
                self._changed.set()
                return
            attempt = 0
            self._transient = None
            gen = Generation(raw, sent + raw.guaranteed - self._margin(raw))
            raw.set_lost_callback(functools.partial(self._on_lost, gen))
            log.debug("opened session %s (ttl %gs) on %s", raw.id, self.ttl, self.store.display_url)
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

    def _on_lost(self, gen: Generation) -> None:
        log.warning("store reports session %s lost on %s", gen.raw.id, self.store.display_url)
        gen.lose("session_lost")
        self._changed.set()

    async def _keepalive(self, gen: Generation) -> None:
        raw = gen.raw
        failures = 0
        retry = DEFAULT_RETRY
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
            budget = gen.deadline - sent
            if budget <= 0:
                gen.lose("session_lost")
                return
            try:
                await asyncio.wait_for(raw.refresh(), budget)
            except SessionLostError as exc:
                self.store.report_error(exc, "refresh", failures + 1, None)
                gen.lose("session_lost")
                return
            except (StoreUnavailableError, asyncio.TimeoutError) as exc:
                failures += 1
                # Retry soon enough to confirm the session before its deadline if the store is back.
                delay = min(retry.delay(failures), interval, max(0.01, (gen.deadline - time.monotonic()) / 3))
                self.store.report_error(exc, "refresh", failures, delay)
                self.store.mark_unhealthy()
                next_at = time.monotonic() + delay
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a backend bug: demote, reopen, and say so
                self.store.report_error(exc, "refresh", failures + 1, None)
                gen.lose("session_lost")
                return
            if not gen.alive():  # confirmed too late: the deadline passed meanwhile
                gen.lose("session_lost")
                return
            self.store.notify("leadership_session_refreshed", ttl=self.ttl, duration=time.monotonic() - sent)
            if failures:
                self.store.mark_healthy()
            failures = 0
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
        attempt = 0
        while True:
            try:
                await asyncio.wait_for(raw.close(), timeout=max(1.0, raw.refresh_interval))
                return
            except asyncio.CancelledError:
                raise
            except (StoreUnavailableError, asyncio.TimeoutError) as exc:
                attempt += 1
                delay = DEFAULT_RETRY.delay(attempt)
                if time.monotonic() + delay >= give_up:
                    log.debug("closing session %s failed (%s); it expires by itself", raw.id, exc)
                    return
                log.debug("closing session %s failed (%s); retrying in %.2fs", raw.id, exc, delay)
                await nap(delay, self.store.epoch_event())  # early once the store is back
            except Exception as exc:  # noqa: BLE001 - the store expires it by itself
                log.warning("closing session %s on %s failed: %s", raw.id, self.store.display_url, exc)
                return

    async def close(self) -> None:
        self._closing = True
        self._changed.set()
        if self._task is not None:
            task = self._task
            if self.current is not None:
                self.current.lose("stopped")
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=5)
            except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - closing must finish
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._reapers:
            # Revocations still retrying get a moment more; the store expires the rest.
            reapers = list(self._reapers)
            _, pending = await asyncio.wait(reapers, timeout=2.0)
            for reaper in pending:
                reaper.cancel()
            await asyncio.gather(*reapers, return_exceptions=True)
        if self._timer is not None:
            self._timer.cancel()
