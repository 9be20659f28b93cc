"""``leadership watch``, ``status`` and ``campaign``: an election from a shell."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import signal
import sys
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from .. import aio
from ..backend import Term
from ..errors import LeadershipError
from ..plugins import default_plugin_manager, hookimpl
from ._common import EXIT_ERROR, EXIT_NO_LEADER, Reporter

_T = TypeVar("_T")

#: How long ``status`` without ``--wait`` waits for the store to answer at all.
STATUS_TIMEOUT = 10.0


async def until_signalled(stream: AsyncIterator[_T], each: Callable[[_T], None]) -> bool:
    """Feed ``stream`` to ``each`` until SIGINT/SIGTERM (True) or the stream ends (False)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async def consume() -> None:
        async for item in stream:
            each(item)

    task = asyncio.ensure_future(consume())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        stopping.cancel()
    if task.done():
        task.result()  # a permanent store error ends the stream by raising
        return False
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return True


def _term_fields(key: str, term: Term | None) -> dict[str, object]:
    return {"key": key, "leader": term.leader if term else None, "token": term.token if term else None}


def _term_text(term: Term | None) -> str:
    return "none" if term is None else f"{term.leader} (token {term.token})"


async def watch(url: str, key: str, as_json: bool) -> int:
    say = Reporter("leadership watch", as_json, stream=sys.stdout)
    async with await aio.connect(url) as store:
        follower = aio.Follower(store, key)

        def show(term: Term | None) -> None:
            if as_json:
                say("leader", "", **_term_fields(key, term))
            else:  # columns: time, leader (or none), token (or -)
                now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
                leader, token = (term.leader, str(term.token)) if term else ("none", "-")
                print(f"{now} {leader} {token}", flush=True)

        try:
            await until_signalled(follower.terms(), show)
        except LeadershipError as exc:
            print(f"leadership watch: {exc}", file=sys.stderr)
            return EXIT_ERROR
        finally:
            await follower.stop()
    return 0


async def status(url: str, key: str, wait: float | None, as_json: bool) -> int:
    async with await aio.connect(url) as store:
        follower = aio.Follower(store, key)

        async def first(led: bool) -> Term | None:
            async for term in follower.terms():
                if term is not None or not led:
                    return term
            return None

        term: Term | None = None
        try:
            term = await asyncio.wait_for(first(led=False), STATUS_TIMEOUT)
            if term is None and wait:
                with contextlib.suppress(asyncio.TimeoutError):
                    term = await asyncio.wait_for(first(led=True), wait)
        except asyncio.TimeoutError:
            print(f"leadership status: no answer from {store.display_url} within {STATUS_TIMEOUT:g}s", file=sys.stderr)
            return EXIT_ERROR
        except LeadershipError as exc:
            print(f"leadership status: {exc}", file=sys.stderr)
            return EXIT_ERROR
        finally:
            await follower.stop()
    if as_json:
        Reporter("leadership status", True, stream=sys.stdout)("status", "", **_term_fields(key, term))
    else:
        print(_term_text(term), flush=True)
    return 0 if term is not None else EXIT_NO_LEADER


class _Reasons:
    """Collects why a candidate was demoted (the stream itself says only True/False)."""

    def __init__(self) -> None:
        self.last = ""

    @hookimpl
    def leadership_demoted(self, key: str, name: str, token: int, reason: str, store: str) -> None:
        self.last = reason


async def campaign(url: str, key: str, name: str, ttl: float, as_json: bool) -> int:
    say = Reporter("leadership campaign", as_json, stream=sys.stdout)
    reasons = _Reasons()
    pm = default_plugin_manager()
    pm.register(reasons)
    try:
        async with await aio.connect(url, plugin_manager=pm) as store:
            candidate = aio.Candidate(store, key, name, ttl)
            first = True

            def show(elected: bool) -> None:
                nonlocal first
                term = candidate.term
                if elected and term is not None:
                    say(
                        "elected",
                        f"{name} elected for {key} (token {term.token})",
                        key=key,
                        name=name,
                        token=term.token,
                    )
                elif first:
                    say("campaigning", f"{name} campaigning for {key}", key=key, name=name)
                else:
                    why = reasons.last or "lost"
                    say("demoted", f"{name} no longer leads {key} ({why})", key=key, name=name, reason=why)
                first = False

            try:
                await until_signalled(candidate.run_for_election(), show)
            except LeadershipError as exc:
                print(f"leadership campaign: {exc}", file=sys.stderr)
                return EXIT_ERROR
            finally:
                await candidate.stop()  # releases at once
    finally:
        pm.unregister(reasons)
    return 0
