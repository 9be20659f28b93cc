"""Unreachable stores and the errors a user sees: the same behaviour on every backend.

- ``connect`` returns once the store has answered one request; a store never reached within
  ``connect_timeout`` is a ``StoreUnavailableError`` naming its address, raised by ``connect``.
- With ``retry=None`` a store error ends the stream, and the log tells that story once.
- ``hold(..., timeout=)`` that runs out raises ``ElectionTimeoutError`` (a ``LeadershipError``
  and a ``TimeoutError``) naming the key, the candidate and who leads.
- ``Store.close()`` is prompt (well under a second) whatever the store's state.

A backend whose URLs are not ``scheme://host:port`` overrides the ``unreachable_url`` fixture.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import leadership
from leadership.url import StoreURL

from .suite import ConformanceBase

__all__ = ["UnreachableStoreTests"]


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class UnreachableStoreTests(ConformanceBase):
    """Unreachable stores and the errors a user sees (see the module docstring): connect's
    timeout, ``hold``'s timeout, a prompt ``close()``, and ``retry=None`` told once."""

    #: How long ``close()`` may take, whatever the store's state (seconds).
    close_bound: ClassVar[float] = 1.0
    #: The connect_timeout the tests pass, and what connect may take beyond it to give up.
    connect_timeout: ClassVar[float] = 1.0
    connect_slack: ClassVar[float] = 1.5

    @pytest.fixture
    def unreachable_url(self, store_url: str) -> str:
        """The store's URL (scheme, path, options) pointing at a port where nothing listens."""
        url = StoreURL.parse(store_url)
        if not url.endpoints or any(e.port is None for e in url.endpoints):
            pytest.skip(
                f"{url.scheme}:// URLs name no host:port to point elsewhere; override the unreachable_url "
                "fixture with a URL of your store that cannot be reached"
            )
        netloc = ",".join(f"{e.host}:{e.port}" for e in url.endpoints)
        return store_url.replace(netloc, f"127.0.0.1:{_closed_port()}", 1)

    def test_connect_to_unreachable_store_raises_naming_it(self, unreachable_url: str) -> None:
        shown = StoreURL.parse(unreachable_url).redacted()
        t0 = time.monotonic()
        with pytest.raises(leadership.StoreUnavailableError) as err:
            leadership.connect(unreachable_url, connect_timeout=self.connect_timeout)
        took = time.monotonic() - t0
        assert isinstance(err.value, leadership.LeadershipError)
        assert shown in str(err.value) and "connect_timeout" in str(err.value), str(err.value)
        assert took < self.connect_timeout + self.connect_slack, f"connect gave up after {took:.2f}s"

    def test_connect_returns_once_the_store_answers(self, store_url: str, election_key: str) -> None:
        with pytest.raises(leadership.InvalidArgumentError, match="connect_timeout"):
            leadership.connect(store_url, connect_timeout=0)
        t0 = time.monotonic()
        with leadership.connect(store_url, connect_timeout=self.handover_timeout) as store:
            assert time.monotonic() - t0 < self.handover_timeout
            c = leadership.Candidate(store, election_key, "a", ttl=self.ttl)
            assert c.wait_elected(self.handover_timeout).leader == "a"

    def test_hold_timeout_says_what_timed_out_and_who_leads(
        self, stores: Callable[[], leadership.Store], election_key: str
    ) -> None:
        store = stores()
        leader = leadership.Candidate(store, election_key, "first", ttl=self.ttl)
        leader.wait_elected(self.handover_timeout)
        other = stores()
        with (
            pytest.raises(leadership.ElectionTimeoutError) as err,
            leadership.hold(other, election_key, "second", ttl=self.ttl, timeout=0.5),
        ):
            pytest.fail("'second' must not lead while 'first' does")
        assert isinstance(err.value, TimeoutError) and isinstance(err.value, leadership.LeadershipError)
        text = str(err.value)
        assert "'second'" in text and election_key in text and "0.5s" in text and "'first' leads" in text, text
        assert leader.is_leader, "the timed-out hold released nothing of the leader's"

    def test_close_is_prompt_with_leaders_waiters_and_followers(self, store_url: str, election_key: str) -> None:
        store = leadership.connect(store_url)
        a = leadership.Candidate(store, election_key, "a", ttl=self.ttl)
        a.wait_elected(self.handover_timeout)
        b = leadership.Candidate(store, election_key + "-b", "b", ttl=self.ttl)
        b.wait_elected(self.handover_timeout)
        f = leadership.Follower(store, election_key)
        threading.Thread(target=lambda: list(f.terms()), daemon=True).start()
        time.sleep(0.2)
        t0 = time.monotonic()
        store.close()
        took = time.monotonic() - t0
        assert took < self.close_bound, f"close() took {took:.2f}s"

    def _faults(self, server: Any) -> None:
        if not getattr(server, "can_inject_faults", False):
            pytest.skip("the server handle cannot pause the store")

    @pytest.mark.store_faults
    def test_close_is_prompt_while_the_store_is_paused(self, leadership_server: Any, election_key: str) -> None:
        self._faults(leadership_server)
        store = leadership.connect(str(leadership_server.url))
        try:
            a = leadership.Candidate(store, election_key, "a", ttl=self.ttl)
            a.wait_elected(self.handover_timeout)
            b = leadership.Candidate(store, election_key, "b", ttl=self.ttl)
            b.run_for_election()
            time.sleep(self.queue_settle)
            leadership_server.pause()
            time.sleep(0.2)
            t0 = time.monotonic()
            store.close()
            took = time.monotonic() - t0
        finally:
            leadership_server.unpause()
            store.close()
        assert took < self.close_bound, f"close() on a paused store took {took:.2f}s"

    @pytest.mark.store_faults
    def test_retry_none_tells_one_story(
        self,
        leadership_server: Any,
        stores: Callable[[], leadership.Store],
        election_key: str,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        self._faults(leadership_server)
        store = stores()
        c = leadership.Candidate(store, election_key, "a", ttl=self.ttl, retry=None)
        with caplog.at_level(logging.WARNING, logger="leadership"):
            leadership_server.pause()
            try:
                stream = c.run_for_election()
                assert next(stream) is False
                with pytest.raises(leadership.StoreError):
                    next(stream)
            finally:
                leadership_server.unpause()
        # The core's story (a backend's client may add lines of its own about its connection).
        lines = [r.getMessage() for r in caplog.records if r.name == "leadership" or r.name.startswith("leadership.")]
        assert not [line for line in lines if "retrying in" in line], lines
        assert len(lines) == 1 and "retry=None" in lines[0], lines
        # And the caller's retry works once the store is back.
        stream = c.run_for_election()
        assert next(stream) is False
        assert next(stream) is True
        c.stop()
