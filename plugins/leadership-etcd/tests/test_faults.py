"""Faults: member restart, frozen members, the raft leader of a three-member cluster killed.

The cluster comes from local ``etcd`` processes when the binary is installed (Debian:
etcd-server), else from the plugin's Docker test servers (``leadership_etcd.testing.start_etcd``); set
``LEADERSHIP_TEST_ETCD_FAULTS`` to ``local`` or ``docker`` to choose."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol, TypeVar

import pytest

from leadership.backend import Term
from leadership.errors import StoreUnavailableError
from leadership.url import StoreURL
from leadership_etcd import EtcdBackend

from .local_etcd import ETCD, LocalCluster, retrying

T = TypeVar("T")
KEY = "faults/leader"


class Cluster(Protocol):
    @property
    def url(self) -> str: ...

    def restart(self) -> None: ...
    def freeze(self) -> None: ...
    def thaw(self) -> None: ...
    def kill_leader(self) -> str: ...
    def leader_endpoint(self) -> str: ...
    def stop(self) -> None: ...


class KitCluster:
    """The conformance kit's Docker handle behind the same small interface."""

    def __init__(self, size: int) -> None:
        from leadership_etcd.testing import start_etcd

        self.server: Any = start_etcd(size)
        self.url = str(self.server.url)

    def restart(self) -> None:
        self.server.restart()

    def freeze(self) -> None:
        self.server.pause()

    def thaw(self) -> None:
        self.server.unpause()

    def leader_endpoint(self) -> str:
        return str(self.server.members[self.server.leader_member()].address)

    def kill_leader(self) -> str:
        index = self.server.leader_member()
        self.server.kill_member(index)
        return str(self.server.members[index].address)

    def stop(self) -> None:
        self.server.stop()


#: "local" (etcd processes), "docker" (the kit's containers) or "auto": local when the binary exists.
MODE_ENV = "LEADERSHIP_TEST_ETCD_FAULTS"


def make_cluster(size: int) -> Cluster:
    mode = os.environ.get(MODE_ENV, "auto")
    if mode == "local" or (mode == "auto" and ETCD is not None):
        if ETCD is None:
            pytest.fail(f"{MODE_ENV}=local but the etcd binary is not installed")
        return LocalCluster(size)
    try:
        return KitCluster(size)
    except Exception as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no etcd binary (apt-get install etcd-server) and no Docker etcd from the kit: {exc}")


@pytest.fixture
def single() -> Iterator[Cluster]:
    cluster = make_cluster(1)
    yield cluster
    cluster.stop()


@pytest.fixture
def trio() -> Iterator[Cluster]:
    cluster = make_cluster(3)
    yield cluster
    cluster.stop()


@contextlib.asynccontextmanager
async def opened(url: str) -> AsyncIterator[EtcdBackend]:
    backend = EtcdBackend(StoreURL.parse(url + "?timeout=2"))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.close()


async def next_term(seen: AsyncIterator[Term | None]) -> Term | None:
    return await anext(seen)


def test_member_restart_breaks_watches_and_changes_ping(single: Cluster) -> None:
    async def body() -> None:
        async with opened(single.url) as b:
            s1, s2 = await b.create_session(30), await b.create_session(30)
            t1 = await b.campaign(s1, KEY, "one")
            waiting = asyncio.create_task(b.campaign(s2, KEY, "two"))
            seen = b.observe(KEY)
            assert await anext(seen) == t1
            following = asyncio.create_task(next_term(seen))
            await asyncio.sleep(0.3)
            before = await b.ping()
            await asyncio.to_thread(single.restart)
            with pytest.raises(StoreUnavailableError):
                await asyncio.wait_for(waiting, 10)
            with pytest.raises(StoreUnavailableError):
                await asyncio.wait_for(following, 10)
            after = await retrying(b.ping)
            assert after != before, "a restarted member must show a new incarnation"
            await retrying(s1.refresh)
            # The retried campaign keeps its place (the lease and entry survived the restart).
            waiting = asyncio.create_task(retrying(lambda: b.campaign(s2, KEY, "two")))
            await asyncio.sleep(0.3)
            assert not waiting.done()
            await b.withdraw(s1, KEY)
            t2 = await asyncio.wait_for(waiting, 10)
            assert t2.leader == "two" and t2.token > t1.token
            seen = b.observe(KEY)
            assert await anext(seen) == t2
            await seen.aclose()  # type: ignore[attr-defined]

    asyncio.run(body())


def test_frozen_member_fails_requests_in_time(single: Cluster) -> None:
    async def body() -> None:
        async with opened(single.url) as b:
            s = await b.create_session(30)
            single.freeze()
            try:
                started = time.monotonic()
                with pytest.raises(StoreUnavailableError):
                    await s.refresh()
                assert time.monotonic() - started < 3.0
            finally:
                single.thaw()
            await retrying(s.refresh)

    asyncio.run(body())


def test_raft_leader_killed_mid_election(trio: Cluster) -> None:
    async def body() -> None:
        async with opened(trio.url) as b:
            s1 = await retrying(lambda: b.create_session(30))
            s2 = await retrying(lambda: b.create_session(30))
            t1 = await retrying(lambda: b.campaign(s1, KEY, "one"))
            waiting = asyncio.create_task(retrying(lambda: b.campaign(s2, KEY, "two")))
            await asyncio.sleep(0.3)
            # Point the client at the raft leader, so killing it breaks our connection too.
            leader = trio.leader_endpoint()
            b._client._current = [m.target for m in b._client._members].index(leader)
            await retrying(s1.refresh)
            assert trio.kill_leader() == leader
            await retrying(s1.refresh)
            await retrying(s2.refresh)
            assert not waiting.done()
            assert (await retrying(lambda: b.get_leader(KEY))) == t1
            await retrying(lambda: b.withdraw(s1, KEY))
            t2: Term = await asyncio.wait_for(waiting, 20)
            assert t2.leader == "two" and t2.token > t1.token
            assert b._client.current_target != leader

    asyncio.run(body())
