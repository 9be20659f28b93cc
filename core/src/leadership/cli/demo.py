"""``leadership demo`` (a live election, on the memory store or any other) and ``leadership
backends`` (what is installed)."""

from __future__ import annotations

import argparse
import random
import threading
import time
from typing import Any

from .. import Candidate, Follower, connect
from ..plugins import backend_registry, default_plugin_manager, list_plugin_distinfo
from ..testing import crash

__all__ = ["add_demo_parsers"]


def _backends(_: argparse.Namespace) -> int:
    pm = default_plugin_manager()
    print("plugins:")
    for name, dist, version in list_plugin_distinfo(pm):
        print(f"  {name:<12} {dist} {version}")
    print("backends (URL schemes):")
    for info in backend_registry(pm):
        print(f"  {info.scheme}://  from {info.plugin}  {info.description}")
    return 0


class _Demo:
    def __init__(self, url: str, candidates: int, ttl: float, duration: float, seed: int | None) -> None:
        self.url = url
        self.n = candidates
        self.ttl = ttl
        self.duration = duration
        self.rng = random.Random(seed)
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.done = threading.Event()

    def say(self, who: str, text: str) -> None:
        if self.done.is_set():
            return
        with self.lock:
            print(f"[{time.monotonic() - self.start:6.2f}s] {who:<10} {text}", flush=True)

    def node(self, name: str) -> None:
        """One 'process': campaigns; as leader works a while, then resigns or crashes."""
        while not self.done.is_set():
            store = connect(self.url)
            candidate = Candidate(store, "demo/leader", name, ttl=self.ttl)
            crashed = False
            for elected in candidate.run_for_election():
                if not elected:
                    continue
                term = candidate.term
                self.say(name, f"elected (fencing token {term.token if term else '?'})")
                self.done.wait(self.rng.uniform(1.0, 2.5))
                if self.done.is_set():
                    break
                if self.rng.random() < 0.35:
                    self.say(name, f"CRASHES without releasing; the others wait out the {self.ttl:g}s ttl")
                    crash(store)
                    crashed = True
                    break
                self.say(name, "resigns")
                candidate.resign()
            if not crashed:
                store.close()
                return
            self.done.wait(self.rng.uniform(1.0, 3.0))  # the process restarts
            if not self.done.is_set():
                self.say(name, "restarted, campaigning again")

    def run(self) -> int:
        store = connect(self.url)
        follower = Follower(store, "demo/leader")
        print(
            f"Live election on {self.url}: {self.n} candidates, ttl {self.ttl:g}s, {self.duration:g}s. "
            "Leaders resign or crash; the follower reports every change.",
            flush=True,
        )

        def follow() -> None:
            last = None
            for term in follower.terms():
                if term is None:
                    self.say("follower", "sees no leader")
                elif term != last:
                    self.say("follower", f"sees leader {term.leader!r} (token {term.token})")
                last = term

        threads = [threading.Thread(target=follow, daemon=True)]
        threads += [threading.Thread(target=self.node, args=(f"node-{i + 1}",), daemon=True) for i in range(self.n)]
        for t in threads:
            t.start()
        try:
            time.sleep(self.duration)
        except KeyboardInterrupt:
            pass
        self.done.set()
        for t in threads[1:]:
            t.join(timeout=10)
        follower.stop()
        store.close()
        print("demo finished", flush=True)
        return 0


def _demo(args: argparse.Namespace) -> int:
    return _Demo(args.url, args.candidates, args.ttl, args.duration, args.seed).run()


def add_demo_parsers(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="a live election with several candidates and a follower",
        description="A live election: candidates resign and crash, a follower reports every change.",
        epilog="example:\n  leadership demo --url etcd://127.0.0.1:2379 --duration 30",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--url", default="memory://demo", help="store URL (default: the in-process memory store)")
    demo.add_argument("--candidates", type=int, default=3, help="how many candidates campaign (default 3)")
    demo.add_argument("--ttl", type=float, default=1.5, help="session ttl in seconds (default 1.5)")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    demo.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    demo.set_defaults(func=_demo)
    backends = sub.add_parser(
        "backends",
        help="list installed plugins and backends",
        description="List the installed plugins and the store URL schemes they provide.",
        epilog="example:\n  leadership backends",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backends.set_defaults(func=_backends)
