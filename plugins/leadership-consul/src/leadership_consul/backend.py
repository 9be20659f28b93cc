"""The Consul backend: sessions with a TTL, a contender queue in the KV store, a session-locked leader key.

Layout under ``[<url path>/]<key>`` (``~`` cannot appear in an election key, so no key's entries
collide with another key's)::

    <key>/~queue/<session id>   one per contender, acquired with its session (value: name)
    <key>/~leader               acquired with the leader's session (value: name)

Contenders queue in the order of their entries' CreateIndex. Each waits, with a blocking query,
only on the entry just before its own; the first one locks ``~leader`` in a transaction that also
checks its queue entry is still held by its session. A resigning leader hands ``~leader`` to the
next in line in the transaction that removes its own entries, so a graceful handover is one raft
write. The raft index of the write that gave a session the key (the leader key's ModifyIndex) is
the fencing token. Sessions use ``behavior=delete`` and ``lock_delay=0``, so a dead session's
entries vanish in one raft write and the next contender can lock at once.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import json
import logging
import math
import os
import re
import socket
import time
import warnings
from collections.abc import AsyncGenerator, Callable, Hashable, Mapping, Sequence
from typing import Any, ClassVar

import aiohttp
import consul  # type: ignore[import-untyped,unused-ignore]
import consul.aio  # type: ignore[import-untyped,unused-ignore]

from leadership.backend import Backend, Session, Term
from leadership.errors import (
    AuthenticationError,
    ClosedError,
    ConfigurationError,
    PermanentStoreError,
    SessionLostError,
    StoreUnavailableError,
)
from leadership.url import Endpoint, StoreURL, parse_bool, parse_seconds

from ._fanout import RECHECK, Poller, Polls, Raw

__all__ = ["ConsulBackend", "ConsulSession"]

log = logging.getLogger(__name__)

DEFAULT_PORT = {"http": 8500, "https": 8501}
#: Consul refuses session TTLs outside [10 s, 24 h]; the session TTL is half the ttl.
MIN_SESSION_TTL = 10.0
MAX_SESSION_TTL = 86400.0
#: Consul caps a blocking query's wait at 10 minutes.
MAX_WAIT = 600.0
#: The agent accepts at most ``limits.http_max_conns_per_client`` (default 200) connections from
#: one address. Requests (session renewals, writes, reads) share a pool of ``API_CONNECTIONS``.
#: Waiting is done by one blocking query per watched prefix (see ``_fanout``), on a pool of its
#: own so a long poll never holds a connection a renewal needs: all elections under one parent
#: key share one poll, so ``POLL_SLOTS`` polls at once are only reached by elections spread
#: over that many parents; beyond it a poll waits for a slot (outside its request timeout).
API_CONNECTIONS = 40
POLL_SLOTS = 150

_OPTIONS = {
    "token": "ACL token (default: $CONSUL_HTTP_TOKEN)",
    "scheme": "http or https",
    "dc": "datacenter",
    "consistency": "default, consistent or stale (reads of get_leader/observe)",
    "timeout": "seconds per request",
    "wait": "seconds a blocking query waits for a change (1-600)",
    "verify": "true, false or a CA bundle path (https)",
    "cert": "client certificate path (https)",
    "key": "client key path (https)",
}
_SEGMENT = re.compile(r"^[A-Za-z0-9._-]+$")
_DC = re.compile(r"^[A-Za-z0-9_-]+$")
_DENIED = re.compile(r"permission denied|acl not found", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class _Entry:
    key: str
    value: str
    session: str
    create_index: int
    modify_index: int


@dataclasses.dataclass(frozen=True)
class _Response:
    code: int
    headers: Mapping[str, str]
    body: str


def _keep(response: Any) -> _Response:
    return _Response(response.code, response.headers, response.body)


def _entry(raw: Mapping[str, Any]) -> _Entry:
    value = raw.get("Value")
    text = base64.b64decode(value).decode("utf-8", "replace") if value else ""
    return _Entry(raw["Key"], text, raw.get("Session") or "", int(raw["CreateIndex"]), int(raw["ModifyIndex"]))


def _kv_op(verb: str, key: str, session: str | None = None, value: str | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"Verb": verb, "Key": key}
    if session is not None:
        op["Session"] = session
    if value is not None:
        op["Value"] = base64.b64encode(value.encode("utf-8")).decode("ascii")
    return {"KV": op}


def _positive_seconds(limit: float) -> Callable[[str], float]:
    def convert(raw: str) -> float:
        value = parse_seconds(raw)
        if value > limit:
            raise ValueError(f"at most {limit:g}s")
        return value

    return convert


class ConsulSession(Session):
    """A Consul session with TTL ``ttl/2``: Consul invalidates it between TTL and 2*TTL after the
    last renewal, so ``ttl`` bounds how long a crashed leader keeps the key."""

    def __init__(self, backend: ConsulBackend, session_id: str, ttl: float, session_ttl: float) -> None:
        super().__init__(ttl)
        self._backend = backend
        self._id = session_id
        self.session_ttl = session_ttl

    @property
    def id(self) -> str:
        return self._id

    @property
    def guaranteed(self) -> float:
        # The session TTL is the earliest Consul may invalidate after a renewal.
        return self.session_ttl

    async def refresh(self) -> None:
        await self._backend._renew(self._id)

    async def close(self) -> None:
        await self._backend._destroy(self._id)


class ConsulBackend(Backend):
    """``consul://host:port[/prefix][?token=…&scheme=https&dc=…&consistency=…&timeout=…&wait=…]``."""

    min_ttl: ClassVar[float] = 2 * MIN_SESSION_TTL
    max_ttl: ClassVar[float | None] = 2 * MAX_SESSION_TTL

    def __init__(self, url: StoreURL) -> None:
        if url.scheme != "consul":
            raise ConfigurationError(f"ConsulBackend handles consul:// URLs, not {url.scheme}://")
        if url.username is not None or url.password is not None:
            raise ConfigurationError("consul:// URLs take no user:password; pass an ACL token as ?token=...")
        if len(url.endpoints) > 1:
            raise ConfigurationError(
                f"consul:// URL {url.redacted()!r} names {len(url.endpoints)} agents; give exactly one "
                "(usually the local agent, which forwards to the servers and fails over by itself)"
            )
        self._scheme = url.option("scheme", _choice("http", "https"), "http", allowed="http, https")
        assert self._scheme is not None
        endpoint = url.endpoints_or(Endpoint("127.0.0.1", DEFAULT_PORT[self._scheme]))[0]
        self._host = endpoint.host
        self._port = endpoint.port or DEFAULT_PORT[self._scheme]
        self._prefix = _prefix(url.path)
        token = url.option("token", str)
        if token == "":
            raise ConfigurationError("consul:// URL option token= is empty; omit it or give an ACL token")
        # Like the consul CLI: the environment supplies the token when the URL does not.
        self._token = token if token is not None else os.environ.get("CONSUL_HTTP_TOKEN") or None
        dc = url.option("dc", str)
        if dc is not None and not _DC.match(dc):
            raise ConfigurationError(f"consul:// URL option dc={dc!r} is invalid (allowed: letters, digits, '_', '-')")
        self._dc = dc
        self._consistency = url.option(
            "consistency", _choice("default", "consistent", "stale"), "default", allowed="default, consistent, stale"
        )
        self._timeout = url.option("timeout", _positive_seconds(3600), 10.0, allowed="seconds > 0, e.g. 10 or 2.5s")
        self._wait = url.option("wait", _positive_seconds(MAX_WAIT), 60.0, allowed="seconds, 1 to 600")
        assert self._wait is not None and self._timeout is not None
        if self._wait < 1:
            raise ConfigurationError(f"consul:// URL option wait={self._wait:g} is invalid (allowed: 1 to 600 seconds)")
        verify_raw = url.option("verify", str)
        self._verify: bool | str = True
        if verify_raw is not None:
            try:
                self._verify = parse_bool(verify_raw)
            except ValueError:
                self._verify = verify_raw  # a CA bundle path
        cert, key = url.option("cert", str), url.option("key", str)
        if key is not None and cert is None:
            raise ConfigurationError("consul:// URL option key= needs cert= too")
        self._cert: str | tuple[str, str] | None = (cert, key) if cert and key else cert
        if self._scheme == "http" and (verify_raw is not None or cert is not None):
            raise ConfigurationError("consul:// URL options verify=, cert= and key= need scheme=https")
        url.reject_unknown_options(_OPTIONS)
        self._where = f"{self._scheme}://{endpoint.with_default_port(self._port)}"
        self._api: Any = None
        self._watch: Any = None
        self._poll_slots: asyncio.Semaphore | None = None
        self._polls = Polls(self._prefix, self._poll, self._where)

    @property
    def long_polls(self) -> int:
        """Blocking queries this connection keeps open now: one per key polled on its own, one
        per parent shared by many (see the README's "Waiting"). For benchmarks and tests."""
        return self._polls.open

    # -- connection --------------------------------------------------------------------------
    def _client(self, connections: int) -> Any:
        with warnings.catch_warnings():
            # py-consul hands aiohttp the deprecated verify_ssl/ssl_context arguments.
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                return consul.aio.Consul(
                    host=self._host,
                    port=self._port,
                    scheme=self._scheme,
                    verify=self._verify,
                    cert=self._cert,
                    connections_limit=connections,
                )
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise ConfigurationError(f"consul:// TLS settings (verify=, cert=, key=) are unusable: {exc}") from exc

    async def open(self) -> None:
        if self._api is None:
            self._api = self._client(API_CONNECTIONS)
            self._watch = self._client(POLL_SLOTS)
            self._poll_slots = asyncio.Semaphore(POLL_SLOTS)
        if self._dc is not None:  # before ping(), which a wrong dc fails as unavailable
            response = await self._request("GET", "/v1/catalog/datacenters")
            known = self._json(response, "list datacenters", list)
            if self._dc not in known:
                raise ConfigurationError(
                    f"consul:// URL option dc={self._dc!r}: no such datacenter at {self._where} "
                    f"(known: {', '.join(known)})"
                )
        await self.ping()
        if self._token is not None:
            # Reads with an unknown token look like empty keys (Consul hides what ACLs deny), so
            # check the token once here instead of following a silently empty election.
            response = await self._request("GET", "/v1/acl/token/self")
            if response.code == 403:
                self._check(response, "accept the ACL token")

    async def close(self) -> None:
        self._polls.close(ClosedError(f"consul backend for {self._where} is closed"))
        clients, self._api, self._watch = (self._api, self._watch), None, None
        for client in clients:
            if client is not None:
                await client.close()

    async def ping(self) -> Hashable:
        response = await self._request("GET", "/v1/status/leader")
        leader = self._json(response, "read the raft leader", str)
        if not leader:
            raise StoreUnavailableError(f"consul at {self._where} has no cluster leader")
        # A new raft leader is a new incarnation as far as watches care.
        return str(leader)

    # -- sessions ----------------------------------------------------------------------------
    async def create_session(self, ttl: float) -> Session:
        # Round down to the millisecond: a shorter TTL only makes the session die sooner.
        session_ttl = max(MIN_SESSION_TTL, math.floor(ttl * 500) / 1000)
        body = {
            "Name": f"leadership {socket.gethostname()}:{os.getpid()}",
            "TTL": f"{session_ttl:.3f}".rstrip("0").rstrip(".") + "s",
            "LockDelay": "0s",
            "Behavior": "delete",
        }
        response = await self._request("PUT", "/v1/session/create", data=json.dumps(body))
        session_id = str(self._json(response, "create a session", dict).get("ID") or "")
        if not session_id:
            raise StoreUnavailableError(f"consul {self._where}: no session id in {response.body[:200]!r}")
        log.debug(
            "consul %s: created session %s (ttl %gs, session TTL %.3fs)", self._where, session_id, ttl, session_ttl
        )
        return ConsulSession(self, session_id, ttl, session_ttl)

    async def _renew(self, session_id: str) -> None:
        response = await self._request("PUT", f"/v1/session/renew/{session_id}")
        if response.code == 404 and not await self._session_exists(session_id):
            raise SessionLostError(f"consul session {session_id} expired or was destroyed")
        if response.code == 404:
            raise StoreUnavailableError(
                f"consul {self._where} answered 404 to renewing session {session_id}, which still exists "
                "(a server replaying its log after a restart)"
            )
        self._check(response, f"renew session {session_id}")

    async def _destroy(self, session_id: str) -> None:
        response = await self._request("PUT", f"/v1/session/destroy/{session_id}")
        if response.code == 404 and await self._session_exists(session_id):
            # Gone from a state store still catching up, not from Consul: its entries would
            # stay until the TTL runs out, so the core retries.
            raise StoreUnavailableError(f"consul {self._where} could not destroy session {session_id} yet")
        if response.code != 404:
            self._check(response, f"destroy session {session_id}")

    async def _session_exists(self, session_id: str) -> bool:
        """Whether ``session_id`` exists, by a consistent read. Renew and destroy are answered
        from the server's state store without waiting for its log replay, so their 404 alone
        does not prove the session is gone."""
        response = await self._request("GET", f"/v1/session/info/{session_id}", [("consistent", "")])
        if response.code == 404:
            return False
        return bool(self._json(response, f"read session {session_id}", (list, type(None))))

    # -- elections ---------------------------------------------------------------------------
    def _keys(self, key: str) -> tuple[str, str, str]:
        """(prefix of this key's entries, leader key, queue prefix)."""
        base = f"{self._prefix}{key}/~"
        return base, base + "leader", base + "queue/"

    async def campaign(self, session: Session, key: str, name: str) -> Term:
        sid = session.id
        base, _, queue_prefix = self._keys(key)
        own_key = queue_prefix + sid
        # Join the queue. Locking an entry the session already holds keeps its CreateIndex, so a
        # retried campaign keeps its place.
        _, errors = await self._txn([_kv_op("lock", own_key, sid, name)], f"join the queue for {key!r}")
        if errors is not None:
            raise SessionLostError(f"consul session {sid} cannot queue for {key!r}: {_whats(errors)}")
        while True:
            _, entries = await self._get(base, recurse=True, campaign=True)
            leader, queue = self._parse(key, entries)
            if leader is not None and leader.session == sid:
                # We locked it before (a retried campaign), or our predecessor handed it to us.
                return Term(key, leader.value, leader.modify_index)
            position = next((i for i, e in enumerate(queue) if e.key == own_key and e.session == sid), None)
            if position is None:
                raise SessionLostError(f"consul session {sid} lost its queue entry for {key!r} while waiting")
            if position > 0:
                predecessor = queue[position - 1]
                if leader is not None and leader.session == predecessor.session:
                    # The one ahead of us leads: wait on the leader key itself, where its
                    # resignation hands the key to us, so we need not read again.
                    current = await self._wait_for_change(leader)
                    if current is not None and current.session == sid:
                        return Term(key, current.value, current.modify_index)
                else:
                    await self._wait_for_change(predecessor)
            elif leader is not None:
                # Someone outside the queue holds the key (e.g. an operator's `consul lock`).
                await self._wait_for_change(leader)
            else:
                term = await self._try_lock(sid, key, name)
                if term is not None:
                    return term

    def _parse(self, key: str, entries: list[_Entry]) -> tuple[_Entry | None, list[_Entry]]:
        """(the held leader entry or None, the queue in order) from a read of ``<key>/~``."""
        _, leader_key, queue_prefix = self._keys(key)
        leader = next((e for e in entries if e.key == leader_key and e.session), None)
        queue = sorted(
            (
                e
                for e in entries
                if e.key.startswith(queue_prefix) and "/" not in e.key[len(queue_prefix) :] and e.session
            ),
            key=lambda e: e.create_index,
        )
        return leader, queue

    async def _try_lock(self, sid: str, key: str, name: str) -> Term | None:
        """Lock the leader key if our queue entry is still ours; None when someone else holds it."""
        _, leader_key, queue_prefix = self._keys(key)
        results, errors = await self._txn(
            [_kv_op("check-session", queue_prefix + sid, sid), _kv_op("lock", leader_key, sid, name)],
            f"lock the leader key of {key!r}",
        )
        if results is not None:
            try:
                token = int(results[1]["KV"]["ModifyIndex"])
            except (LookupError, TypeError, ValueError) as exc:
                raise StoreUnavailableError(f"consul {self._where}: unreadable transaction result {results!r}") from exc
            log.debug("consul %s: %r leads %r with session %s, token %d", self._where, name, key, sid, token)
            return Term(key, name, token)
        assert errors is not None
        if any(e.get("OpIndex") == 0 or "invalid session" in str(e.get("What", "")) for e in errors):
            raise SessionLostError(f"consul session {sid} lost its queue entry for {key!r}: {_whats(errors)}")
        if "lock delay" in _whats(errors):
            # A foreign session with a lock delay held the key (ours use none): let the core back off.
            raise StoreUnavailableError(f"consul {self._where}: {_whats(errors)}")
        return None

    async def _wait_for_change(self, entry: _Entry) -> _Entry | None:
        """Return what is at ``entry``'s key once it is deleted or replaced (``entry`` itself when
        the caller must read again: the store went back, or the snapshot may be stale). Any
        state seen at or after the entry's ModifyIndex is as new as the read it came from."""

        def changed(current: Raw | None) -> bool:
            return (
                current is None
                or (current.get("Session") or "") != entry.session
                or int(current["CreateIndex"]) != entry.create_index
            )

        current = await self._poller(entry.key).wait(entry.key, changed, entry.modify_index)
        if current is RECHECK or self._consistency == "stale":
            # A stale snapshot may show a state this session has lost since: read it again.
            return entry
        return None if current is None else _entry(current)

    async def withdraw(self, session: Session, key: str) -> None:
        sid = session.id
        base, leader_key, queue_prefix = self._keys(key)
        own_key = queue_prefix + sid
        _, entries = await self._get(base, recurse=True, campaign=True)
        leader, queue = self._parse(key, entries)
        if leader is not None and leader.session == sid:
            resign = [_kv_op("check-session", leader_key, sid), _kv_op("delete", leader_key), _kv_op("delete", own_key)]
            successor = next((e for e in queue if e.key != own_key), None)
            if successor is not None:
                # Hand the key to the next in line in the same write: it wakes (its predecessor's
                # entry is gone) to find itself leading, so a handover costs one raft write, and
                # followers see the new leader directly, with no "no leader" in between.
                results, _ = await self._txn(
                    [
                        *resign,
                        _kv_op("check-session", successor.key, successor.session),
                        _kv_op("lock", leader_key, successor.session, successor.value),
                    ],
                    f"hand {key!r} over",
                )
                if results is not None:
                    return
            # No successor, or it went away meanwhile: just step down.
            results, _ = await self._txn(resign, f"resign {key!r}")
            if results is not None:
                return
        response = await self._request("DELETE", f"/v1/kv/{own_key}")
        self._check(response, f"withdraw from {key!r}")

    async def wait_replaced(self, session: Session, key: str, term: Term) -> None:
        # The token is the leader key's ModifyIndex when we got it, so the prefix's poll shows
        # the key's next change after that index: no first read.
        _, leader_key, _ = self._keys(key)
        sid, token = session.id, term.token

        def replaced(current: Raw | None) -> bool:
            return current is None or (current.get("Session") or "") != sid or int(current["ModifyIndex"]) != token

        index = token
        while True:
            if await self._poller(leader_key).wait(leader_key, replaced, index) is not RECHECK:
                return
            # The store is behind our token (it lost data?): look at the key itself.
            index, entries = await self._get(leader_key)
            current = next((e for e in entries if e.key == leader_key), None)
            if current is None or current.session != sid or current.modify_index != token:
                return

    async def get_leader(self, key: str) -> Term | None:
        _, leader_key, _ = self._keys(key)
        _, entries = await self._get(leader_key, recurse=True)
        return _term(key, leader_key, entries)

    async def observe(self, key: str) -> AsyncGenerator[Term | None, None]:
        _, leader_key, _ = self._keys(key)
        previous: Term | None = None
        first = True
        while True:
            # A consistent read first (and again when the store went back), then the prefix's
            # poll. A prefix read, not a single-key read: for an absent key Consul answers with
            # the index of the whole KV table, for a prefix with its tombstone's index.
            index, entries = await self._get(leader_key, recurse=True)
            seen = next(((e.session, e.modify_index) for e in entries if e.key == leader_key), None)
            if seen is not None:
                index = seen[1]  # as new as the read (see _wait_for_change)
            while True:
                term = _term(key, leader_key, entries)
                if first or term != previous:
                    yield term
                first, previous = False, term
                current = await self._poller(leader_key).wait(leader_key, functools.partial(_differs, seen), index)
                if current is RECHECK:
                    break
                entries = [] if current is None else [_entry(current)]
                seen = _state(current)
                if seen is not None:
                    index = seen[1]

    def _poller(self, key: str) -> Poller:
        if self._api is None:
            raise ClosedError(f"consul backend for {self._where} is not open")
        return self._polls.poller(key)

    async def _poll(self, root: str, index: int) -> tuple[int, list[Raw], float]:
        """One read of everything under ``root``: a blocking read from ``index``, or (0) a
        consistent read now. Pollers take turns for :data:`POLL_SLOTS` connections."""
        slots = self._poll_slots
        if slots is None:
            raise ClosedError(f"consul backend for {self._where} is not open")
        async with slots:
            return await self._read_timed(root, recurse=True, index=index, consistent=index == 0, watch=True)

    # -- HTTP --------------------------------------------------------------------------------
    async def _get(self, key: str, *, recurse: bool = False, campaign: bool = False) -> tuple[int, list[_Entry]]:
        """(X-Consul-Index, entries) of ``key``, read now.

        ``consistent``, except when the URL asks for ``stale`` and this is not a campaign's read
        (a campaign must see the entry it just wrote): a Consul server just elected (after a
        restart, say) answers default-mode reads from a state store still replaying its raft
        log, where a held key can be missing, while a consistent read waits for the replay ("not
        ready to serve consistent reads" is a 500, retried)."""
        consistent = campaign or self._consistency != "stale"
        index, raw = await self._read(key, recurse=recurse, consistent=consistent)
        return index, [_entry(e) for e in raw]

    async def _read(
        self, key: str, *, recurse: bool = False, index: int = 0, consistent: bool = False, watch: bool = False
    ) -> tuple[int, list[Raw]]:
        """(X-Consul-Index, raw entries) of ``key``; a blocking query when ``index`` is set, which
        follows the ``consistency`` option (it continues from an index already seen, so it can
        only return a later state)."""
        index, raw, _ = await self._read_timed(key, recurse=recurse, index=index, consistent=consistent, watch=watch)
        return index, raw

    async def _read_timed(
        self, key: str, *, recurse: bool = False, index: int = 0, consistent: bool = False, watch: bool = False
    ) -> tuple[int, list[Raw], float]:
        """:meth:`_read`, and the seconds spent decoding the answer."""
        params: list[tuple[str, str]] = []
        if recurse:
            params.append(("recurse", ""))
        consistency = "consistent" if consistent else str(self._consistency)
        if consistency != "default":
            params.append((consistency, ""))
        timeout = self._timeout
        if index > 0:
            assert self._wait is not None and timeout is not None
            params += [("index", str(index)), ("wait", f"{self._wait:g}s")]
            # Consul adds up to wait/16 of jitter before answering.
            timeout = self._wait * 17 / 16 + timeout
        response = await self._request("GET", f"/v1/kv/{key}", params, watch=watch, timeout=timeout)
        if response.code not in (200, 404):
            self._check(response, f"read {key!r}")
        started = time.perf_counter()
        try:
            new_index = int(response.headers.get("X-Consul-Index", "0"))
            raw = json.loads(response.body) if response.code == 200 else []
            if not isinstance(raw, list):
                raise TypeError(f"a list expected, got {type(raw).__name__}")
            for e in raw:
                if not isinstance(e, dict) or not isinstance(e.get("Key"), str):
                    raise TypeError(f"not a KV entry: {e!r:.200}")
                e["CreateIndex"], e["ModifyIndex"] = int(e["CreateIndex"]), int(e["ModifyIndex"])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreUnavailableError(f"consul {self._where}: unreadable answer for {key!r}: {exc}") from exc
        return max(new_index, 1), raw, time.perf_counter() - started

    async def _txn(
        self, ops: Sequence[dict[str, Any]], what: str
    ) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
        """(results, None) when the transaction committed, (None, errors) when Consul rolled it back."""
        response = await self._request("PUT", "/v1/txn", data=json.dumps(list(ops)))
        body = self._json(response, what, dict, conflict_ok=True)
        if response.code == 409:
            errors = list(body.get("Errors") or [])
            # ACL denials come back as per-operation errors of a rolled-back transaction.
            if any(_DENIED.search(str(e.get("What", ""))) for e in errors):
                raise AuthenticationError(
                    f"consul {self._where} refused to {what}: {_whats(errors)} "
                    "(check the token= option and its ACL policy)"
                )
            return None, errors
        return list(body.get("Results") or []), None

    async def _request(
        self,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]] = (),
        *,
        data: str | None = None,
        watch: bool = False,
        timeout: float | None = None,
    ) -> _Response:
        client = self._watch if watch else self._api
        if client is None:
            raise ClosedError(f"consul backend for {self._where} is not open")
        query = list(params)
        if self._dc is not None:
            query.append(("dc", self._dc))
        headers = {"X-Consul-Token": self._token} if self._token else {}
        if watch:
            # A poll's answer can be megabytes (every entry under a parent); the agent would
            # gzip it and we would unzip it, both on the critical path of a wake-up.
            headers["Accept-Encoding"] = "identity"
        http = client.http
        kwargs: dict[str, Any] = {"params": query, "headers": headers, "connections_timeout": timeout or self._timeout}
        try:
            if method == "GET":
                return await http.get(_keep, path, **kwargs)  # type: ignore[no-any-return]
            call = http.put if method == "PUT" else http.delete
            return await call(_keep, path, data=data or "", **kwargs)  # type: ignore[no-any-return]
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, consul.ConsulException) as exc:
            raise StoreUnavailableError(f"consul {self._where}: {method} {path} failed: {exc!r}") from exc

    def _json(
        self, response: _Response, what: str, shape: type | tuple[type, ...], *, conflict_ok: bool = False
    ) -> Any:
        """The decoded body of a successful answer (or of a 409: a rolled-back transaction)."""
        if not (conflict_ok and response.code == 409):
            self._check(response, what)
        try:
            body = json.loads(response.body)
        except ValueError as exc:
            body = exc
        if not isinstance(body, shape):
            # Something between us and the agent (a proxy?) answered: retrying may reach the agent.
            raise StoreUnavailableError(f"consul {self._where}: unreadable answer to {what}: {response.body[:200]!r}")
        return body

    def _check(self, response: _Response, what: str) -> None:
        code, body = response.code, response.body.strip()[:500]
        if 200 <= code < 300:
            return
        message = f"consul {self._where} refused to {what}: HTTP {code}: {body}"
        if code in (401, 403):
            raise AuthenticationError(message + " (check the token= option and its ACL policy)")
        if code == 429 or code >= 500:
            # 500 also covers "No cluster leader" during Consul's own elections.
            raise StoreUnavailableError(message)
        raise PermanentStoreError(message)


def _whats(errors: list[dict[str, Any]]) -> str:
    return "; ".join(str(e.get("What", e)) for e in errors)


def _state(raw: Raw | None) -> tuple[str, int] | None:
    """What a follower compares: the leader key's session and ModifyIndex (None: no key)."""
    return None if raw is None else (raw.get("Session") or "", int(raw["ModifyIndex"]))


def _differs(seen: tuple[str, int] | None, raw: Raw | None) -> bool:
    return _state(raw) != seen


def _term(key: str, leader_key: str, entries: list[_Entry]) -> Term | None:
    # A leader key nobody holds (released, or left behind by hand) is no leader.
    for entry in entries:
        if entry.key == leader_key and entry.session:
            return Term(key, entry.value, entry.modify_index)
    return None


def _choice(*allowed: str) -> Callable[[str], str]:
    def convert(raw: str) -> str:
        if raw not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}")
        return raw

    return convert


def _prefix(path: str) -> str:
    """The URL path as a KV prefix: ``/apps/x`` → ``apps/x/``; empty for none."""
    path = path.strip("/")
    if not path:
        return ""
    for segment in path.split("/"):
        if not _SEGMENT.match(segment) or segment in (".", ".."):
            raise ConfigurationError(
                f"consul:// URL path {path!r} is not a valid KV prefix: segment {segment!r} "
                "(allowed: segments of [A-Za-z0-9._-] joined by '/')"
            )
    return path + "/"
