"""Watches multiplexed on one gRPC Watch stream, against real etcd servers: the sharing is
counted by the server itself (/metrics), a broken stream resumes every watch without a missed
event, and cancelling one watch leaves the others alone."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aetcd import rpc  # type: ignore[import-untyped,unused-ignore]

from leadership.errors import StoreUnavailableError
from leadership.url import StoreURL
from leadership_etcd import EtcdBackend
from leadership_etcd._client import CompactedError, EtcdClient

from .local_etcd import ETCD, LocalCluster, retrying


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[EtcdBackend]:
    backend = EtcdBackend(StoreURL.parse(url))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


def metrics(endpoint: str) -> dict[str, float]:
    """The server's unlabelled gauges and counters from /metrics on its client port."""
    with urllib.request.urlopen(f"http://{endpoint}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.partition(" ")
            values[name] = float(value)
    return values


def watches_at(endpoint: str) -> tuple[float, float]:
    """(gRPC watch streams, watchers) open at the server now."""
    m = metrics(endpoint)
    return m["etcd_debugging_mvcc_watch_stream_total"], m["etcd_debugging_mvcc_watcher_total"]


async def put(client: EtcdClient, key: bytes, value: bytes) -> int:
    response = await client.unary("kv", "Put", rpc.PutRequest(key=key, value=value))
    return int(response.header.revision)


async def collect_all(watches: list[Any], seen: list[list[tuple[bytes, int]]], count: int) -> None:
    await asyncio.wait_for(asyncio.gather(*(collect(w, s, count) for w, s in zip(watches, seen, strict=True))), 20)


async def collect(watch: Any, into: list[tuple[bytes, int]], count: int) -> None:
    while len(into) < count:
        for event in (await watch.next()).events:
            into.append((bytes(event.kv.value), int(event.kv.mod_revision)))


def test_many_watches_share_one_stream(etcd_url: str) -> None:
    endpoint = etcd_url.removeprefix("etcd://").split("?")[0]
    n = 1000

    async def body() -> None:
        async with opened(etcd_url) as b, contextlib.AsyncExitStack() as stack:
            client = b._client
            prefix = f"mux-{uuid.uuid4().hex[:8]}/".encode()
            keys = [prefix + b"%d" % i for i in range(n)]
            start = max(await asyncio.gather(*(put(client, k, b"") for k in keys))) + 1
            streams, watchers = watches_at(endpoint)
            # All created at once: the creates are pipelined on the one stream.
            watches = await asyncio.gather(*(
                stack.enter_async_context(client.watch(rpc.WatchCreateRequest(
                    key=k, start_revision=start)))
                for k in keys
            ))
            assert watches_at(endpoint) == (streams + 1, watchers + n)
            # One request deleting every key at one revision: each watch gets its own event only.
            end = prefix[:-1] + bytes([prefix[-1] + 1])
            deleted = await client.unary("kv", "DeleteRange", rpc.DeleteRangeRequest(key=prefix, range_end=end))
            assert deleted.deleted == n
            for key, watch in zip(keys, watches, strict=True):
                events = (await asyncio.wait_for(watch.next(), 10)).events
                assert [(e.type, bytes(e.kv.key)) for e in events] == [(rpc.Event.DELETE, key)]
        # Leaving cancelled every watch at the server, and closing ended the stream.
        for _ in range(50):
            if watches_at(endpoint) == (streams, watchers):
                break
            await asyncio.sleep(0.1)
        assert watches_at(endpoint) == (streams, watchers)

    asyncio.run(asyncio.wait_for(body(), 60))


def test_cancelling_one_watch_leaves_the_others(etcd_url: str) -> None:
    endpoint = etcd_url.removeprefix("etcd://").split("?")[0]

    async def body() -> None:
        async with opened(etcd_url) as b:
            client = b._client
            prefix = f"mux-{uuid.uuid4().hex[:8]}/".encode()
            start = await put(client, prefix + b"start", b"") + 1
            streams, watchers = watches_at(endpoint)
            keys = [prefix + k for k in (b"a", b"b", b"c")]
            async with client.watch(rpc.WatchCreateRequest(key=keys[0], start_revision=start)) as a, \
                    client.watch(rpc.WatchCreateRequest(key=keys[2], start_revision=start)) as c:
                async with client.watch(rpc.WatchCreateRequest(key=keys[1], start_revision=start)) as gone:
                    waiting = asyncio.create_task(gone.next())
                    await asyncio.sleep(0.1)
                    assert watches_at(endpoint) == (streams + 1, watchers + 3)
                    waiting.cancel()
                    with pytest.raises(asyncio.CancelledError):
                        await waiting
                # The one watch is cancelled at the server; the stream and the others stay.
                for _ in range(50):
                    if watches_at(endpoint) == (streams + 1, watchers + 2):
                        break
                    await asyncio.sleep(0.1)
                assert watches_at(endpoint) == (streams + 1, watchers + 2)
                for key in keys:
                    await put(client, key, b"v")
                for watch, key in ((a, keys[0]), (c, keys[2])):
                    events = (await asyncio.wait_for(watch.next(), 5)).events
                    assert [bytes(e.kv.key) for e in events] == [key]

    asyncio.run(asyncio.wait_for(body(), 30))


@pytest.mark.skipif(ETCD is None, reason="needs the etcd binary (apt-get install etcd-server)")
def test_broken_stream_resumes_every_watch_without_a_missed_event() -> None:
    """The member carrying the stream stops (frozen, then killed) after events it never sent:
    every watch is created again on another member from the revision after its last event,
    and sees those events, once each, in order."""
    cluster = LocalCluster(3)
    n = 50
    try:
        async def body() -> None:
            leader = cluster.leader_endpoint()
            follower = next(m for m in cluster.members if m.endpoint != leader)
            async with opened(cluster.url) as b, opened(f"etcd://{leader}") as writer:
                client = b._client
                client._current = [m.target for m in client._members].index(follower.endpoint)
                prefix = f"mux-{uuid.uuid4().hex[:8]}/".encode()
                start = await retrying(lambda: put(client, prefix + b"start", b"")) + 1
                keys = [prefix + b"%d" % i for i in range(n)]
                seen: list[list[tuple[bytes, int]]] = [[] for _ in keys]
                async with contextlib.AsyncExitStack() as stack:
                    watches = [await stack.enter_async_context(
                        client.watch(rpc.WatchCreateRequest(key=k, start_revision=start))) for k in keys]
                    stream = client._members[client._current].stream
                    assert stream is not None and stream.watches == n
                    first = [await put(writer._client, k, b"1") for k in keys]
                    await collect_all(watches, seen, 1)
                    follower.freeze()  # it applies nothing more and sends nothing more
                    second = [await put(writer._client, k, b"2") for k in keys]
                    follower.kill()
                    await collect_all(watches, seen, 2)
                    assert stream.dead
                    resumed = client._members[client._current].stream
                    assert resumed is not None and resumed is not stream and resumed.watches == n
                    assert client.current_target != follower.endpoint
                    third = [await put(writer._client, k, b"3") for k in keys]
                    await collect_all(watches, seen, 3)
                for i in range(n):
                    assert seen[i] == [(b"1", first[i]), (b"2", second[i]), (b"3", third[i])], i

        asyncio.run(asyncio.wait_for(body(), 90))
    finally:
        cluster.stop()


def test_a_successor_next_in_line_keeps_its_watch_for_wait_replaced(etcd_url: str, monkeypatch: Any) -> None:
    """The watch that showed the successor its win is the one that later shows it replaced: no
    new watch after a win, and nothing left at the server once the term is over."""
    endpoint = etcd_url.removeprefix("etcd://").split("?")[0]
    created: list[Any] = []
    watch = EtcdClient.watch

    def counting_watch(self: EtcdClient, create: Any) -> Any:
        created.append(create)
        return watch(self, create)

    monkeypatch.setattr(EtcdClient, "watch", counting_watch)

    async def body() -> None:
        key = f"armed-{uuid.uuid4().hex[:8]}"
        async with opened(etcd_url) as b:
            s1, s2 = await b.create_session(10), await b.create_session(10)
            _, watchers = watches_at(endpoint)
            await b.campaign(s1, key, "one")
            waiting = asyncio.create_task(b.campaign(s2, key, "two"))
            await asyncio.sleep(0.2)
            assert len(created) == 1 and watches_at(endpoint)[1] == watchers + 1
            await b.withdraw(s1, key)
            term = await asyncio.wait_for(waiting, 5)
            replaced = asyncio.create_task(b.wait_replaced(s2, key, term))
            await asyncio.sleep(0.2)
            assert not replaced.done()
            assert len(created) == 1 and watches_at(endpoint)[1] == watchers + 1  # the same one
            await b.withdraw(s2, key)
            await asyncio.wait_for(replaced, 5)
            for _ in range(50):
                if watches_at(endpoint)[1] == watchers:
                    break
                await asyncio.sleep(0.1)
            assert watches_at(endpoint)[1] == watchers
            await s1.close()
            await s2.close()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_compacted_start_revision_fails_only_that_watch(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            client = b._client
            prefix = f"mux-{uuid.uuid4().hex[:8]}/".encode()
            old = await put(client, prefix + b"a", b"1")
            now = await put(client, prefix + b"a", b"2")
            await client.unary("kv", "Compact", rpc.CompactionRequest(revision=now, physical=True))
            async with client.watch(rpc.WatchCreateRequest(key=prefix + b"b", start_revision=now + 1)) as other:
                async with client.watch(rpc.WatchCreateRequest(key=prefix + b"a", start_revision=old)) as gone:
                    with pytest.raises(CompactedError) as caught:
                        await asyncio.wait_for(gone.next(), 5)
                    assert caught.value.compact_revision == now
                await put(client, prefix + b"b", b"v")
                events = (await asyncio.wait_for(other.next(), 5)).events
                assert [bytes(e.kv.key) for e in events] == [prefix + b"b"]

    asyncio.run(asyncio.wait_for(body(), 30))


@pytest.mark.skipif(ETCD is None, reason="needs the etcd binary (apt-get install etcd-server)")
def test_a_frozen_member_fails_a_new_watch_in_time_and_the_others_resume_after() -> None:
    """A create that the stream's member never answers fails after the timeout, and the stream
    is given up; the watch already confirmed is resumed and sees what happened meanwhile."""
    cluster = LocalCluster(1)
    try:
        async def body() -> None:
            async with opened(cluster.url + "?timeout=1") as b:
                client = b._client
                prefix = f"mux-{uuid.uuid4().hex[:8]}/".encode()
                start = await retrying(lambda: put(client, prefix + b"start", b"")) + 1
                async with client.watch(rpc.WatchCreateRequest(key=prefix + b"a", start_revision=start)) as first:
                    stream = client._members[0].stream
                    cluster.freeze()
                    try:
                        began = time.monotonic()
                        with pytest.raises(StoreUnavailableError, match="not confirmed within 1s"):
                            async with client.watch(rpc.WatchCreateRequest(key=prefix + b"b", start_revision=start)):
                                pass
                        assert time.monotonic() - began < 3.0
                        assert stream is not None and stream.dead
                    finally:
                        cluster.thaw()
                    revision = await retrying(lambda: put(client, prefix + b"a", b"v"))
                    events = (await asyncio.wait_for(first.next(), 20)).events
                    assert [(bytes(e.kv.key), int(e.kv.mod_revision)) for e in events] == [(prefix + b"a", revision)]

        asyncio.run(asyncio.wait_for(body(), 60))
    finally:
        cluster.stop()
