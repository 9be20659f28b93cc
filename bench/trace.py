"""Where the milliseconds of one graceful handover go, step by step, on one store.

    python bench/trace.py zookeeper|etcd|consul [--rounds 30]
    python bench/trace.py zookeeper --processes [--rounds 30]

Two sync candidates in this process, each on its own store connection (own event loop thread,
own client). The store client's entry points are wrapped to timestamp every request sent,
every reply and every watch event, on the thread where each happens; the core's transitions are
timestamped where they happen too. Each step is printed as the median time since the resign()
call over ``--rounds`` handovers, with the side (R = resigning candidate, S = successor).
Times include the tracing itself (a few µs a step).

``--processes`` (ZooKeeper): the bench's own setup instead, ours against kazoo's ``Election``
side by side: every contender in a process of its own (bench/worker.py with ``BENCH_TRACE=1``),
handovers interleaved, the same kazoo-level points timestamped in both (request handed to
kazoo, written to the socket, reply and watch event read off it, on whichever thread), so each
step of ours stands next to kazoo's. The clock is CLOCK_MONOTONIC, shared by all processes.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
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


# -- one contender per process (bench/worker.py with BENCH_TRACE=1) -----------------------------

#: (monotonic time, label) of this process; bench/worker.py prints and clears it on "dump".
marks: list[tuple[float, str]] = []


def _mark(label: str) -> None:
    marks.append((time.monotonic(), label))


def install_process_marks(kind: str) -> None:
    """Timestamp the kazoo-level points of a handover in this worker process (both kinds: ours
    goes through kazoo too), and the core's or the recipe's own steps."""
    from kazoo.client import KazooClient
    from kazoo.protocol.connection import ConnectionHandler

    call, submit = KazooClient._call, ConnectionHandler._submit
    read_response, read_watch = ConnectionHandler._read_response, ConnectionHandler._read_watch_event

    def _call(self: Any, request: Any, async_object: Any) -> Any:
        _mark(f"{type(request).__name__} handed to kazoo")
        return call(self, request, async_object)

    def _submit(self: Any, request: Any, timeout: Any, xid: Any = None) -> Any:
        op = type(request).__name__
        if op != "Ping":
            _mark(f"{op} written to the socket")
        try:
            return submit(self, request, timeout, xid)
        finally:
            if op != "Ping" and os.environ.get("BENCH_TRACE") == "2":
                _mark(f"{op} sent (socket.send returned)")

    def _read_response(self: Any, header: Any, buffer: Any, offset: Any) -> Any:
        pending = self.client._pending
        if pending:
            _mark(f"{type(pending[0][0]).__name__} reply read")
        return read_response(self, header, buffer, offset)

    def _read_watch_event(self: Any, buffer: Any, offset: Any) -> Any:
        _mark("watch event read")
        return read_watch(self, buffer, offset)

    KazooClient._call = _call
    ConnectionHandler._submit = _submit
    ConnectionHandler._read_response = _read_response
    ConnectionHandler._read_watch_event = _read_watch_event
    if kind == "kazoo":
        from kazoo.recipe.lock import Lock

        wake = Lock._watch_predecessor

        def _watch_predecessor(self: Any, event: Any) -> None:
            _mark("recipe: predecessor watch fired (kazoo's callback thread)")
            wake(self, event)

        Lock._watch_predecessor = _watch_predecessor
        return
    cls = candidate_mod.AsyncCandidate
    lead, set_demoted, resign = cls._lead, cls._set_demoted, cls.resign

    async def traced_lead(self: Any, *a: Any, **k: Any) -> Any:
        _mark("core: elected on the loop (hooks, stream True)")
        return await lead(self, *a, **k)

    def traced_set_demoted(self: Any, term: Any, reason: str) -> None:
        if term is not None or self._term is not None:
            _mark("core: demoted on the loop (hooks, stream False)")
        set_demoted(self, term, reason)

    async def traced_resign(self: Any) -> None:
        _mark("core: resign() running on the loop")
        await resign(self)

    cls._lead = traced_lead  # type: ignore[method-assign]
    cls._set_demoted = traced_set_demoted  # type: ignore[method-assign]
    cls.resign = traced_resign  # type: ignore[method-assign]
    try:
        from leadership_zookeeper import _bridge
    except ImportError:
        return
    settle = _bridge._settle

    def _settle(fut: Any, value: Any, exc: Any) -> None:
        _mark("reply/event reaches the loop")
        settle(fut, value, exc)

    _bridge._settle = _settle
    if os.environ.get("BENCH_TRACE") == "2":  # finer: the steps between the reply and the user
        from leadership import _loop, _util
        from leadership_zookeeper.backend import ZooKeeperBackend

        campaign, put, post = ZooKeeperBackend.campaign, _util.Stream.put, _bridge.post

        async def traced_campaign(self: Any, *a: Any, **k: Any) -> Any:
            term = await campaign(self, *a, **k)
            _mark("backend: campaign returns")
            return term

        def traced_put(self: Any, item: Any) -> None:
            _mark(f"core: stream put {item}")
            put(self, item)

        def traced_post(*a: Any) -> None:
            _mark("kazoo thread posts to the loop")
            post(*a)

        withdraw, loop_call = ZooKeeperBackend.withdraw, _loop.LoopThread.call

        def traced_withdraw(self: Any, *a: Any, **k: Any) -> Any:
            _mark("backend: withdraw called")
            return withdraw(self, *a, **k)

        hold = _loop.LoopThread._hold

        def traced_hold(self: Any) -> bool:
            held = hold(self)
            _mark(f"caller: loop {'held' if held else 'busy'}")
            return held

        _loop.LoopThread._hold = traced_hold  # type: ignore[method-assign]

        def traced_call(self: Any, fn: Any, **k: Any) -> Any:
            _mark("caller: sync call made")

            def traced_fn() -> Any:
                _mark("loop runs the sync call")
                return fn()

            return loop_call(self, traced_fn, **k)

        ZooKeeperBackend.withdraw = traced_withdraw  # type: ignore[method-assign]
        _loop.LoopThread.call = traced_call  # type: ignore[method-assign]
        ZooKeeperBackend.campaign = traced_campaign  # type: ignore[method-assign]
        _util.Stream.put = traced_put  # type: ignore[method-assign]
        _bridge.post = traced_post


def run_processes(url: str, ttl: float, rounds: int, warmup: int = 5) -> None:
    """Ours and kazoo's recipe, one contender per process, handovers interleaved; per step the
    median time since the resign (R = resigning process, S = successor)."""
    import handover

    os_env = tools.env()
    os_env["BENCH_TRACE"] = os.environ.get("BENCH_TRACE", "1")
    tools.env = lambda: os_env  # type: ignore[assignment]
    pairs = {who: handover.Pair(who, url, ttl) for who in ("ours", "kazoo")}
    steps: dict[str, dict[str, list[float]]] = {w: collections.defaultdict(list) for w in pairs}
    totals: dict[str, list[float]] = {w: [] for w in pairs}
    try:
        time.sleep(1.0)
        for p in pairs.values():
            for proc in (p.a, p.b):
                proc.send("dump")
                proc.expect("marks")
        for i in range(warmup + rounds):
            for who in (["ours", "kazoo"] if i % 2 == 0 else ["kazoo", "ours"]):
                pair = pairs[who]
                leader, waiter = pair.leader, pair.waiter
                leader.send("resign")
                t0 = float(leader.expect("resigning"))
                end = float(waiter.expect("elected"))
                pair.leader, pair.waiter = waiter, leader
                time.sleep(0.3)
                found: list[tuple[float, str]] = [(t0, "R  resign (ours: resign() called; kazoo: leader function returns)")]
                found.append((end, "S  elected (user thread)"))
                for side, proc in (("R", leader), ("S", waiter)):
                    proc.send("dump")
                    found += [(t, f"{side}  {label}") for t, label in json.loads(proc.expect("marks"))]
                if i < warmup:
                    continue
                if os.environ.get("BENCH_TRACE_RAW") and who == "ours":
                    for t, label in sorted(found):
                        if t0 - 1e-3 <= t <= end:
                            print(f"    {1000 * (t - t0):7.3f}  {label}")
                    print()
                totals[who].append(end - t0)
                seen: collections.Counter[str] = collections.Counter()
                for t, label in sorted(found):
                    if t > end + 1e-9:
                        break
                    seen[label] += 1
                    steps[who][label if seen[label] == 1 else f"{label} #{seen[label]}"].append(t - t0)
    finally:
        for p in pairs.values():
            p.close()
    for who in pairs:
        print(f"\n{who}: resign → elected p50 {1000 * statistics.median(totals[who]):.2f} ms over {rounds} handovers")
        for label in sorted(steps[who], key=lambda k: statistics.median(steps[who][k])):
            values = steps[who][label]
            if len(values) >= rounds // 2:
                print(f"  {1000 * statistics.median(values):7.2f} ms  {label}  ({len(values)}/{rounds})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", choices=["zookeeper", "etcd", "consul"])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--processes", action="store_true", help="ours vs kazoo, a process per contender")
    args = parser.parse_args()
    ttl = {"zookeeper": 4.0, "etcd": 5.0, "consul": 20.0}[args.store]
    if args.processes:
        if args.store != "zookeeper":
            parser.error("--processes traces ZooKeeper (ours against kazoo's recipe)")
        server = tools.start_server(args.store)
        try:
            run_processes(server.url, ttl, args.rounds)
        finally:
            server.stop()
        return
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
