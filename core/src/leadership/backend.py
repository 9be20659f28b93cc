"""The backend contract: what a store plugin implements.

A backend translates a handful of primitives to its store. Everything else — keepalive
scheduling, self-demotion deadlines, retries with backoff, re-establishing watches, the
candidate state machine and the user-facing streams — lives in the core. A plugin should not
grow a retry loop or a state machine; if it needs one, the core is missing something.

Error contract for every coroutine below:

* :class:`~leadership.errors.StoreUnavailableError` — transient (connection refused, timeout,
  store leader election in progress). The core retries with capped, jittered backoff.
* :class:`~leadership.errors.SessionLostError` — the session is gone on the store. The core
  demotes every election on it, opens a new session and campaigns again.
* :class:`~leadership.errors.PermanentStoreError` (e.g. ``AuthenticationError``) — retrying
  cannot help; the core surfaces it to the user.

Translate every client exception into one of these; anything else escaping a backend is treated
as a bug and surfaced to the user.

Cancellation and time budgets. The core never lets one call hold an election hostage: it
cancels a call or bounds it with a timeout, then *awaits the cancelled call's end* before it
moves on, except where the list below says otherwise: closing (the last election on a session
stopping, ``store.close()``) waits a bounded time, then leaves the call running behind it. So
every call must return promptly when cancelled, also while the store is frozen (a paused
server, a partition that drops packets): a client that blocks on cancel — waiting for a reply
to arrive, closing a connection gracefully — stalls the core, and with it every election on the
connection, or leaks a task when it closes. Cancel the client's request and return; never catch
``CancelledError`` to finish a round trip first.

What the core does with each call. The constants named live in ``leadership.store``
(``DEFAULT_CONNECT_TIMEOUT`` 10 s, ``DEFAULT_HEALTH_INTERVAL`` 1 s), ``leadership._session``
(``CLOSE_BUDGET`` 0.6 s: the time ``store.close()`` may take, shared by its steps; "what is
left of it" is the whole budget when a step runs outside ``store.close()``) and
``leadership.candidate`` (``STOP_WITHDRAW_TIMEOUT`` 2 s).

* ``open`` — awaited by ``connect()`` / ``aconnect()``, followed by one ``ping``; each is
  retried with backoff while it raises ``StoreUnavailableError``, and the whole is bounded by
  ``connect_timeout`` (default ``DEFAULT_CONNECT_TIMEOUT``): then the call in flight is
  cancelled and ``connect()`` raises ``StoreUnavailableError``.
* ``create_session`` — no timeout while an election needs the session. When the last election
  on it stops, a call in flight gets ``CLOSE_BUDGET / 3`` (0.2 s; during ``store.close()`` a
  third of what is left of the budget), is then cancelled, awaited as long again (at least
  50 ms) and left behind.
* ``Session.refresh`` — ``wait_for`` with the session's remaining budget: the deadline (send
  time of the last confirmed refresh + ``guaranteed`` - safety margin, by default
  ``min(1 s, 10 % of guaranteed)``) minus now; a timeout counts as
  ``StoreUnavailableError``. One in flight when the last election on the session stops is
  cancelled like ``create_session``.
* ``Session.close`` — when the last election on the session stops or the store closes:
  ``wait_for`` what is left of ``CLOSE_BUDGET``, once, never retried (the store expires what it
  did not confirm). A session lost while in use is revoked in the background: ``wait_for``
  ``max(1 s, refresh_interval)``, retried with backoff until the store must have expired it by
  itself (``ttl`` after the loss); when the last election stops or the store closes meanwhile,
  the attempt in flight is cut to what is left of ``CLOSE_BUDGET``, with no retry.
* ``campaign`` — no timeout; cancelled by ``stop()``, by the loss of its session (deadline
  passed, ``SessionLostError``, ``Session.notify_lost``), and whenever the store comes back
  after an outage or restarts — then issued again on the same session, which must find its
  entry (idempotence below).
* ``withdraw`` — on ``stop()``: ``wait_for`` ``STOP_WITHDRAW_TIMEOUT``, once; skipped when the
  session is already lost, while the store is known unreachable (a ``ping`` or ``refresh``
  could not reach it and none has succeeded since) and during ``store.close()`` (revoking the
  session releases every entry in one request). When it was skipped or failed and other
  elections keep the session alive, it is retried in the background after ``stop()`` returns:
  ``wait_for`` ``max(1 s, refresh_interval)``, with backoff (at once when the store comes back),
  raced against session loss, until it succeeds, the session is lost or the store closes (then
  cancelled like ``create_session``: the revocation removes the entry). When the stopped
  election was the session's last, the session is revoked instead (``Session.close``). After a
  resign, or when another candidate shows as leader: raced against stop and session loss,
  retried with backoff while the session lives.
* ``get_leader`` — used by the default ``Backend.ping``, and once, under ``wait_for`` 0.5 s, to
  name the leader in the ``ElectionTimeoutError`` of ``wait_elected`` / ``hold``.
* ``observe`` — each ``__anext__`` is cancelled by stop and whenever the store comes back or
  restarts (and also when a leader's own watch ends with its leadership: then it is not
  awaited); then the iterator's ``aclose()`` runs under ``wait_for`` what is left of
  ``CLOSE_BUDGET``, and ``observe`` is called again unless stopped.
* ``ping`` — every ``health_interval`` (default ``DEFAULT_HEALTH_INTERVAL``) while a watch, a
  campaign or a retry pause is open: ``wait_for`` ``max(1 s, 2 * health_interval)`` (2 s by
  default); cancelled by ``store.close()``. In ``connect()``: see ``open``.
* ``Backend.close`` — once, at the end of ``store.close()`` (or when ``connect()`` fails):
  waited for at most what is left of ``CLOSE_BUDGET`` (at least 50 ms), then left to finish in
  the background, not cancelled. A sync ``Store.close()`` waits 30 s for the whole shutdown.

A cancelled ``campaign`` or ``observe`` must not leave background work behind (a task, a
client-side watch). When ``stop()`` ends a campaign, the core calls ``withdraw`` afterwards (as
above) to remove the candidate's entry.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator, Callable, Hashable
from typing import ClassVar

from ._loop import call_from_thread, wakes_loop_later
from .url import StoreURL

__all__ = ["Backend", "BackendFactory", "Session", "Term", "call_from_thread", "wakes_loop_later"]


@dataclasses.dataclass(frozen=True)
class Term:
    """One won election: who leads ``key`` and the term's fencing token.

    ``token`` is strictly increasing across successive terms of the same key on the same store
    (etcd: the leader entry's create revision; ZooKeeper: its czxid; Consul: the raft index of
    the acquiring write; a per-key counter is as good). Different keys may share a value: the
    token orders the terms of one key, nothing more. It must keep increasing across the
    store's restarts. Downstream systems reject requests carrying a token lower than the
    highest they have seen for that key.
    """

    key: str
    leader: str
    token: int


class Session(abc.ABC):
    """A store session (etcd lease, ZooKeeper session, Consul session).

    One session is shared by every election with the same ttl on one store connection, so a
    process holding thousands of elections sends O(1) keepalive traffic. The core calls
    :meth:`refresh` every :attr:`refresh_interval` seconds and demotes every leader on this
    session if no refresh was confirmed within :attr:`guaranteed` seconds (minus a safety
    margin) of the moment it was sent.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._lost_callback: Callable[[], None] | None = None

    @property
    @abc.abstractmethod
    def id(self) -> str:
        """The store's identifier for the session (lease id, session id), for logs and keys."""

    @property
    def guaranteed(self) -> float:
        """Seconds after a confirmed :meth:`refresh` was sent during which the store promises not to
        expire the session. Default: ``ttl``. Consul overrides it (session TTL = ttl/2)."""
        return self.ttl

    @property
    def refresh_interval(self) -> float:
        """How often the core refreshes. Default: a third of :attr:`guaranteed`."""
        return self.guaranteed / 3

    @abc.abstractmethod
    async def refresh(self) -> None:
        """One renewal round trip. Return only once the store confirmed the session is alive.

        Raise SessionLostError when the store says the session no longer exists, and
        StoreUnavailableError when it cannot be reached.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Revoke the session, releasing every entry it holds. Must not raise when it is already
        gone; may raise StoreUnavailableError, and the core then calls it again (with backoff)
        until it succeeds or the store must have expired the session by itself."""

    # -- push notification, optional -------------------------------------------------------
    def set_lost_callback(self, callback: Callable[[], None] | None) -> None:
        """Used by the core. Backends call :meth:`notify_lost` instead."""
        self._lost_callback = callback

    def notify_lost(self) -> None:
        """A backend that learns of the loss asynchronously (ZooKeeper's LOST state) calls this,
        from the event loop thread, so the core demotes at once instead of at the next refresh."""
        if self._lost_callback is not None:
            self._lost_callback()


class Backend(abc.ABC):
    """One connection to one store (possibly several endpoints of one cluster).

    Keys reaching a backend are already validated by the core: one or more segments of
    ``[A-Za-z0-9._-]`` joined by ``/``, no leading or trailing slash. Names are non-empty
    strings. A backend maps a key to its own namespace (etcd prefix, ZooKeeper path, Consul KV
    path) however it likes, consistently for candidates and observers.
    """

    #: The smallest ttl (seconds) the store can honour; below it the core raises InvalidTTLError.
    min_ttl: ClassVar[float] = 1.0
    #: The largest ttl, or None for no limit.
    max_ttl: ClassVar[float | None] = None

    async def open(self) -> None:
        """Connect. Raise PermanentStoreError/AuthenticationError for errors retrying cannot fix,
        StoreUnavailableError when the store is merely unreachable (the core retries)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release every client resource. Sessions were already closed by the core."""

    @abc.abstractmethod
    async def create_session(self, ttl: float) -> Session:
        """Open a session whose entries the store removes at most ``ttl`` seconds after the last
        confirmed refresh (the caller has already checked ``min_ttl <= ttl <= max_ttl``)."""

    @abc.abstractmethod
    async def campaign(self, session: Session, key: str, name: str) -> Term:
        """Queue for ``key`` with ``session`` and return once this entry leads.

        * FIFO without a herd: the entry waits only on its immediate predecessor, so a handover
          costs O(1) store requests however many candidates wait. A store that tells nobody
          when a session expires (a SQL table with an expiry column, say) may poll: each waiter
          reads its own predecessor's entry, at the predecessor's session expiry and at a fixed
          interval between (to see a withdrawal). That costs waiters / interval reads per
          second while idle, and adds up to one interval to a handover — but a handover still
          wakes one waiter, and no waiter reads more because others wait.
        * Idempotent per (session, key): calling again after a transient error re-uses an entry
          the session already has, keeping its place in the queue.
        * After waiting, check that the entry still exists and belongs to a live session before
          returning (raise SessionLostError otherwise) — returning a stale win is a split brain.
        * The returned term carries ``name`` and the fencing token.
        """

    @abc.abstractmethod
    async def withdraw(self, session: Session, key: str) -> None:
        """Remove this session's entry for ``key`` — leading or still waiting — so the next
        candidate in line takes over at once. Doing nothing when there is no entry is fine."""

    @abc.abstractmethod
    async def get_leader(self, key: str) -> Term | None:
        """The current term of ``key``, or None when nobody leads."""

    @abc.abstractmethod
    def observe(self, key: str) -> AsyncIterator[Term | None]:
        """Yield the current term of ``key`` at once, then again on every change (None: no leader).

        Usually an ``async def`` generator. The core cancels a pending ``__anext__`` (stop, store
        back or restarted) and then closes the iterator with ``aclose()``, so cleanup belongs in
        a ``finally`` that does not block (see the module's cancellation rules). Yielding a value
        equal to the previous one is allowed (the core drops duplicates). The iterator raises
        StoreUnavailableError when its watch breaks; the core re-creates it. A store without
        change notifications may poll (``get_leader`` at an interval); the interval is the
        follower's notification delay, and a term shorter than it may go unreported (allowed:
        followers report the terms they observed, never an older one after a newer one).
        """

    def abandon(self) -> None:
        """Optional; for :func:`leadership.testing.crash`. Stop, at once and from any thread, every
        activity of the client's own that keeps sessions alive (a keepalive thread of its own),
        without closing, revoking or releasing anything: from now on the store must see this
        process as dead and expire its sessions after their ttl, exactly as if it had been killed.

        Called after the core's event loop is frozen, so nothing driven by the core runs any more.
        The default does nothing: right for a backend whose sessions are refreshed only by the
        core's :meth:`Session.refresh` calls. The backend is never used again afterwards.
        """

    async def wait_replaced(self, session: Session, key: str, term: Term) -> None:
        """Optional: return once ``term``, won by ``session``, no longer leads ``key`` (its entry is
        gone, or another entry leads). Raise StoreUnavailableError when the watch breaks; the core
        calls again (also after the store comes back or restarts).

        The core watches a leader's own term with this when a backend implements it — typically
        one watch on the leader's own entry, armed while campaigning, on the leader's own session,
        so that a handover costs no reads on the new leader's side — and with :meth:`observe`
        otherwise.
        """
        raise NotImplementedError

    async def ping(self) -> Hashable:
        """A cheap round trip used as a health check while watches are open.

        Return an identifier of the store's current incarnation if the store exposes one (raft
        term, cluster id, ...): when it changes between pings the core re-establishes every
        watch, since some clients leave a watch silently stalled after a store restart.
        The default reads a key and returns None.
        """
        await self.get_leader("leadership-health-check")
        return None


#: What a plugin registers: a callable turning a parsed URL into a Backend (usually the class).
#: It validates the URL and options and raises ConfigurationError naming what is wrong.
BackendFactory = Callable[[StoreURL], Backend]
