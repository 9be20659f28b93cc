"""Benchmarks for the targets in docs/design.md ("Targets"): graceful handover, follower notification, herd, idle cost.

    nox -s bench                     # memory store
    nox -s bench -- etcd zookeeper   # real stores in containers (leadership_conformance.servers)
    nox -s bench -- etcd://127.0.0.1:2379

Times are taken in the observer hooks, which run at the moment of each transition.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import leadership


class Clock:
    """Records transition times from the observer hooks of one store."""

    def __init__(self) -> None:
        self.elected: dict[str, float] = {}
        self.demoted: dict[str, float] = {}
        self.changed: dict[tuple[str, str | None], float] = {}
        self.cond = threading.Condition()

    @leadership.hookimpl
    def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
        with self.cond:
            self.elected[f"{name}:{token}"] = time.perf_counter()
            self.cond.notify_all()

    @leadership.hookimpl
    def leadership_demoted(self, key: str, name: str, token: int, reason: str, store: str) -> None:
        with self.cond:
            self.demoted[f"{name}:{token}"] = time.perf_counter()
            self.cond.notify_all()

    @leadership.hookimpl
    def leadership_leader_changed(self, key: str, leader: str | None, token: int | None, store: str) -> None:
        with self.cond:
            self.changed[(f"{leader}:{token}", None)] = time.perf_counter()
            self.cond.notify_all()

    def wait(self, table: dict[Any, float], key: Any, timeout: float = 30) -> float:
        with self.cond:
            assert self.cond.wait_for(lambda: key in table, timeout), f"timed out waiting for {key}"
            return table[key]


def connect(url: str, clock: Clock) -> leadership.Store:
    pm = leadership.get_plugin_manager()
    pm.register(clock)
    return leadership.connect(url, plugin_manager=pm)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def bench_handover(url: str, ttl: float, rounds: int) -> None:
    key = f"bench/handover-{uuid.uuid4().hex[:6]}"
    clock = Clock()
    stores = [connect(url, clock) for _ in range(3)]
    a = leadership.Candidate(stores[0], key, "a", ttl=ttl)
    b = leadership.Candidate(stores[1], key, "b", ttl=ttl)
    follower = leadership.Follower(stores[2], key)
    follower.terms()
    a.wait_elected(30)
    b.run_for_election()
    time.sleep(0.5)
    handovers, notify = [], []
    for _ in range(rounds):
        leader, other = (a, b) if a.is_leader else (b, a)
        old = leader.term
        assert old is not None
        t0 = time.perf_counter()
        leader.resign()
        term = other.wait_elected(30)
        t1 = clock.wait(clock.elected, f"{term.leader}:{term.token}")
        handovers.append(t1 - t0)
        # The change happens in the store between the old leader's demotion (just before its
        # withdraw is sent) and the new leader's election; measure from the demotion: an upper bound.
        demoted = clock.wait(clock.demoted, f"{old.leader}:{old.token}")
        notify.append(clock.wait(clock.changed, (f"{term.leader}:{term.token}", None)) - demoted)
        time.sleep(0.02)
    print(f"  graceful handover  p50 {1000 * statistics.median(handovers):7.2f} ms   p90 {1000 * pct(handovers, 0.9):7.2f} ms   ({rounds} runs)")
    print(f"  follower notified  p50 {1000 * statistics.median(notify):7.2f} ms   p90 {1000 * pct(notify, 0.9):7.2f} ms   after the old leader let go")
    for s in stores:
        s.close()


def bench_herd(url: str, ttl: float, waiters: int, server: Any) -> None:
    key = f"bench/herd-{uuid.uuid4().hex[:6]}"
    clock = Clock()
    stores = [connect(url, clock) for _ in range(waiters + 1)]
    cands = [leadership.Candidate(s, key, f"c{i}", ttl=ttl) for i, s in enumerate(stores)]
    cands[0].wait_elected(30)
    woken: list[str] = []
    for c in cands[1:]:
        it = c.run_for_election()

        def watch(it: Iterator[bool] = it, name: str = c.name) -> None:
            for v in it:
                if v:
                    woken.append(name)

        threading.Thread(target=watch, daemon=True).start()
        time.sleep(0.01)
    time.sleep(1.0)
    before = server.request_count() if server else None
    t0 = time.perf_counter()
    cands[0].resign()
    cands[1].wait_elected(30)
    took = time.perf_counter() - t0
    time.sleep(0.3)
    after = server.request_count() if server else None
    reqs = f"{after - before} store requests" if before is not None and after is not None else "requests not counted"
    print(f"  handover, {waiters} waiting: {1000 * took:.2f} ms, woke {len(woken)} candidate(s), {reqs}")
    for s in stores:
        s.close()


def bench_idle(url: str, ttl: float, elections: int, seconds: float) -> None:
    clock = Clock()
    store = connect(url, clock)
    prefix = f"bench/idle-{uuid.uuid4().hex[:6]}"
    cands = [leadership.Candidate(store, f"{prefix}/{i}", "me", ttl=ttl) for i in range(elections)]
    for c in cands:
        c.run_for_election()
    deadline = time.monotonic() + 120
    while not all(c.is_leader for c in cands) and time.monotonic() < deadline:
        time.sleep(0.1)
    t0, c0 = time.monotonic(), time.process_time()
    time.sleep(seconds)
    cpu = (time.process_time() - c0) / (time.monotonic() - t0)
    print(f"  {elections} elections idle: {100 * cpu:.2f} % of a core, {store.session_count()} store session(s)")
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("targets", nargs="*", default=["memory"], help="memory, etcd, zookeeper, consul, or URLs")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--waiters", type=int, default=50)
    parser.add_argument("--elections", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=10)
    args = parser.parse_args()
    for target in args.targets:
        server: Any = None
        with contextlib.ExitStack() as stack:
            if "://" in target:
                url = target
            elif target == "memory":
                url = f"memory://bench-{uuid.uuid4().hex[:6]}"
                from leadership_conformance.memory import MemoryServer

                server = MemoryServer()
                url = server.url
            else:
                from leadership_conformance.servers import server_for

                server = server_for(target)
                stack.callback(server.stop)
                url = server.url
            scheme = url.split("://")[0]
            ttl = {"consul": 20.0, "etcd": 5.0, "zookeeper": 4.0}.get(scheme, 5.0)
            print(f"{target}: {url} (ttl {ttl:g}s)", flush=True)
            bench_handover(url, ttl, args.rounds)
            bench_herd(url, ttl, args.waiters, server)
            bench_idle(url, ttl, args.elections, args.idle_seconds)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
