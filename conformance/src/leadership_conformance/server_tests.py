"""Tests of a server handle itself, against its real store: a plugin checks the handle it
registers before the conformance suite relies on it::

    class TestMyStoreServer(StoreServerTests):
        scheme = "mystore"

        def put(self, member, key, value): ...      # a write through the store's own protocol
        def get(self, member, key): ...              # the value, or None

Set ``cluster_members = 3`` to also kill the leading member of a cluster.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

import leadership

from .servers import (
    PROBE_ERRORS,
    FaultInjectionUnavailable,
    Member,
    ServerStartError,
    StoreServer,
    server_class,
    server_for,
)

__all__ = ["StoreServerTests"]


def wait_until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` (exceptions count as false) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - the store may refuse while it recovers
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


class StoreServerTests:
    """Start, talk to the store, restart with the data kept, pause, count requests, use an
    external server, and (``cluster_members``) survive losing the leading member."""

    #: The registered URL scheme of the handle under test.
    scheme: ClassVar[str] = ""
    #: Members of the cluster test (0: the store runs no cluster; the test is skipped).
    cluster_members: ClassVar[int] = 0

    def put(self, member: Member, key: str, value: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define put(member, key, value): a write to the store")

    def get(self, member: Member, key: str) -> str | None:
        raise NotImplementedError(f"{type(self).__name__} must define get(member, key): a read from the store")

    @pytest.fixture(scope="class")
    @classmethod
    def server(cls) -> Iterator[StoreServer]:
        if not cls.scheme:
            raise NotImplementedError(f"{cls.__name__} must set scheme, the registered URL scheme")
        with server_for(cls.scheme) as s:
            if not s.can_inject_faults:
                pytest.skip(f"LEADERSHIP_TEST_{cls.scheme.upper()}_URL names an external server")
            yield s

    def test_serves_restarts_with_its_data_and_pauses(self, server: StoreServer) -> None:
        member = server.members[0]
        assert server.url.startswith(f"{server.scheme}://")
        assert server.leader_member() is not None
        before = server.request_count()
        assert before is not None
        for i in range(5):
            self.put(member, f"k-{uuid.uuid4().hex}", str(i))
        key = f"kept-{uuid.uuid4().hex}"
        self.put(member, key, "v")
        assert self.get(member, key) == "v"
        after = server.request_count()
        assert after is not None and after >= before + 7, (before, after)
        # The handle's own probes are not client requests.
        server.wait_serving()
        server.leader_member()
        assert server.request_count() == after

        server.restart()
        assert self.get(member, key) == "v", "restart() must keep the store's data"
        assert (server.request_count() or 0) >= after, "request_count() is monotonic across restarts"

        server.pause()
        try:
            with pytest.raises(ServerStartError, match="did not serve within the deadline"):
                server.wait_serving(timeout=0.5)
            assert server.request_count() is not None
        finally:
            server.unpause()
        assert wait_until(lambda: self.get(member, key) == "v", 10, "the store to answer after unpause")

    def test_external_handle_counts_but_injects_no_faults(
        self, server: StoreServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(f"LEADERSHIP_TEST_{self.scheme.upper()}_URL", server.url)
        external = server_for(self.scheme)
        assert type(external) is server_class(self.scheme)
        assert external.url == server.url
        assert not external.can_inject_faults
        for fault in (external.pause, external.unpause, external.restart, lambda: external.kill_member(0)):
            with pytest.raises(FaultInjectionUnavailable):
                fault()
        before = external.request_count()
        assert before is not None
        self.put(external.members[0], f"external-{uuid.uuid4().hex}", "yes")
        assert (external.request_count() or 0) > before
        assert external.leader_member() == 0
        external.stop()
        assert server.leader_member() == 0, "stopping an external handle leaves the server running"

    def test_stop_is_final_and_idempotent(self) -> None:
        s = server_for(self.scheme)
        if not s.can_inject_faults:
            pytest.skip("external server")
        member = s.members[0]
        s.check_serving(member)
        s.stop()
        s.stop()
        with pytest.raises(PROBE_ERRORS):
            s.check_serving(member)
        with pytest.raises(RuntimeError, match="stopped"):
            s.restart()

    def test_leftovers_lists_what_a_live_candidate_holds(self, server: StoreServer) -> None:
        key = f"leftovers/{uuid.uuid4().hex[:8]}"
        if server.leftovers(key) is None:
            pytest.skip(f"{type(server).__name__}.leftovers() cannot tell what the store holds")
        assert server.leftovers(key) == [], "nothing is held before any candidate runs"
        with leadership.connect(server.url) as store:
            ttl = max(2.0, type(store.aio.backend).min_ttl)
            candidate = leadership.Candidate(store, key, "x", ttl=ttl)
            candidate.run_for_election()
            candidate.wait_elected(30)
            held = server.leftovers(key)
            assert held, "a leading candidate's entry (and its session or lease) must be listed"
            candidate.stop()
        # Closing the store released the entry and the session: nothing is left.
        wait_until(lambda: server.leftovers(key) == [], 15, f"leftovers({key!r}) to be empty after stop")

    @pytest.mark.cluster
    def test_cluster_survives_losing_its_leader(self) -> None:
        if self.cluster_members < 3:
            pytest.skip(f"{self.scheme} runs no cluster here")
        with server_for(self.scheme, members=self.cluster_members) as cluster:
            if not cluster.can_inject_faults:
                pytest.skip("external server")
            self._survives_leader_kill(cluster)

    def _survives_leader_kill(self, cluster: StoreServer) -> None:
        assert len(cluster.members) == self.cluster_members
        assert len({m.port for m in cluster.members}) == self.cluster_members
        assert cluster.url.count(",") == self.cluster_members - 1
        leader = wait_until(lambda: (i := cluster.leader_member()) is not None and i + 1, 30, "a leader") - 1
        key = f"before-{uuid.uuid4().hex}"
        self.put(cluster.members[leader], key, "1")
        count = cluster.request_count()
        assert count is not None and count >= 1

        cluster.kill_member(leader)
        survivors = [m for m in cluster.members if m.index != leader]
        new_leader = wait_until(lambda: (i := cluster.leader_member()) is not None and i + 1, 30, "a new leader") - 1
        assert new_leader != leader
        key2 = f"after-{uuid.uuid4().hex}"

        def write() -> bool:
            self.put(survivors[0], key2, "2")
            return True

        wait_until(write, 30, "a write to the surviving members")
        assert wait_until(lambda: self.get(survivors[1], key) == "1", 10, "the old data on a survivor")
        assert (cluster.request_count() or 0) >= count, "request_count() is monotonic when a member dies"

        cluster.start_member(leader)
        back = cluster.members[leader]
        assert wait_until(lambda: self.get(back, key2) == "2", 30, "the restarted member to catch up")
        assert cluster.leader_member() is not None
