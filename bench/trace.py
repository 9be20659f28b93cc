"""Where the milliseconds of one graceful handover go, step by step, on one store.

    python bench/trace.py zookeeper|etcd|consul [--rounds 30]

Two sync candidates in this process, each on its own store connection (own event loop thread,
own client). The store client's entry points are wrapped to timestamp every request sent,
every reply and every watch event, on the thread where each happens; the core's transitions are
timestamped where they happen too. Each step is printed as the median time since the resign()
call over ``--rounds`` handovers, with the side (R = resigning candidate, S = successor).
Times include the tracing itself (a few µs a step).
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tools

import leadership
from leadership import candidate as candidate_mod

events: list[tuple[float, str, str]] = []
_owner: dict[int, str] = {}  # id(client object) -> side


def side() -> str:
    return threading.current_thread().name[:1] if threading.current_thread().name[:1] in "RS" else "?"


def mark(what: str, who: str | None = None) -> None:
    events.append((time.monotonic(), who or side(), what))


def wrap_async(obj: Any, name: str, label: Any) -> None:
    original = getattr(obj, name)

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(f"{label(*args, **kwargs)} sent")
        try:
            return await original(*args, **kwargs)
        finally:
            mark(f"{label(*args, **kwargs)} answered")

    setattr(obj, name, wrapper)


def trace_core() -> None:
    cls = candidate_mod.AsyncCandidate
    lead, set_demoted, resign = cls._lead, cls._set_demoted, cls.resign

    async def traced_lead(self: Any, *a: Any, **k: Any) -> Any:
        mark("core: elected (hooks, stream True)")
        return await lead(self, *a, **k)

    def traced_set_demoted(self: Any, term: Any, reason: str) -> None:
        if term is not None or self._term is not None:
            mark("core: demoted (hooks, stream False)")
        set_demoted(self, term, reason)

    async def traced_resign(self: Any) -> None:
        mark("core: resign() running on the loop")
        await resign(self)

    cls._lead = traced_lead  # type: ignore[method-assign]
    cls._set_demoted = traced_set_demoted  # type: ignore[method-assign]
    cls.resign = traced_resign  # type: ignore[method-assign]


def trace_zookeeper() -> None:
    from kazoo.client import KazooClient
    from kazoo.handlers.threading import SequentialThreadingHandler

    call = KazooClient._call

    def _call(self: Any, request: Any, async_object: Any) -> Any:
        who = side()
        _owner[id(self)] = who
        path = getattr(request, "path", "")
        op = type(request).__name__
        if op in ("Ping",) or who == "?":
            return call(self, request, async_object)
        label = f"zk {op} {path.rsplit('/', 1)[-1][:12]}"
        mark(f"{label} sent")
        original_set = async_object.set

        def traced_set(value: Any = None) -> None:
            mark(f"{label} answered (kazoo thread)", who)
            original_set(value)

        async_object.set = traced_set
        return call(self, request, async_object)

    KazooClient._call = _call  # type: ignore[method-assign]
    dispatch = SequentialThreadingHandler.dispatch_callback

    def dispatch_callback(self: Any, callback: Any) -> Any:
        if callback.type == "watch":
            mark(f"zk watch event {callback.args[0].type}", "?")
        return dispatch(self, callback)

    SequentialThreadingHandler.dispatch_callback = dispatch_callback  # type: ignore[method-assign]
    from leadership_zookeeper import _bridge

    settle = _bridge._settle

    def _settle(fut: Any, value: Any, exc: Any) -> None:
        mark("zk: result/event reaches the loop")
        settle(fut, value, exc)

    _bridge._settle = _settle


def trace_etcd() -> None:
    from leadership_etcd._client import EtcdClient, WatchStream

    wrap_async(EtcdClient, "unary", lambda self, service, method, *a, **k: f"etcd {method}")
    wrap_async(WatchStream, "next", lambda self: "etcd watch next")
    wrap_async(WatchStream, "__aenter__", lambda self: "etcd watch create")


def trace_consul() -> None:
    from leadership_consul.backend import ConsulBackend

    def label(self: Any, method: str, path: str, params: Any = (), **k: Any) -> str:
        blocking = any(p[0] == "index" for p in params)
        return f"consul {method} {path.split('/')[2]}{' (blocking)' if blocking else ''}"

    wrap_async(ConsulBackend, "_request", label)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", choices=["zookeeper", "etcd", "consul"])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    ttl = {"zookeeper": 4.0, "etcd": 5.0, "consul": 20.0}[args.store]
    trace_core()
    {"zookeeper": trace_zookeeper, "etcd": trace_etcd, "consul": trace_consul}[args.store]()
    server = tools.start_server(args.store)
    try:
        run(server.url, ttl, args.rounds)
    finally:
        server.stop()


def run(url: str, ttl: float, rounds: int) -> None:
    key = f"trace-{uuid.uuid4().hex[:6]}"
    stores = {}
    for name in "ab":
        stores[name] = leadership.connect(url)
    cands = {n: leadership.Candidate(stores[n], key, n, ttl=ttl) for n in "ab"}
    elected: dict[str, threading.Event] = {n: threading.Event() for n in "ab"}

    def follow(n: str) -> None:
        for v in cands[n].run_for_election():
            if v:
                mark("user thread: elected (stream True)", "S")
                elected[n].set()

    for n in "ab":
        threading.Thread(target=follow, args=(n,), daemon=True).start()
        if n == "a":
            elected["a"].wait(30)
    time.sleep(0.5)
    steps: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    order: dict[tuple[str, str], list[int]] = collections.defaultdict(list)
    total: list[float] = []
    for _ in range(rounds + 3):
        leader = "a" if cands["a"].is_leader else "b"
        other = "b" if leader == "a" else "a"
        stores[leader]._runner.thread.name = "R-loop"
        stores[other]._runner.thread.name = "S-loop"
        elected[other].clear()
        events.clear()
        t0 = time.monotonic()
        cands[leader].resign()
        mark("user thread: resign() returned", "R")
        elected[other].wait(30)
        time.sleep(0.2)
        snapshot = [e for e in events if e[0] >= t0]
        end = next(t for t, _, what in snapshot if what.startswith("user thread: elected"))
        total.append(end - t0)
        seen: collections.Counter[tuple[str, str]] = collections.Counter()
        for i, (t, who, what) in enumerate(sorted(snapshot)):
            seen[(who, what)] += 1
            k = (who, what if seen[(who, what)] == 1 else f"{what} #{seen[(who, what)]}")
            steps[k].append(t - t0)
            order[k].append(i)
    for s in stores.values():
        s.close()
    print(f"{url}: {rounds} handovers, resign() → successor's stream True p50 {1000 * statistics.median(total[3:]):.2f} ms")
    rows = sorted(steps, key=lambda k: statistics.median(steps[k]))
    for k in rows:
        values = steps[k][-rounds:]
        if len(values) < rounds // 2:
            continue
        print(f"  {1000 * statistics.median(values):7.2f} ms  {k[0]}  {k[1]}  ({len(values)}/{rounds})")


if __name__ == "__main__":
    main()
