"""The shared conformance suite against etcd (a container from the kit, or LEADERSHIP_TEST_ETCD_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from leadership_conformance import ClusterFailoverTests, ConformanceSuite
from leadership_conformance.servers import server_for


class TestConformanceEtcd(ConformanceSuite):
    #: etcd's smallest lease.
    ttl = 2.0
    #: etcd checks for expired leases every 0.5 s, so a lease can outlive its TTL by that much;
    #: plus 0.25 s for the successor to be told (the bound the README documents).
    store_slack = 0.75
    #: Long enough that lease keepalives do not blur the herd test's request count.
    herd_ttl = 30.0

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls) -> Iterator[Any]:
        with server_for("etcd") as server:
            yield server


class TestClusterFailoverEtcd(ClusterFailoverTests):
    """Three members; the raft leader is killed in the middle of a handover.

    ttl is 5 s, not 2: with etcd's default timing a raft election takes 1-2 s, during which no
    lease can be confirmed, so 2 s sessions are (correctly) given up and every candidate queues
    anew in whatever order it reconnects."""

    ttl = 5.0
    store_slack = 0.5

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls) -> Iterator[Any]:
        with server_for("etcd", members=3) as server:
            yield server
