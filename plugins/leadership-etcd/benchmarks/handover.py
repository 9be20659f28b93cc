"""Graceful handover latency and store requests per handover, on the backend object.

    python benchmarks/handover.py etcd://127.0.0.1:2379 [runs] [waiters]

Latency: the leader's withdraw() is sent → the next candidate's campaign() returns (p50/p90
over ``runs`` handovers). Requests: every request and watch the backend sends during one
handover with ``waiters`` candidates queued (all in this process, one session each), and the
server's own count of gRPC messages received (``grpc_server_msg_received_total``) when its
/metrics endpoint is reachable over plain HTTP.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
import urllib.request
import uuid
from typing import Any

from leadership.url import StoreURL
from leadership_etcd import EtcdBackend
from leadership_etcd._client import EtcdClient


def server_messages(url: str) -> float | None:
    host = url.split("://", 1)[1].split("?")[0].split(",")[0].rpartition("@")[2]
    try:
        with urllib.request.urlopen(f"http://{host}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("grpc_server_msg_received_total"))


async def latency(url: str, runs: int) -> list[float]:
    b = EtcdBackend(StoreURL.parse(f"{url}?prefix=bench-{uuid.uuid4().hex[:8]}/"))
    await b.open()
    a, c = await b.create_session(30), await b.create_session(30)
    samples = []
    leader, waiter = a, c
    await b.campaign(leader, "k", "x")
    for _ in range(runs):
        task = asyncio.create_task(b.campaign(waiter, "k", "x"))
        await asyncio.sleep(0.02)  # queued and watching
        t0 = time.perf_counter()
        await b.withdraw(leader, "k")
        await task
        samples.append(time.perf_counter() - t0)
        leader, waiter = waiter, leader
    await a.close()
    await c.close()
    await b.close()
    return samples


async def requests(url: str, waiters: int) -> tuple[list[str], float | None]:
    sent: list[str] = []
    unary, watch = EtcdClient.unary, EtcdClient.watch

    async def counting_unary(self: EtcdClient, service: str, method: str, *a: Any, **kw: Any) -> Any:
        sent.append(method)
        return await unary(self, service, method, *a, **kw)

    def counting_watch(self: EtcdClient, create: Any) -> Any:
        sent.append("Watch")
        return watch(self, create)

    EtcdClient.unary, EtcdClient.watch = counting_unary, counting_watch  # type: ignore[method-assign]
    b = EtcdBackend(StoreURL.parse(f"{url}?prefix=bench-{uuid.uuid4().hex[:8]}/"))
    await b.open()
    sessions = [await b.create_session(60) for _ in range(waiters + 1)]
    await b.campaign(sessions[0], "k", "leader")
    tasks = []
    for i, s in enumerate(sessions[1:]):  # one at a time, so the queue order is known
        tasks.append(asyncio.create_task(b.campaign(s, "k", f"w{i}")))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)
    sent.clear()
    before = server_messages(url)
    await b.withdraw(sessions[0], "k")
    await asyncio.wait_for(tasks[0], 10)
    await asyncio.sleep(0.5)
    assert not any(t.done() for t in tasks[1:]), "only the next candidate may wake"
    after = server_messages(url)
    counted = list(sent)
    for t in tasks[1:]:
        t.cancel()
    await asyncio.gather(*tasks[1:], return_exceptions=True)
    for s in sessions:
        await s.close()
    await b.close()
    EtcdClient.unary, EtcdClient.watch = unary, watch  # type: ignore[method-assign]
    return counted, (after - before if before is not None and after is not None else None)


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "etcd://127.0.0.1:2379"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    waiters = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    samples = asyncio.run(latency(url, runs))
    qs = statistics.quantiles(samples, n=10)
    print(f"handover latency over {runs} runs: p50 {1000 * statistics.median(samples):.2f} ms, "
          f"p90 {1000 * qs[8]:.2f} ms, min {1000 * min(samples):.2f} ms")
    counted, server = asyncio.run(requests(url, waiters))
    print(f"one handover with {waiters} waiters: client requests {counted} ({len(counted)}); "
          f"server gRPC messages received: {server}")


if __name__ == "__main__":
    main()
