"""``leadership demo`` (a live election, on the memory store or any other) and ``leadership
backends`` (what is installed)."""

from __future__ import annotations

import argparse
import logging
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from .. import Candidate, Follower, Store, connect
from .._util import validate_ttl
from ..errors import InvalidTTLError, LeadershipError
from ..plugins import backend_registry, default_plugin_manager, list_plugin_distinfo
from ..testing import crash
from ..url import StoreURL
from ._common import UsageError, store_limits

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


#: ttls the demo tries, shortest first, when none is given: short enough for a lively demo, and
#: found by asking the store (ZooKeeper's minimum depends on the server's tickTime).
DEMO_TTLS = (1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0)


def demo_ttl(url: str, choices: Sequence[float] = DEMO_TTLS) -> float:
    """The first of ``choices`` the store accepts (those outside its static limits skipped).
    InvalidTTLError if none is."""
    low, high = store_limits(url)
    candidates = [t for t in choices if t >= low and (high is None or t <= high)] or [low]
    error: InvalidTTLError | None = None
    library = logging.getLogger("leadership")
    level = library.level
    library.setLevel(logging.CRITICAL)  # a refused ttl is this function's answer, not a failure to log
    try:
        with connect(url) as store:
            for ttl in candidates:
                candidate = Candidate(store, "demo/ttl-probe", "probe", ttl=ttl)
                try:
                    candidate.wait_elected(timeout=30)
                    return ttl
                except InvalidTTLError as exc:  # the server's own minimum (ZooKeeper)
                    error = exc
                finally:
                    candidate.stop()
    finally:
        library.setLevel(level)
    assert error is not None
    raise error


class _Demo:
    def __init__(
        self,
        url: str,
        candidates: int,
        ttl: float,
        duration: float,
        seed: int | None,
        crash_rate: float = 0.35,
        began: float | None = None,
    ) -> None:
        self.url = url
        self.crash_rate = crash_rate
        self.n = candidates
        self.ttl = ttl
        self.duration = duration
        self.rng = random.Random(seed)
        self.start = time.monotonic()
        #: Includes asking the store for a ttl: what "exits on time" is measured from.
        self.began = began if began is not None else self.start
        self.lock = threading.Lock()
        self.done = threading.Event()
        #: The stores of the nodes still running (a crashed node's store is abandoned).
        self.live: set[Store] = set()
        self.errors: list[BaseException] = []

    def say(self, who: str, text: str) -> None:
        if self.done.is_set():
            return
        with self.lock:
            print(f"[{time.monotonic() - self.start:6.2f}s] {who:<10} {text}", flush=True)

    def node(self, name: str) -> None:
        try:
            self._node(name)
        except LeadershipError as exc:  # e.g. a ttl below the server's minimum: end the demo
            self.errors.append(exc)
            self.done.set()

    def _node(self, name: str) -> None:
        """One 'process': campaigns; as leader works a while, then resigns or crashes."""
        while not self.done.is_set():
            store = connect(self.url)
            with self.lock:
                self.live.add(store)
            if self.done.is_set():
                break
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
                if self.rng.random() < self.crash_rate:
                    self.say(name, f"CRASHES without releasing; the others wait out the {self.ttl:g}s ttl")
                    with self.lock:
                        self.live.discard(store)
                    crash(store)
                    crashed = True
                    break
                self.say(name, "resigns")
                candidate.resign()
            if not crashed:
                return
            self.done.wait(self.rng.uniform(1.0, 3.0))  # the process restarts
            if not self.done.is_set():
                self.say(name, "restarted, campaigning again")

    def run(self) -> int:
        store = connect(self.url)
        follower = Follower(store, "demo/leader")
        print(
            f"Live election on {store.url}: {self.n} candidates, ttl {self.ttl:g}s, {self.duration:g}s. "
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
            self.done.wait(self.duration)
        except KeyboardInterrupt:
            pass
        self.done.set()
        # Close every store at once (each releases its leadership): the demo ends on time.
        with self.lock:
            stores = [store, *self.live]
        closers = [threading.Thread(target=s.close, daemon=True) for s in stores]
        for t in closers:
            t.start()
        for t in [*closers, *threads]:
            t.join(timeout=max(0.1, self.start + self.duration + 5 - time.monotonic()))
        if self.errors:
            raise self.errors[0]
        print(f"demo finished ({time.monotonic() - self.began:.1f}s in all)", flush=True)
        return 0


def _demo(args: argparse.Namespace) -> int:
    began = time.monotonic()
    if args.candidates < 1:
        raise UsageError(f"--candidates must be at least 1, got {args.candidates}")
    if not 0 <= args.crash_rate <= 1:
        raise UsageError(f"--crash-rate must be between 0 and 1, got {args.crash_rate:g}")
    if args.duration <= 0:
        raise UsageError(f"--duration must be a positive number of seconds, got {args.duration:g}")
    low, high = store_limits(args.url)  # a bad URL or option: one line, before any I/O
    if args.ttl is not None:
        validate_ttl(args.ttl, low, high, StoreURL.parse(args.url).scheme)
    # An explicit ttl is asked of the store too: ZooKeeper's server has a minimum of its own.
    ttl = demo_ttl(args.url) if args.ttl is None else demo_ttl(args.url, [args.ttl])
    return _Demo(args.url, args.candidates, ttl, args.duration, args.seed, args.crash_rate, began).run()


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
    demo.add_argument(
        "--ttl",
        type=float,
        default=None,
        help="session ttl in seconds (default: 1.5, or the shortest the store accepts)",
    )
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    demo.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    demo.add_argument(
        "--crash-rate",
        type=float,
        default=0.35,
        metavar="P",
        help="probability that a leader crashes instead of resigning (default 0.35)",
    )
    demo.set_defaults(func=_demo)
    backends = sub.add_parser(
        "backends",
        help="list installed plugins and backends",
        description="List the installed plugins and the store URL schemes they provide.",
        epilog="example:\n  leadership backends",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    backends.set_defaults(func=_backends)
