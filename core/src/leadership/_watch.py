"""One way to watch a key, shared by followers and leaders: re-established after watch errors
and whenever the store comes back or restarts (some clients leave a watch silently stalled)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from ._util import Flag, RetryPolicy, abandon, nap, wait_first
from .backend import Term
from .errors import StoreUnavailableError

if TYPE_CHECKING:
    from .store import AsyncStore


async def watch_terms(
    store: AsyncStore, key: str, *, retry: RetryPolicy | None, stop: Flag
) -> AsyncGenerator[Term | None, None]:
    """Yield the term of ``key`` now and after every change (possibly repeating a value after a
    re-established watch). Transient errors are retried per ``retry``; with None they raise."""
    attempt = 0
    async with store.watching():
        while not stop.is_set():
            epoch = store.epoch_event()
            try:
                await store.ensure_open()
                iterator = store.backend.observe(key)
                try:
                    while True:
                        nxt = asyncio.ensure_future(iterator.__anext__())
                        try:
                            await wait_first(nxt, stop, epoch)
                        except BaseException:
                            abandon(nxt)
                            raise
                        if not nxt.done():  # stopped, or the watch must be re-established
                            nxt.cancel()
                            await asyncio.gather(nxt, return_exceptions=True)
                            break
                        try:
                            term = nxt.result()
                        except StopAsyncIteration:
                            raise StoreUnavailableError(f"watch on {key!r} ended") from None
                        attempt = 0
                        yield term
                finally:
                    aclose = getattr(iterator, "aclose", None)
                    if aclose is not None:
                        await asyncio.gather(aclose(), return_exceptions=True)
            except (StoreUnavailableError, asyncio.TimeoutError) as exc:
                attempt += 1
                if retry is None:
                    store.report_error(exc, "observe", attempt, None)
                    raise
                delay = retry.delay(attempt)
                store.report_error(exc, "observe", attempt, delay)
                # Retried early when the store is reachable again.
                await nap(delay, stop, store.epoch_event())
