"""One blocking query per watched prefix, fanned out to every waiter on that prefix.

Consul has no watch stream: a client learns of a change from a blocking query (a read that
Consul holds until the index moves past the one given). One per waiting campaign, per leader and
per follower would need one HTTP connection each, and the agent limits connections per client
address. Instead, every election whose key shares a parent (``jobs/1``, ``jobs/2``, … →
``jobs/``) is watched by a single recursive blocking read of that parent, and each waiter only
registers, in memory, the key it waits on and what it last saw there.

Each answer replaces the snapshot of the prefix. The keys that changed are those whose
ModifyIndex is above the previous snapshot's X-Consul-Index, plus those that vanished; only their
waiters are looked at, so a handover wakes the one candidate whose predecessor went, not the
line, and a change elsewhere under the prefix wakes nobody. A waiter carries the index of the
read its knowledge came from, and is compared only against a snapshot at least that new, so a
snapshot older than what the waiter saw can never wake it with old news.

Consul's rule when X-Consul-Index goes backwards (a store restarted with less data, a snapshot
restored) is to start over: the poller then reads the prefix again with a consistent read and
checks every waiter against it. A waiter whose index is above what the store shows after a
blocking read ran its whole wait without a change (the store is behind the waiter) is told to
read again itself (:data:`RECHECK`).

A failed read is tried again at once; a second failure is handed to every waiter as the
exception (the core retries their calls with backoff, as for any store error), and the poller
keeps reading, with backoff, while anyone waits. A bug in the poller is handed to every waiter
too, and logged: the task never dies silently. The poll stops when its last waiter leaves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from leadership.errors import StoreUnavailableError
from leadership.retry import RetryPolicy

__all__ = ["FANOUT_AT", "RECHECK", "Poller", "Polls", "Raw"]

log = logging.getLogger(__name__)

#: A KV entry as Consul's JSON gives it (``Key``, ``Session``, ``CreateIndex``, ``ModifyIndex``, …).
Raw = Mapping[str, Any]
#: (X-Consul-Index, entries, seconds spent decoding) of a recursive read of a prefix from
#: ``index`` (0: a consistent read now).
Reader = Callable[[str, int], Awaitable[tuple[int, list[Raw], float]]]


class _Recheck:
    def __repr__(self) -> str:
        return "RECHECK"


#: What :meth:`Poller.wait` returns when the store is behind the waiter: read the key yourself.
RECHECK: Any = _Recheck()

#: Keys waited on under one parent before they share the parent's poll (see :class:`Polls`).
FANOUT_AT = 8
#: The pause between failed polls while waits keep coming: the core's own backoff, capped lower
#: (the waits themselves are retried by the core with theirs).
_BACKOFF = RetryPolicy(maximum=2.0)
#: A poll whose answer took longer than this to digest pauses as long before its next read.
_PACE_FROM = 0.005
_MAX_PAUSE = 0.1


@dataclasses.dataclass(eq=False)
class _Waiter:
    key: str
    changed: Callable[[Raw | None], bool]
    index: int
    seq: int
    future: asyncio.Future[Any]


class Poller:
    """The blocking query of one prefix and the waiters on keys under it."""

    def __init__(self, root: str, read: Reader, where: str, idle: Callable[[Poller], None]) -> None:
        self.root = root
        self._read = read
        self._where = where
        self._idle = idle
        self._closed = False
        self._index = 0  # X-Consul-Index of the snapshot; 0: none yet
        self._snapshot: dict[str, Raw] = {}
        self._fresh = False  # the next read must be a consistent read from scratch
        self._waiters: dict[str, dict[_Waiter, None]] = {}
        self._count = 0
        self._seq = 0  # reads sent so far
        self._task: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        return self._count

    async def wait(self, key: str, changed: Callable[[Raw | None], bool], index: int) -> Raw | None:
        """Return the entry at ``key`` (None: none) once ``changed`` holds for it in a snapshot at
        least as new as ``index`` (the index of the read the caller's knowledge comes from), or
        :data:`RECHECK`. Raises what the poll raised (StoreUnavailableError: retry)."""
        if self._closed:
            raise RuntimeError(f"poll of {self.root!r} used after it went idle")
        if self._index and self._index >= index and not self._fresh:
            current = self._snapshot.get(key)
            if changed(current):
                return current
        waiter = _Waiter(key, changed, index, self._seq, asyncio.get_running_loop().create_future())
        self._waiters.setdefault(key, {})[waiter] = None
        self._count += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"consul poll {self.root!r}")
        try:
            return await waiter.future  # type: ignore[no-any-return]
        finally:
            self._drop(waiter)
            if not self._count and not self._closed:
                # Nobody waits: no poll left behind (a cancelled campaign leaves no task), and
                # the owner forgets this poll (the next waiter starts a new one).
                self._closed = True
                self._idle(self)
                task, self._task = self._task, None
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)

    def close(self, error: BaseException) -> None:
        """Stop polling; every waiter raises ``error``."""
        self._closed = True
        for waiter in self._all():
            self._wake(waiter, error)
        if self._task is not None:
            self._task.cancel()
            self._task = None

    def _drop(self, waiter: _Waiter) -> None:
        on_key = self._waiters.get(waiter.key)
        if on_key is not None and on_key.pop(waiter, False) is None:
            self._count -= 1
            if not on_key:
                del self._waiters[waiter.key]

    def _wake(self, waiter: _Waiter, result: Any) -> None:
        self._drop(waiter)
        if not waiter.future.done():
            if isinstance(result, BaseException):
                waiter.future.set_exception(result)
            else:
                waiter.future.set_result(result)

    def _all(self) -> list[_Waiter]:
        return [w for on_key in self._waiters.values() for w in on_key]

    async def _run(self) -> None:
        failures = 0
        pause = 0.0
        try:
            while self._count:
                if pause:
                    # Digesting a large prefix costs the event loop as much as the answer is
                    # big; while it keeps changing, reading it back to back would leave little
                    # loop for the requests that change it. Half the loop at most goes to this
                    # poll; its changes arrive together in the next answer.
                    await asyncio.sleep(pause)
                    pause = 0.0
                self._seq += 1
                # A new poll starts from its first waiter's index: a blocking read, as the
                # waiter's own would be; after the index went back, from a consistent read.
                asked = 0 if self._fresh else self._index or min((w.index for w in self._all()), default=1)
                seq = self._seq
                try:
                    index, entries, cost = await self._read(self.root, asked)
                except StoreUnavailableError as exc:
                    failures += 1
                    log.debug("consul %s: poll of %r failed (%d in a row): %s", self._where, self.root, failures, exc)
                    if failures == 1:
                        continue  # e.g. the agent closed an idle connection: try again at once
                    for waiter in self._all():
                        self._wake(waiter, exc)
                    await asyncio.sleep(_BACKOFF.delay(failures + 1))
                    continue
                failures = 0
                started = time.perf_counter()
                self._update(seq, asked, index, entries)
                cost += time.perf_counter() - started
                if index != asked and cost > _PACE_FROM:
                    pause = min(cost, _MAX_PAUSE)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("consul %s: the poll of %r failed unexpectedly", self._where, self.root)
            for waiter in self._all():
                self._wake(waiter, exc)

    def _update(self, seq: int, asked: int, index: int, entries: list[Raw]) -> None:
        if asked and index < asked:
            # X-Consul-Index went backwards: start over with a consistent read (Consul's rule).
            log.info("consul %s: index of %r went back from %d to %d", self._where, self.root, asked, index)
            self._fresh = True
            return
        old, old_index = self._snapshot, self._index
        new = {str(e["Key"]): e for e in entries}
        self._snapshot, self._index, self._fresh = new, index, False
        if not asked or not old_index:
            # A consistent read sent after these waiters registered is as new as anything they
            # saw, whatever their index says (it may come from before a reset). A first
            # snapshot has nothing to compare with: look at every waiter.
            for waiter in self._all():
                if (waiter.seq < seq and not asked) or index >= waiter.index:
                    current = new.get(waiter.key)
                    if waiter.changed(current):
                        self._wake(waiter, current)
            return
        waiters = self._waiters
        if waiters:
            changed = [k for k, e in new.items() if int(e["ModifyIndex"]) > old_index and k in waiters]
            changed += [k for k in old if k not in new and k in waiters]
            for key in changed:
                current = new.get(key)
                for waiter in list(waiters.get(key, ())):
                    if index >= waiter.index and waiter.changed(current):
                        self._wake(waiter, current)
        if index == asked and any(w.index > index for w in self._all()):
            # A whole wait without a change: a waiter whose index is ahead of the store cannot
            # learn anything from this prefix (the store lost data, or this server lags).
            for waiter in self._all():
                if waiter.seq < seq and waiter.index > index:
                    self._wake(waiter, RECHECK)


class Polls:
    """Which poll a wait on a key uses, for one store connection."""

    def __init__(self, prefix: str, read: Reader, where: str) -> None:
        self._prefix = prefix  # the URL path as a KV prefix
        self._read = read
        self._where = where
        self._pollers: dict[str, Poller] = {}  # by the prefix each polls
        self._keyed: dict[str, int] = {}  # parent -> how many of its keys have a poll of their own

    @property
    def open(self) -> int:
        """Polls running now (each holds one blocking query)."""
        return sum(1 for poller in self._pollers.values() if poller.waiting)

    def poller(self, key: str) -> Poller:
        """The poll to wait on the KV key ``key`` with: the key's own while this connection waits
        on fewer than ``FANOUT_AT`` keys under the same parent (so a handover costs other
        processes nothing), else one shared by every key under the parent (``jobs/7`` →
        ``jobs/``; the URL path for a key with no parent), so the number of long polls stays
        flat however many elections."""
        election = key[len(self._prefix) :].split("/~", 1)[0]
        if "/" in election:
            parent: str | None = self._prefix + election.rsplit("/", 1)[0] + "/"
        else:
            parent = self._prefix or None
        if parent is not None:
            shared = self._pollers.get(parent)
            if shared is not None:
                return shared
            if self._keyed.get(parent, 0) >= FANOUT_AT:
                return self._new(parent, parent)
        return self._pollers.get(key) or self._new(key, parent)

    def close(self, error: BaseException) -> None:
        pollers, self._pollers, self._keyed = self._pollers, {}, {}
        for poller in pollers.values():
            poller.close(error)

    def _new(self, root: str, parent: str | None) -> Poller:
        keyed = parent if parent is not None and root != parent else None

        def idle(poller: Poller) -> None:
            if self._pollers.get(root) is poller:
                del self._pollers[root]
                if keyed is not None:
                    self._keyed[keyed] -= 1
                    if not self._keyed[keyed]:
                        del self._keyed[keyed]

        poller = self._pollers[root] = Poller(root, self._read, self._where, idle)
        if keyed is not None:
            self._keyed[keyed] = self._keyed.get(keyed, 0) + 1
        return poller
