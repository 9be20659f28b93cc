"""A stopped candidate's entry leaves the store even when stop() could not withdraw it at once
(the store was marked unreachable, or the withdraw failed) while other elections keep the
shared session alive: otherwise the stopped candidate would stay leader indefinitely."""

from __future__ import annotations

import asyncio
import time

import leadership
import leadership.aio
from leadership.testing import memory_cluster

TTL = 5.0  # longer than every wait below: the session's expiry cannot be what frees the key


async def _gone(store: leadership.aio.Store, key: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await store.backend.get_leader(key) is None:
            return True
        await asyncio.sleep(0.02)
    return False


async def _two_leaders(
    store: leadership.aio.Store,
) -> tuple[leadership.aio.Candidate, leadership.aio.Candidate, leadership.Term]:
    """A leads k/a and B leads k/b, on the store's one shared session; B's term is returned."""
    a = leadership.aio.Candidate(store, "k/a", "A", ttl=TTL)
    b = leadership.aio.Candidate(store, "k/b", "B", ttl=TTL)
    await a.wait_elected(5)
    return a, b, await b.wait_elected(5)


def test_stop_while_the_store_is_marked_unreachable_still_releases_the_key(url: str) -> None:
    async def main() -> None:
        async with await leadership.aio.connect(url) as store:
            a, b, b_term = await _two_leaders(store)
            store.mark_unhealthy()  # one ping or refresh failed; the next success is still to come
            await a.stop()
            assert await _gone(store, "k/a", 2.0), f"stopped A still leads: {await store.backend.get_leader('k/a')}"
            assert b.term == b_term, "B's election, on the same session, is untouched"
            await b.stop()

    asyncio.run(main())


def test_stop_whose_withdraw_fails_releases_the_key_once_the_store_answers(url: str) -> None:
    cluster = memory_cluster(url.removeprefix("memory://"))

    async def main() -> None:
        async with await leadership.aio.connect(url) as store:
            a, b, b_term = await _two_leaders(store)
            cluster.set_available(False)  # before any ping notices: stop()'s withdraw is tried, and fails
            try:
                await a.stop()
            finally:
                cluster.set_available(True)
            assert await _gone(store, "k/a", 3.0), f"stopped A still leads: {await store.backend.get_leader('k/a')}"
            assert b.term == b_term, "the session lived on: the key was withdrawn, not expired"
            await b.stop()

    asyncio.run(main())


def test_a_new_candidate_for_the_key_is_not_withdrawn_by_the_old_ones_pending_withdraw(url: str) -> None:
    cluster = memory_cluster(url.removeprefix("memory://"))

    async def main() -> None:
        async with await leadership.aio.connect(url) as store:
            a, b, _ = await _two_leaders(store)
            cluster.set_available(False)
            await a.stop()
            again = leadership.aio.Candidate(store, "k/a", "A2", ttl=TTL)
            again.run_for_election()
            cluster.set_available(True)
            term = await again.wait_elected(5)
            assert term.leader == "A2"
            await asyncio.sleep(0.3)  # a late withdraw of the old entry must not remove the new one
            leader = await store.backend.get_leader("k/a")
            assert leader is not None and leader.token == term.token
            assert again.is_leader
            await again.stop()
            await b.stop()

    asyncio.run(main())


def test_closing_the_store_with_a_withdraw_pending_is_prompt_and_leaves_no_task(url: str) -> None:
    cluster = memory_cluster(url.removeprefix("memory://"))

    async def main() -> None:
        store = await leadership.aio.connect(url)
        before = asyncio.all_tasks()
        a, _b, _ = await _two_leaders(store)
        cluster.set_available(False)  # and it stays down: the withdraw is retried until close
        await a.stop()
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await store.close()
        took = time.monotonic() - started
        await asyncio.sleep(0)
        leaked = asyncio.all_tasks() - before
        assert not leaked, leaked
        assert took < 1.5, f"close took {took:.2f}s"
        cluster.set_available(True)

    asyncio.run(main())
