"""The shared conformance suite against a SQLite file, exactly as any third-party backend runs it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from leadership_conformance import ConformanceSuite
from leadership_conformance.servers import StoreServer, server_for


class TestSqliteConformance(ConformanceSuite):
    ttl = 1.0
    #: An expired session is noticed at the next transaction: a waiter reads at its
    #: predecessor's expiry, a follower every poll (0.05 s).
    store_slack = 0.2
    #: A file counts no requests: the no-herd test cannot measure (see the README for the cost).
    counts_requests = False

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls) -> Iterator[StoreServer]:
        with server_for("sqlite") as server:
            yield server

    @pytest.fixture
    def unreachable_url(self) -> Iterator[str]:
        """A store that never answers: another file whose lock a second connection holds for the
        whole test (the handle's pause, as a frozen server). A file that cannot be opened at all,
        such as one in a missing folder, is a configuration error and is not retried."""
        with server_for("sqlite") as other:
            other.pause()
            yield other.url
