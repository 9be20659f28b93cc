"""The sync API's engine: a call made while its event loop is idle runs in the caller's thread
with the loop held; a client thread's reply runs on the idle loop the same way (see
``leadership._loop``). These tests pin what that may and may not change: only one thread runs
the loop's callbacks at a time, nothing scheduled is lost or late, and a busy, debug-mode or
foreign loop falls back to handing the work to the loop's thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import leadership
from leadership._loop import LoopThread, held_here
from leadership.backend import call_from_thread, wakes_loop_later
from leadership.errors import UsageError


@pytest.fixture
def runner() -> Iterator[LoopThread]:
    r = LoopThread("leadership-test-loop")
    yield r
    r.stop()


def _settle_idle(runner: LoopThread) -> None:
    """Let the loop's thread go back to waiting for I/O (it holds the loop until then)."""
    runner.run(asyncio.sleep(0))
    time.sleep(0.02)


def test_a_call_on_the_idle_loop_runs_in_the_callers_thread_with_the_loop_held(runner: LoopThread) -> None:
    _settle_idle(runner)
    ran_in: list[int] = []
    order: list[str] = []

    def fn() -> asyncio.AbstractEventLoop:
        ran_in.append(threading.get_ident())
        # Work another thread hands the loop meanwhile waits until fn is done.
        runner.loop.call_soon_threadsafe(order.append, "queued during fn")
        time.sleep(0.05)
        order.append("fn done")
        return asyncio.get_running_loop()

    assert runner.call(fn) is runner.loop
    assert ran_in == [threading.get_ident()]
    runner.run(asyncio.sleep(0))
    assert order == ["fn done", "queued during fn"]
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # restored after the call


def test_work_a_held_call_schedules_runs_without_another_call(runner: LoopThread) -> None:
    _settle_idle(runner)
    done = threading.Event()

    async def later() -> None:
        await asyncio.sleep(0)
        done.set()

    def fn() -> None:
        # Drained in this thread, or run by the loop's thread woken after: never left behind.
        asyncio.get_running_loop().create_task(later())
        asyncio.get_running_loop().call_later(0.05, done.set)

    runner.call(fn)
    assert done.wait(2)


def test_a_timer_set_in_a_held_call_wakes_the_loop_on_time(runner: LoopThread) -> None:
    _settle_idle(runner)  # the loop waits with no timeout at all: nothing is scheduled
    fired = threading.Event()

    def fn() -> float:
        loop = asyncio.get_running_loop()
        wakes_loop_later(loop)  # the ready work may wait; an earlier timer may not
        loop.call_later(0.05, fired.set)
        return loop.time()

    start = runner.call(fn)
    assert fired.wait(2)
    assert runner.call(runner.loop.time) - start < 1.5


def test_work_left_for_a_completion_runs_when_it_arrives(runner: LoopThread) -> None:
    _settle_idle(runner)
    loop = runner.loop
    reply: asyncio.Future[str] = runner.call(loop.create_future)
    seen: list[tuple[str, int]] = []

    async def awaiting() -> None:
        seen.append((await reply, threading.get_ident()))

    def send() -> None:
        wakes_loop_later(loop)  # "the request's completion will reach the loop"
        loop.create_task(awaiting())

    runner.call(send)
    client = threading.Thread(target=call_from_thread, args=(loop, reply.set_result, "answer"))
    client.start()
    client.join()
    deadline = time.monotonic() + 2
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    # The task that waited for the completion ran it, in the client's thread or the loop's.
    assert [answer for answer, _ in seen] == ["answer"]


def test_a_reply_runs_the_awaiting_coroutine_in_the_client_thread_when_the_loop_is_idle(
    runner: LoopThread,
) -> None:
    loop = runner.loop
    fut: asyncio.Future[int] = runner.call(loop.create_future)
    resumed: list[int] = []

    async def waiter() -> None:
        await fut
        resumed.append(threading.get_ident())

    task = runner.submit(waiter())
    _settle_idle(runner)
    client_ident: list[int] = []

    def client() -> None:
        client_ident.append(threading.get_ident())
        call_from_thread(loop, fut.set_result, 1)

    t = threading.Thread(target=client)
    t.start()
    t.join()
    task.result(2)
    assert resumed == client_ident  # no hop through the loop's thread


def test_held_here_only_in_the_thread_holding_the_loop(runner: LoopThread) -> None:
    """The core skips its watch delay on a held turn (a timer would wake the loop's thread):
    held_here must say so only there."""
    _settle_idle(runner)
    assert runner.call(lambda: held_here(runner.loop)) is True
    assert held_here(runner.loop) is False  # after the call, in the same thread
    assert runner.run(_held_here_on_the_loop()) is False  # the loop's own thread
    other = asyncio.new_event_loop()
    try:
        assert held_here(other) is False
    finally:
        other.close()


async def _held_here_on_the_loop() -> bool:
    return held_here(asyncio.get_running_loop())


def test_a_busy_loop_gets_the_call_in_its_own_thread(runner: LoopThread) -> None:
    release = threading.Event()
    runner.loop.call_soon_threadsafe(release.wait)  # the loop's thread is busy until set
    time.sleep(0.05)
    ran_in: list[int] = []
    caller = threading.Thread(target=lambda: runner.call(lambda: ran_in.append(threading.get_ident())))
    caller.start()
    time.sleep(0.1)
    assert ran_in == []  # not run beside the busy callback
    release.set()
    caller.join(2)
    assert ran_in == [runner.thread.ident]


def test_a_debug_mode_loop_gets_the_call_in_its_own_thread(runner: LoopThread) -> None:
    runner.run(_set_debug())
    _settle_idle(runner)
    assert runner.call(threading.get_ident) == runner.thread.ident


async def _set_debug() -> None:
    asyncio.get_running_loop().set_debug(True)


def test_call_from_thread_on_any_other_loop_is_call_soon_threadsafe() -> None:
    loop = asyncio.new_event_loop()
    ran_in: list[int] = []
    try:
        t = threading.Thread(target=call_from_thread, args=(loop, lambda: ran_in.append(threading.get_ident())))
        t.start()
        t.join()
        assert ran_in == []  # queued, not run in the calling thread
        loop.run_until_complete(asyncio.sleep(0))
        assert ran_in == [threading.get_ident()]
    finally:
        loop.close()


def test_the_sync_api_inside_a_held_call_raises_instead_of_deadlocking(store: leadership.Store) -> None:
    candidate = leadership.Candidate(store, "held", "a", ttl=2)
    try:

        def fn() -> Any:
            with pytest.raises(UsageError, match="event loop"):
                candidate.wait_elected(1)
            return True

        _settle_idle(store._runner)
        assert store._call(fn) is True
    finally:
        candidate.stop()
