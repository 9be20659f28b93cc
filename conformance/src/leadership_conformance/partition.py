"""Network faults between one agent process and the store, while the others still reach it.

Each agent under test gets its own :class:`~leadership_conformance.proxy.FaultLink` (a loopback
proxy per store member), so the test can partition it, cut one direction, slow it down, and
heal it with or without resetting its connections.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from .agents import Agent, ProcessAgent
from .proxy import FaultLink
from .suite import ConformanceBase, _first_elected, assert_one_leader_at_a_time

__all__ = ["PartitionTests"]

Linked = Callable[..., tuple[Agent, FaultLink]]


def _transition(agent: Agent, value: bool, after: int = 0) -> dict[str, Any] | None:
    for event in agent.events[after:]:
        if event["event"] == "transition" and event["value"] is value:
            return event
    return None


def _assert_alive(*agents: Agent) -> None:
    for agent in agents:
        dead = [e for e in agent.events if e["event"] in ("ended", "error", "exited")]
        assert not dead, f"{agent.name}'s stream or process ended during a network fault: {dead}{agent.diagnostics()}"


class PartitionTests(ConformanceBase):
    """A process cut off from the store (both ways, one way, or slowed down) while others are not."""

    #: The store's client connections can be proxied over TCP (False for in-process stores).
    supports_partitions: ClassVar[bool] = True
    #: Beyond ttl + store_slack, how long a successor may take to be elected after the leader is
    #: cut off (the successor's watch firing and its claim landing).
    partition_slack: ClassVar[float] = 1.5

    @pytest.fixture
    def linked(self, leadership_server: Any, election_key: str) -> Iterator[Linked]:
        """``linked(name)``: an agent process whose store traffic goes through its own link."""
        if not self.supports_partitions or not self.supports_processes:
            pytest.skip(
                "no TCP connection to proxy: supports_partitions is False, or the agents run in "
                "threads (supports_processes is False)"
            )
        if not getattr(leadership_server, "members", None):
            pytest.skip("the server handle has no members (host/port) to proxy")
        made: list[tuple[Agent, FaultLink]] = []

        def make(name: str, *, follower: bool = False) -> tuple[Agent, FaultLink]:
            link = FaultLink(leadership_server)
            try:
                agent = ProcessAgent(link.url, election_key, name, self.ttl, follower=follower)
            except BaseException:
                link.close()
                raise
            made.append((agent, link))
            return agent, link

        yield make
        for agent, link in made:
            link.heal()
            agent.close()
            link.close()

    def _elected_bound(self) -> float:
        return self.ttl + self.store_slack + self.partition_slack

    def _win_back(self, winner: Agent, other: Agent, deadline: float) -> None:
        """``other`` is queued again: ``winner`` resigns until ``other`` is elected (a healed
        candidate queues anew, maybe behind ``winner``'s next campaign)."""
        while True:
            marks = {winner: winner.mark(), other: other.mark()}
            winner.resign()
            first = _first_elected(marks, self.handover_timeout + self.recovery_time)
            if first is other:
                return
            assert time.monotonic() < deadline, (
                f"{other.name} never won again after healing: {other.events}{other.diagnostics()}"
            )
            if first is None:
                time.sleep(0.2)

    def _leader_cut_off(self, spawn: Callable[..., Agent], linked: Linked, *, one_way: bool, reset: bool) -> None:
        a, link = linked("a")
        a.wait_elected(True, self.handover_timeout)
        b = spawn("b")
        self.queued(b)
        f = spawn("f", follower=True)
        f.wait_for(lambda e: e["event"] == "leader" and e["leader"] == "a", self.handover_timeout, "leader a")
        time.sleep(self.ttl / 3)  # a has refreshed since it was elected
        mark_a, mark_b = a.mark(), b.mark()
        t0 = time.monotonic()
        link.cut() if one_way else link.partition()
        try:
            # Sample a's is_leader while it is cut off, as application code would.
            won: dict[str, Any] | None = None
            while won is None and time.monotonic() < t0 + self._elected_bound() + 5:
                a.status()
                won = _transition(b, True, mark_b)
                time.sleep(0.05)
            assert won is not None, f"b was not elected after a was cut off: {b.events}{b.diagnostics()}"
            took = won["t"] - t0
            assert took <= self._elected_bound(), (
                f"b elected {took:.2f}s after a was cut off; bound ttl + slack = {self._elected_bound():g}s"
            )
            demoted = _transition(a, False, mark_a)
            assert demoted is not None and demoted["t"] < won["t"], (
                f"a's demoted hook ({demoted and demoted['t']}) must come strictly before b's elected hook "
                f"({won['t']}): {a.events}"
            )
            reads = [e for e in a.events[mark_a:] if e["event"] == "status"]
            late = [e for e in reads if e["is_leader"] and e["t_read"] >= won["t"]]
            assert not late, f"a read is_leader == True after b was elected: {late}"
            assert any(not e["is_leader"] and e["t"] < won["t"] for e in reads), (
                "no is_leader == False read of a before b's election"
            )
            a.wait_elected(False, 5, after=mark_a)  # the stream says so too
            assert a.status()["is_leader"] is False
        finally:
            link.heal(reset=reset)
        # Healed: a's stream goes on, it queues again, and it can win again.
        self._win_back(b, a, time.monotonic() + 2 * self.ttl + self.recovery_time + 4 * self.handover_timeout)
        f.wait_for(lambda e: e["event"] == "leader" and e["leader"] == "a", self.handover_timeout, "leader a again")
        assert_one_leader_at_a_time([a, b])
        _assert_alive(a, b, f)

    def test_partitioned_leader_demotes_before_another_is_elected(
        self, spawn: Callable[..., Agent], linked: Linked
    ) -> None:
        self._leader_cut_off(spawn, linked, one_way=False, reset=False)

    def test_one_way_cut_leader_behaves_like_a_partition(self, spawn: Callable[..., Agent], linked: Linked) -> None:
        self._leader_cut_off(spawn, linked, one_way=True, reset=True)

    def test_partitioned_waiter_and_follower_keep_their_streams(
        self, spawn: Callable[..., Agent], linked: Linked
    ) -> None:
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        b, link_b = linked("b")
        self.queued(b)
        f, link_f = linked("f", follower=True)
        f.wait_for(lambda e: e["event"] == "leader" and e["leader"] == "a", self.handover_timeout, "leader a")
        mark_f = f.mark()
        link_b.partition()
        link_f.partition()
        try:
            # The leader changes while they are cut off: a hands over (to b, whose entry the store
            # still holds until b's session expires, so possibly to nobody for a while) and comes
            # back; the follower must catch up after healing.
            time.sleep(self.ttl / 2)
            a.resign()
            time.sleep(self.ttl + self.store_slack + 1)  # b's session expires at the store
            a.wait_elected(True, self.partition_slack + self.handover_timeout)
            assert b.status()["is_leader"] is False
        finally:
            link_b.heal()
            link_f.heal()
        token = a.status()["token"]
        assert token is not None, f"a no longer leads after healing: {a.events}"
        f.wait_for(
            lambda e: e["event"] == "leader" and e["leader"] == "a" and e["token"] == token,
            self.ttl + self.recovery_time,
            "the true leader after healing",
            after=mark_f,
        )
        self._win_back(a, b, time.monotonic() + 2 * self.ttl + self.recovery_time + 4 * self.handover_timeout)
        assert_one_leader_at_a_time([a, b])
        _assert_alive(a, b, f)

    def test_slow_link_neither_demotes_nor_flaps(self, spawn: Callable[..., Agent], linked: Linked) -> None:
        a, link = linked("a")
        a.wait_elected(True, self.handover_timeout)
        b = spawn("b")
        self.queued(b)
        mark_a, mark_b = a.mark(), b.mark()
        # A round trip of ttl/10 (half each way): well under ttl/3, so every refresh lands in time.
        link.delay(1000 * self.ttl / 20)
        end = time.monotonic() + 3 * self.ttl
        while time.monotonic() < end:
            assert a.status()["is_leader"] is True, f"a slow link demoted the leader: {a.events}{a.diagnostics()}"
            time.sleep(self.ttl / 10)
        flaps = [e for e in [*a.events[mark_a:], *b.events[mark_b:]] if e["event"] in ("transition", "elected")]
        assert not flaps, f"leadership changed over a slow link: {flaps}"
        # And a handover over the slow link still works both ways.
        mark_b = b.mark()
        a.resign()
        b.wait_elected(True, self.handover_timeout + self.ttl, after=mark_b)
        # a queues again over the slow link, maybe after b's own next campaign: resign until a wins.
        self._win_back(b, a, time.monotonic() + 2 * self.ttl + 4 * self.handover_timeout)
        link.delay(0)
        assert_one_leader_at_a_time([a, b])
        _assert_alive(a, b)
