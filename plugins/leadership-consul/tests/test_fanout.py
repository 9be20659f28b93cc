"""The shared blocking query: many elections on one connection, against a real Consul agent.

What is counted is the plugin's own blocking reads in flight (a GET with ``index=``: each holds
one HTTP connection to the agent), and the requests the agent answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from leadership.backend import Term
from leadership.errors import SessionLostError, StoreUnavailableError
from leadership.url import StoreURL
from leadership_conformance.servers import StoreServer, server_for
from leadership_consul import ConsulBackend
from leadership_consul._fanout import FANOUT_AT
from leadership_consul.backend import _Response

T = TypeVar("T")
TTL = 20.0
#: Elections in the many-elections test: well past FANOUT_AT, so most share the parent's poll.
ELECTIONS = 60


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture(scope="module")
def consul_server() -> Iterator[StoreServer]:
    server = server_for("consul")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def consul_url(consul_server: StoreServer) -> str:
    return consul_server.url


class Counted:
    """Wraps a backend's requests: blocking reads in flight now and at most, every request."""

    def __init__(self, backend: ConsulBackend) -> None:
        self.in_flight = 0
        self.most = 0
        self.requests = 0
        self.blocking = 0
        original: Callable[..., Awaitable[_Response]] = backend._request

        async def request(method: str, path: str, params: Any = (), **kwargs: Any) -> _Response:
            self.requests += 1
            if not any(name == "index" for name, _ in params):
                return await original(method, path, params, **kwargs)
            self.blocking += 1
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                return await original(method, path, params, **kwargs)
            finally:
                self.in_flight -= 1

        backend._request = request  # type: ignore[method-assign]


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[ConsulBackend]:
    backend = ConsulBackend(StoreURL.parse(url))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def settle(seconds: float = 0.5) -> None:
    await asyncio.sleep(seconds)


def test_many_elections_share_one_blocking_query_and_wake_only_their_own(consul_url: str) -> None:
    """60 elections on one connection, each with a leader watching its term, a waiting candidate
    and a follower: at most FANOUT_AT + 1 blocking reads at once (keys polled on their own before
    the parent's poll takes over), not 180. A handover in one election wakes that election's
    waiters only; a write elsewhere under the parent wakes nobody."""
    parent = f"test/fanout-{uuid.uuid4().hex[:8]}"
    keys = [f"{parent}/{i}" for i in range(ELECTIONS)]

    async def main() -> None:
        async with opened(consul_url) as b:
            counted = Counted(b)
            s1, s2 = await b.create_session(TTL), await b.create_session(TTL)
            terms = [await b.campaign(s1, k, "one") for k in keys]
            watches = [asyncio.create_task(b.wait_replaced(s1, k, t)) for k, t in zip(keys, terms, strict=True)]
            waiters = [asyncio.create_task(b.campaign(s2, k, "two")) for k in keys]
            seen: list[list[Term | None]] = [[] for _ in keys]
            changed = [asyncio.Event() for _ in keys]

            async def follow(i: int) -> None:
                async for term in b.observe(keys[i]):
                    seen[i].append(term)
                    changed[i].set()

            followers = [asyncio.create_task(follow(i)) for i in range(len(keys))]
            await settle(1.0)
            assert all(not t.done() for t in watches + waiters + followers)
            assert [s[-1] for s in seen] == terms
            # FANOUT_AT keys on polls of their own, then one poll for the parent.
            assert counted.most <= FANOUT_AT + 1, f"{counted.most} blocking reads at once for {len(keys)} elections"
            assert counted.in_flight >= 1

            # A write under the parent that no election owns: nobody wakes, one re-poll.
            for e in changed:
                e.clear()
            before = counted.requests
            response = await b._request("PUT", f"/v1/kv/{parent}/unrelated", data="x")
            b._check(response, "write an unrelated key")
            await settle()
            assert all(not t.done() for t in watches + waiters + followers)
            assert not any(e.is_set() for e in changed)
            assert counted.requests - before <= 2  # the write, the shared poll's next read

            # Hand one election over: its watch, waiter and follower wake; nobody else.
            victim = ELECTIONS - 1  # on the shared poll
            for e in changed:
                e.clear()
            await b.withdraw(s1, keys[victim])
            new_term = await asyncio.wait_for(waiters[victim], 5)
            assert new_term.leader == "two" and new_term.token > terms[victim].token
            await asyncio.wait_for(watches[victim], 5)
            await asyncio.wait_for(changed[victim].wait(), 5)
            assert seen[victim][-1] == new_term
            await settle()
            others = [i for i in range(len(keys)) if i != victim]
            assert all(not watches[i].done() and not waiters[i].done() for i in others)
            assert not any(changed[i].is_set() for i in others)

            for task in watches + waiters + followers:
                task.cancel()
            await asyncio.gather(*watches, *waiters, *followers, return_exceptions=True)
            await asyncio.sleep(0)
            assert counted.in_flight == 0, "a poll outlived its last waiter"
            await s1.close()
            await s2.close()

    run(main())


@pytest.mark.parametrize("options", ["", "?consistency=stale"])
def test_waiters_on_the_shared_poll_follow_every_term_in_order(consul_url: str, options: str) -> None:
    """Handovers in a row on one election among many: the follower's tokens strictly rise and
    the waiters take over one by one, in their queue order (with ``stale`` polls too, where a
    campaign reads the queue again instead of believing the poll)."""
    parent = f"test/fanout-{uuid.uuid4().hex[:8]}"
    keys = [f"{parent}/{i}" for i in range(2 * FANOUT_AT)]
    key = keys[-1]

    async def main() -> None:
        async with opened(consul_url + options) as b:
            filler = await b.create_session(TTL)
            # Leaders of the other elections watch their terms: the shared poll is in use.
            watches = [
                asyncio.create_task(b.wait_replaced(filler, k, await b.campaign(filler, k, "filler")))
                for k in keys[:-1]
            ]
            sessions = [await b.create_session(TTL) for _ in range(4)]
            first = await b.campaign(sessions[0], key, "c0")
            tasks = []
            for i in range(1, len(sessions)):
                tasks.append(asyncio.create_task(b.campaign(sessions[i], key, f"c{i}")))
                await settle(0.2)
            tokens: list[int] = []

            async def follow() -> None:
                async for term in b.observe(key):
                    if term is not None:
                        tokens.append(term.token)

            follower = asyncio.create_task(follow())
            await settle()
            assert tokens == [first.token]
            for i in range(len(tasks)):
                await b.withdraw(sessions[i], key)
                term = await asyncio.wait_for(tasks[i], 5)
                assert term.leader == f"c{i + 1}", "FIFO"
                assert all(not t.done() for t in tasks[i + 1 :]), "a handover woke more than the next in line"
                await settle(0.3)
            assert tokens == sorted(set(tokens)) and len(tokens) == len(sessions), tokens
            follower.cancel()
            for task in watches:
                task.cancel()
            await asyncio.gather(follower, *watches, return_exceptions=True)
            for s in [*sessions, filler]:
                await s.close()

    run(main())


async def retrying(call: Callable[[], Awaitable[T]]) -> T:
    """What the core does with a backend call: again after a transient error."""
    while True:
        try:
            return await call()
        except StoreUnavailableError:
            await asyncio.sleep(0.2)


def test_index_going_back_is_a_reset(caplog: pytest.LogCaptureFixture) -> None:
    """A dev agent restarted loses every key, and its X-Consul-Index starts again far below what
    the poll had seen: the poll starts over with a consistent read, so a leader's watch learns
    its key is gone and a waiting campaign that its session is lost, instead of waiting for the
    old index to come back."""
    from leadership_consul.testing import start_consul

    server = start_consul(dev=True)
    parent = f"test/reset-{uuid.uuid4().hex[:8]}"
    keys = [f"{parent}/{i}" for i in range(2 * FANOUT_AT)]
    try:

        async def main() -> None:
            async with opened(f"{server.url}?wait=1") as b:
                s1, s2 = await b.create_session(TTL), await b.create_session(TTL)
                for i in range(200):  # push the index well above what a fresh agent starts at
                    response = await b._request("PUT", f"/v1/kv/{parent}-filler", data=str(i))
                    b._check(response, "write filler")
                terms = [await b.campaign(s1, k, "one") for k in keys]

                async def watch(k: str, t: Term) -> None:
                    await retrying(lambda: b.wait_replaced(s1, k, t))

                watches = [asyncio.create_task(watch(k, t)) for k, t in zip(keys, terms, strict=True)]
                waiter = asyncio.create_task(retrying(lambda: b.campaign(s2, keys[-1], "two")))
                await settle()
                assert not waiter.done() and all(not w.done() for w in watches)
                await asyncio.to_thread(server.restart)
                await asyncio.wait_for(asyncio.gather(*watches), 30)
                with pytest.raises(SessionLostError):
                    await asyncio.wait_for(waiter, 30)

        with caplog.at_level("INFO", logger="leadership_consul._fanout"):
            run(main())
        assert any("went back" in r.getMessage() for r in caplog.records), "no reset seen: the test proved nothing"
    finally:
        server.stop()


def test_a_stalled_poll_is_raised_to_its_waiters_and_polling_recovers(consul_server: StoreServer) -> None:
    """The agent frozen: the shared poll's read times out, is retried once, and then every wait
    it serves raises StoreUnavailableError (the core retries them), instead of hanging. Once the
    agent answers again, new waits on the same connection work."""
    if not consul_server.can_inject_faults:
        pytest.skip("an external agent cannot be paused")
    parent = f"test/stall-{uuid.uuid4().hex[:8]}"
    keys = [f"{parent}/{i}" for i in range(2 * FANOUT_AT)]

    async def main() -> None:
        async with opened(f"{consul_server.url}?wait=1&timeout=1") as b:
            s1 = await b.create_session(TTL)
            terms = [await b.campaign(s1, k, "one") for k in keys]
            watches = [asyncio.create_task(b.wait_replaced(s1, k, t)) for k, t in zip(keys, terms, strict=True)]
            await settle()
            assert b.long_polls <= FANOUT_AT + 1 and not any(w.done() for w in watches)
            consul_server.pause()
            try:
                done, pending = await asyncio.wait(watches, timeout=20)
                assert not pending, f"{len(pending)} waits still hang on a frozen agent"
                for w in done:
                    assert isinstance(w.exception(), StoreUnavailableError), w
            finally:
                consul_server.unpause()
            assert b.long_polls == 0, "a poll outlived its waiters"
            # The agent is back: the connection waits again.
            async def leaders() -> list[Term]:
                found = [await b.get_leader(k) for k in keys]
                return [t for t in found if t is not None]

            assert await retrying(leaders) == terms  # the pause was far shorter than the ttl
            watches = [asyncio.create_task(b.wait_replaced(s1, k, t)) for k, t in zip(keys, terms, strict=True)]
            await settle()
            assert not any(w.done() for w in watches)
            await retrying(lambda: b.withdraw(s1, keys[-1]))
            await asyncio.wait_for(watches[-1], 5)
            assert not any(w.done() for w in watches[:-1])
            for w in watches:
                w.cancel()
            await asyncio.gather(*watches, return_exceptions=True)
            await retrying(s1.close)

    run(main())
