"""Degrade, never collapse: retry floors, rate-limited logs, one story per failure."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import leadership
from leadership._observers import Observers, StoreLog
from leadership._util import Backoff
from leadership.retry import MIN_RETRY_DELAY, RetryPolicy


def test_no_retry_comes_sooner_than_the_floor() -> None:
    policy = RetryPolicy(initial=0.001, maximum=0.001, jitter=1.0)
    assert all(policy.delay(n) >= MIN_RETRY_DELAY for n in range(1, 50))
    backoff = Backoff(lambda *a: None, "refresh", leadership.RetryPolicy())
    assert backoff.next_delay(cap=0.001) == MIN_RETRY_DELAY, "a deadline-driven cap never goes below the floor"
    with pytest.raises(leadership.InvalidArgumentError, match="initial"):
        RetryPolicy(initial=0)


class _Errors:
    def __init__(self) -> None:
        self.seen = 0

    @leadership.hookimpl
    def leadership_store_error(
        self, error: BaseException, operation: str, attempt: int, retry_in: float | None, store: str
    ) -> None:
        self.seen += 1


def test_repeated_failures_log_once_a_minute_observers_see_all(caplog: pytest.LogCaptureFixture) -> None:
    pm = leadership.get_plugin_manager(load_entrypoints=False)
    errors = _Errors()
    pm.register(errors)
    store_log = StoreLog("etcd://h:1", Observers(pm, "etcd://h:1"))
    with caplog.at_level(logging.DEBUG, logger="leadership"):
        for attempt in range(1, 1001):
            store_log.report_error(TimeoutError(), "refresh", attempt, 0.05)
        for _ in range(500):
            store_log.warn_once("ttl-too-short", "ttl %gs is too short", 0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert errors.seen == 1000
    assert warnings == [
        "refresh on etcd://h:1 failed (TimeoutError); retrying in 0.05s (attempt 1)",
        "ttl 0.5s is too short",
    ], "an empty error text is shown by its type; repeats are counted, not logged"


def test_permanent_and_retry_none_failures_say_what_happens(caplog: pytest.LogCaptureFixture) -> None:
    store_log = StoreLog("etcd://h:1", Observers(leadership.get_plugin_manager(load_entrypoints=False), "x"))
    with caplog.at_level(logging.WARNING, logger="leadership"):
        store_log.report_error(leadership.AuthenticationError("bad password"), "campaign", 1, None)
        store_log.report_error(leadership.StoreUnavailableError(), "campaign", 1, None)
    lines: list[Any] = [r.getMessage() for r in caplog.records]
    assert lines == [
        "campaign on etcd://h:1 failed permanently: AuthenticationError: bad password",
        "campaign on etcd://h:1 failed (StoreUnavailableError); not retried (retry=None): "
        "the stream ends with this error",
    ]


def test_lost_sessions_are_not_replaced_in_a_tight_loop(url: str, cluster: Any) -> None:
    """Sessions that die young one after the other (as under CPU starvation) are replaced after
    a growing pause, not at once: replacing them at once only adds to the load."""
    import threading
    import time

    with leadership.connect(url) as store:
        c = leadership.Candidate(store, "k", "a", ttl=0.5)
        c.wait_elected(5)
        stop = threading.Event()

        def expire_often() -> None:
            while not stop.is_set():
                cluster.expire_all_sessions()
                time.sleep(0.01)

        before = next(cluster._session_ids)
        killer = threading.Thread(target=expire_often)
        killer.start()
        time.sleep(3)
        stop.set()
        killer.join()
        opened = next(cluster._session_ids) - before - 1
        assert opened <= 25, f"{opened} sessions opened in 3 s: replaced in a tight loop"
        assert c.wait_elected(5).leader == "a", "and the election recovers once sessions live again"
        c.stop()


def test_the_overload_warning_quiets_its_echoes(caplog: pytest.LogCaptureFixture) -> None:
    """Once the log says the ttl is too short for the load, the refresh timeouts and lost
    sessions that follow from it are not news: one line, not one per kind of echo."""
    store_log = StoreLog("zookeeper://h:1", Observers(leadership.get_plugin_manager(load_entrypoints=False), "x"))
    with caplog.at_level(logging.WARNING, logger="leadership"):
        store_log.warn_once("ttl-too-short", "ttl %gs is too short for this process's load", 0.5)
        store_log.report_error(TimeoutError(), "refresh", 1, 0.05)
        store_log.report_error(leadership.StoreUnavailableError("ConnectionLoss"), "campaign", 1, 0.05)
        store_log.report_error(leadership.SessionLostError("expired"), "refresh", 1, None)
        store_log.warn_once("session-lost", "store reports session %s lost", "0x1")
        store_log.report_error(KeyError("bug"), "campaign", 1, 0.05)  # a bug is still news
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "ttl 0.5s is too short for this process's load"
    assert len(lines) == 2 and "unexpected KeyError" in lines[1], lines
