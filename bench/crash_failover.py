"""Crash failover: how long after a leader dies does the next candidate lead?

Usage: ``python bench/crash_failover.py URL TTL [ROUNDS]`` (e.g. ``etcd://127.0.0.1:2379 2 5``).

Each round: candidate ``a`` leads from a child process, ``b`` waits in this one; the child is
SIGKILLed (nothing released, its connections drop), and the time until ``b`` reports True is
taken. The session
expires between ttl minus one renewal interval and ttl after the last renewal, plus the store's
own lateness, so failover / ttl lands in about [0.67, 1 + slack]. The documentation's backend
pages quote this script's output.
"""

from __future__ import annotations

import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid

import leadership

LEADER = """
import sys, time, leadership
store = leadership.connect(sys.argv[1])
candidate = leadership.Candidate(store, sys.argv[2], "a", ttl=float(sys.argv[3]))
for elected in candidate.run_for_election():
    if elected:
        print("elected", flush=True)
"""


def one_round(url: str, ttl: float) -> float:
    key = f"bench/failover-{uuid.uuid4().hex[:8]}"
    leader = subprocess.Popen([sys.executable, "-c", LEADER, url, key, str(ttl)], stdout=subprocess.PIPE, text=True)
    assert leader.stdout is not None
    if leader.stdout.readline().strip() != "elected":
        raise RuntimeError("a was not elected")
    second = leadership.connect(url)
    b = leadership.Candidate(second, key, "b", ttl=ttl)
    elected = threading.Event()
    stream_b = b.run_for_election()
    if next(stream_b) is not False:
        raise RuntimeError("b's stream did not start with False")

    def wait_for_b() -> None:
        for value in stream_b:
            if value:
                elected.set()
                return

    waiter = threading.Thread(target=wait_for_b, daemon=True)
    waiter.start()
    # b is queued and a has renewed; the random part puts the kill anywhere between two renewals.
    time.sleep(ttl + random.uniform(0, ttl / 3))
    crashed = time.monotonic()
    leader.send_signal(signal.SIGKILL)
    leader.wait()
    if not elected.wait(ttl * 3 + 10):
        raise RuntimeError(f"b not elected within {ttl * 3 + 10:g}s of a's SIGKILL")
    took = time.monotonic() - crashed
    b.stop()
    second.close()
    return took


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    url, ttl = argv[0], float(argv[1])
    if url.startswith("memory:"):
        print("memory:// lives inside one process: a killed child cannot share it", file=sys.stderr)
        return 2
    rounds = int(argv[2]) if len(argv) > 2 else 5
    times = [one_round(url, ttl) for _ in range(rounds)]
    ratios = [t / ttl for t in times]
    print(
        f"{url.split('://')[0]} ttl={ttl:g}s rounds={rounds}: failover min {min(times):.2f}s, "
        f"median {statistics.median(times):.2f}s, max {max(times):.2f}s "
        f"({min(ratios):.2f}-{max(ratios):.2f} x ttl)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
