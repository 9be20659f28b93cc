"""A minimal etcd v3 connection: one gRPC channel per endpoint, failover between them,
authentication tokens and error translation; watches share one stream per member (_watch.py).

aetcd 1.0's ``Client`` talks to one endpoint over plaintext only, cannot set the range options
the election recipe needs (``limit``, ``max_create_revision``) and ignores watch cancellations,
so this module drives aetcd's generated etcd v3 API (``aetcd.rpc``) over ``grpc.aio`` itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import grpc.aio  # type: ignore[import-untyped,unused-ignore]
from aetcd import rpc  # type: ignore[import-untyped,unused-ignore]

from leadership.errors import (
    AuthenticationError,
    PermanentStoreError,
    SessionLostError,
    StoreError,
    StoreUnavailableError,
)

from ._watch import CompactedError, WatchStream, _Stream

__all__ = ["MAX_IN_FLIGHT", "CompactedError", "EtcdClient", "WatchStream"]

log = logging.getLogger(__name__)

_Code = grpc.StatusCode

# Codes a later attempt (possibly on another member) can cure: the member is down, has no raft
# leader, an election is under way, or the request timed out.
_TRANSIENT = {
    _Code.UNAVAILABLE,
    _Code.DEADLINE_EXCEEDED,
    _Code.UNKNOWN,
    _Code.INTERNAL,
    _Code.CANCELLED,
    _Code.ABORTED,
    _Code.RESOURCE_EXHAUSTED,
}

# Ask each member to refuse requests (and end streams) while it has no raft leader, as etcd's Go
# client does: a member cut off from the quorum fails fast instead of serving a stalled watch.
_REQUIRE_LEADER = ("hasleader", "true")

_CHANNEL_OPTIONS: list[tuple[str, int]] = [
    # Detect a dead connection (host gone, server frozen) under a long-lived watch. etcd
    # refuses pings more often than every 5 s (--grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's default backoff grows to 120 s; a restarted member must be usable again quickly.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


#: Unary requests in flight at most. Thousands of elections starting at once would otherwise
#: queue thousands of requests on the channel, each with its own deadline ticking; lease
#: keepalives do not wait for this.
MAX_IN_FLIGHT = 256


class _Member:
    """One endpoint: its channel (created lazily), stubs and auth token."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.channel: Any = None
        self.kv: Any = None
        self.lease: Any = None
        self.watch: Any = None
        self.auth: Any = None
        self.token: str | None = None
        self.auth_lock = asyncio.Lock()
        self.stream: _Stream | None = None  # the one Watch call carrying every watch on this member

    def connect(self, credentials: Any) -> None:
        if self.channel is not None:
            return
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        else:
            self.channel = grpc.aio.secure_channel(self.target, credentials, options=_CHANNEL_OPTIONS)
        self.kv = rpc.KVStub(self.channel)
        self.lease = rpc.LeaseStub(self.channel)
        self.watch = rpc.WatchStub(self.channel)
        self.auth = rpc.AuthStub(self.channel)

    def failing(self) -> bool:
        if self.channel is None:
            return False
        return bool(self.channel.get_state(try_to_connect=False) == grpc.ChannelConnectivity.TRANSIENT_FAILURE)

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
        channel, self.channel, self.token = self.channel, None, None
        if channel is not None:
            await channel.close()


class EtcdClient:
    """The members of one etcd cluster, used one at a time.

    Requests go to the current member; a transient failure moves on to the next member (skipping
    ones whose channel is known to be failing), so the core's retry lands elsewhere. Watch
    streams stay on the member they were opened on until that member fails them.
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.timeout = timeout
        self._members = [_Member(t) for t in targets]
        self._current = 0
        self._username = username
        self._password = password
        self._credentials: Any = None
        self._slots: asyncio.Semaphore | None = None
        self.closing = False

    def set_credentials(self, credentials: Any) -> None:
        """TLS channel credentials; must be set before the first request."""
        self._credentials = credentials

    @property
    def authenticating(self) -> bool:
        """Whether requests carry user credentials (auth tokens)."""
        return self._username is not None

    @property
    def size(self) -> int:
        return len(self._members)

    @property
    def current_target(self) -> str:
        return self._members[self._current].target

    async def close(self) -> None:
        self.closing = True
        for member in self._members:
            await member.close()

    # -- plumbing -------------------------------------------------------------------------------
    def _member(self) -> _Member:
        member = self._members[self._current]
        member.connect(self._credentials)
        return member

    def _failed(self, member: _Member) -> None:
        """Fail over from ``member`` if it is still the current one."""
        n = len(self._members)
        if n == 1 or self._members[self._current] is not member:
            return
        candidates = [(self._current + i) % n for i in range(1, n)]
        healthy = [i for i in candidates if not self._members[i].failing()]
        self._current = (healthy or candidates)[0]
        log.info("etcd member %s failed; switching to %s", member.target, self.current_target)

    async def _metadata(self, member: _Member) -> tuple[tuple[str, str], ...]:
        if self._username is None:
            return (_REQUIRE_LEADER,)
        if member.token is None:
            async with member.auth_lock:
                if member.token is None:
                    request = rpc.AuthenticateRequest(name=self._username, password=self._password or "")
                    try:
                        response = await member.auth.Authenticate(request, timeout=self.timeout)
                    except grpc.RpcError as exc:
                        if _code(exc) == _Code.FAILED_PRECONDITION and "not enabled" in _details(exc):
                            log.warning("etcd at %s has authentication disabled; ignoring the URL's credentials",
                                        member.target)
                            member.token = ""
                        else:
                            raise self.translate(exc, member) from None
                    else:
                        member.token = str(response.token)
        if not member.token:
            return (_REQUIRE_LEADER,)
        return (_REQUIRE_LEADER, ("token", member.token))

    def translate(self, exc: BaseException, member: _Member) -> StoreError:
        """Map a gRPC error to the backend contract's errors (and fail over when transient)."""
        code, details = _code(exc), _details(exc)
        where = f"etcd {member.target}: {details or code}"
        if code == _Code.UNAUTHENTICATED and "invalid auth token" in details:
            # The member restarted (simple tokens live in memory) or the token timed out.
            member.token = None
            return StoreUnavailableError(f"{where} (re-authenticating)")
        if code in (_Code.UNAUTHENTICATED, _Code.PERMISSION_DENIED) or "authentication failed" in details \
                or "user name is empty" in details:
            return AuthenticationError(where)
        if code == _Code.NOT_FOUND and "lease not found" in details:
            return SessionLostError(where)
        if code is None or code in _TRANSIENT:
            self._failed(member)
            return StoreUnavailableError(where)
        return PermanentStoreError(where)

    # -- requests -------------------------------------------------------------------------------
    async def unary(self, service: str, method: str, request: Any, timeout: float | None = None) -> Any:
        """One request to the current member, e.g. ``unary("kv", "Range", RangeRequest(...))``."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        async with self._slots:  # the deadline starts once the request is sent
            return await self._unary(service, method, request, timeout)

    async def _unary(self, service: str, method: str, request: Any, timeout: float | None) -> Any:
        member = self._member()
        metadata = await self._metadata(member)
        try:
            return await getattr(getattr(member, service), method)(
                request, timeout=timeout or self.timeout, metadata=metadata
            )
        except grpc.RpcError as exc:
            raise self.translate(exc, member) from None

    async def keepalive_once(self, lease_id: int, timeout: float | None = None) -> int:
        """One LeaseKeepAlive round trip; returns the lease's new TTL (0 or less: it is gone)."""
        member = self._member()
        metadata = await self._metadata(member)
        call = member.lease.LeaseKeepAlive(timeout=timeout or self.timeout, metadata=metadata)
        try:
            await call.write(rpc.LeaseKeepAliveRequest(ID=lease_id))
            response = await call.read()
        except grpc.RpcError as exc:
            raise self.translate(exc, member) from None
        finally:
            call.cancel()
        if response is grpc.aio.EOF:
            self._failed(member)
            raise StoreUnavailableError(f"etcd {member.target}: keepalive stream ended without a reply")
        return int(response.TTL)

    def watch(self, create: Any) -> WatchStream:
        """A watch on the current member's shared stream: ``async with client.watch(req) as w:
        await w.next()``."""
        return WatchStream(self, create)

    def _stream(self) -> _Stream:
        """The current member's Watch stream, opened on first use."""
        member = self._member()
        if member.stream is None or member.stream.dead:
            member.stream = _Stream(self, member)
        return member.stream


def _code(exc: BaseException) -> Any:
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


def _details(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else None
    return str(text) if text else str(exc)
