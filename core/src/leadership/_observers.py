"""Typed calls of the observer hooks, through pluggy (its order, its wrappers), and the store's
rate-limited log of failures."""

from __future__ import annotations

import asyncio
import logging
import time

import pluggy

from ._util import describe, is_permanent
from .errors import LeadershipError, SessionLostError

__all__ = ["Observers", "StoreLog"]

log = logging.getLogger(__name__)


class Observers:
    """The observer hooks of one store connection; ``store`` is its redacted URL.

    Implementations marked with ``@leadership.hookimpl`` are isolated one by one (see
    :mod:`leadership.hookspecs`). What still escapes the call (an implementation marked with a
    bare pluggy marker) is logged here: an observer never disturbs an election.
    """

    def __init__(self, plugin_manager: pluggy.PluginManager, store: str) -> None:
        self._hook = plugin_manager.hook
        self._store = store

    def elected(self, key: str, name: str, token: int) -> None:
        try:
            self._hook.leadership_elected(key=key, name=name, token=token, store=self._store)
        except Exception:
            log.exception("an observer of leadership_elected raised; ignored")

    def demoted(self, key: str, name: str, token: int, reason: str) -> None:
        try:
            self._hook.leadership_demoted(key=key, name=name, token=token, reason=reason, store=self._store)
        except Exception:
            log.exception("an observer of leadership_demoted raised; ignored")

    def leader_changed(self, key: str, leader: str | None, token: int | None) -> None:
        try:
            self._hook.leadership_leader_changed(key=key, leader=leader, token=token, store=self._store)
        except Exception:
            log.exception("an observer of leadership_leader_changed raised; ignored")

    def session_refreshed(self, ttl: float, duration: float) -> None:
        try:
            self._hook.leadership_session_refreshed(ttl=ttl, duration=duration, store=self._store)
        except Exception:
            log.exception("an observer of leadership_session_refreshed raised; ignored")

    def store_error(self, error: BaseException, operation: str, attempt: int, retry_in: float | None) -> None:
        try:
            self._hook.leadership_store_error(
                error=error, operation=operation, attempt=attempt, retry_in=retry_in, store=self._store
            )
        except Exception:
            log.exception("an observer of leadership_store_error raised; ignored")


#: The shortest interval between two log lines about the same kind of failure on one store
#: connection (seconds). Under overload hundreds of sessions fail alike; one line a minute with
#: a count says as much as thousands.
LOG_INTERVAL = 60.0


class StoreLog:
    """What a store connection tells the log: every failure, rate-limited per kind (operation
    and error type), always with the error's type; observers still see every failure."""

    def __init__(self, display_url: str, observers: Observers) -> None:
        self.display_url = display_url
        self.observers = observers
        #: kind -> (monotonic time of its last line, failures since then not logged)
        self._last: dict[tuple[str, ...], tuple[float, int]] = {}
        #: When the "ttl too short for this process's load" warning was last given.
        self._overloaded_at = -LOG_INTERVAL

    #: The warning that explains the others: while it holds, transient failures are its echo.
    OVERLOAD = "ttl-too-short"

    def _quiet(self) -> bool:
        """True within a minute of the overload warning: transient failures and lost sessions
        are then what it already said, and go to DEBUG (observers still see every one)."""
        return time.monotonic() - self._overloaded_at < LOG_INTERVAL

    def _due(self, kind: tuple[str, ...]) -> int | None:
        """None if a line about ``kind`` was logged less than LOG_INTERVAL ago (counted), else
        how many were left out since the last line."""
        now = time.monotonic()
        last, skipped = self._last.get(kind, (-LOG_INTERVAL, 0))
        if now - last < LOG_INTERVAL:
            self._last[kind] = (last, skipped + 1)
            return None
        self._last[kind] = (now, 0)
        return skipped

    def warn_once(self, topic: str, message: str, *args: object) -> None:
        if topic == self.OVERLOAD:
            self._overloaded_at = time.monotonic()
        elif self._quiet():
            log.debug(message, *args)
            return
        skipped = self._due(("warn", topic))
        if skipped is None:
            log.debug(message, *args)
            return
        if skipped:
            log.warning("%s (%d more like this in the last %.0fs)", message % args, skipped, LOG_INTERVAL)
        else:
            log.warning(message, *args)

    def report_error(self, error: BaseException, operation: str, attempt: int, retry_in: float | None) -> None:
        self.observers.store_error(error, operation, attempt, retry_in)
        text = describe(error)
        where = f"{operation} on {self.display_url}"
        if retry_in is None:
            if is_permanent(error):
                log.error("%s failed permanently: %s", where, text)
            elif isinstance(error, SessionLostError):
                skipped = None if self._quiet() else self._due((operation, "lost"))
                if skipped is not None:  # under overload many sessions are lost alike
                    more = f" ({skipped} more in the last {LOG_INTERVAL:.0f}s)" if skipped else ""
                    log.warning("%s: %s; its elections campaign again on a new session%s", where, text, more)
            else:
                log.warning("%s failed (%s); not retried (retry=None): the stream ends with this error", where, text)
            return
        unexpected = not isinstance(error, (LeadershipError, TimeoutError, asyncio.TimeoutError))
        skipped = None if self._quiet() and not unexpected else self._due((operation, type(error).__name__))
        if skipped is None:
            log.debug("%s failed %d times (%s); retrying in %.2fs", where, attempt, text, retry_in)
            return
        more = f"; {skipped} more failures like it in the last {LOG_INTERVAL:.0f}s" if skipped else ""
        if unexpected:
            # A backend bug: retried (it may be a race that passes), and shown with its traceback.
            log.error(
                "%s failed with an unexpected %s (a bug in the backend; retried in %.2fs)%s",
                where,
                text,
                retry_in,
                more,
                exc_info=error,
            )
        else:
            log.warning("%s failed (%s); retrying in %.2fs (attempt %d)%s", where, text, retry_in, attempt, more)
