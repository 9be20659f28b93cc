"""A minimal etcd v3 connection: one gRPC channel per endpoint, failover between them,
authentication tokens, error translation and single watch streams.

aetcd 1.0's ``Client`` talks to one endpoint over plaintext only, cannot set the range options
the election recipe needs (``limit``, ``max_create_revision``) and ignores watch cancellations,
so this module drives aetcd's generated etcd v3 API (``aetcd.rpc``) over ``grpc.aio`` itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Any, final

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


class CompactedError(StoreUnavailableError):
    """A watch's start revision was compacted away; re-read and watch again."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


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

    def set_credentials(self, credentials: Any) -> None:
        """TLS channel credentials; must be set before the first request."""
        self._credentials = credentials

    @property
    def size(self) -> int:
        return len(self._members)

    @property
    def current_target(self) -> str:
        return self._members[self._current].target

    async def close(self) -> None:
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
        """A watch on its own gRPC stream: ``async with client.watch(req) as w: await w.next()``."""
        return WatchStream(self, create)


@final
class WatchStream:
    """One watch on one stream. Entering waits until etcd confirms the watch; ``next()`` returns
    each response carrying events and raises StoreUnavailableError when the stream breaks or
    the server cancels the watch (CompactedError when its revision was compacted)."""

    def __init__(self, client: EtcdClient, create: Any) -> None:
        self._client = client
        self._create = create
        self._member: _Member | None = None
        self._call: Any = None

    async def __aenter__(self) -> WatchStream:
        member = self._member = self._client._member()
        metadata = await self._client._metadata(member)
        self._call = member.watch.Watch(metadata=metadata)
        # Not asyncio.wait_for: cancelling it leaves it waiting for grpc's read to finish, which
        # can hang when the call is still being set up. Cancelling the call ends the read.
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            timed_out = True
            self._call.cancel()

        timer = asyncio.get_running_loop().call_later(self._client.timeout, expire)
        try:
            try:
                await self._call.write(rpc.WatchRequest(create_request=self._create))
            except grpc.RpcError as exc:
                raise self._client.translate(exc, member) from None
            response = await self._read()
            if not response.created:
                raise StoreUnavailableError(f"etcd {member.target}: watch was not confirmed")
            self._check(response)
        except BaseException:
            self._call.cancel()
            # Our timer cancelling the call makes grpc raise CancelledError into this task: that
            # is the timeout, not a cancellation of the task (which must propagate). Raising it
            # would end the caller's watch loop as if it had been stopped.
            if timed_out and not _task_cancelled():
                self._client._failed(member)
                raise StoreUnavailableError(
                    f"etcd {member.target}: watch not confirmed within {self._client.timeout:g}s"
                ) from None
            raise
        finally:
            timer.cancel()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._call is not None:
            self._call.cancel()

    async def next(self) -> Any:
        """The next response with events (progress notifications are skipped)."""
        while True:
            response = await self._read()
            self._check(response)
            if response.events:
                return response

    async def _read(self) -> Any:
        assert self._member is not None
        try:
            response = await self._call.read()
        except grpc.RpcError as exc:
            raise self._client.translate(exc, self._member) from None
        if response is grpc.aio.EOF:
            self._client._failed(self._member)
            raise StoreUnavailableError(f"etcd {self._member.target}: watch stream ended")
        return response

    def _check(self, response: Any) -> None:
        assert self._member is not None
        if response.compact_revision:
            raise CompactedError(
                f"etcd {self._member.target}: watch revision compacted (now {response.compact_revision})",
                int(response.compact_revision),
            )
        if response.canceled:
            reason = response.cancel_reason or "no reason given"
            if "permission denied" in reason:
                raise AuthenticationError(f"etcd {self._member.target}: watch refused: {reason}")
            raise StoreUnavailableError(f"etcd {self._member.target}: watch canceled by the server: {reason}")


def _task_cancelled() -> bool:
    """Whether the current task has a cancellation request pending (Python 3.11+; on 3.10 a
    CancelledError raised while our own timer fired is taken for the timeout)."""
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)
    return bool(cancelling()) if cancelling is not None else False


def _code(exc: BaseException) -> Any:
    code = getattr(exc, "code", None)
    return code() if callable(code) else None


def _details(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    text = details() if callable(details) else None
    return str(text) if text else str(exc)
