"""One way to watch a key, shared by followers and leaders: re-established after watch errors
and whenever the store comes back or restarts (some clients leave a watch silently stalled)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from ._util import Backoff, Flag, Interrupted, is_permanent, race
from .backend import Term
from .errors import StoreUnavailableError
from .retry import DEFAULT_RETRY, RetryPolicy

if TYPE_CHECKING:
    from .store import AsyncStore


async def watch_terms(
    store: AsyncStore, key: str, *, retry: RetryPolicy | None, stop: Flag
) -> AsyncGenerator[Term | None, None]:
    """Yield the term of ``key`` now and after every change (possibly repeating a value after a
    re-established watch). Store errors, a backend's unexpected ones included, are retried per
    ``retry``; with None they raise, as do permanent errors."""
    # Retried early when the store is reachable again.
    watching = Backoff(store.report_error, "observe", retry or DEFAULT_RETRY, wake=lambda: (stop, store.epoch_event()))
    async with store.watching():
        while not stop.is_set():
            epoch = store.epoch_event()
            try:
                await store.ensure_open()
                iterator = store.backend.observe(key)
                try:
                    while True:
                        try:
                            term = await race(iterator.__anext__(), stop, epoch)
                        except StopAsyncIteration:
                            raise StoreUnavailableError(f"watch on {key!r} ended") from None
                        watching.succeeded()
                        yield term
                except Interrupted:
                    continue  # stopped (the loop ends), or the watch must be re-established
                finally:
                    aclose = getattr(iterator, "aclose", None)
                    if aclose is not None:  # bounded: a watch on a frozen store may not end at once
                        closing = asyncio.wait_for(aclose(), store.close_time_left())
                        await asyncio.gather(closing, return_exceptions=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if retry is None or is_permanent(exc):
                    watching.give_up(exc)
                    raise
                await watching.failed(exc)
