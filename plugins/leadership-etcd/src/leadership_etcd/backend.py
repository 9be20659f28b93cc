"""The etcd v3 backend: etcd's own election recipe (``concurrency.Election``) on leases.

Layout: a candidate for ``key`` writes ``<prefix><key>#<lease id in hex>`` = its name, attached
to its session's lease. Candidates are ordered by create revision; each waits only for the
deletion of the entry just ahead of it; the first one leads and its create revision is the
fencing token. ``#`` cannot occur in a key, so the entries of ``a`` and ``a/b`` never mix.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Hashable
from typing import Any, ClassVar

import grpc  # type: ignore[import-untyped,unused-ignore]
from aetcd import rpc  # type: ignore[import-untyped,unused-ignore]
from aetcd.utils import prefix_range_end  # type: ignore[import-untyped,unused-ignore]

from leadership.backend import Backend, Session, Term
from leadership.errors import ConfigurationError, PermanentStoreError, SessionLostError, StoreUnavailableError
from leadership.url import Endpoint, StoreURL, parse_bool, parse_seconds

from ._client import CompactedError, EtcdClient, WatchStream

__all__ = ["DEFAULT_PORT", "DEFAULT_PREFIX", "EtcdBackend", "EtcdSession"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379
DEFAULT_PREFIX = "leadership/"
DEFAULT_TIMEOUT = 2.0

_OPTIONS = {
    "timeout": "seconds per request (default 2)",
    "prefix": f"key namespace (default {DEFAULT_PREFIX!r})",
    "tls": "true/false",
    "ca_cert": "PEM file of the CA that signed the servers' certificates",
    "client_cert": "PEM file of the client certificate",
    "client_key": "PEM file of the client certificate's private key",
}

_Range = rpc.RangeRequest
_Compare = rpc.Compare


class EtcdSession(Session):
    """An etcd lease. ``guaranteed`` is the TTL etcd granted."""

    def __init__(self, client: EtcdClient, ttl: float, lease_id: int, granted: int) -> None:
        super().__init__(ttl)
        self._client = client
        self.lease_id = lease_id
        self.granted = granted

    @property
    def id(self) -> str:
        return f"{self.lease_id:x}"

    @property
    def guaranteed(self) -> float:
        return float(self.granted)

    async def refresh(self) -> None:
        # A short deadline of our own: a member that hangs (frozen, or waiting for a new raft
        # leader) then fails the request here, which moves the client on to another member while
        # the core still has time to retry before its self-demotion deadline.
        deadline = min(self._client.timeout, max(0.5, self.granted / 3))
        remaining = await self._client.keepalive_once(self.lease_id, timeout=deadline)
        if remaining <= 0:
            raise SessionLostError(f"etcd lease {self.id} expired or was revoked")

    async def close(self) -> None:
        try:
            await self._client.unary("lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=self.lease_id))
        except SessionLostError:
            pass

    def __repr__(self) -> str:
        return f"<EtcdSession lease={self.id} ttl={self.granted}s>"


class EtcdBackend(Backend):
    """``etcd://[user:password@]host[:port][,host[:port]...][?option=value&...]``."""

    #: etcd refuses shorter leases (its minimum is 1.5 times the election timeout, rounded up: 2 s).
    min_ttl: ClassVar[float] = 2.0
    #: etcd's MaxLeaseTTL.
    max_ttl: ClassVar[float | None] = 9_000_000_000.0

    def __init__(self, url: StoreURL) -> None:
        self.url = url
        endpoints = url.endpoints_or(Endpoint("127.0.0.1", DEFAULT_PORT))
        if url.path not in ("", "/"):
            raise ConfigurationError(
                f"etcd:// URL has a path {url.path!r}; set the key namespace with the 'prefix' option instead, "
                f"e.g. etcd://127.0.0.1:2379?prefix=myapp/"
            )
        timeout = url.option(
            "timeout", parse_seconds, DEFAULT_TIMEOUT, allowed="a positive number of seconds, e.g. 5 or 2.5s"
        )
        prefix = url.option("prefix", str, DEFAULT_PREFIX, allowed="printable characters other than '#'")
        tls = url.option("tls", parse_bool, None, allowed="true or false")
        self._files = {name: url.option(name, _existing_file, None, allowed="a readable file") for name in
                       ("ca_cert", "client_cert", "client_key")}
        url.reject_unknown_options(_OPTIONS)
        assert timeout is not None and prefix is not None
        if "#" in prefix or not prefix.isprintable():
            raise ConfigurationError(
                f"etcd:// URL option prefix={prefix!r}: '#' and control characters are not allowed"
            )
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        if any(self._files.values()):
            if tls is False:
                raise ConfigurationError("etcd:// URL sets tls=false but also ca_cert/client_cert/client_key")
            tls = True
        if bool(self._files["client_cert"]) != bool(self._files["client_key"]):
            raise ConfigurationError("etcd:// URL options client_cert and client_key must be given together")
        if (url.username is None) != (url.password is None):
            raise ConfigurationError("etcd:// URL credentials need both a user name and a password: etcd://user:password@host")
        self.tls = bool(tls)
        self.prefix = prefix
        self.timeout = timeout
        self._client = EtcdClient(
            [str(e) for e in endpoints], timeout=timeout, username=url.username, password=url.password
        )
        # Entry -> (token, watch): the watch that saw a successor win, kept open for wait_replaced.
        self._armed: dict[bytes, tuple[int, WatchStream]] = {}

    # -- lifecycle ------------------------------------------------------------------------------
    async def open(self) -> None:
        if self.tls:
            self._client.set_credentials(self._tls_credentials())
        # One attempt per member: a dead first endpoint must not fail or delay startup. A failed
        # ping has already moved the client on to the next member.
        errors: list[StoreUnavailableError] = []
        for _ in range(self._client.size):
            try:
                await self.ping()
                return
            except StoreUnavailableError as exc:
                errors.append(exc)
        if all("CERTIFICATE_VERIFY_FAILED" in str(e) for e in errors):
            # No member's certificate is signed by the CA we were given: retrying cannot help.
            raise PermanentStoreError(f"TLS verification of every etcd member failed: {errors[-1]}")
        raise errors[-1]

    def _tls_credentials(self) -> Any:
        blobs: dict[str, bytes | None] = {}
        for name, path in self._files.items():
            try:
                blobs[name] = _read(path) if path else None
            except OSError as exc:
                raise ConfigurationError(f"etcd:// URL option {name}={path!r}: {exc}") from None
        return grpc.ssl_channel_credentials(
            root_certificates=blobs["ca_cert"], private_key=blobs["client_key"], certificate_chain=blobs["client_cert"]
        )

    async def close(self) -> None:
        for _, watch in self._armed.values():
            watch.close()
        self._armed.clear()
        await self._client.close()

    def _disarm(self, mine: bytes) -> None:
        armed = self._armed.pop(mine, None)
        if armed is not None:
            armed[1].close()

    async def ping(self) -> Hashable:
        """A linearizable read; identifies the cluster and its raft term, which changes when a
        member restarts alone or the cluster elects a new raft leader."""
        start = self.prefix.encode()
        request = _Range(key=start or b"\0", range_end=prefix_range_end(start) if start else b"\0", count_only=True)
        header = (await self._client.unary("kv", "Range", request)).header
        return (int(header.cluster_id), int(header.raft_term))

    # -- sessions -------------------------------------------------------------------------------
    async def create_session(self, ttl: float) -> EtcdSession:
        # Round down: ttl is the longest a crashed leader may keep the key (etcd adds up to ~0.5 s).
        requested = max(int(self.min_ttl), math.floor(ttl))
        response = await self._client.unary("lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=requested))
        if response.error:
            raise PermanentStoreError(f"etcd refused a lease of {requested}s: {response.error}")
        granted = int(response.TTL)
        if granted > ttl:
            log.warning("etcd granted a %ds lease for ttl=%gs (its minimum lease TTL is higher)", granted, ttl)
        return EtcdSession(self._client, ttl, int(response.ID), granted)

    # -- elections ------------------------------------------------------------------------------
    def _queue(self, key: str) -> bytes:
        return f"{self.prefix}{key}#".encode()

    def _entry(self, session: Session, key: str) -> tuple[EtcdSession, bytes]:
        if not isinstance(session, EtcdSession):
            raise TypeError(f"etcd backend got a session of type {type(session).__name__}")
        return session, self._queue(key) + session.id.encode()

    async def campaign(self, session: Session, key: str, name: str) -> Term:
        lease, mine = self._entry(session, key)
        self._disarm(mine)
        queue = self._queue(key)
        value = name.encode()
        # Create the entry unless this session already has one (a retried campaign keeps its
        # place), and read the newest two entries: ours and the one just ahead of it.
        txn = rpc.TxnRequest(
            compare=[_Compare(key=mine, target=_Compare.CREATE, result=_Compare.EQUAL, create_revision=0)],
            success=[
                rpc.RequestOp(request_put=rpc.PutRequest(key=mine, value=value, lease=lease.lease_id)),
                rpc.RequestOp(request_range=_Range(
                    key=queue, range_end=prefix_range_end(queue), limit=2,
                    sort_target=_Range.CREATE, sort_order=_Range.DESCEND, keys_only=True)),
                rpc.RequestOp(request_range=_oldest(queue)),
            ],
            failure=[rpc.RequestOp(request_range=_Range(key=mine))],
        )
        response = await self._client.unary("kv", "Txn", txn)
        if response.succeeded:
            created = int(response.header.revision)
            ahead = [kv for kv in response.responses[1].response_range.kvs if kv.key != mine]
            predecessor: bytes | None = ahead[0].key if ahead else None
            oldest = response.responses[2].response_range.kvs
            next_in_line = predecessor is not None and bool(oldest) and oldest[0].key == predecessor
            revision = created
        else:
            kvs = response.responses[0].response_range.kvs
            if not kvs:  # deleted between the compare and the read: impossible within one txn
                raise SessionLostError(f"etcd entry {mine.decode()} vanished")
            created = int(kvs[0].create_revision)
            if kvs[0].value != value:
                await self._client.unary("kv", "Put", rpc.PutRequest(key=mine, value=value, lease=lease.lease_id))
            predecessor, revision, next_in_line = await self._ahead_of(mine, queue, created)
        while predecessor is not None:
            log.debug("%s waits for %s to go (from revision %d)", mine.decode(), predecessor.decode(), revision + 1)
            if next_in_line:
                if await self._wait_turn(mine, predecessor, revision + 1, created):
                    break
            else:
                await self._wait_deleted(predecessor, revision + 1)
            predecessor, revision, next_in_line = await self._ahead_of(mine, queue, created)
        log.debug("%s leads (token %d)", mine.decode(), created)
        return Term(key, name, created)

    async def _ahead_of(self, mine: bytes, queue: bytes, created: int) -> tuple[bytes | None, int, bool]:
        """The entry just ahead of ours (None: we lead), the revision of that read, and whether
        that entry is the oldest one (the leader: we are next in line).

        Reads our own entry in the same transaction: it exists only while our lease is alive, so
        a win is never reported for an expired session (the check etcd's Go Campaign lacks).
        """
        txn = rpc.TxnRequest(success=[
            rpc.RequestOp(request_range=_Range(key=mine, keys_only=True)),
            rpc.RequestOp(request_range=_Range(
                key=queue, range_end=prefix_range_end(queue), max_create_revision=created - 1, limit=1,
                sort_target=_Range.CREATE, sort_order=_Range.DESCEND, keys_only=True)),
            rpc.RequestOp(request_range=_oldest(queue)),
        ])
        response = await self._client.unary("kv", "Txn", txn)
        if not response.responses[0].response_range.kvs:
            raise _entry_gone(mine)
        ahead = response.responses[1].response_range.kvs
        predecessor = ahead[0].key if ahead else None
        oldest = response.responses[2].response_range.kvs
        next_in_line = predecessor is not None and bool(oldest) and oldest[0].key == predecessor
        return predecessor, int(response.header.revision), next_in_line

    async def _wait_turn(self, mine: bytes, leader: bytes, start_revision: int, token: int) -> bool:
        """Wait, next in line, for the leader's entry to go; True: we lead (False: history was
        compacted, re-read).

        A read at ``start_revision - 1`` found ``leader`` the oldest entry and ours right behind
        it, and a new entry always comes last, so once the leader's entry is deleted nothing is
        ahead of ours. Whether ours still exists at that revision is what the confirmation read
        would prove; one watch over the key range spanning both entries proves it as well,
        without the round trip: etcd delivers one watch's events in revision order, so if ours
        had been deleted first (lease expired or revoked, withdrawn), that event would come
        first. Deletes of other waiters' entries that sort between the two are skipped.

        On a win the watch stays open for wait_replaced (its later events include our own
        entry's deletion), so the new leader needs no new watch.
        """
        low, high = min(mine, leader), max(mine, leader)
        create = rpc.WatchCreateRequest(key=low, range_end=high + b"\0", start_revision=start_revision,
                                        filters=[rpc.WatchCreateRequest.NOPUT])
        watch: WatchStream | None = await self._client.watch(create).__aenter__()
        try:
            while True:
                assert watch is not None
                keys = {bytes(event.kv.key) for event in (await watch.next()).events}
                if mine in keys:
                    raise _entry_gone(mine)
                if leader in keys:
                    self._armed[mine] = (token, watch)
                    watch = None
                    return True
        except CompactedError:
            return False
        finally:
            if watch is not None:
                watch.close()

    async def _wait_deleted(self, key: bytes, start_revision: int) -> None:
        create = rpc.WatchCreateRequest(
            key=key, start_revision=start_revision, filters=[rpc.WatchCreateRequest.NOPUT]
        )
        try:
            async with self._client.watch(create) as watch:
                await watch.next()  # NOPUT: any event is the deletion
        except CompactedError:
            pass  # history is gone: the caller re-reads the queue instead

    async def wait_replaced(self, session: Session, key: str, term: Term) -> None:
        # Entries are ordered by create revision and a new one always comes last, so a leader is
        # replaced exactly when its own entry goes: watch that one key for its deletion, from
        # the revision after its creation (no read first; a deletion already past is replayed).
        _, mine = self._entry(session, key)
        armed = self._armed.pop(mine, None)
        if armed is not None:
            token, watch = armed
            try:
                while token == term.token:  # the watch that saw us win goes on
                    if mine in {bytes(event.kv.key) for event in (await watch.next()).events}:
                        return
            except CompactedError:
                pass  # watch again from the term's revision below (it reads when that is gone too)
            finally:
                watch.close()
        start = term.token + 1
        while True:
            create = rpc.WatchCreateRequest(key=mine, start_revision=start, filters=[rpc.WatchCreateRequest.NOPUT])
            try:
                async with self._client.watch(create) as watch:
                    await watch.next()  # NOPUT: any event is the deletion
                    return
            except CompactedError:
                # That history is gone: read the entry, and watch from now if it is still ours.
                response = await self._client.unary("kv", "Range", _Range(key=mine))
                if not response.kvs or int(response.kvs[0].create_revision) != term.token:
                    return
                start = int(response.header.revision) + 1

    async def withdraw(self, session: Session, key: str) -> None:
        _, mine = self._entry(session, key)
        self._disarm(mine)
        await self._client.unary("kv", "DeleteRange", rpc.DeleteRangeRequest(key=mine))

    async def get_leader(self, key: str) -> Term | None:
        queue = self._queue(key)
        request = _Range(key=queue, range_end=prefix_range_end(queue), limit=1,
                         sort_target=_Range.CREATE, sort_order=_Range.ASCEND)
        kvs = (await self._client.unary("kv", "Range", request)).kvs
        return _term(key, kvs[0]) if kvs else None

    async def observe(self, key: str) -> AsyncIterator[Term | None]:
        queue = self._queue(key)
        end = prefix_range_end(queue)
        response = await self._client.unary("kv", "Range", _Range(key=queue, range_end=end))
        # The whole queue is mirrored so each change is computed locally, without a request.
        entries: dict[bytes, tuple[int, Any]] = {kv.key: (int(kv.create_revision), kv) for kv in response.kvs}
        current = _leader(key, entries)
        yield current
        create = rpc.WatchCreateRequest(key=queue, range_end=end, start_revision=int(response.header.revision) + 1)
        async with self._client.watch(create) as watch:
            while True:
                for event in (await watch.next()).events:
                    if event.type == rpc.Event.DELETE:
                        entries.pop(event.kv.key, None)
                    else:
                        entries[event.kv.key] = (int(event.kv.create_revision), event.kv)
                leader = _leader(key, entries)
                if leader != current:
                    current = leader
                    yield current

    def __repr__(self) -> str:
        return f"<EtcdBackend {self.url.redacted()}>"


def _oldest(queue: bytes) -> Any:
    """The queue's first entry: the leader."""
    return _Range(key=queue, range_end=prefix_range_end(queue), limit=1,
                  sort_target=_Range.CREATE, sort_order=_Range.ASCEND, keys_only=True)


def _entry_gone(mine: bytes) -> SessionLostError:
    return SessionLostError(f"etcd entry {mine.decode()} is gone: its lease expired or it was withdrawn")


def _term(key: str, kv: Any) -> Term:
    return Term(key, bytes(kv.value).decode("utf-8", errors="replace"), int(kv.create_revision))


def _leader(key: str, entries: dict[bytes, tuple[int, Any]]) -> Term | None:
    if not entries:
        return None
    return _term(key, min(entries.values(), key=lambda e: e[0])[1])


def _existing_file(path: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    return path


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
