"""Regression: a network partition between one client and etcd (the kit's fault proxy).

A watch set up while the link is black-holed is never confirmed; the client's timer cancels the
gRPC call, and grpc raises CancelledError. That used to escape as a cancellation of the
follower's task: its stream ended silently, as if stopped, and never came back after healing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import leadership
from leadership_conformance.proxy import FaultLink
from leadership_conformance.servers import server_for


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    with server_for("etcd") as s:
        if not s.members:
            pytest.skip("no member addresses to proxy")
        yield s


def test_follower_survives_a_partition_longer_than_the_request_timeout(server: Any) -> None:
    key = f"partition/{time.monotonic_ns()}"
    with leadership.connect(server.url) as leader_store, FaultLink(server) as link:
        a = leadership.Candidate(leader_store, key, "a", ttl=2.0)
        a.run_for_election()
        a.wait_elected(10)
        # timeout=1: the watch's confirmation times out well inside the partition.
        with leadership.connect(link.url + "?timeout=1") as store:
            follower = leadership.Follower(store, key)
            terms = follower.terms()
            assert next(terms) is not None and follower.leader == "a"
            link.partition()
            time.sleep(4)  # several request timeouts and failed pings
            assert follower.aio.running, f"the follower's task ended during the partition: {follower.aio._task}"
            link.heal(reset=True)
            a.resign()  # a re-campaigns and wins again: a new term the follower must see
            new = a.wait_elected(10)
            deadline = time.monotonic() + 15
            while follower.term != new and time.monotonic() < deadline:
                time.sleep(0.05)
            assert follower.term == new, f"the follower did not catch up after healing: {follower.term} != {new}"
            assert follower.aio.running
            follower.stop()
        a.stop()
