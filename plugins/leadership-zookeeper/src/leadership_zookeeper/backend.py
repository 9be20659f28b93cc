"""The ZooKeeper backend: ephemeral sequential nodes under one node per election key.

Layout: ``<base>/<key>/n~<session id>~<sequence>``, data = the candidate's name. The lowest
sequence leads; each waiter watches only its predecessor (no herd); the fencing token is the
leader node's czxid, which grows with the sequence because sequence order is creation order.

Every :class:`ZooKeeperSession` owns one ``KazooClient`` (= one ZooKeeper session, whose timeout
is the ttl); the core shares a session between all elections with the same ttl. A separate
reader client serves ``get_leader``, ``observe`` and ``ping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Hashable
from typing import Any, ClassVar

from kazoo import exceptions as kz  # type: ignore[import-untyped,unused-ignore]
from kazoo.client import KazooClient  # type: ignore[import-untyped,unused-ignore]
from kazoo.protocol.serialization import Connect  # type: ignore[import-untyped,unused-ignore]
from kazoo.protocol.states import EventType, KazooState, KeeperState  # type: ignore[import-untyped,unused-ignore]
from kazoo.retry import KazooRetry  # type: ignore[import-untyped,unused-ignore]
from kazoo.security import CREATOR_ALL_ACL  # type: ignore[import-untyped,unused-ignore]

from leadership.backend import Backend, Session, Term, wakes_loop_later
from leadership.errors import (
    AuthenticationError,
    ConfigurationError,
    InvalidTTLError,
    SessionLostError,
    StoreUnavailableError,
)
from leadership.url import Endpoint, StoreURL, parse_bool, parse_seconds

from ._bridge import (
    PASS_THROUGH,
    PROVEN,
    InlineHandler,
    ThreadSlots,
    drop,
    fired,
    link,
    post,
    translate,
    watch_future,
    watch_then_list,
)

__all__ = ["ZooKeeperBackend", "ZooKeeperSession"]

log = logging.getLogger(__name__)


class _OncePerMinute(logging.Filter):
    """kazoo logs every dropped connection of every client; under overload (one client per
    session, hundreds of sessions) that is thousands of lines saying one thing. Let one of its
    warnings through a minute, with a count of the others; the core reports what it means for
    the elections."""

    def __init__(self) -> None:
        super().__init__()
        self._last = -60.0
        self._skipped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        now = time.monotonic()
        if now - self._last < 60.0:
            self._skipped += 1
            return False
        if self._skipped:
            record.msg = f"{record.getMessage()} ({self._skipped} more kazoo warnings in the last minute)"
            record.args = ()
        self._last, self._skipped = now, 0
        return True


#: The logger kazoo's clients use (kazoo's own by default): rate-limited, see _OncePerMinute.
kazoo_log = logging.getLogger(f"{__name__}.kazoo")
kazoo_log.addFilter(_OncePerMinute())

DEFAULT_PORT = 2181
DEFAULT_BASE = "/leadership"
DEFAULT_TIMEOUT = 10.0
#: The reader holds no entries, so its session may be long; the server clamps it to its maximum.
READER_SESSION_TIMEOUT = 30.0
#: A silent session's ephemeral nodes were measured to vanish 0-1 tick after the negotiated
#: timeout counted from the client's last send; the promise handed to the core is still shortened
#: by this fraction of it (at least 50 ms) for clock drift between client and server.
EXPIRY_MARGIN = 0.1
#: Requests one session keeps outstanding at most. ZooKeeper answers a session's requests in
#: order, so a keepalive queued behind thousands of campaigns (many elections starting at once)
#: would come back too late; the keepalive itself skips this queue.
MAX_OUTSTANDING = 256
#: Of which listings sent straight from kazoo's thread when a waiter's predecessor goes
#: (watch_then_list), at most this many at once; beyond it (a burst of handovers) the waiters
#: send theirs through the queue above.
MAX_DIRECT = 64

OPTIONS = {
    "timeout": "seconds to wait for a connection or a reply (default 10)",
    "digest": "user:password for ZooKeeper digest authentication (or put them in the URL's userinfo)",
    "tls": "true/false: connect with TLS (default false; implied by the files below)",
    "ca_cert": "PEM file of the CA that signed the servers' certificates",
    "client_cert": "PEM file of the client certificate (mutual TLS)",
    "client_key": "PEM file of the client certificate's private key",
}
_TLS_FILES = ("ca_cert", "client_cert", "client_key")

_PREFIX = "n"
_SEP = "~"  # not allowed in keys, so an entry never collides with a nested key's node


def _contenders(children: list[str]) -> list[str]:
    """The entries among ``children`` in queue order (lowest sequence first)."""
    entries: list[tuple[int, str]] = []
    for child in children:
        parts = child.split(_SEP)
        if len(parts) == 3 and parts[0] == _PREFIX and parts[2].isdigit():
            entries.append((int(parts[2]), child))
    entries.sort()
    return [child for _, child in entries]


def _existing_file(path: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    return path


def _check_node_name(url: str, segment: str) -> None:
    if segment in ("", ".", ".."):
        raise ConfigurationError(f"zookeeper URL {url!r}: path segment {segment!r} is not a valid znode name")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in segment):
        raise ConfigurationError(f"zookeeper URL {url!r}: path segment {segment!r} has control characters")


class ZooKeeperSession(Session):
    """One ZooKeeper session, i.e. one connected ``KazooClient``."""

    def __init__(
        self,
        backend: ZooKeeperBackend,
        client: Any,
        ttl: float,
        negotiated: float,
        loop: asyncio.AbstractEventLoop,
        session_id: int,
    ) -> None:
        super().__init__(ttl)
        self._backend = backend
        self.client = client
        self.loop = loop
        #: The session timeout the server granted (seconds); at most ``ttl``.
        self.negotiated = negotiated
        #: From the server's handshake reply, not ``client.client_id``: that one is None whenever
        #: the connection is down, which it may already be again by the time the loop runs here.
        self.session_id = session_id
        #: Every entry of this session starts with it: found again after a lost reply to a create.
        self.prefix = f"{_PREFIX}{_SEP}{self.session_id:016x}{_SEP}"
        #: key -> this session's entry node name, once known.
        self.nodes: dict[str, str] = {}
        #: key -> the czxid of that entry (the fencing token if it leads), once known.
        self.tokens: dict[str, int] = {}
        #: key -> the future of the watch on that entry, armed once while campaigning: it fires
        #: when the entry goes, which is how a leader learns it was replaced (wait_replaced).
        self.entry_watches: dict[str, asyncio.Future[Any]] = {}
        #: key -> the kazoo watch function that settles that future.
        self.entry_watch_fns: dict[str, Any] = {}
        #: Keys whose entry may exist without being in ``nodes`` (a create or delete whose reply
        #: never came); any other key not in ``nodes`` certainly has no entry of this session.
        self.uncertain: set[str] = set()
        self.lost_reason: str | None = None
        self.closing = False
        self.slots = asyncio.Semaphore(MAX_OUTSTANDING)
        self.direct_slots = ThreadSlots(MAX_DIRECT)
        #: Mirrors kazoo's connection state on the loop, so refresh can wait for a reconnect.
        self.connected = asyncio.Event()
        if client.connected:
            self.connected.set()
        #: Bumped on kazoo's connection thread at every change of connection state, before any
        #: event read on a new connection: unchanged means one connection all along, whose
        #: events come in the order of the changes (see proof).
        self.state_changes = 0
        client.add_listener(self._on_state)

    @property
    def id(self) -> str:
        return f"{self.session_id:#018x}"

    @property
    def guaranteed(self) -> float:
        timeout = min(self.ttl, self.negotiated)
        return timeout - max(0.05, EXPIRY_MARGIN * timeout)

    def _on_state(self, state: Any) -> None:
        # kazoo's connection thread: never block here, only hand over to the loop.
        self.state_changes += 1
        if self.closing:
            return
        if state == KazooState.LOST:
            reason = "authentication failed" if self.client.client_state == KeeperState.AUTH_FAILED else "expired"
            self._post(self.mark_lost, reason)
        elif state == KazooState.CONNECTED and self.client._session_id != self.session_id:
            self._post(self.mark_lost, "replaced by a new session after expiry")
        elif state == KazooState.CONNECTED:
            self._post(self._set_connected, True)
        else:
            # SUSPENDED: nothing to decide here; the core's deadline from the last confirmed
            # refresh demotes unless kazoo reconnects to the same session in time.
            self._post(self._set_connected, False)

    def _post(self, callback: Callable[[Any], None], arg: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, arg)
        except RuntimeError:  # loop closed
            pass

    def _set_connected(self, connected: bool) -> None:
        if connected:
            self.connected.set()
        else:
            self.connected.clear()

    def mark_lost(self, reason: str) -> None:
        if self.lost_reason is not None or self.closing:
            return
        self.lost_reason = reason
        log.debug("ZooKeeper session %s lost: %s", self.id, reason)  # the core says it, rate-limited
        self.notify_lost()

    def forget(self, key: str) -> None:
        """This session has no known entry for ``key`` any more."""
        self.nodes.pop(key, None)
        self.tokens.pop(key, None)
        self.entry_watches.pop(key, None)
        fn = self.entry_watch_fns.pop(key, None)
        if fn is not None:
            # The entry is gone or going (withdraw): its watch's event would only wake the loop,
            # in the middle of the handover, for a future nobody needs any more.
            drop(fn)

    def proof(self, key: str, armed: asyncio.Future[Any] | None) -> Callable[[], bool] | None:
        """When our entry is second in line, whether the first one's deletion event, as it is
        read off the connection, proves by itself that we now lead, so that the read which would
        otherwise confirm it can be skipped (one round trip less on every handover).

        It does when all of this holds: (1) the listing that put us second was read after our
        entry was created, and sequence numbers only grow, so nothing can queue ahead of us
        since; (2) the event came to our own session: the server sends a session's watch events
        only while that session lives, and in the order of its transactions, so our session was
        alive when the deletion was applied; (3) the watch on our own entry, set before, has not
        fired: had our entry been deleted or changed before that deletion, its event would have
        been read first on the same connection (a reconnect re-registers that watch before the
        watch on the first entry is sent, so whatever it owes also comes first); (4) the
        connection was the same from the watch on the first entry to its event (no change of
        state): after a reconnect the server replays the events it owes in no particular order,
        so the read decides. Otherwise, or when our entry's watch is not known, None: the
        listing is read as usual. The fencing token is our entry's czxid, known since it was
        created; the core still checks the session's deadline before it reports the win.
        """
        fn = self.entry_watch_fns.get(key)
        if armed is None or fn is None or self.entry_watches.get(key) is not armed or armed.done():
            return None
        changes = self.state_changes

        def proven() -> bool:
            # Plain attribute reads: called on kazoo's connection thread, and again on the loop.
            return self.state_changes == changes and not fired(fn) and self.client._session_id == self.session_id

        return proven

    def check(self) -> None:
        """Raise SessionLostError unless the session may still be alive."""
        if self.closing:
            raise SessionLostError(f"ZooKeeper session {self.id} was closed")
        if self.lost_reason is not None:
            raise SessionLostError(f"ZooKeeper session {self.id} lost: {self.lost_reason}")
        if self.client._session_id not in (None, self.session_id):
            self.mark_lost("replaced by a new session after expiry")
            raise SessionLostError(f"ZooKeeper session {self.id} expired")

    async def request(self, what: str, start: Callable[[], Any]) -> Any:
        self.check()
        async with self.slots:
            return await self._backend.request(self.client, what, start, session=True)

    async def pipeline(self, what: str, starts: list[Callable[[], Any]]) -> list[Any]:
        self.check()
        async with self.slots:
            return await self._backend.pipeline(self.client, what, starts, session=True)

    async def refresh(self) -> None:
        # kazoo pings the server itself every third of the timeout; this round trip only proves to
        # the core that the session is connected now. While SUSPENDED it waits for kazoo to
        # reconnect (to any server of the ensemble), at most one refresh interval, so the core
        # confirms the session as soon as it is back instead of after its next backoff. A reply
        # after the wait is still safe for the core's deadline: the server heard from us later
        # than the moment the core counts from.
        self.check()
        if not self.client.connected:
            # kazoo sets its flag before it tells listeners, so the CONNECTED notice comes after.
            self.connected.clear()
            try:
                await asyncio.wait_for(self.connected.wait(), self.refresh_interval)
            except (asyncio.TimeoutError, TimeoutError):
                raise StoreUnavailableError(
                    f"ZooKeeper session {self.id}: not connected to any of {self._backend.hosts}; kazoo is reconnecting"
                ) from None
        await self._backend.request(self.client, "refresh", lambda: self.client.exists_async("/"), session=True)
        self.check()

    async def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        self.client.remove_listener(self._on_state)
        # Closing the session deletes its ephemeral nodes at once, so the next candidate in
        # line does not wait for the session to expire.
        await self._backend.stop_client(self.client)


class ZooKeeperBackend(Backend):
    """``zookeeper://host:port[,host:port...][/base][?options]``"""

    #: ZooKeeper negotiates session timeouts into [2, 20] x tickTime (default tickTime 2 s, so
    #: 4 s). This static floor is what the core can keep alive (a refresh every ~0.06 s); the
    #: server's own minimum (2 x tickTime unless minSessionTimeout is set) is only known once a
    #: session opens, and a ttl below it ends the election with InvalidTTLError naming it.
    min_ttl: ClassVar[float] = 0.2
    max_ttl: ClassVar[float | None] = None

    def __init__(self, url: StoreURL) -> None:
        if url.scheme != "zookeeper":
            raise ConfigurationError(f"ZooKeeperBackend cannot handle {url.scheme}:// URLs")
        raw = url.redacted()
        self.url = url
        endpoints = url.endpoints_or(Endpoint("127.0.0.1", DEFAULT_PORT))
        self.hosts = ",".join(str(e) for e in endpoints)

        base = url.path.rstrip("/")
        if url.path and not url.path.startswith("/"):
            raise ConfigurationError(f"zookeeper URL {raw!r}: the base path must start with '/'")
        if url.path == "":
            base = DEFAULT_BASE
        for segment in base.split("/")[1:]:
            _check_node_name(raw, segment)
        if base == "/zookeeper" or base.startswith("/zookeeper/"):
            raise ConfigurationError(f"zookeeper URL {raw!r}: /zookeeper is reserved by the server")
        #: Every key lives under this node ("" = the root).
        self.base = base

        timeout = url.option("timeout", parse_seconds, DEFAULT_TIMEOUT, allowed="a positive number of seconds")
        assert timeout is not None
        self.timeout: float = timeout
        digest = url.option("digest", str)
        if url.username is not None or url.password is not None:
            if digest is not None:
                raise ConfigurationError(
                    f"zookeeper URL {raw!r}: give credentials either as user:password@ or as digest=, not both"
                )
            if not url.username or url.password is None:
                raise ConfigurationError(f"zookeeper URL {raw!r}: digest credentials need both a user and a password")
            digest = f"{url.username}:{url.password}"
        if digest is not None and (":" not in digest or digest.startswith(":")):
            raise ConfigurationError(f"zookeeper URL {raw!r}: option digest must be 'user:password'")
        self.digest = digest

        files = {name: url.option(name, _existing_file, None, allowed="a readable PEM file") for name in _TLS_FILES}
        self.ca_cert, self.client_cert, self.client_key = (files[name] for name in _TLS_FILES)
        tls = url.option("tls", parse_bool, None, allowed="true or false")
        if tls is False and any(files.values()):
            raise ConfigurationError(f"zookeeper URL {raw!r} sets tls=false but also ca_cert/client_cert/client_key")
        if self.client_key and not self.client_cert:
            raise ConfigurationError(f"zookeeper URL {raw!r}: option client_key needs client_cert")
        self.tls = bool(tls) or any(files.values())
        url.reject_unknown_options(OPTIONS)

        self._reader: Any = None
        self._sessions: weakref.WeakSet[ZooKeeperSession] = weakref.WeakSet()

    # -- paths -----------------------------------------------------------------------------------
    def key_path(self, key: str) -> str:
        # "." and ".." are valid key segments but not valid znode names; "%" never occurs in a key.
        segments = ("%2E" * len(s) if s in (".", "..") else s for s in key.split("/"))
        return f"{self.base}/{'/'.join(segments)}"

    # -- clients ---------------------------------------------------------------------------------
    def _new_client(self, session_timeout: float, inline: bool) -> tuple[Any, list[tuple[float, int]]]:
        """A KazooClient, not started, and a list that receives (negotiated session timeout,
        session id) from every handshake."""
        # Reconnect quickly (a session survives only if we are back within its timeout); kazoo's
        # default backs off to an hour.
        retry = KazooRetry(
            max_tries=-1, delay=0.05, backoff=2, max_jitter=0.4, max_delay=max(0.05, min(1.0, session_timeout / 8))
        )
        client = KazooClient(
            hosts=self.hosts,
            # Sessions' clients carry the handover path; the reader's (followers) keeps kazoo's
            # ordering of watch events behind connection state changes.
            handler=InlineHandler() if inline else None,
            timeout=session_timeout,
            connection_retry=retry,
            auth_data=[("digest", self.digest)] if self.digest else None,
            default_acl=CREATOR_ALL_ACL if self.digest else None,
            use_ssl=self.tls,
            ca=self.ca_cert,
            certfile=self.client_cert,
            keyfile=self.client_key,
            logger=kazoo_log,
        )
        negotiated: list[tuple[float, int]] = []
        # kazoo keeps the negotiated session timeout in a local variable; record it (and the
        # session id) from the connect reply (the only request of type Connect) before the
        # CONNECTED callback fires.
        connection = client._connection
        invoke = connection._invoke

        def recording_invoke(timeout: float, request: Any, xid: Any = None) -> Any:
            result = invoke(timeout, request, xid)
            if isinstance(request, Connect):
                negotiated.append((result[0].time_out / 1000.0, result[0].session_id))
            return result

        connection._invoke = recording_invoke
        return client, negotiated

    async def _connect(self, session_timeout: float, inline: bool = True) -> tuple[Any, tuple[float, int] | None]:
        """A started client with a session, and (negotiated timeout, session id) of its handshake."""
        loop = asyncio.get_running_loop()
        client, negotiated = self._new_client(session_timeout, inline)
        connected: asyncio.Future[bool] = loop.create_future()

        def listener(state: Any) -> bool:
            if state == KazooState.CONNECTED:
                post(loop, connected, True)
                return True
            if state == KazooState.LOST and client.client_state == KeeperState.AUTH_FAILED:
                post(loop, connected, False)
                return True
            return False

        client.add_listener(listener)
        try:
            client.start_async()
            ok = await asyncio.wait_for(connected, self.timeout)
            if not ok:
                raise AuthenticationError(f"ZooKeeper at {self.hosts} rejected the credentials")
        except BaseException as exc:
            client.remove_listener(listener)
            await self.stop_client(client)
            if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
                raise StoreUnavailableError(
                    f"could not connect to ZooKeeper at {self.hosts} within {self.timeout:g}s"
                ) from None
            if isinstance(exc, kz.KazooException):
                raise translate(exc, "connect", session=False) from exc
            raise
        return client, (negotiated[-1] if negotiated else None)

    async def stop_client(self, client: Any) -> None:
        """Stop and close a client off the loop: kazoo's stop() joins its threads."""

        def stop() -> None:
            try:
                client.stop()
            except Exception as exc:  # noqa: BLE001 - best effort; the session expires by itself
                log.debug("stopping a ZooKeeper client failed: %r", exc)
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001
                log.debug("closing a ZooKeeper client failed: %r", exc)

        await asyncio.get_running_loop().run_in_executor(None, stop)

    async def request(self, client: Any, what: str, start: Callable[[], Any], *, session: bool) -> Any:
        """Send one request and await its reply, translating kazoo's errors (but the ones in
        PASS_THROUGH, which describe the data and are raised as they are)."""
        (result,) = await self.pipeline(client, what, [start], session=session)
        if isinstance(result, PASS_THROUGH):
            raise result
        return result

    async def pipeline(self, client: Any, what: str, starts: list[Callable[[], Any]], *, session: bool) -> list[Any]:
        """Send several requests at once (one round trip; ZooKeeper answers a session's requests
        in order) and return their replies; a PASS_THROUGH error is returned in its reply's place."""
        if not client.connected:
            # kazoo would queue the request until it reconnects; fail fast and let the core retry.
            if session and client.client_state in (KeeperState.EXPIRED_SESSION, KeeperState.CLOSED):
                raise SessionLostError(f"ZooKeeper session is gone ({what})")
            raise StoreUnavailableError(f"not connected to ZooKeeper at {self.hosts} ({what}); reconnecting")
        loop = asyncio.get_running_loop()
        return await self.collect([link(loop, start()) for start in starts], what, session=session)

    async def collect(self, futures: list[asyncio.Future[Any]], what: str, *, session: bool) -> list[Any]:
        """The replies to requests already sent (see :meth:`pipeline`)."""
        try:
            _, pending = await asyncio.wait(futures, timeout=self.timeout)
            if pending:
                raise translate(TimeoutError(), what, session=session)
            results: list[Any] = []
            for future in futures:
                exc = future.exception()
                if exc is None or isinstance(exc, PASS_THROUGH):
                    results.append(exc if exc is not None else future.result())
                elif isinstance(exc, kz.KazooException):
                    raise translate(exc, what, session=session) from exc
                else:
                    raise exc
            return results
        finally:
            for future in futures:  # on timeout or cancellation: late replies go nowhere
                future.cancel()

    def _reader_client(self) -> Any:
        if self._reader is None:
            raise StoreUnavailableError("the ZooKeeper backend is not open")
        return self._reader

    async def _read(self, what: str, start: Callable[[], Any]) -> Any:
        return await self.request(self._reader_client(), what, start, session=False)

    # -- Backend ---------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._reader is not None:
            return
        client, _ = await self._connect(READER_SESSION_TIMEOUT, inline=False)
        try:
            # Reading the base proves the credentials fit its ACL (digest auth itself never fails).
            await self.request(client, "open", lambda: client.get_children_async(self.base or "/"), session=False)
        except kz.NoNodeError:
            pass
        except BaseException:
            await self.stop_client(client)
            raise
        self._reader = client

    async def close(self) -> None:
        for session in list(self._sessions):
            await session.close()
        reader, self._reader = self._reader, None
        if reader is not None:
            await self.stop_client(reader)

    def abandon(self) -> None:
        """Cut every client's connection without the close request ``stop()`` would send: kazoo's
        own thread pings the server by itself, so freezing the core's loop alone is no crash. The
        server then keeps the sessions until their timeout, as for a killed process."""
        clients = [session.client for session in list(self._sessions)]
        if self._reader is not None:
            clients.append(self._reader)
        for client in clients:
            # kazoo has no public "drop": a set _stopped keeps its connection loop from
            # reconnecting, and a shut-down socket ends the current connection at once.
            client._stopped.set()
            sock = getattr(client._connection, "_socket", None)
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    async def create_session(self, ttl: float) -> ZooKeeperSession:
        client, handshake = await self._connect(ttl)
        return await self._adopt(client, ttl, handshake)

    async def _adopt(self, client: Any, ttl: float, handshake: tuple[float, int] | None) -> ZooKeeperSession:
        """The session of a client that has just connected. Its connection may be down again by
        now (a slow process misses its pings): the session is then either resumed by kazoo or
        reported lost, like any session's, and never read from the disconnected client."""
        if handshake is None:  # a kazoo without the hook we rely on: trust the request
            log.warning("could not read the negotiated ZooKeeper session timeout; assuming %gs", ttl)
            client_id = client.client_id
            if client_id is None:
                await self.stop_client(client)
                raise StoreUnavailableError(f"the connection to ZooKeeper at {self.hosts} dropped opening a session")
            handshake = (ttl, client_id[0])
        negotiated, session_id = handshake
        # The server silently raises a timeout below its minimum: such a session would outlive the
        # ttl, breaking the promise that a crashed leader blocks the key at most ttl seconds.
        if negotiated > ttl + 0.001:
            await self.stop_client(client)
            raise InvalidTTLError(
                f"ttl {ttl:g}s is below the minimum session timeout of the ZooKeeper server at {self.hosts}: "
                f"{negotiated:g}s (2 x tickTime unless minSessionTimeout is set); use ttl >= {negotiated:g}"
            )
        if negotiated < ttl - 0.001:
            log.info("ZooKeeper granted a %gs session timeout for ttl %gs (the server's maximum)", negotiated, ttl)
        session = ZooKeeperSession(self, client, ttl, negotiated, asyncio.get_running_loop(), session_id)
        if client.client_state in (KeeperState.EXPIRED_SESSION, KeeperState.CLOSED):
            # Lost before the listener that reports it was added: say so now.
            await session.close()
            raise SessionLostError(f"ZooKeeper session {session.id} expired while it was being opened")
        self._sessions.add(session)
        return session

    @staticmethod
    def _own(session: Session) -> ZooKeeperSession:
        if not isinstance(session, ZooKeeperSession):
            raise TypeError(f"expected a ZooKeeperSession, got {type(session).__name__}")
        return session

    async def campaign(self, session: Session, key: str, name: str) -> Term:
        s = self._own(session)
        loop = asyncio.get_running_loop()
        parent = self.key_path(key)
        what = f"campaign for {key!r}"
        #: The listing sent from kazoo's thread when the predecessor went, not used yet.
        listed: Any = None
        while True:
            own = s.nodes.get(key)
            if own is None and key not in s.uncertain:
                # Certainly no entry yet: create it. Until the reply arrives (it may be lost with
                # the connection, or this campaign cancelled) the entry may or may not exist.
                s.uncertain.add(key)
                created, stat = await s.request(
                    what,
                    functools.partial(
                        s.client.create_async,
                        f"{parent}/{s.prefix}",
                        name.encode(),
                        ephemeral=True,
                        sequence=True,
                        makepath=True,
                        include_data=True,  # the entry's stat: its czxid is the token if it leads
                    ),
                )
                own = s.nodes[key] = created.rsplit("/", 1)[1]
                s.tokens[key] = stat.czxid
                s.uncertain.discard(key)
            if own is None:
                # Idempotency after a lost reply or a retry: our entries carry the session id.
                (children,) = await s.pipeline(what, [functools.partial(s.client.get_children_async, parent)])
                found = _contenders([] if isinstance(children, kz.NoNodeError) else children)
                own = next((c for c in found if c.startswith(s.prefix)), None)
                s.uncertain.discard(key)
                if own is not None:
                    s.nodes[key] = own
                continue
            # One read on our own session proves that our entry exists and whether it is first:
            # the listing shows our entry, whose name carries our session id, and a request on an
            # expired session fails. The first time, the same round trip also checks the entry's
            # owner and arms the watch on it that tells the leader when it is replaced.
            armed, on_entry = s.entry_watches.get(key), None
            # Armed and silent; once it fired (the entry changed or went, or the connection
            # dropped: kazoo tells every watch) it is set again, with the same read.
            silent = armed is not None and not armed.done() and key in s.tokens
            if listed is not None and silent:
                # That read, sent from kazoo's thread as soon as the predecessor went.
                replies, listed = [listed], None
                s.check()
            else:
                starts: list[Callable[[], Any]] = [functools.partial(s.client.get_children_async, parent)]
                if not silent:
                    armed, on_entry = watch_future(loop)
                    starts.append(functools.partial(s.client.exists_async, f"{parent}/{own}", watch=on_entry))
                replies = await s.pipeline(what, starts)
            children = replies[0]
            queue = _contenders([] if isinstance(children, kz.NoNodeError) else children)
            stat = replies[1] if len(replies) > 1 else None
            if own not in queue or (len(replies) > 1 and (stat is None or isinstance(stat, kz.NoNodeError))):
                # Removed behind our back while the session lives: queue again at the end.
                s.forget(key)
                continue
            if stat is not None:
                # CURATOR-696: the entry must belong to this very session, or a stale win after an
                # expiry would be a split brain.
                if stat.ephemeralOwner != s.session_id:
                    s.mark_lost("its entry belongs to another session")
                    raise SessionLostError(f"ZooKeeper session {s.id} no longer owns its entry for {key!r}")
                s.tokens[key] = stat.czxid
                assert armed is not None  # armed with this read
                s.entry_watches[key], s.entry_watch_fns[key] = armed, on_entry
            position = queue.index(own)
            if position == 0:
                s.check()
                return Term(key, name, s.tokens[key])
            # Wait for the predecessor only: a handover wakes one waiter, however many queue.
            predecessor = f"{parent}/{queue[position - 1]}"
            proven = s.proof(key, armed) if position == 1 else None
            deleted, watch = watch_then_list(loop, s.client, parent, s.direct_slots, proven)
            if await s.request(what, functools.partial(s.client.exists_async, predecessor, watch=watch)) is None:
                continue
            event, listing = await deleted
            if event.type == EventType.NONE:
                raise StoreUnavailableError(f"connection to ZooKeeper lost while waiting to lead {key!r}")
            if listing is PROVEN:
                # The first entry was deleted and ours came next: no read needed (see ZooKeeperSession.proof).
                # Checked again here, on the loop: any doubt, and the listing is read after all.
                assert proven is not None and armed is not None
                if proven() and s.entry_watches.get(key) is armed and not armed.done() and s.nodes.get(key) == own:
                    s.check()
                    return Term(key, name, s.tokens[key])
                listing = None
            if isinstance(listing, BaseException) and not isinstance(listing, kz.NoNodeError):
                listing = None  # read again through the loop, which reports errors properly
            listed = listing

    async def wait_replaced(self, session: Session, key: str, term: Term) -> None:
        # Entries are ordered by sequence and a new one always comes last, so a leader is
        # replaced exactly when its own entry goes: watch that entry, on its own session.
        s = self._own(session)
        path = f"{self.key_path(key)}/{s.nodes.get(key)}"
        while True:
            if s.nodes.get(key) is None or s.tokens.get(key) != term.token:
                return
            fut = s.entry_watches.get(key)
            if fut is None or (fut.done() and fut.result().type != EventType.DELETED):
                # Not armed, or it fired for a data change or a lost connection: arm it again.
                fut, watch = watch_future(asyncio.get_running_loop())
                exists = functools.partial(s.client.exists_async, path, watch=watch)
                stat = await s.request(f"watch the entry for {key!r}", exists)
                if stat is None or stat.czxid != term.token:
                    return
                s.entry_watches[key], s.entry_watch_fns[key] = fut, watch
            # Shielded: the watch stays armed for the next call when the core cancels this one.
            event = await asyncio.shield(fut)
            if event.type == EventType.DELETED:
                return
            if event.type == EventType.NONE:
                raise StoreUnavailableError(f"connection to ZooKeeper lost while watching the entry for {key!r}")

    def withdraw(self, session: Session, key: str) -> Coroutine[Any, Any, None]:
        # Not an ``async def``: the delete of a known entry is handed to kazoo in this call, not
        # when the coroutine first runs, so a resigning leader's delete leaves one loop turn
        # earlier (the core calls this as soon as it has demoted). The coroutine returned awaits
        # the reply. At most MAX_DIRECT such deletes at once per session; beyond it, and in
        # every other case, the request goes out when the coroutine runs, through the queue.
        s = self._own(session)
        own = s.nodes.get(key)
        if (
            own is None
            or s.closing
            or s.lost_reason is not None
            or not s.client.connected
            or not s.direct_slots.try_acquire()
        ):
            return self._withdraw(s, key)
        try:
            sent = s.client.delete_async(f"{self.key_path(key)}/{own}")
        except Exception:  # noqa: BLE001 - kazoo reports errors on the result; the slow path reports this one
            s.direct_slots.release()
            return self._withdraw(s, key)
        s.forget(key)
        s.uncertain.add(key)  # until the delete is confirmed
        loop = asyncio.get_running_loop()
        # kazoo completes every request (reply, lost connection, closed client) and link()
        # brings that to the loop: work left by a resign() run on the idle loop may wait for it.
        wakes_loop_later(loop)
        return self._deleted(s, key, link(loop, sent, then=s.direct_slots.release))

    async def _deleted(self, s: ZooKeeperSession, key: str, sent: asyncio.Future[Any]) -> None:
        (result,) = await self.collect([sent], f"withdraw from {key!r}", session=True)
        if isinstance(result, PASS_THROUGH) and not isinstance(result, kz.NoNodeError):
            raise result
        s.uncertain.discard(key)

    async def _withdraw(self, s: ZooKeeperSession, key: str) -> None:
        if s.closing or s.lost_reason is not None:
            return  # its ephemeral entries die with the session
        parent = self.key_path(key)
        what = f"withdraw from {key!r}"
        own = s.nodes.get(key)
        s.forget(key)
        if own is not None:
            names = [own]
        elif key in s.uncertain:
            # The reply to a create may have been lost (or the campaign cancelled before it came):
            # requests of one session are ordered, so this listing sees that entry.
            try:
                children = await s.request(what, functools.partial(s.client.get_children_async, parent))
            except kz.NoNodeError:
                children = []
            names = [c for c in _contenders(children) if c.startswith(s.prefix)]
        else:
            return  # this session certainly has no entry for the key
        s.uncertain.add(key)  # until every delete is confirmed
        for node in names:
            try:
                await s.request(what, functools.partial(s.client.delete_async, f"{parent}/{node}"))
            except kz.NoNodeError:
                pass
        s.uncertain.discard(key)

    async def _current(self, key: str, parent: str, watch: Any = None) -> tuple[bool, Term | None]:
        """Read the current term; with ``watch``, arm it on the leader's node (or on the key's
        node when nobody leads) in the same request. Returns (consistent, term); when not
        consistent the caller reads again."""
        what = f"read the leader of {key!r}"
        reader = self._reader_client()
        try:
            children = await self._read(what, lambda: reader.get_children_async(parent))
        except kz.NoNodeError:
            if watch is None:
                return True, None
            stat = await self._read(what, lambda: reader.exists_async(parent, watch=watch))
            return stat is None, None
        queue = _contenders(children)
        if not queue:
            if watch is None:
                return True, None
            try:
                children = await self._read(what, lambda: reader.get_children_async(parent, watch=watch))
            except kz.NoNodeError:
                return False, None
            return not _contenders(children), None
        try:
            data, stat = await self._read(what, lambda: reader.get_async(f"{parent}/{queue[0]}", watch=watch))
        except kz.NoNodeError:  # it left between the two reads
            return False, None
        return True, Term(key, data.decode("utf-8", errors="replace"), stat.czxid)

    async def get_leader(self, key: str) -> Term | None:
        parent = self.key_path(key)
        while True:
            consistent, term = await self._current(key, parent)
            if consistent:
                return term

    async def observe(self, key: str) -> AsyncIterator[Term | None]:
        loop = asyncio.get_running_loop()
        parent = self.key_path(key)
        # The reader session may sit on another server of the ensemble than the candidates' own
        # sessions, and a follower server may lag: a leader just elected through its own session
        # could read its predecessor still leading there, and demote itself as replaced. A sync
        # first makes the server catch up with the ensemble leader; from then on its state (and
        # every watch event it delivers) only moves forward.
        reader = self._reader_client()
        await self._read(f"sync before watching {key!r}", lambda: reader.sync_async(parent))
        while True:
            changed, watch = watch_future(loop)
            consistent, term = await self._current(key, parent, watch)
            if not consistent:
                continue
            yield term
            event = await changed
            # kazoo drops every watch when the connection breaks and tells each with a NONE event.
            if event.type == EventType.NONE:
                raise StoreUnavailableError(f"connection to ZooKeeper lost while watching {key!r}")

    async def ping(self) -> Hashable:
        reader = self._reader_client()
        await self._read("ping", lambda: reader.exists_async("/"))
        return None
