"""Graceful handover on one Consul server vs a 3-server cluster (behind a client agent), in the
same run on the same machine: what the consistent reads and raft writes across servers cost.

    python plugins/leadership-consul/benchmarks/cluster_handover.py [--rounds N]

Needs Docker (the test handles of ``leadership_consul.testing``; LEADERSHIP_TEST_NETWORK=host
for the cluster). Times come from the observer hooks: the old leader's resign() call to the new
leader's elected hook.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import uuid

import leadership
from leadership_consul.testing import ConsulServer


class Elected:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.cond = threading.Condition()

    @leadership.hookimpl
    def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
        with self.cond:
            self.at[f"{name}:{token}"] = time.perf_counter()
            self.cond.notify_all()

    def wait(self, what: str) -> float:
        with self.cond:
            assert self.cond.wait_for(lambda: what in self.at, 60), f"no election of {what}"
            return self.at[what]


def handovers(url: str, rounds: int) -> list[float]:
    clock = Elected()
    stores = []
    for _ in range(2):
        pm = leadership.get_plugin_manager()
        pm.register(clock)
        stores.append(leadership.connect(url, plugin_manager=pm))
    key = f"bench/cluster-{uuid.uuid4().hex[:6]}"
    a = leadership.Candidate(stores[0], key, "a", ttl=20)
    b = leadership.Candidate(stores[1], key, "b", ttl=20)
    a.wait_elected(60)
    b.run_for_election()
    time.sleep(1.0)
    took = []
    for _ in range(rounds):
        leader, other = (a, b) if a.is_leader else (b, a)
        t0 = time.perf_counter()
        leader.resign()
        term = other.wait_elected(60)
        took.append(clock.wait(f"{term.leader}:{term.token}") - t0)
        time.sleep(0.05)
    for s in stores:
        s.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    results = {}
    for servers in (1, 3):
        server = ConsulServer.start(members=servers)
        try:
            results[servers] = handovers(server.url, args.rounds)
        finally:
            server.stop()
    p50 = {n: 1000 * statistics.median(v) for n, v in results.items()}
    for n, v in results.items():
        p90 = 1000 * sorted(v)[int(0.9 * len(v))]
        print(f"consul, {n} server(s): graceful handover p50 {p50[n]:.1f} ms, p90 {p90:.1f} ms ({len(v)} runs)")
    print(f"3 servers / 1 server: {p50[3] / p50[1]:.2f}x")


if __name__ == "__main__":
    main()
