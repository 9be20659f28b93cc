"""The shared conformance kit against a real ZooKeeper (container, or LEADERSHIP_TEST_ZOOKEEPER_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from leadership_conformance import ClusterFailoverTests, ConformanceSuite
from leadership_conformance.servers import server_for


class TestConformanceZooKeeper(ConformanceSuite):
    # The kit's servers run with tickTime=250 ms and grant session timeouts of 0.5-60 s.
    ttl = 2.0
    # The server expires a dead session up to one tick after its timeout; plus 0.25 s for the
    # successor to be told (the bound the README documents).
    store_slack = 0.5
    # ZooKeeper counts client pings as packets: with 13 sessions of 5 s their pings varied the
    # count of a 0.5 s window by +-4 (the test failed 1 run in 4); 30 s sessions ping 6x less.
    herd_ttl = 30.0

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls) -> Iterator[Any]:
        server = server_for("zookeeper")
        yield server
        server.stop()


class TestZooKeeperEnsembleFailover(ClusterFailoverTests):
    """A 3-node ensemble whose leading server is killed in the middle of a handover."""

    ttl = 2.0
    store_slack = 0.5

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls) -> Iterator[Any]:
        server = server_for("zookeeper", members=3)
        yield server
        server.stop()
