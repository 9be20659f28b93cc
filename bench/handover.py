"""Graceful handover, leadership against each store's fastest peer, in one run on the same server.

    python bench/handover.py [zookeeper etcd consul] [--rounds 40] [--warmup 6] [--waiters 50]
                             [--json bench-results.json]

Latency: resign() (or the peer's release) → the other process's elected event, one contender per
process, two contenders per election. Ours and the peer run side by side on the same server and
take turns trial by trial (the order flips every trial), so both see the same load; the first
``--warmup`` trials of each are dropped. The load average is recorded before and after each
store. Requests: the store requests during one handover with ``--waiters`` contenders queued,
median of several handovers; on ZooKeeper counted by type on the wire through a counting proxy
(bench/zk_requests.py: pings and our sessions' ``exists /`` confirmations left out as
keepalives), on the other stores the server's own count minus an idle window's (keepalives).

Peers (as their documentation uses them): ZooKeeper — kazoo's ``Election`` recipe; etcd —
``etcdctl elect`` (etcd's Go ``concurrency.Election``); Consul — ``consul lock``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import tools  # noqa: E402
import worker  # noqa: E402

PEERS = {"zookeeper": "kazoo", "etcd": "etcdctl", "consul": "consul-lock"}
PEER_NAMES = {"kazoo": "kazoo Election", "etcdctl": "etcdctl elect", "consul-lock": "consul lock"}
#: ttl of the latency runs: the store's minimum-ish, as users run it.
TTL = {"zookeeper": 4.0, "etcd": 5.0, "consul": 20.0}
#: ttl of the request counts: long, so keepalives in the window are few (and subtracted anyway).
HERD_TTL = {"zookeeper": 20.0, "etcd": 30.0, "consul": 60.0}


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


class Proc:
    """A worker process and the events it reports."""

    def __init__(self, kind: str, url: str, key: str, name: str, ttl: float) -> None:
        self.name = name
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "worker.py"), kind, url, key, name, str(ttl)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            env=tools.env(),
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, _, rest = line.strip().partition(" ")
            self.events.put((word, rest))
        self.events.put(("exit", str(self.proc.wait())))

    def expect(self, word: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                got, rest = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"{self.name}: no {word!r} within {timeout:g}s") from None
            if got == word:
                return rest
            if got in ("error", "exit"):
                raise RuntimeError(f"{self.name}: {got} {rest}")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("quit")
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Pair:
    """Two contenders for one election; ``handover()`` times one graceful handover."""

    def __init__(self, kind: str, url: str, ttl: float) -> None:
        key = f"handover-{kind}-{uuid.uuid4().hex[:6]}"
        self.kind = kind
        self.a = Proc(kind, url, key, "a", ttl)
        self.a.expect("ready")
        self.a.expect("elected")
        self.b = Proc(kind, url, key, "b", ttl)
        self.b.expect("ready")
        self.leader, self.waiter = self.a, self.b

    def handover(self) -> float:
        self.leader.send("resign")
        t0 = float(self.leader.expect("resigning"))
        t1 = float(self.waiter.expect("elected"))
        self.leader, self.waiter = self.waiter, self.leader
        return t1 - t0

    def close(self) -> None:
        for p in (self.a, self.b):
            p.close()


def latency(store: str, url: str, rounds: int, warmup: int, settle: float) -> dict[str, Any]:
    peer = PEERS[store]
    pairs = {"ours": Pair("ours", url, TTL[store]), "peer": Pair(peer, url, TTL[store])}
    samples: dict[str, list[float]] = {"ours": [], "peer": []}
    load = [os.getloadavg()]
    try:
        time.sleep(1.0)  # both queued (a Go tool's second process starts slowly)
        for i in range(warmup + rounds):
            order = ["ours", "peer"] if i % 2 == 0 else ["peer", "ours"]
            for who in order:
                took = pairs[who].handover()
                if i >= warmup:
                    samples[who].append(took)
                # The resigner queues again (a Go tool restarts): wait until it has.
                time.sleep(settle)
    finally:
        for pair in pairs.values():
            pair.close()
    load.append(os.getloadavg())
    return {"peer": peer, "samples": samples, "loadavg": load, "ttl": TTL[store]}


# -- requests per handover ----------------------------------------------------------------------


class Herd:
    """``waiters + 1`` contenders of one kind in this process (each on its own connection; the
    Go tools in their own processes), and a handover among them."""

    def __init__(self, kind: str, url: str, ttl: float, waiters: int) -> None:
        self.events: queue.Queue[tuple[str, str, float]] = queue.Queue()
        key = f"herd-{kind}-{uuid.uuid4().hex[:6]}"
        self.contenders: list[Any] = []
        cls = worker.KINDS[kind]
        for i in range(waiters + 1):
            name = f"c{i}"

            def emit(word: str, value: Any = None, name: str = name) -> None:
                self.events.put((name, word, float(value) if word in ("elected", "resigning") else 0.0))

            self.contenders.append(cls(url, key, name, ttl, emit=emit))
            if i == 0:
                self.wait("c0", "elected")
            time.sleep(0.05)  # queue in a known order
        self.leader = 0
        self.elected_by: dict[str, int] = {}

    def wait(self, name: str | None, word: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            who, got, _ = self.events.get(timeout=max(0.001, deadline - time.monotonic()))
            if got == "error":
                raise RuntimeError(f"{who}: error")
            if got == word and (name is None or who == name):
                return who

    def handover(self) -> str:
        self.contenders[self.leader].resign()
        who = self.wait(None, "elected")
        self.leader = int(who[1:])
        return who

    def close(self) -> None:
        for c in self.contenders:
            with contextlib.suppress(Exception):
                c.close()


def requests(kind: str, url: str, server: Any, ttl: float, waiters: int, handovers: int, window: float) -> dict[str, Any]:
    """Store requests per handover, counted over ``window`` seconds from the resign.

    ZooKeeper: counted by type on the wire (bench/zk_requests.py), keepalives left out by type
    (ZooKeeper's pings, our sessions' ``exists /``). Other stores: the server's own count,
    minus the background (keepalives, health checks) at the rate of a long idle window."""
    proxy = None
    excluded: tuple[str, ...] = ()
    if server.scheme == "zookeeper":
        from zk_requests import KEEPALIVES, CountingProxy

        member = server.members[0]
        proxy = CountingProxy(member.host, member.port)
        url = proxy.url_for(url)
        excluded = KEEPALIVES

    def count() -> collections.Counter[str]:
        if proxy is not None:
            return proxy.snapshot()
        return collections.Counter(requests=server.request_count())

    def counted(before: collections.Counter[str], after: collections.Counter[str]) -> collections.Counter[str]:
        diff = after - before
        for kind in excluded:
            diff.pop(kind, None)
        return diff

    counts: list[float] = []
    by_kind: collections.Counter[str] = collections.Counter()
    keepalives: collections.Counter[str] = collections.Counter()
    woken: list[int] = []
    try:
        herd = Herd(kind, url, ttl, waiters)
        try:
            time.sleep(2.0)  # everyone queued, watches armed
            t0, c0 = time.monotonic(), count()
            time.sleep(max(6.0, 4 * window))
            t1, c1 = time.monotonic(), count()
            rate = sum(counted(c0, c1).values()) / (t1 - t0)
            for _ in range(handovers):
                while not herd.events.empty():
                    herd.events.get_nowait()
                ta, ca = time.monotonic(), count()
                herd.handover()
                time.sleep(max(0.0, window - (time.monotonic() - ta)))
                tb, cb = time.monotonic(), count()
                diff = counted(ca, cb)
                by_kind.update(diff)
                keepalives.update({k: cb[k] - ca[k] for k in excluded})
                counts.append(round(sum(diff.values()) - rate * (tb - ta), 1))
                # Exactly one waiter may have been elected: count every "elected" in the window.
                woken.append(sum(word == "elected" for _, word, _ in _drain(herd.events)) + 1)
                time.sleep(0.2)
        finally:
            herd.close()
    finally:
        if proxy is not None:
            proxy.close()
    return {
        "kind": kind,
        "waiters": waiters,
        "method": "by type on the wire, keepalives left out" if proxy else "server count minus idle rate",
        "background_per_s": rate,
        "per_handover": counts,
        "by_kind_per_handover": {k: v / handovers for k, v in sorted(by_kind.items())},
        "left_out_per_handover": {k: v / handovers for k, v in sorted(keepalives.items())},
        "elected_per_handover": woken,
    }


def _drain(q: queue.Queue[Any]) -> list[Any]:
    items = []
    while not q.empty():
        items.append(q.get_nowait())
    return items


@contextlib.contextmanager
def servers(stores: list[str]) -> Iterator[dict[str, Any]]:
    started: dict[str, Any] = {}
    try:
        for store in stores:
            started[store] = tools.start_server(store)
        yield started
    finally:
        for s in started.values():
            s.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stores", nargs="*", default=["zookeeper", "etcd", "consul"])
    parser.add_argument("--rounds", type=int, default=40, help="timed handovers of each (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=6)
    parser.add_argument("--settle", type=float, default=0.3, help="pause after each handover (s)")
    parser.add_argument("--waiters", type=int, default=50)
    parser.add_argument("--handovers", type=int, default=10, help="handovers counted with --waiters queued")
    parser.add_argument("--window", type=float, default=0.6, help="seconds each request count covers")
    parser.add_argument("--json", default="bench-results.json", help="raw samples go here")
    args = parser.parse_args()
    tools.check_peers(args.stores)
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stores": {}}
    with servers(args.stores) as started:
        for store, server in started.items():
            print(f"{store}: {server.url}  (load average {os.getloadavg()[0]:.2f})", flush=True)
            lat = latency(store, server.url, args.rounds, args.warmup, args.settle)
            reqs = {
                who: requests(kind, server.url, server, HERD_TTL[store], args.waiters, args.handovers, args.window)
                for who, kind in (("ours", "ours"), ("peer", PEERS[store]))
            }
            results["stores"][store] = {"url": server.url, "latency": lat, "requests": reqs}
            print_store(store, results["stores"][store])
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    Path(args.json).write_text(json.dumps(results, indent=1))
    print_table(results)
    print(f"raw samples: {args.json}")


def print_store(store: str, r: dict[str, Any]) -> None:
    lat = r["latency"]
    for who in ("ours", "peer"):
        s = lat["samples"][who]
        name = "leadership" if who == "ours" else PEER_NAMES[lat["peer"]]
        q = r["requests"][who]
        print(
            f"  {name:<16} p50 {1000 * statistics.median(s):6.2f} ms  p90 {1000 * pct(s, 0.9):6.2f} ms  "
            f"requests/handover ({q['waiters']} waiting) {statistics.median(q['per_handover']):.1f} "
            f"{q['per_handover']}  elected {q['elected_per_handover']}",
            flush=True,
        )
        if q.get("method", "").startswith("by type"):
            kinds = ", ".join(f"{k} {v:g}" for k, v in q["by_kind_per_handover"].items())
            left = ", ".join(f"{k} {v:g}" for k, v in q["left_out_per_handover"].items())
            print(f"    per handover, by type: {kinds}  (left out as keepalives: {left})", flush=True)


def print_table(results: dict[str, Any]) -> None:
    print()
    print("| store | leadership p50 / p90 | peer | peer p50 / p90 | ours/peer p50 | requests ours / peer | load avg |")
    print("|---|---|---|---|---|---|---|")
    for store, r in results["stores"].items():
        lat = r["latency"]
        ours, peer = lat["samples"]["ours"], lat["samples"]["peer"]
        ro, rp = (statistics.median(r["requests"][w]["per_handover"]) for w in ("ours", "peer"))
        load = "-".join(f"{la[0]:.1f}" for la in lat["loadavg"])
        print(
            f"| {store} (ttl {lat['ttl']:g}) | {1000 * statistics.median(ours):.2f} / {1000 * pct(ours, 0.9):.2f} ms "
            f"| {PEER_NAMES[lat['peer']]} | {1000 * statistics.median(peer):.2f} / {1000 * pct(peer, 0.9):.2f} ms "
            f"| {statistics.median(ours) / statistics.median(peer):.2f}x | {ro:.1f} / {rp:.1f} | {load} |"
        )


if __name__ == "__main__":
    main()
