"""The Consul backend object against a real Consul agent.

The server comes from ``leadership_conformance.servers.server_for("consul")``: the agent named by
``LEADERSHIP_TEST_CONSUL_URL`` (e.g. ``consul://127.0.0.1:8500``) if set, else a container.
Tests of URL parsing and error mapping need no server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from leadership.backend import Session, Term
from leadership.errors import (
    AuthenticationError,
    ConfigurationError,
    PermanentStoreError,
    SessionLostError,
    StoreUnavailableError,
)
from leadership.url import StoreURL
from leadership_consul import ConsulBackend, ConsulSession
from leadership_consul.backend import _Response

T = TypeVar("T")
TTL = 20.0


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def make(url: str) -> ConsulBackend:
    return ConsulBackend(StoreURL.parse(url))


@pytest.fixture(scope="module")
def consul_url() -> Iterator[str]:
    from leadership_conformance.servers import server_for

    server = server_for("consul")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def key() -> str:
    return f"test/backend-{uuid.uuid4().hex[:12]}"


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[ConsulBackend]:
    backend = make(url)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def entries(backend: ConsulBackend, key: str) -> list[str]:
    """The KV keys this election holds, relative to the election key."""
    base, _, _ = backend._keys(key)
    _, found = await backend._get(base, recurse=True)
    return sorted(e.key[len(base) - 2 :] for e in found)


async def waiting(task: asyncio.Task[Any], seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)
    assert not task.done(), task


async def three_in_line(
    b: ConsulBackend, key: str
) -> tuple[tuple[Session, Session, Session], Term, asyncio.Task[Term], asyncio.Task[Term]]:
    """Sessions one, two, three queued for ``key`` in that order: one leads, two and three wait."""
    s1, s2, s3 = [await b.create_session(TTL) for _ in range(3)]
    term = await b.campaign(s1, key, "one")
    t2 = asyncio.create_task(b.campaign(s2, key, "two"))
    await waiting(t2, 0.1)
    t3 = asyncio.create_task(b.campaign(s3, key, "three"))
    await waiting(t3)
    return (s1, s2, s3), term, t2, t3


# -- URL and options: no server needed -----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("consul://127.0.0.1:8500,127.0.0.2:8500", "exactly one"),
        ("consul://127.0.0.1:8500?scheme=ftp", "scheme"),
        ("consul://127.0.0.1:8500?consistency=sometimes", "consistency"),
        ("consul://127.0.0.1:8500?timeout=-1", "timeout"),
        ("consul://127.0.0.1:8500?timeout=soon", "timeout"),
        ("consul://127.0.0.1:8500?wait=0.5", "wait"),
        ("consul://127.0.0.1:8500?wait=601", "wait"),
        ("consul://127.0.0.1:8500?token=", "token"),
        ("consul://127.0.0.1:8500?dc=a%20b", "dc"),
        ("consul://127.0.0.1:8500?bogus=1", "bogus"),
        ("consul://user:secret@127.0.0.1:8500", "token"),
        ("consul://127.0.0.1:8500/bad~prefix", "prefix"),
        ("consul://127.0.0.1:8500/a/../b", "prefix"),
        ("consul://127.0.0.1:8500?verify=false", "https"),
        ("consul://127.0.0.1:8500?scheme=https&key=/k.pem", "cert"),
        ("consul://127.0.0.1:99999", "port"),
    ],
)
def test_bad_url_raises_configuration_error(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        make(url)


def test_good_urls() -> None:
    b = make("consul://")
    assert (b._host, b._port, b._scheme, b._prefix) == ("127.0.0.1", 8500, "http", "")
    b = make("consul://agent.local")
    assert (b._host, b._port) == ("agent.local", 8500)
    b = make("consul://[::1]?scheme=https&verify=false&dc=dc1&consistency=stale&timeout=2.5s&wait=30&token=t0k")
    assert (b._host, b._port, b._scheme, b._verify, b._dc) == ("::1", 8501, "https", False, "dc1")
    assert (b._consistency, b._timeout, b._wait, b._token) == ("stale", 2.5, 30.0, "t0k")
    b = make("consul://127.0.0.1:8500/apps/my-app/?scheme=https&verify=/etc/ca.pem&cert=/c.pem&key=/k.pem")
    assert (b._prefix, b._verify, b._cert) == ("apps/my-app/", "/etc/ca.pem", ("/c.pem", "/k.pem"))
    assert b._keys("svc/leader") == (
        "apps/my-app/svc/leader/~",
        "apps/my-app/svc/leader/~leader",
        "apps/my-app/svc/leader/~queue/",
    )


def test_token_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", "from-env")
    assert make("consul://127.0.0.1:8500")._token == "from-env"
    assert make("consul://127.0.0.1:8500?token=explicit")._token == "explicit"


def test_ttl_limits() -> None:
    # Consul refuses session TTLs below 10 s and invalidates up to 2x TTL late: ttl = 2 x TTL.
    assert ConsulBackend.min_ttl == 20.0
    assert ConsulBackend.max_ttl == 2 * 86400.0


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (500, StoreUnavailableError),  # e.g. "No cluster leader" during Consul's own election
        (502, StoreUnavailableError),
        (429, StoreUnavailableError),
        (403, AuthenticationError),
        (401, AuthenticationError),
        (400, PermanentStoreError),
        (404, PermanentStoreError),
    ],
)
def test_http_status_mapping(code: int, error: type[Exception]) -> None:
    with pytest.raises(error, match=str(code)):
        make("consul://")._check(_Response(code, {}, "No cluster leader"), "do something")


def test_plugin_registers_consul_scheme() -> None:
    from leadership.plugins import backend_registry, get_plugin_manager

    info = backend_registry(get_plugin_manager()).get("consul")
    assert info is not None and info.factory is ConsulBackend


def test_unreachable_agent_is_store_unavailable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        backend = make(f"consul://127.0.0.1:{port}?timeout=2")
        try:
            with pytest.raises(StoreUnavailableError, match=str(port)):
                await backend.open()
            with pytest.raises(StoreUnavailableError):
                await backend.get_leader("k")
        finally:
            await backend.close()

    run(main())


# -- against the agent -----------------------------------------------------------------------------


def test_ping_and_ttl_mapping(consul_url: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            assert isinstance(await b.ping(), str)
            for ttl, session_ttl in [(20.0, 10.0), (25.0, 12.5), (61.0, 30.5)]:
                s = await b.create_session(ttl)
                assert isinstance(s, ConsulSession)
                assert (s.ttl, s.session_ttl, s.guaranteed) == (ttl, session_ttl, session_ttl)
                assert s.refresh_interval == pytest.approx(session_ttl / 3)
                response = await b._request("GET", f"/v1/session/info/{s.id}")
                (info,) = json.loads(response.body)
                assert info["TTL"] == f"{session_ttl:g}s"
                assert info["Behavior"] == "delete" and info["LockDelay"] == 0
                await s.refresh()
                await s.close()
                await s.close()  # already gone: no error
                with pytest.raises(SessionLostError):
                    await s.refresh()

    run(main())


def test_fifo_order_and_withdraw_hands_over(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b1, opened(consul_url) as b2, opened(consul_url) as b3:
            s1, s2, s3 = [await b.create_session(TTL) for b in (b1, b2, b3)]
            assert (await b1.campaign(s1, key, "one")).leader == "one"
            t2 = asyncio.create_task(b2.campaign(s2, key, "two"))
            await waiting(t2, 0.1)
            t3 = asyncio.create_task(b3.campaign(s3, key, "three"))
            await waiting(t3)
            assert await entries(b1, key) == sorted(
                ["/~leader", f"/~queue/{s1.id}", f"/~queue/{s2.id}", f"/~queue/{s3.id}"]
            )
            await b1.withdraw(s1, key)
            term2 = await asyncio.wait_for(t2, 5)
            assert term2.leader == "two"
            await waiting(t3)
            assert (await b3.get_leader(key)) == term2
            await b2.withdraw(s2, key)
            term3 = await asyncio.wait_for(t3, 5)
            assert term3.leader == "three" and term3.token > term2.token
            await b3.withdraw(s3, key)
            assert await entries(b1, key) == []
            assert await b1.get_leader(key) is None
            for s in (s1, s2, s3):
                await s.close()

    run(main())


def test_tokens_strictly_increase_and_match_the_store(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            s1, s2 = await b.create_session(TTL), await b.create_session(TTL)
            tokens = []
            for i in range(6):
                s = (s1, s2)[i % 2]
                term = await b.campaign(s, key, f"n{i}")
                assert await b.get_leader(key) == term
                tokens.append(term.token)
                await b.withdraw(s, key)
            assert tokens == sorted(set(tokens)), tokens
            await s1.close()
            await s2.close()

    run(main())


def test_campaign_is_idempotent_per_session(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            (s1, s2, s3), term, t2, t3 = await three_in_line(b, key)
            assert await b.campaign(s1, key, "one") == term, "a leader campaigning again keeps its term"
            # A retried campaign (after a transient error) keeps its place ahead of three.
            t2.cancel()
            await asyncio.gather(t2, return_exceptions=True)
            t2 = asyncio.create_task(b.campaign(s2, key, "two"))
            await waiting(t2)
            await b.withdraw(s1, key)
            assert (await asyncio.wait_for(t2, 5)).leader == "two"
            await waiting(t3)
            await b.withdraw(s2, key)
            assert (await asyncio.wait_for(t3, 5)).leader == "three"
            for s in (s1, s2, s3):
                await s.close()

    run(main())


def test_withdraw_while_waiting_leaves_the_line(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            (s1, s2, s3), _, t2, t3 = await three_in_line(b, key)
            # What the core does on stop(): cancel the campaign, then withdraw.
            t2.cancel()
            await asyncio.gather(t2, return_exceptions=True)
            await b.withdraw(s2, key)
            assert f"/~queue/{s2.id}" not in await entries(b, key)
            await b.withdraw(s2, key)  # nothing left: fine
            await b.withdraw(s1, key)
            assert (await asyncio.wait_for(t3, 5)).leader == "three"
            for s in (s1, s2, s3):
                await s.close()

    run(main())


def test_cancelled_campaign_leaves_no_task_behind(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            s1, s2 = await b.create_session(TTL), await b.create_session(TTL)
            await b.campaign(s1, key, "one")
            before = asyncio.all_tasks()
            t2 = asyncio.create_task(b.campaign(s2, key, "two"))
            await waiting(t2)
            t2.cancel()
            await asyncio.gather(t2, return_exceptions=True)
            await asyncio.sleep(0)
            assert asyncio.all_tasks() == before
            observer = b.observe(key)
            assert (await observer.__anext__()) is not None
            nxt = asyncio.ensure_future(observer.__anext__())
            await asyncio.sleep(0.2)
            nxt.cancel()
            await asyncio.gather(nxt, return_exceptions=True)
            await observer.aclose()
            assert asyncio.all_tasks() == before
            await b.withdraw(s2, key)
            await b.withdraw(s1, key)
            assert await entries(b, key) == []
            await s1.close()
            await s2.close()

    run(main())


def test_session_close_releases(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            s1, s2 = await b.create_session(TTL), await b.create_session(TTL)
            term1 = await b.campaign(s1, key, "one")
            t2 = asyncio.create_task(b.campaign(s2, key, "two"))
            await waiting(t2)
            await s1.close()
            term2 = await asyncio.wait_for(t2, 5)
            assert term2.leader == "two" and term2.token > term1.token
            with pytest.raises(SessionLostError):
                await b.campaign(s1, key, "one")
            await s2.close()
            assert await b.get_leader(key) is None

    run(main())


def test_waiter_whose_session_died_raises_session_lost(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            (s1, s2, s3), _, t2, t3 = await three_in_line(b, key)
            await s2.close()  # its queue entry goes with it
            await b.withdraw(s1, key)
            assert (await asyncio.wait_for(t3, 5)).leader == "three"
            with pytest.raises(SessionLostError):
                await asyncio.wait_for(t2, 5)
            await s1.close()
            await s3.close()

    run(main())


def test_session_expiry_releases_within_ttl(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            s1 = await b.create_session(TTL)  # never refreshed: Consul expires it
            started = time.monotonic()
            s2 = await b.create_session(TTL)
            await b.campaign(s1, key, "one")
            t2 = asyncio.create_task(b.campaign(s2, key, "two"))

            async def keepalive() -> None:
                while True:
                    await asyncio.sleep(s2.refresh_interval)
                    await s2.refresh()

            refresher = asyncio.create_task(keepalive())
            try:
                term = await asyncio.wait_for(t2, TTL + 10)
            finally:
                refresher.cancel()
                await asyncio.gather(refresher, return_exceptions=True)
            took = time.monotonic() - started
            assert term.leader == "two"
            assert s1.guaranteed - 0.5 <= took <= TTL + 2, f"the key was freed {took:.1f}s after the last refresh"
            with pytest.raises(SessionLostError):
                await s1.refresh()
            await s2.close()

    run(main())


def test_observe_yields_current_then_changes(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            s1, s2 = await b.create_session(TTL), await b.create_session(TTL)
            seen: list[Term | None] = []
            changed = asyncio.Event()

            async def follow() -> None:
                async for term in b.observe(key):
                    seen.append(term)
                    changed.set()

            async def next_value() -> Term | None:
                await asyncio.wait_for(changed.wait(), 5)
                changed.clear()
                return seen[-1]

            follower = asyncio.create_task(follow())
            assert await next_value() is None
            term1 = await b.campaign(s1, key, "one")
            assert await next_value() == term1
            t2 = asyncio.create_task(b.campaign(s2, key, "two"))
            await waiting(t2)
            await b.withdraw(s1, key)
            term2 = await t2
            # The resigning leader hands the key over in one write: no "nobody leads" in between.
            assert await next_value() == term2
            await b.withdraw(s2, key)
            assert await next_value() is None
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            assert seen == [None, term1, term2, None]
            await s1.close()
            await s2.close()

    run(main())


def test_leader_key_without_session_is_no_leader(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            _, leader_key, _ = b._keys(key)
            response = await b._request("PUT", f"/v1/kv/{leader_key}", data="stale")
            b._check(response, "plant a released leader key")
            _, (planted,) = await b._get(leader_key)
            assert await b.get_leader(key) is None
            observer = b.observe(key)
            assert await observer.__anext__() is None
            await observer.aclose()
            s = await b.create_session(TTL)
            term = await b.campaign(s, key, "one")
            assert term.leader == "one" and term.token > planted.modify_index
            await b.withdraw(s, key)
            await s.close()

    run(main())


def test_handover_costs_constant_requests(consul_url: str, key: str) -> None:
    waiters = 10
    counts: dict[int, int] = {}

    def counted(backend: ConsulBackend, i: int) -> None:
        original: Callable[..., Awaitable[_Response]] = backend._request

        async def request(*args: Any, **kwargs: Any) -> _Response:
            counts[i] = counts.get(i, 0) + 1
            return await original(*args, **kwargs)

        backend._request = request  # type: ignore[method-assign]

    async def main() -> None:
        backends = [make(consul_url) for _ in range(waiters + 1)]
        for i, b in enumerate(backends):
            await b.open()
            counted(b, i)
        try:
            sessions = [await b.create_session(TTL) for b in backends]
            await backends[0].campaign(sessions[0], key, "c0")
            tasks = []
            for i in range(1, waiters + 1):
                tasks.append(asyncio.create_task(backends[i].campaign(sessions[i], key, f"c{i}")))
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            for leader in range(waiters):
                counts.clear()
                await backends[leader].withdraw(sessions[leader], key)
                term = await asyncio.wait_for(tasks[leader], 5)
                assert term.leader == f"c{leader + 1}", "FIFO"
                await asyncio.sleep(0.05)
                # resign (1) + the successor's queue read and lock (2); nobody else stirs.
                assert set(counts) <= {leader, leader + 1} and sum(counts.values()) <= 3, counts
            await backends[waiters].withdraw(sessions[waiters], key)
            for s in sessions:
                await s.close()
        finally:
            for b in backends:
                await b.close()

    run(main())


def test_handover_latency(consul_url: str, key: str) -> None:
    """Not a benchmark gate: reports the graceful handover p50 on this machine."""

    async def main() -> list[float]:
        async with opened(consul_url) as a, opened(consul_url) as b:
            sa, sb = await a.create_session(TTL), await b.create_session(TTL)
            latencies = []
            for _ in range(30):
                await a.campaign(sa, key, "a")
                task = asyncio.create_task(b.campaign(sb, key, "b"))
                await asyncio.sleep(0.02)
                started = time.perf_counter()
                await a.withdraw(sa, key)
                await asyncio.wait_for(task, 5)
                latencies.append(time.perf_counter() - started)
                await b.withdraw(sb, key)
            await sa.close()
            await sb.close()
            return latencies

    latencies = sorted(run(main()))
    print(f"consul handover p50 {1000 * latencies[len(latencies) // 2]:.2f} ms")
    assert latencies[len(latencies) // 2] < 1.0


def test_acl_denials_are_authentication_errors() -> None:
    answers = {
        "/v1/status/leader": _Response(200, {}, '"127.0.0.1:8300"'),
        "/v1/acl/token/self": _Response(403, {}, "ACL not found"),
        "/v1/txn": _Response(409, {}, json.dumps({"Errors": [{"OpIndex": 0, "What": "Permission denied"}]})),
    }

    async def fake_request(method: str, path: str, *args: Any, **kwargs: Any) -> _Response:
        return answers[path]

    async def main() -> None:
        b = make("consul://127.0.0.1:8500?token=not-a-token")
        b._request = fake_request  # type: ignore[method-assign]
        try:
            with pytest.raises(AuthenticationError, match="ACL not found"):
                await b.open()
            with pytest.raises(AuthenticationError, match="Permission denied"):
                await b.campaign(ConsulSession(b, "0000", TTL, TTL / 2), "k", "n")
        finally:
            await b.close()

    run(main())


def test_foreign_lock_delay_is_transient(consul_url: str, key: str) -> None:
    async def main() -> None:
        async with opened(consul_url) as b:
            _, leader_key, _ = b._keys(key)
            # A session with Consul's default 15 s lock delay (ours have none) held the key.
            response = await b._request("PUT", "/v1/session/create", data='{"TTL": "10s"}')
            foreign = json.loads(response.body)["ID"]
            await b._request("PUT", f"/v1/kv/{leader_key}", [("acquire", foreign)], data="x")
            await b._request("PUT", f"/v1/session/destroy/{foreign}")
            s = await b.create_session(TTL)
            with pytest.raises(StoreUnavailableError, match="lock delay"):
                await b.campaign(s, key, "n")
            await b.withdraw(s, key)
            await s.close()
            await b._request("DELETE", f"/v1/kv/{leader_key}")

    run(main())
