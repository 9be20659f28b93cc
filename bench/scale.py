"""Many elections in one process on one store connection ("one leader per shard").

    python bench/scale.py [zookeeper etcd consul] [--elections 10000] [--burst 1000] [--json scale-results.json]

Per store, in a fresh process: connection A campaigns for ``--elections`` keys (all must win;
started ``--ramp`` at a time, each batch elected before the next starts);
connection B, in the same process, campaigns for the first ``--burst`` of them (all must wait).
Measured: time to elect all, memory per election (RSS), CPU and store requests per second while
idle, TCP connections to the store, then a burst: A resigns ``--burst`` keys at once and B must
win every one (time, CPU, requests). Every outcome is checked on each candidate and against a
read of every key's leader from the store (``get_leader``), not assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import tools  # noqa: E402

TTL = {"zookeeper": 20.0, "etcd": 20.0, "consul": 40.0}


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def tcp_connections(port: int) -> int:
    """Established TCP connections of this process to ``port``."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    remote_port = int(parts[2].rsplit(":", 1)[1], 16)
                    if remote_port == port and parts[3] == "01" and parts[9] in inodes:
                        count += 1
        except OSError:
            pass
    return count


async def gather_chunked(coros: list[Any], chunk: int = 500) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(coros), chunk):
        out += await asyncio.gather(*coros[i : i + chunk])
    return out


async def read_leader(backend: Any, key: str) -> Any:
    """The store's view of ``key``'s leader, read again after a transient error."""
    from leadership.errors import StoreUnavailableError

    for attempt in range(10):
        try:
            return await backend.get_leader(key)
        except StoreUnavailableError:
            await asyncio.sleep(0.1 * (attempt + 1))
    return await backend.get_leader(key)


async def run_store(
    store: str, url: str, port: int, elections: int, burst: int, ramp: int, counter: Any
) -> dict[str, Any]:
    import leadership.aio as aio

    ttl = TTL[store]
    prefix = f"scale-{uuid.uuid4().hex[:6]}"
    keys = [f"{prefix}/{i}" for i in range(elections)]
    result: dict[str, Any] = {"store": store, "elections": elections, "burst": burst, "ramp": ramp, "ttl": ttl}
    rss0 = rss_mib()
    a = await aio.connect(url)
    b = await aio.connect(url)
    cpu0, t0 = time.process_time(), time.monotonic()
    leaders: list[Any] = []
    for i in range(0, elections, ramp):  # started ``ramp`` at a time, each batch elected before the next
        batch = [aio.Candidate(a, k, "a", ttl=ttl) for k in keys[i : i + ramp]]
        leaders += batch
        await asyncio.gather(*(c.wait_elected(600) for c in batch))
    result["time_to_elect_all_s"] = round(time.monotonic() - t0, 2)
    result["cpu_electing_s"] = round(time.process_time() - cpu0, 2)
    waiters = [aio.Candidate(b, k, "b", ttl=ttl) for k in keys[:burst]]
    for w in waiters:
        w.run_for_election()
    await asyncio.sleep(max(3.0, burst / 500))  # queued behind A
    result["rss_mib"] = round(rss_mib(), 1)
    result["rss_per_election_kib"] = round(1024 * (rss_mib() - rss0) / (elections + burst), 1)
    result["store_sessions"] = {"A": a.session_count(), "B": b.session_count()}
    result["tcp_connections_to_store"] = tcp_connections(port)
    if hasattr(a.backend, "long_polls"):  # Consul: blocking queries open, per connection
        result["long_polls"] = {"A": a.backend.long_polls, "B": b.backend.long_polls}

    # Checked: every A candidate leads, every B candidate waits, and the store agrees for every key.
    bad_a = [c.key for c in leaders if not c.is_leader]
    bad_b = [w.key for w in waiters if w.is_leader]
    terms = await gather_chunked([read_leader(b.backend, k) for k in keys])
    bad_store = [k for k, t in zip(keys, terms, strict=True) if t is None or t.leader != "a"]
    result["check_before_burst"] = {"a_not_leading": len(bad_a), "b_leading": len(bad_b), "store_disagrees": len(bad_store)}

    # Idle: CPU and store requests per second.
    idle = 10.0
    c0, r0, t0 = time.process_time(), counter(), time.monotonic()
    await asyncio.sleep(idle)
    c1, r1, t1 = time.process_time(), counter(), time.monotonic()
    result["idle_cpu_percent"] = round(100 * (c1 - c0) / (t1 - t0), 2)
    result["idle_requests_per_s"] = round((r1 - r0) / (t1 - t0), 1) if r0 is not None and r1 is not None else None

    # Burst: A resigns the first ``burst`` keys at once; B must win every one of them.
    c0, r0, t0 = time.process_time(), counter(), time.monotonic()
    await gather_chunked([c.resign() for c in leaders[:burst]], chunk=burst)
    await gather_chunked([w.wait_elected(600) for w in waiters])
    t1 = time.monotonic()
    await asyncio.sleep(1.0)  # resigners queue again
    c1, r1, t2 = time.process_time(), counter(), time.monotonic()
    result["burst_time_s"] = round(t1 - t0, 2)
    result["burst_cpu_percent"] = round(100 * (c1 - c0) / (t2 - t0), 1)
    result["burst_requests"] = (r1 - r0) if r0 is not None and r1 is not None else None
    result["burst_requests_per_s"] = round((r1 - r0) / (t2 - t0), 1) if r0 is not None and r1 is not None else None
    bad_b = [w.key for w in waiters if not w.is_leader]
    bad_a = [c.key for c in leaders[:burst] if c.is_leader] + [c.key for c in leaders[burst:] if not c.is_leader]
    terms = await gather_chunked([read_leader(a.backend, k) for k in keys])
    expected = ["b"] * burst + ["a"] * (elections - burst)
    bad_store = [k for k, t, e in zip(keys, terms, expected, strict=True) if t is None or t.leader != e]
    result["check_after_burst"] = {"b_not_leading": len(bad_b), "a_wrong": len(bad_a), "store_disagrees": len(bad_store)}
    result["tcp_connections_after_burst"] = tcp_connections(port)
    t0 = time.monotonic()
    await b.close()
    await a.close()
    result["close_s"] = round(time.monotonic() - t0, 2)
    return result


def child(store: str, url: str, elections: int, burst: int, ramp: int) -> None:
    server = tools.server_handle(store, url)
    port = int(url.split("://", 1)[1].split("/")[0].split("?")[0].rsplit(":", 1)[1])
    result = asyncio.run(run_store(store, url, port, elections, burst, ramp, server.request_count))
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stores", nargs="*", default=["zookeeper", "etcd", "consul"])
    parser.add_argument("--elections", type=int, default=10_000)
    parser.add_argument("--burst", type=int, default=1_000)
    parser.add_argument("--ramp", type=int, default=1_000, help="elections started at a time")
    parser.add_argument("--json", default="scale-results.json")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per store before giving up")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.elections, args.burst, args.ramp)
        return
    results = []
    for store in args.stores:
        server = tools.start_server(store)
        try:
            print(f"{store}: {server.url}, {args.elections} elections (load average {os.getloadavg()[0]:.2f})", flush=True)
            try:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", store, server.url, "--elections", str(args.elections),
                     "--burst", str(args.burst), "--ramp", str(args.ramp)],
                    capture_output=True, text=True, env=tools.env(), timeout=args.timeout,
                )
            except subprocess.TimeoutExpired as exc:
                err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else str(exc.stderr or "")
                print(f"  not done within {args.timeout:g}s; last log lines:\n{err[-1500:]}", file=sys.stderr)
                results.append({"store": store, "error": f"timeout after {args.timeout:g}s"})
                continue
            if out.returncode != 0:
                print(out.stderr[-3000:], file=sys.stderr)
                results.append({"store": store, "error": out.stderr[-500:]})
                continue
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["loadavg"] = os.getloadavg()
            results.append(result)
            for k, v in result.items():
                print(f"  {k}: {v}")
        finally:
            server.stop()
    Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"raw results: {args.json}")


if __name__ == "__main__":
    main()
