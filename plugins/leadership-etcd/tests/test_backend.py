"""The etcd backend object against a real etcd server (see conftest.py for which one)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from aetcd import rpc  # type: ignore[import-untyped,unused-ignore]
from aetcd.utils import prefix_range_end  # type: ignore[import-untyped,unused-ignore]

from leadership.backend import Term
from leadership.errors import ConfigurationError, SessionLostError, StoreUnavailableError
from leadership.plugins import get_plugin_manager
from leadership.url import StoreURL
from leadership_etcd import EtcdBackend, EtcdSession
from leadership_etcd._client import EtcdClient

T = TypeVar("T")
KEY = "service/swarm/leader"


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(_with_timeout(coro))


async def _with_timeout(coro: Awaitable[T]) -> T:
    return await asyncio.wait_for(coro, 30)


def make_backend(url: str, prefix: str | None = None) -> EtcdBackend:
    prefix = prefix or f"test-{uuid.uuid4().hex[:10]}/"
    sep = "&" if "?" in url else "?"
    return EtcdBackend(StoreURL.parse(f"{url}{sep}prefix={prefix}"))


@contextlib.asynccontextmanager
async def opened(url: str, prefix: str | None = None) -> AsyncIterator[EtcdBackend]:
    backend = make_backend(url, prefix)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def queue_size(backend: EtcdBackend, key: str) -> int:
    queue = backend._queue(key)
    request = rpc.RangeRequest(key=queue, range_end=prefix_range_end(queue), count_only=True)
    return int((await backend._client.unary("kv", "Range", request)).count)


async def close_idle_stream(backend: EtcdBackend) -> None:
    """Check that no watch is left on the connection's shared watch stream, then close it: it
    stays open a while for the next watch, and apart from it nothing may be left running."""
    stream = backend._client._members[0].stream
    assert stream is not None and stream.watches == 0
    stream.close()
    await asyncio.sleep(0.05)  # grpc's own per-call task finishes on the next turns


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def enqueue(backend: EtcdBackend, session: EtcdSession, key: str, name: str) -> asyncio.Task[Term]:
    """Start a campaign and return once its entry is in the queue (so queue order is known)."""
    before = await queue_size(backend, key)
    task = asyncio.create_task(backend.campaign(session, key, name))

    async def queued() -> bool:
        return task.done() or await queue_size(backend, key) > before

    await until(queued)
    return task


async def keep_refreshing(*sessions: EtcdSession) -> None:
    while True:
        await asyncio.sleep(0.5)
        for s in sessions:
            await s.refresh()


# -- elections ------------------------------------------------------------------------------------
def test_fifo_order_and_increasing_tokens(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            s1, s2, s3 = [await b.create_session(10) for _ in range(3)]
            t1 = await b.campaign(s1, KEY, "one")
            assert t1 == Term(KEY, "one", t1.token)
            c2 = await enqueue(b, s2, KEY, "two")
            c3 = await enqueue(b, s3, KEY, "three")
            await asyncio.sleep(0.2)
            assert not c2.done() and not c3.done()
            await b.withdraw(s1, KEY)
            t2 = await asyncio.wait_for(c2, 5)
            assert t2.leader == "two" and t2.token > t1.token
            assert not c3.done()
            t1b = await enqueue(b, s1, KEY, "one")  # back of the queue, behind three
            await b.withdraw(s2, KEY)
            t3 = await asyncio.wait_for(c3, 5)
            assert t3.leader == "three" and t3.token > t2.token
            await s3.close()
            t4 = await asyncio.wait_for(t1b, 5)
            assert t4.leader == "one" and t4.token > t3.token
            for s in (s1, s2):
                await s.close()

    run(body())


def test_campaign_is_idempotent_per_session(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            s1, s2 = await b.create_session(10), await b.create_session(10)
            t1 = await b.campaign(s1, KEY, "one")
            assert await b.campaign(s1, KEY, "one") == t1
            c2 = await enqueue(b, s2, KEY, "two")
            c2.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await c2
            # A retried campaign keeps its place: still exactly two entries, same order.
            c2 = asyncio.create_task(b.campaign(s2, KEY, "two"))
            await asyncio.sleep(0.2)
            assert await queue_size(b, KEY) == 2 and not c2.done()
            await b.withdraw(s1, KEY)
            t2 = await asyncio.wait_for(c2, 5)
            assert await b.campaign(s2, KEY, "two") == t2
            assert await b.get_leader(KEY) == t2
            await s1.close()
            await s2.close()

    run(body())


def test_withdraw_waiting_entry_lets_the_next_one_move_up(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            s1, s2, s3 = [await b.create_session(10) for _ in range(3)]
            await b.campaign(s1, KEY, "one")
            c2 = await enqueue(b, s2, KEY, "two")
            c3 = await enqueue(b, s3, KEY, "three")
            c2.cancel()
            await asyncio.gather(c2, return_exceptions=True)
            await b.withdraw(s2, KEY)
            await asyncio.sleep(0.2)
            assert not c3.done(), "three must still wait for one"
            await b.withdraw(s1, KEY)
            assert (await asyncio.wait_for(c3, 5)).leader == "three"
            for s in (s1, s2, s3):
                await s.close()

    run(body())


def test_session_close_releases_leadership(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            s1, s2 = await b.create_session(10), await b.create_session(10)
            await b.campaign(s1, KEY, "one")
            c2 = await enqueue(b, s2, KEY, "two")
            await s1.close()
            await s1.close()  # closing twice is fine
            assert (await asyncio.wait_for(c2, 5)).leader == "two"
            with pytest.raises(SessionLostError):
                await s1.refresh()
            with pytest.raises(SessionLostError):
                await b.campaign(s1, KEY, "one")
            await s2.close()
            assert await b.get_leader(KEY) is None

    run(body())


def test_session_expiry_releases_leadership(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            dying = await b.create_session(2)
            s2 = await b.create_session(10)
            await b.campaign(dying, KEY, "one")
            c2 = await enqueue(b, s2, KEY, "two")
            started = time.monotonic()
            assert (await asyncio.wait_for(c2, 6)).leader == "two"
            elapsed = time.monotonic() - started
            assert 1.0 < elapsed < 2.0 + 1.0, f"lease of 2s released after {elapsed:.2f}s"
            with pytest.raises(SessionLostError):
                await dying.refresh()
            await s2.close()

    run(body())


def test_refresh_keeps_the_session_alive(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            s = await b.create_session(2)
            t = await b.campaign(s, KEY, "one")
            refresher = asyncio.create_task(keep_refreshing(s))
            await asyncio.sleep(3.5)
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
            assert await b.get_leader(KEY) == t
            await s.close()

    run(body())


def test_waiting_candidate_whose_session_expired_is_not_elected(etcd_url: str) -> None:
    """The re-check after waiting: the predecessor goes away after our own lease expired."""

    async def body() -> None:
        async with opened(etcd_url) as b:
            s1 = await b.create_session(10)
            dying = await b.create_session(2)
            await b.campaign(s1, KEY, "one")
            c2 = await enqueue(b, dying, KEY, "two")
            await asyncio.sleep(3.0)  # dying's lease expires while it waits
            await b.withdraw(s1, KEY)
            with pytest.raises(SessionLostError):
                await asyncio.wait_for(c2, 5)
            assert await b.get_leader(KEY) is None
            await s1.close()

    run(body())


def test_next_in_line_is_not_elected_when_its_entry_goes_with_the_leaders(etcd_url: str) -> None:
    """The successor next in line learns of its win from its watch alone: an event deleting the
    leader's entry and its own at the same revision must not read as a win."""

    async def body() -> None:
        async with opened(etcd_url) as b:
            s1, s2 = await b.create_session(10), await b.create_session(10)
            await b.campaign(s1, KEY, "one")
            c2 = await enqueue(b, s2, KEY, "two")
            await asyncio.sleep(0.1)
            both = [b._entry(s, KEY)[1] for s in (s1, s2)]
            await b._client.unary("kv", "Txn", rpc.TxnRequest(success=[
                rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=k)) for k in both]))
            with pytest.raises(SessionLostError):
                await asyncio.wait_for(c2, 5)
            await s1.close()
            await s2.close()

    run(body())


def test_cancelled_campaign_leaves_nothing_behind(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            s1, s2 = await b.create_session(10), await b.create_session(10)
            await b.campaign(s1, KEY, "one")
            before = asyncio.all_tasks()
            c2 = await enqueue(b, s2, KEY, "two")
            await asyncio.sleep(0.1)
            c2.cancel()
            with pytest.raises(asyncio.CancelledError):
                await c2
            await b.withdraw(s2, KEY)
            await asyncio.sleep(0.05)
            await close_idle_stream(b)
            assert asyncio.all_tasks() <= before | {asyncio.current_task()}
            assert await queue_size(b, KEY) == 1
            await s1.close()
            await s2.close()

    run(body())


def test_nested_keys_do_not_mix(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            s = await b.create_session(10)
            await b.campaign(s, "a/b", "nested")
            assert await b.get_leader("a") is None
            t = await b.campaign(s, "a", "outer")
            assert (await b.get_leader("a")) == t
            assert (await b.get_leader("a/b")).leader == "nested"  # type: ignore[union-attr]
            await s.close()

    run(body())


# -- observe ------------------------------------------------------------------------------------
def test_observe_reports_changes(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            s1, s2 = await b.create_session(10), await b.create_session(10)
            seen = b.observe(KEY)
            assert await anext(seen) is None
            t1 = await b.campaign(s1, KEY, "one")
            assert await asyncio.wait_for(anext(seen), 5) == t1
            c2 = await enqueue(b, s2, KEY, "two")
            await b.withdraw(s1, KEY)
            t2 = await asyncio.wait_for(c2, 5)
            assert await asyncio.wait_for(anext(seen), 5) == t2
            await s2.close()
            assert await asyncio.wait_for(anext(seen), 5) is None
            await seen.aclose()  # type: ignore[attr-defined]
            await s1.close()

    run(body())


def test_observe_starts_with_the_current_leader_and_cancels_cleanly(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            s = await b.create_session(10)
            t = await b.campaign(s, KEY, "one")
            before = asyncio.all_tasks()
            got: list[Term | None] = []

            async def follow() -> None:
                async for term in b.observe(KEY):
                    got.append(term)

            task = asyncio.create_task(follow())
            await until(lambda: _true(bool(got)))
            assert got == [t]
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.sleep(0.05)  # grpc's own per-call task finishes on the next turns
            await close_idle_stream(b)
            assert asyncio.all_tasks() <= before | {asyncio.current_task()}
            await s.close()

    run(body())


async def _true(value: bool) -> bool:
    return value


# -- request economy ----------------------------------------------------------------------------
def test_handover_costs_constant_requests(etcd_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[str] = []
    unary, watch = EtcdClient.unary, EtcdClient.watch

    async def counting_unary(self: EtcdClient, service: str, method: str, *args: Any, **kw: Any) -> Any:
        counted.append(method)
        return await unary(self, service, method, *args, **kw)

    def counting_watch(self: EtcdClient, create: Any) -> Any:
        counted.append("Watch")
        return watch(self, create)

    monkeypatch.setattr(EtcdClient, "unary", counting_unary)
    monkeypatch.setattr(EtcdClient, "watch", counting_watch)

    async def body() -> None:
        async with opened(etcd_url) as b:
            leader = await b.create_session(30)
            await b.campaign(leader, KEY, "leader")
            waiters = [await b.create_session(30) for _ in range(20)]
            tasks = [await enqueue(b, s, KEY, f"w{i}") for i, s in enumerate(waiters)]
            await asyncio.sleep(0.3)
            counted.clear()
            await b.withdraw(leader, KEY)
            assert (await asyncio.wait_for(tasks[0], 5)).leader == "w0"
            await asyncio.sleep(0.3)
            # w0 was next in line when it queued: its watch alone proves the win.
            assert counted == ["DeleteRange"], counted
            assert not any(t.done() for t in tasks[1:])
            counted.clear()
            await b.withdraw(waiters[0], KEY)
            assert (await asyncio.wait_for(tasks[1], 5)).leader == "w1"
            await asyncio.sleep(0.3)
            # w1 queued behind w0, not next in line: one read proves it leads.
            assert counted == ["DeleteRange", "Txn"], counted
            assert not any(t.done() for t in tasks[2:])
            for t in tasks[2:]:
                t.cancel()
            await asyncio.gather(*tasks[2:], return_exceptions=True)
            for s in [leader, *waiters]:
                await s.close()

    run(body())


# -- sessions and ttl -------------------------------------------------------------------------------
def test_ttl_mapping(etcd_url: str) -> None:
    assert EtcdBackend.min_ttl == 2.0

    async def body() -> None:
        async with opened(etcd_url) as b:
            for ttl, granted in [(2, 2), (2.9, 2), (3, 3), (7.5, 7)]:
                s = await b.create_session(ttl)
                assert isinstance(s, EtcdSession)
                assert s.ttl == ttl and s.guaranteed == granted
                assert s.refresh_interval == pytest.approx(granted / 3)
                assert int(s.id, 16) == s.lease_id
                await s.refresh()
                await s.close()

    run(body())


def test_ping_identifies_the_cluster(etcd_url: str) -> None:
    async def body() -> None:
        async with opened(etcd_url) as b:
            first = await b.ping()
            assert first == await b.ping()
            assert isinstance(first, tuple)

    run(body())


def test_failover_to_a_live_endpoint(etcd_url: str) -> None:
    live = etcd_url.split("://", 1)[1].split("?")[0].split(",")[0]

    async def body() -> None:
        async with opened(f"etcd://127.0.0.1:1,{live}") as b:
            s = await b.create_session(5)
            assert (await b.campaign(s, KEY, "one")).leader == "one"
            await s.close()

    run(body())


def test_open_unreachable_is_transient() -> None:
    async def body() -> None:
        b = EtcdBackend(StoreURL.parse("etcd://127.0.0.1:1?timeout=1"))
        with pytest.raises(StoreUnavailableError):
            await b.open()
        await b.close()

    run(body())


# -- URLs -----------------------------------------------------------------------------------------
def test_registered_by_entry_point() -> None:
    from leadership.plugins import backend_registry

    info = backend_registry(get_plugin_manager()).get("etcd")
    assert info is not None and info.factory is EtcdBackend


def test_url_defaults_and_options(tmp_path: Any) -> None:
    b = EtcdBackend(StoreURL.parse("etcd://"))
    assert b._client.current_target == "127.0.0.1:2379" and b.prefix == "leadership/" and b.timeout == 2.0
    b = EtcdBackend(StoreURL.parse("etcd://h1,h2:1234,[::1]?timeout=2.5s&prefix=app"))
    assert [m.target for m in b._client._members] == ["h1:2379", "h2:1234", "[::1]:2379"]
    assert b.prefix == "app/" and b.timeout == 2.5
    assert EtcdBackend(StoreURL.parse("etcd://h?prefix=")).prefix == ""
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    assert EtcdBackend(StoreURL.parse(f"etcd://h?ca_cert={ca}")).tls
    assert EtcdBackend(StoreURL.parse("etcd://h?tls=true")).tls
    b = EtcdBackend(StoreURL.parse("etcd://user:p%40ss@h"))
    assert (b._client._username, b._client._password) == ("user", "p@ss")
    assert "p@ss" not in repr(b) and "p%40ss" not in repr(b)


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("etcd://h?colour=red", "colour"),
        ("etcd://h?timeout=0", "timeout"),
        ("etcd://h?timeout=soon", "timeout"),
        ("etcd://h?tls=maybe", "tls"),
        ("etcd://h?prefix=a%23b", "prefix"),
        ("etcd://h?ca_cert=/nonexistent/ca.pem", "ca_cert"),
        ("etcd://h?client_cert=/nonexistent/c.pem", "client_cert"),
        ("etcd://h:99999", "port"),
        ("etcd://h:2379/some/path", "prefix"),
        ("etcd://user@h", "password"),
        ("etcd://h1,,h2", "empty host"),
    ],
)
def test_bad_urls(url: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        EtcdBackend(StoreURL.parse(url))


def test_tls_conflicts(tmp_path: Any) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigurationError, match="tls=false"):
        EtcdBackend(StoreURL.parse(f"etcd://h?tls=false&ca_cert={cert}"))
    with pytest.raises(ConfigurationError, match="together"):
        EtcdBackend(StoreURL.parse(f"etcd://h?client_cert={cert}"))
