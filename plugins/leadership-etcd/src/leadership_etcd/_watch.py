"""Every watch of a connection multiplexed on one gRPC ``Watch`` stream per etcd member.

etcd's Watch RPC is bidirectional: one call carries any number of watches. A watch is added
with a ``WatchCreateRequest`` and removed with a ``WatchCancelRequest``; every response names
its watch by ``watch_id``. The server answers the create requests of one stream in the order it
received them (one receive loop feeds one control queue) and holds a watch's events back until
its ``created`` answer is out, so creates can be pipelined and matched first-in first-out, as
etcd's Go client matches them. A thousand elections therefore cost one HTTP/2 stream, not a
thousand, and a new watch costs one message instead of a new stream and its headers.

Failure: when the stream breaks (member down, its raft leader lost, connection dropped) every
watch that was confirmed on it is created again on a new stream (on the member the client
fails over to) from the revision after its last event, so no event is lost or replayed; a
watch that was not confirmed yet gets the error instead, so a dead store reaches the caller
instead of being retried silently. Every stream failure is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any, final

import grpc  # type: ignore[import-untyped,unused-ignore]
import grpc.aio  # type: ignore[import-untyped,unused-ignore]
from aetcd import rpc  # type: ignore[import-untyped,unused-ignore]

from leadership.errors import AuthenticationError, StoreError, StoreUnavailableError

if TYPE_CHECKING:
    from ._client import EtcdClient, _Member

log = logging.getLogger(__name__)

#: A stream left without watches is closed after this long (seconds). Not at once, as etcd's Go
#: client does: a leader's next watch usually follows within milliseconds (the successor's wait
#: ends, then its replacement watch starts), and reopening would cost a new HTTP/2 stream each time.
IDLE_CLOSE = 10.0


class CompactedError(StoreUnavailableError):
    """A watch's start revision was compacted away; re-read and watch again."""

    def __init__(self, message: str, compact_revision: int) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class _Stream:
    """One Watch call to one member and the watches it carries.

    A writer task opens the call and sends the queued requests in order; a reader task routes
    each response to its watch without ever waiting for a consumer, so a watch whose owner
    reads slowly buffers its own responses and never holds up the others (nor the server).
    """

    def __init__(self, client: EtcdClient, member: _Member) -> None:
        self.client = client
        self.member = member
        self.call: Any = None
        self.pending: deque[WatchStream] = deque()  # create sent, not yet confirmed, in order
        self.active: dict[int, WatchStream] = {}
        self.received = 0  # responses read: tells a frozen member from a busy one
        self.accepted = 0  # creates etcd confirmed
        self.dead = False
        self._outbox: deque[tuple[Any, WatchStream | None]] = deque()
        self._wakeup = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._writer = asyncio.get_running_loop().create_task(
            self._write_loop(), name=f"etcd watch stream writer {member.target}")

    @property
    def watches(self) -> int:
        return len(self.pending) + len(self.active)

    def create(self, watch: WatchStream) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        watch._fragment.clear()
        self.pending.append(watch)  # same order as the outbox: the answers come in this order
        watch._sent = None
        self._send(rpc.WatchRequest(create_request=watch._create), watch)

    def cancel(self, watch_id: int) -> None:
        self.active.pop(watch_id, None)
        if not self.dead:
            self._send(rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(watch_id=watch_id)))
            self.released()

    def released(self) -> None:
        """A watch left: close the stream once it has carried none for IDLE_CLOSE seconds."""
        if not self.watches and not self.dead and self._idle is None:
            self._idle = asyncio.get_running_loop().call_later(IDLE_CLOSE, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._idle = None
        if not self.watches:
            self.close()

    def _send(self, request: Any, creating: WatchStream | None = None) -> None:
        self._outbox.append((request, creating))
        self._wakeup.set()

    async def _write_loop(self) -> None:
        try:
            metadata = await self.client._metadata(self.member)
            self.call = self.member.watch.Watch(metadata=metadata)
            self._reader = asyncio.get_running_loop().create_task(
                self._read_loop(), name=f"etcd watch stream reader {self.member.target}")
            while True:
                while not self._outbox:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                request, creating = self._outbox.popleft()
                await self.call.write(request)
                if creating is not None and creating._stream is self and creating._id is None:
                    creating._sent = self.received
        except asyncio.CancelledError:
            if not self.dead:
                self.broken(StoreUnavailableError(f"etcd {self.member.target}: watch stream cancelled"))
        except grpc.RpcError as exc:
            self.broken(self.client.translate(exc, self.member))
        except StoreError as exc:  # authentication
            self.broken(exc)
        except asyncio.InvalidStateError:
            # grpc.aio's "RPC already finished": the call ended (the member restarted, the
            # connection dropped) between the reader's last read and this write. Not a bug: the
            # reader is about to read the call's status and end the stream with the real reason
            # (a failover when the member went away); end it here only if the reader is gone.
            reader = self._reader
            if reader is None or reader.done():
                self.broken(StoreUnavailableError(f"etcd {self.member.target}: watch stream ended"))
        except Exception as exc:  # never a silently dead writer: every watch hears of it
            log.exception("etcd watch stream writer to %s failed", self.member.target)
            self.broken(StoreUnavailableError(f"etcd {self.member.target}: watch stream failed: {exc!r}"))

    async def _read_loop(self) -> None:
        try:
            while True:
                response = await self.call.read()
                if response is grpc.aio.EOF:
                    self.client._failed(self.member)
                    self.broken(StoreUnavailableError(f"etcd {self.member.target}: watch stream ended"))
                    return
                self.received += 1
                self._route(response)
        except asyncio.CancelledError:
            if not self.dead:
                self.broken(StoreUnavailableError(f"etcd {self.member.target}: watch stream cancelled"))
        except grpc.RpcError as exc:
            self.broken(self.client.translate(exc, self.member))
        except Exception as exc:
            log.exception("etcd watch stream reader from %s failed", self.member.target)
            self.broken(StoreUnavailableError(f"etcd {self.member.target}: watch stream failed: {exc!r}"))

    def _route(self, response: Any) -> None:
        watch_id = int(response.watch_id)
        if response.created:
            if not self.pending:
                log.warning("etcd %s confirmed watch %d that was never asked for", self.member.target, watch_id)
                return
            watch = self.pending.popleft()
            if response.canceled or watch_id == -1:
                watch._fail(self._refused(response))
                self.released()
            elif watch._closed:  # given up while its create was on the way
                self.cancel(watch_id)
            else:
                self.accepted += 1
                self.active[watch_id] = watch
                watch._confirmed(self, watch_id)
            return
        owner = self.active.get(watch_id)
        if owner is None:
            return  # a watch we cancelled: events already on the way when it went
        if response.compact_revision or response.canceled:
            del self.active[watch_id]  # the server has dropped it
            owner._fail(self._refusal(response))
            self.released()
            return
        owner._deliver(response)

    def _refused(self, response: Any) -> StoreError:
        """Why a create was refused. etcd checks the stream's auth token at every create; an
        expired one is refused as "invalid auth token" (3.4) or "permission denied" (which, on
        a stream that had creates accepted before, is taken for an old token): then new watches
        go to a new stream with a fresh token (the watches already on this one go on)."""
        error = self._refusal(response)
        stale = "invalid auth token" in response.cancel_reason or (
            isinstance(error, AuthenticationError) and self.accepted > 0)
        if stale and self.client.authenticating:
            self.member.token = None
            if self.member.stream is self:
                self.member.stream = None
            return StoreUnavailableError(f"{error} (on a stream opened with an older auth token; re-authenticating)")
        return error

    def _refusal(self, response: Any) -> StoreError:
        where = f"etcd {self.member.target}"
        if response.compact_revision:
            return CompactedError(f"{where}: watch revision compacted (now {response.compact_revision})",
                                  int(response.compact_revision))
        reason = response.cancel_reason or "no reason given"
        if "permission denied" in reason:
            return AuthenticationError(f"{where}: watch refused: {reason}")
        return StoreUnavailableError(f"{where}: watch canceled by the server: {reason}")

    def broken(self, error: StoreError) -> None:
        """End this stream; resume its confirmed watches elsewhere, fail the unconfirmed ones."""
        if self.dead:
            return
        self.dead = True
        if self._idle is not None:
            self._idle.cancel()
        if self.member.stream is self:
            self.member.stream = None
        if self.call is not None:
            self.call.cancel()
        current = asyncio.current_task()
        for task in (self._writer, self._reader):
            if task is not None and task is not current:
                task.cancel()
        unconfirmed, confirmed = list(self.pending), list(self.active.values())
        self.pending.clear()
        self.active.clear()
        if self.client.closing:
            # As gRPC does with a call on a closed channel: whoever still waits is cancelled.
            for watch in unconfirmed + confirmed:
                watch._fail(asyncio.CancelledError("etcd client closed"))
            return
        if unconfirmed or confirmed:
            log.warning("etcd watch stream to %s failed (%s): resuming %d watches, failing %d unconfirmed",
                        self.member.target, error, len(confirmed), len(unconfirmed))
        for watch in unconfirmed:
            watch._fail(error)
        for watch in confirmed:
            watch._resume()

    def close(self) -> None:
        self.broken(StoreUnavailableError(f"etcd {self.member.target}: watch stream closed"))


@final
class WatchStream:
    """One watch on its member's shared stream. Entering waits until etcd confirms the watch;
    ``next()`` returns each response carrying events and raises StoreUnavailableError when the
    watch cannot go on (CompactedError when its revision was compacted). Leaving cancels it."""

    def __init__(self, client: EtcdClient, create: Any) -> None:
        self._client = client
        # Our own copy: its start revision moves past each event, for resuming.
        self._create = rpc.WatchCreateRequest()
        self._create.CopyFrom(create)
        self._create.fragment = True  # big responses come split, never over gRPC's size limit
        self._stream: _Stream | None = None
        self._id: int | None = None
        self._responses: deque[Any] = deque()
        self._fragment: list[Any] = []
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._sent: int | None = None  # the stream's response count when our create went out

    async def __aenter__(self) -> WatchStream:
        stream = self._attach()
        # The deadline counts from the moment the create is written, and only a stream that has
        # said nothing since then is given up: thousands of creates queued on one busy stream
        # wait their turn, a frozen or cut-off member fails them (and the stream) in time.
        timer: asyncio.TimerHandle | None = None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            self._wake()

        try:
            while self._id is None and self._error is None:
                if expired:
                    expired = False
                    if self._sent is not None and stream.received == self._sent and not stream.dead:
                        self._client._failed(stream.member)
                        stream.broken(StoreUnavailableError(
                            f"etcd {stream.member.target}: watch not confirmed within {self._client.timeout:g}s"
                        ))
                        break
                    if self._sent is not None:
                        self._sent = stream.received  # it is busy, not silent: measure afresh
                    timer = None
                if timer is None:
                    timer = asyncio.get_running_loop().call_later(self._client.timeout, expire)
                await self._wait()
        except BaseException:
            self._close()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if self._error is not None:
            self._close()
            raise self._error
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close()

    def close(self) -> None:
        """Cancel the watch (what leaving ``async with`` does)."""
        self._close()

    async def next(self) -> Any:
        """The next response with events (progress notifications are skipped)."""
        while True:
            while not self._responses:
                if self._error is not None:
                    raise self._error
                await self._wait()
            response = self._responses.popleft()
            if response.events:
                return response

    # -- called by the stream -------------------------------------------------------------------
    def _attach(self) -> _Stream:
        stream = self._stream = self._client._stream()
        self._id = None
        stream.create(self)
        return stream

    def _confirmed(self, stream: _Stream, watch_id: int) -> None:
        self._id = watch_id
        self._wake()

    def _deliver(self, response: Any) -> None:
        if response.fragment or self._fragment:
            self._fragment.append(response)
            if response.fragment:
                return
            merged = rpc.WatchResponse()
            merged.CopyFrom(self._fragment[0])
            for part in self._fragment[1:]:
                merged.events.extend(part.events)
            merged.fragment = False
            self._fragment.clear()
            response = merged
        if response.events:
            self._create.start_revision = int(response.events[-1].kv.mod_revision) + 1
        self._responses.append(response)
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._stream = None
        self._id = None
        if self._error is None:
            self._error = error
        self._wake()

    def _resume(self) -> None:
        """Create this watch again on a new stream, from the revision after its last event."""
        if self._closed:
            return
        try:
            self._attach()
        except Exception as exc:  # noqa: BLE001 - the owner hears of it in next()
            self._fail(exc if isinstance(exc, StoreError) else StoreUnavailableError(repr(exc)))

    # -- plumbing -------------------------------------------------------------------------------
    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stream, watch_id = self._stream, self._id
        self._stream = None
        if stream is not None and watch_id is not None and stream.active.get(watch_id) is self:
            stream.cancel(watch_id)
        # Still pending: the stream cancels it when its confirmation arrives (_closed is set).
