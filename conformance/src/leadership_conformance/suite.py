"""The shared conformance suite: mixin classes (not collected on their own) that a backend's
``tests/test_conformance.py`` combines with one fixture, ``leadership_server``::

    class TestMyStoreConformance(ConformanceSuite):
        ttl = 2.0
        store_slack = 0.5

        @pytest.fixture(scope="class")
        @classmethod
        def leadership_server(cls):
            with server_for("mystore") as server:
                yield server

The fixture returns a :class:`leadership_conformance.servers.StoreServer` (or any object with
``url``): its ``can_inject_faults`` is the one switch of the fault tests, which use ``pause()``,
``unpause()``, ``restart()``, and the no-herd test ``request_count()``. Class attributes tune the suite to the
store (each documented below); a capability a store lacks is declared, never silently skipped.
"""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar

import pytest

import leadership
from leadership import ConfigurationError, InvalidArgumentError, InvalidTTLError
from leadership.testing import dispose

from .agents import Agent, ProcessAgent, ThreadAgent

__all__ = [
    "BadInputTests",
    "CandidateTests",
    "ClusterFailoverTests",
    "ConformanceBase",
    "ConformanceSuite",
    "ExclusionTests",
    "FaultTests",
    "FollowerTests",
    "HerdTests",
    "ManyElectionsTests",
    "PartitionTests",
    "ProcessFaultTests",
    "TokenTests",
]


def leader_intervals(agents: list[Agent]) -> list[tuple[float, float, str]]:
    """(start, end, agent) of every leadership period the agents went through, timed by the
    observer hooks at the moment of each transition; an open period ends now, a killed agent's
    at its kill time (a 'killed' event the test records)."""
    intervals = []
    for agent in agents:
        start = None
        for e in agent.events:
            if e["event"] == "transition" and e["value"] and start is None:
                start = e["t"]
            elif start is not None and ((e["event"] == "transition" and not e["value"]) or e["event"] == "killed"):
                intervals.append((start, e["t"], agent.name))
                start = None
        if start is not None:
            intervals.append((start, time.monotonic(), agent.name))
    return sorted(intervals)


def assert_one_leader_at_a_time(agents: list[Agent]) -> None:
    """Fail if the agents' leadership intervals (from their hook events) overlap anywhere."""
    intervals = leader_intervals(agents)
    for (s1, e1, a1), (s2, _, a2) in itertools.pairwise(intervals):
        assert s2 >= e1, (
            f"two leaders at once: {a1} led {s1:.4f} to {e1:.4f} and {a2} from {s2:.4f} "
            f"(overlap {1000 * (e1 - s2):.2f} ms)"
        )


class ConformanceBase:
    """Fixtures and the knobs a backend sets. Override ``leadership_server``."""

    #: The ttl the suite's candidates use (seconds); the smallest the store handles comfortably.
    ttl: ClassVar[float] = 2.0
    #: How much later than ttl a crashed leader's successor may be elected: how late the store
    #: expires a dead session (etcd: its 0.5 s lease-expiry rounds; ZooKeeper: one tickTime) plus
    #: the successor's wake-up. The crash test asserts failover <= ttl + store_slack.
    store_slack: ClassVar[float] = 0.5
    #: Candidates can run in separate OS processes (False for in-process stores like memory:
    #: the suite then runs them in threads, each with its own Store and event loop).
    supports_processes: ClassVar[bool] = True
    #: The server handle counts store requests (for the no-herd test).
    counts_requests: ClassVar[bool] = True
    #: ttl for the no-herd test: long, so keepalive traffic does not blur the request count.
    herd_ttl: ClassVar[float | None] = None
    #: How many candidates wait in the no-herd test.
    herd_waiters: ClassVar[int] = 12
    #: How long a graceful handover may take in the functional tests (not a benchmark).
    handover_timeout: ClassVar[float] = 5.0
    #: Extra time a store needs to come back after a restart or unpause before it serves.
    recovery_time: ClassVar[float] = 10.0
    #: A candidate reports False before its entry reaches the store; tests that need it queued
    #: (to test who is next) give it this long after its first False.
    queue_settle: ClassVar[float] = 0.5
    #: Tests a backend overrides on purpose, with the reason: {"test_name": "why"}.
    overridden_tests: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "supports_store_faults" in vars(cls):
            raise TypeError(
                f"{cls.__name__}.supports_store_faults is no longer read: whether the fault tests run is "
                "decided by the server handle alone, through its can_inject_faults attribute "
                "(False for an external server); remove the class attribute"
            )

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls) -> Any:
        raise NotImplementedError(
            "a conformance test class must override the class-scoped fixture 'leadership_server' "
            "to return a server handle with a 'url' attribute"
        )

    @pytest.fixture
    def store_url(self, leadership_server: Any) -> str:
        return str(leadership_server.url)

    @pytest.fixture
    def election_key(self, request: pytest.FixtureRequest) -> str:
        name = "".join(c if c.isalnum() or c in "-_." else "-" for c in request.node.name)[:60]
        return f"conformance/{name}-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def stores(self, store_url: str) -> Iterator[Callable[[], leadership.Store]]:
        opened: list[leadership.Store] = []

        def make() -> leadership.Store:
            store = leadership.connect(store_url)
            opened.append(store)
            return store

        yield make
        for store in opened:
            dispose(store)

    @pytest.fixture
    def spawn(self, store_url: str, election_key: str) -> Iterator[Callable[..., Agent]]:
        """``spawn(name)`` starts a candidate; ``spawn(name, follower=True)`` a follower."""
        made: list[Agent] = []
        kind = ProcessAgent if self.supports_processes else ThreadAgent

        def make(name: str, *, follower: bool = False, key: str | None = None, ttl: float | None = None) -> Agent:
            agent = kind(store_url, key or election_key, name, ttl or self.ttl, follower=follower)
            made.append(agent)
            return agent

        yield make
        for agent in made:
            agent.close()

    def queued(self, agent: Agent) -> None:
        """Wait until ``agent`` runs (first False) and has had time to queue in the store."""
        agent.wait_elected(False, self.handover_timeout)
        time.sleep(self.queue_settle)

    def elected_one(self, agents: list[Agent], timeout: float, *, after: dict[str, int] | None = None) -> Agent:
        """Wait until one of ``agents`` reports True (after the given event marks); return it."""
        deadline = time.monotonic() + timeout
        after = after or {}
        while time.monotonic() < deadline:
            for agent in agents:
                for e in agent.events[after.get(agent.name, 0) :]:
                    if e["event"] == "elected" and e["value"]:
                        return agent
            time.sleep(0.005)
        raise AssertionError(f"no candidate elected within {timeout:g}s: {[a.events for a in agents]}")


class CandidateTests(ConformanceBase):
    """The candidate stream: False first, True when elected, False on resign; resign and stop."""

    def test_stream_starts_false_then_true(self, spawn: Callable[..., Agent]) -> None:
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        assert a.elected_values()[:2] == [False, True]
        status = a.status()
        assert status["is_leader"] is True and isinstance(status["token"], int)

    def test_resign_hands_over_to_next_waiting(self, spawn: Callable[..., Agent]) -> None:
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        b = spawn("b")
        self.queued(b)
        assert b.elected_values() == [False], "b must wait while a leads"
        mark = a.mark()
        a.resign()
        a.wait_elected(False, self.handover_timeout, after=mark)
        b.wait_elected(True, self.handover_timeout)
        # a keeps campaigning: it is next in line.
        assert a.status()["is_leader"] is False
        mark = a.mark()
        b.resign()
        a.wait_elected(True, self.handover_timeout, after=mark)
        assert_one_leader_at_a_time([a, b])

    def test_resign_when_not_leader_does_nothing(self, spawn: Callable[..., Agent]) -> None:
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        b = spawn("b")
        self.queued(b)
        b.resign()
        time.sleep(0.3)
        assert a.status()["is_leader"] is True
        assert b.elected_values() == [False]
        mark = b.mark()
        a.resign()
        b.wait_elected(True, self.handover_timeout, after=mark)

    def test_stop_releases_and_ends_stream(self, spawn: Callable[..., Agent]) -> None:
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        b = spawn("b")
        self.queued(b)
        t0 = time.monotonic()
        a.stop()
        a.wait_for(lambda e: e["event"] == "ended", 5, "ended")
        assert a.elected_values() == [False, True, False]
        b.wait_elected(True, self.handover_timeout)
        assert time.monotonic() - t0 < self.ttl, "stop must release at once, not leave the key to expire"

    def test_stop_interrupts_waiting_campaign(self, spawn: Callable[..., Agent]) -> None:
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        b = spawn("b")
        self.queued(b)
        t0 = time.monotonic()
        b.stop()
        b.wait_for(lambda e: e["event"] == "ended", 5, "ended")
        assert time.monotonic() - t0 < 2.0
        assert b.elected_values() == [False]
        # b's entry is gone: when a resigns, a is elected again, nobody waits on a dead entry.
        mark = a.mark()
        a.resign()
        a.wait_elected(True, self.handover_timeout, after=mark)


class FollowerTests(ConformanceBase):
    """Followers see the current leader at start and every change, without duplicates."""

    def test_follower_sees_current_leader_and_changes(self, spawn: Callable[..., Agent]) -> None:
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        f = spawn("f", follower=True)
        first = f.wait_for(lambda e: e["event"] == "leader", self.handover_timeout, "leader")
        assert first["leader"] == "a" and isinstance(first["token"], int)
        b = spawn("b")
        self.queued(b)
        a.resign()
        b.wait_elected(True, self.handover_timeout)
        f.wait_for(lambda e: e["event"] == "leader" and e["leader"] == "b", self.handover_timeout, "leader b")
        a.stop()
        b.stop()
        f.wait_for(lambda e: e["event"] == "leader" and e["leader"] is None, self.handover_timeout, "no leader")
        seen = [(e["leader"], e["token"]) for e in f.events if e["event"] == "leader"]
        assert all(x != y for x, y in itertools.pairwise(seen)), f"consecutive duplicates: {seen}"
        names = [s[0] for s in seen if s[0] is not None]
        assert names[:2] == ["a", "b"], seen

    def test_follower_before_any_leader(self, spawn: Callable[..., Agent]) -> None:
        f = spawn("f", follower=True)
        first = f.wait_for(lambda e: e["event"] == "leader", self.handover_timeout, "leader")
        assert first["leader"] is None
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        f.wait_for(lambda e: e["event"] == "leader" and e["leader"] == "a", self.handover_timeout, "leader a")

    def test_follow_election_names_sync_api(self, stores: Callable[[], leadership.Store], election_key: str) -> None:
        store = stores()
        c = leadership.Candidate(store, election_key, "solo", ttl=self.ttl)
        f = leadership.Follower(store, election_key)
        got: list[str] = []
        done = threading.Event()

        def follow() -> None:
            for name in f.follow_election():
                got.append(name)
                if len(got) == 1:
                    done.set()

        threading.Thread(target=follow, daemon=True).start()
        c.wait_elected(self.handover_timeout)
        assert done.wait(self.handover_timeout)
        c.resign()
        c.wait_elected(self.handover_timeout)
        time.sleep(0.2)
        assert got == ["solo"], "the same leader re-elected is a duplicate and is dropped"
        assert f.leader == "solo"
        f.stop()
        c.stop()


class TokenTests(ConformanceBase):
    """Fencing tokens strictly increase across successive terms of a key."""

    def test_tokens_strictly_increase_across_terms(self, spawn: Callable[..., Agent]) -> None:
        a, b = spawn("a"), spawn("b")
        tokens = []
        agents = [a, b]
        marks = {x.name: 0 for x in agents}
        for _ in range(6):
            leader = self.elected_one(agents, self.handover_timeout, after=marks)
            event = leader.wait_elected(True, 1, after=marks[leader.name])
            tokens.append(event["token"])
            marks = {x.name: x.mark() for x in agents}
            leader.resign()
        assert all(isinstance(t, int) for t in tokens)
        assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens), f"tokens not strictly increasing: {tokens}"


class ExclusionTests(ConformanceBase):
    """Exactly one leader at any instant through many handovers."""

    def test_exactly_one_leader_through_many_handovers(self, spawn: Callable[..., Agent]) -> None:
        agents = [spawn(f"c{i}") for i in range(3)]
        for agent in agents:
            self.queued(agent)
        f = spawn("f", follower=True)
        rng = random.Random(7)
        marks = {x.name: 0 for x in agents}
        latencies = []
        for _ in range(12):
            leader = self.elected_one(agents, self.handover_timeout, after=marks)
            time.sleep(rng.uniform(0, 0.05))
            marks = {x.name: x.mark() for x in agents}
            t0 = time.monotonic()
            leader.command("resign")
            nxt = self.elected_one([x for x in agents if x is not leader], self.handover_timeout, after=marks)
            latencies.append(nxt.wait_elected(True, 1, after=marks[nxt.name])["t"] - t0)
            marks = {x.name: (x.mark() if x is not nxt else marks[x.name]) for x in agents}
        assert_one_leader_at_a_time(agents)
        # The follower's streams report the terms it observed, not necessarily every term: a
        # term over before the follower looked (a polling backend's interval; under load) is
        # missed, so terms() may show one leader twice in a row with two tokens. What it promises:
        # no term twice and tokens rising; follow_election() never the same name twice in a row.
        terms = [(e["leader"], e["token"]) for e in f.events if e["event"] == "leader" and e["leader"] is not None]
        tokens = [token for _, token in terms]
        assert all(x < y for x, y in itertools.pairwise(tokens)), f"terms repeated or out of order: {terms}"
        deadline = time.monotonic() + self.handover_timeout
        while (names := [e["leader"] for e in list(f.events) if e["event"] == "name"])[-1:] != [nxt.name]:
            assert time.monotonic() < deadline, f"follow_election() never reached the last leader {nxt.name}: {names}"
            time.sleep(0.01)
        assert all(x != y for x, y in itertools.pairwise(names)), f"follow_election() repeated a name: {names}"
        print(f"handover p50 {1000 * statistics.median(latencies):.1f} ms over {len(latencies)} (agent-observed)")


class ProcessFaultTests(ConformanceBase):
    """A candidate process dies or freezes."""

    @pytest.mark.processes
    def test_killed_leader_replaced_within_ttl(self, spawn: Callable[..., Agent]) -> None:
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        b = spawn("b")
        self.queued(b)
        time.sleep(self.ttl / 3)  # let a refresh at least once
        t0 = time.monotonic()
        a.kill()
        a._record({"t": t0, "event": "killed"})
        event = b.wait_elected(True, self.ttl + self.store_slack + 5)
        took = event["t"] - t0
        print(f"crash failover {took:.3f}s = {took / self.ttl:.2f} x ttl {self.ttl:g}s (bound +{self.store_slack:g}s)")
        # The bound the README documents per store: ttl plus the store's expiry slack.
        assert took <= self.ttl + self.store_slack, (
            f"failover took {took:.2f}s; the documented bound is ttl {self.ttl:g}s + {self.store_slack:g}s"
        )
        assert_one_leader_at_a_time([a, b])

    @pytest.mark.processes
    def test_frozen_leader_demotes_itself_on_resume(self, spawn: Callable[..., Agent]) -> None:
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        b = spawn("b")
        self.queued(b)
        a.freeze()
        b.wait_elected(True, self.ttl + self.store_slack + 5)
        time.sleep(0.2)
        mark = a.mark()
        a.thaw()
        status = a.status()
        assert status["is_leader"] is False, "a leader frozen past its ttl must not believe it leads"
        a.wait_elected(False, 2, after=mark)
        # While frozen it could not report; what matters is it never claimed leadership after b won.
        b_start = b.wait_elected(True, 1)["t"]
        assert all(not (e["event"] == "status" and e["is_leader"]) for e in a.events if e["t"] > b_start)


class FaultTests(ConformanceBase):
    """The store is paused or restarted."""

    def leader_waiter_follower(self, spawn: Callable[..., Agent], leadership_server: Any) -> tuple[Agent, Agent, Agent]:
        """Skip without fault injection; else: a leads, b waits, f follows and has seen a."""
        if not getattr(leadership_server, "can_inject_faults", False):
            pytest.skip("the server handle cannot inject store faults (external server)")
        a = spawn("a")
        a.wait_elected(True, self.handover_timeout)
        b = spawn("b")
        self.queued(b)
        f = spawn("f", follower=True)
        f.wait_for(lambda e: e["event"] == "leader" and e["leader"] == "a", self.handover_timeout)
        return a, b, f

    @pytest.mark.store_faults
    def test_store_paused_past_ttl_leader_demotes_before_expiry(
        self, spawn: Callable[..., Agent], leadership_server: Any
    ) -> None:
        a, b, f = self.leader_waiter_follower(spawn, leadership_server)
        mark = a.mark()
        t0 = time.monotonic()
        leadership_server.pause()
        try:
            demoted = a.wait_elected(False, self.ttl + 2, after=mark)
            assert demoted["t"] - t0 < self.ttl, (
                f"leader reported False {demoted['t'] - t0:.2f}s after the store froze; it must do so "
                f"before the store could expire its session ({self.ttl}s)"
            )
            assert a.status()["is_leader"] is False
            time.sleep(max(0.0, t0 + self.ttl + 0.5 - time.monotonic()))
        finally:
            mark_f = f.mark()
            leadership_server.unpause()
        # The election recovers by itself.
        leader = self.elected_one([a, b], self.ttl * 2 + self.store_slack + self.recovery_time, after={"a": mark})
        token = leader.wait_elected(True, 0, after=mark if leader is a else 0)["token"]
        # The follower sees that term or a later one: a term that is over before it looks (the
        # first after a long outage can be) may be missed, and so never named.
        f.wait_for(
            lambda e: e["event"] == "leader" and e["token"] is not None and e["token"] >= token,
            self.ttl + self.recovery_time,
            f"a term from token {token} on (first elected after the pause: {leader.name})",
            after=mark_f,
        )
        assert_one_leader_at_a_time([a, b])

    @pytest.mark.store_faults
    def test_store_restart_candidates_and_followers_recover(
        self, spawn: Callable[..., Agent], leadership_server: Any
    ) -> None:
        a, b, f = self.leader_waiter_follower(spawn, leadership_server)
        leadership_server.restart()
        deadline = time.monotonic() + self.ttl * 2 + self.store_slack + self.recovery_time
        # After the restart exactly one of them leads and the follower agrees, with no caller
        # retry; then watches must work again: a handover reaches the other and the follower.
        # A restart that outlasts a session's deadline makes its candidate queue again, possibly
        # behind the leader, which then leads again after resigning: so resign until the other
        # takes over (each round is a handover that works), within the deadline.
        while True:
            leader: Agent | None = None
            while leader is None and time.monotonic() < deadline:
                statuses = {x.name: x.status()["is_leader"] for x in (a, b)}
                leaders = [x for x in (a, b) if statuses[x.name]]
                if len(leaders) == 1 and f.events and f.events[-1].get("leader") == leaders[0].name:
                    leader = leaders[0]
                else:
                    time.sleep(0.2)
            assert leader is not None, (
                f"no stable leader after restart: {a.events} {b.events} {f.events}{a.diagnostics()}{b.diagnostics()}"
            )
            other = b if leader is a else a
            mark, mark_l, mark_f = other.mark(), leader.mark(), f.mark()
            if leader.resign()["token"] is None:
                continue  # it lost leadership between the status read and the resign
            winner = _first_elected({other: mark, leader: mark_l}, self.handover_timeout + self.recovery_time)
            assert winner is not None, (
                f"nobody was elected after {leader.name} resigned following the restart: "
                f"{a.events} {b.events}{a.diagnostics()}{b.diagnostics()}"
            )
            if winner is other:
                break
            assert time.monotonic() < deadline, (
                f"{other.name} never took over after the restart: {a.events} {b.events}{other.diagnostics()}"
            )
        f.wait_for(
            lambda e: e["event"] == "leader" and e["leader"] == other.name,
            self.handover_timeout,
            "follower sees the handover after restart",
            after=mark_f,
        )
        assert not a.errors() and not b.errors() and not f.errors()


def _first_elected(marks: Mapping[Agent, int], timeout: float) -> Agent | None:
    """The first of the agents to report elected=True after its mark, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        won = [
            (event["t"], agent)
            for agent, mark in marks.items()
            for event in agent.events[mark:]
            if event["event"] == "elected" and event["value"] is True
        ]
        if won:
            return min(won, key=lambda pair: pair[0])[1]
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


class HerdTests(ConformanceBase):
    """A handover costs the store no more requests with many candidates waiting than with one."""

    def _handover_requests(self, server: Any, stores: Callable[[], leadership.Store], key: str, waiters: int) -> int:
        ttl = self.herd_ttl or self.ttl
        candidates = []
        for i in range(waiters + 1):
            c = leadership.Candidate(stores(), key, f"h{i}", ttl=ttl)
            it = c.run_for_election()
            next(it)  # False: started
            candidates.append((c, it))
            if i == 0:
                c.wait_elected(self.handover_timeout)
            time.sleep(max(0.1, self.queue_settle / 4))  # creation order = queue order
        time.sleep(self.queue_settle)  # everyone queued and watching
        # Background traffic (keepalives, pings) over a window as long as the handover's, to subtract.
        window = 0.5
        idle_before = server.request_count()
        time.sleep(window)
        idle = server.request_count() - idle_before
        before = server.request_count()
        t0 = time.monotonic()
        candidates[0][0].resign()
        term = candidates[1][0].wait_elected(self.handover_timeout)
        assert term.leader == "h1", "FIFO: the earliest waiting candidate is next"
        time.sleep(max(0.0, t0 + window - time.monotonic()))
        after = server.request_count() - idle
        assert [c.is_leader for c, _ in candidates[2:]] == [False] * (waiters - 1)
        for c, _ in candidates:
            c.stop()
        return int(after - before)

    def test_handover_wakes_one_not_all(
        self, leadership_server: Any, stores: Callable[[], leadership.Store], election_key: str
    ) -> None:
        if not self.counts_requests or leadership_server.request_count() is None:
            pytest.skip("the server handle cannot count store requests")
        few = self._handover_requests(leadership_server, stores, election_key + "-few", 1)
        many = self._handover_requests(leadership_server, stores, election_key + "-many", self.herd_waiters)
        print(f"store requests per handover: {few} with 1 waiting, {many} with {self.herd_waiters} waiting")
        assert many <= few + max(6, self.herd_waiters // 3), (
            f"a handover with {self.herd_waiters} waiting cost {many} store requests vs {few} with one: "
            "waiters are woken as a herd"
        )


class ManyElectionsTests(ConformanceBase):
    """Many elections on one store connection share one session."""

    #: Elections one store runs at once (all with the same ttl, so on one session).
    many_elections: ClassVar[int] = 100

    def test_many_elections_share_one_session(self, stores: Callable[[], leadership.Store], election_key: str) -> None:
        store = stores()
        candidates = [
            leadership.Candidate(store, f"{election_key}/e{i}", "me", ttl=self.ttl) for i in range(self.many_elections)
        ]
        for c in candidates:
            c.run_for_election()
        deadline = time.monotonic() + 30
        while not all(c.is_leader for c in candidates) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(c.is_leader for c in candidates), "every uncontested election is won"
        assert store.session_count() == 1, "elections with the same ttl share one store session"
        # Tokens order the terms of one key (TokenTests); different keys may share a value
        # (a per-key counter is a valid fencing token).
        assert all(c.term is not None and isinstance(c.term.token, int) for c in candidates)
        for c in candidates:
            c.stop()
        assert store.session_count() == 0, "the session is released with the last election"


class BadInputTests(ConformanceBase):
    """Bad keys, names, ttls, URL options and schemes raise at the call that received them."""

    def test_bad_input_raises_at_the_call(self, stores: Callable[[], leadership.Store], store_url: str) -> None:
        store = stores()
        backend = type(store.aio.backend)
        with pytest.raises(InvalidTTLError, match=f"minimum of {backend.min_ttl:g}s"):
            leadership.Candidate(store, "k", "n", ttl=backend.min_ttl / 2)
        with pytest.raises(InvalidTTLError):
            leadership.Candidate(store, "k", "n", ttl=float("nan"))
        for key in ["", "/a", "a/", "a//b", "a b", "ü", "a/../b"]:
            with pytest.raises(InvalidArgumentError, match="election key"):
                leadership.Candidate(store, key, "n", ttl=self.ttl)
            with pytest.raises(InvalidArgumentError, match="election key"):
                leadership.Follower(store, key)
        for name in ["", "  ", "a\nb"]:
            with pytest.raises(InvalidArgumentError, match="candidate name"):
                leadership.Candidate(store, "k", name, ttl=self.ttl)
        sep = "&" if "?" in store_url else "?"
        with pytest.raises(ConfigurationError, match="no-such-option"):
            leadership.connect(f"{store_url}{sep}no-such-option=1")
        scheme = store_url.split("://")[0]
        with pytest.raises(leadership.UnknownBackendError, match=scheme):
            leadership.connect(f"{scheme}x://127.0.0.1:1")


@pytest.mark.cluster
class ClusterFailoverTests(ConformanceBase):
    """Run against a multi-member store (``leadership_server`` with ``members``,
    ``leader_member()``, ``kill_member()``, ``start_member()``): the store's own leader dies in
    the middle of a handover. Not part of ConformanceSuite: combine it with a cluster fixture."""

    #: How long the cluster may take to elect a new leader member and serve again.
    cluster_recovery_time: ClassVar[float] = 15.0

    def test_store_leader_killed_mid_handover(self, spawn: Callable[..., Agent], leadership_server: Any) -> None:
        members = len(getattr(leadership_server, "members", []))
        if members < 3 or not getattr(leadership_server, "can_inject_faults", False):
            pytest.skip("needs a store cluster of 3 or more members the kit can kill")
        agents = [spawn(f"c{i}") for i in range(3)]
        for agent in agents:
            self.queued(agent)
        f = spawn("f", follower=True)
        leader = self.elected_one(agents, self.handover_timeout)
        victim = leadership_server.leader_member()
        assert victim is not None, "could not tell which store member leads"
        marks = {x.name: x.mark() for x in agents}
        leader.command("resign")  # the handover is under way when the store's leader dies
        leadership_server.kill_member(victim)
        try:
            bound = self.ttl * 2 + self.store_slack + self.cluster_recovery_time
            new = self.elected_one(agents, bound, after=marks)
            # The survivors keep serving: a handover after the failover works, and the follower sees it.
            marks = {x.name: x.mark() for x in agents}
            mark_f = f.mark()
            new.resign()
            nxt = self.elected_one([x for x in agents if x is not new], bound, after=marks)
            f.wait_for(
                lambda e: e["event"] == "leader" and e["leader"] == nxt.name,
                bound,
                "follower sees the leader after the failover",
                after=mark_f,
            )
        finally:
            leadership_server.start_member(victim)
        assert_one_leader_at_a_time(agents)
        assert not any(x.errors() for x in [*agents, f])


from .partition import PartitionTests  # noqa: E402 - it builds on ConformanceBase above
from .supervisor import RunCommandTests  # noqa: E402 - it builds on ConformanceBase above
from .unreachable import UnreachableStoreTests  # noqa: E402 - it builds on ConformanceBase above


class ConformanceSuite(
    CandidateTests,
    FollowerTests,
    TokenTests,
    ExclusionTests,
    ProcessFaultTests,
    FaultTests,
    HerdTests,
    ManyElectionsTests,
    BadInputTests,
    PartitionTests,
    UnreachableStoreTests,
    RunCommandTests,
):
    """Every conformance test. Subclass it (name it ``Test...``) and override ``leadership_server``."""

    def test_no_standard_test_silently_overridden(self) -> None:
        standard = {
            name: getattr(base, name)
            for base in ConformanceSuite.__mro__[1:]
            for name in vars(base)
            if name.startswith("test_")
        }
        changed = [
            name
            for name, fn in standard.items()
            if getattr(type(self), name) is not fn and name not in self.overridden_tests
        ]
        assert not changed, f"standard tests overridden without a reason in overridden_tests: {changed}"
