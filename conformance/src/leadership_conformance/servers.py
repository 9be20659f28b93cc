"""Server handles: the stores the conformance suite and a plugin's own tests talk to.

A handle is a :class:`StoreServer`. The kit knows no store: each backend plugin ships its
handle (the project's own plugins in ``leadership_<store>.testing``) and registers it under the
entry-point group ``leadership_conformance.servers``, named by its URL scheme::

    [project.entry-points."leadership_conformance.servers"]
    mystore = "leadership_mystore.testing:MyStoreServer"

The registered object is a :class:`StoreServer` subclass: ``server_for("mystore", members)``
calls its ``start(members)`` (a throw-away server, a cluster for ``members > 1``), or, when
``LEADERSHIP_TEST_MYSTORE_URL`` is set, its ``external(url)`` (a handle on that running
server, which injects no faults). Base classes for the two kinds of throw-away server:
:class:`leadership_conformance.containers.ContainerServer` (Docker, via testcontainers) and
:class:`leadership_conformance.process.ProcessServer` (a local process, e.g. PostgreSQL).

Environment variables honoured for every registered store:

``LEADERSHIP_TEST_<SCHEME>_URL``
    Use the already running server at this store URL instead of starting one. Its handle has
    ``can_inject_faults = False``: the fault tests are skipped.
``LEADERSHIP_TEST_SERVER_TIMEOUT``
    Seconds a store may take to serve after a start or restart (default 90).
"""

from __future__ import annotations

import dataclasses
import http.client
import importlib
import logging
import os
import time
import warnings
from collections.abc import Sequence
from importlib import metadata
from types import TracebackType
from typing import Any, ClassVar, TypeVar

__all__ = [
    "ENTRY_POINT_GROUP",
    "ExternalServer",
    "FaultInjectionUnavailable",
    "FaultProfile",
    "Member",
    "ServerStartError",
    "StoreServer",
    "env_url",
    "registered_servers",
    "server_class",
    "server_for",
    "startup_timeout",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "leadership_conformance.servers"
"""The entry-point group through which a plugin registers its server handle class."""
ENV_PREFIX = "LEADERSHIP_TEST_"
#: Client-side timeout of one probe (health check, metrics read).
PROBE_TIMEOUT = 2.0
_POLL_INTERVAL = 0.05

#: What a probe of a store that does not serve (yet) may raise: refused or reset connections,
#: timeouts, HTTP errors, unparsable replies, "not serving" answers.
PROBE_ERRORS: tuple[type[Exception], ...] = (OSError, ValueError, RuntimeError, http.client.HTTPException)

_S = TypeVar("_S", bound="StoreServer")


class ServerStartError(RuntimeError):
    """A store did not serve within its deadline; the message carries the server's logs."""


class FaultInjectionUnavailable(RuntimeError):
    """The handle cannot pause, restart or kill its store (an external server)."""


def startup_timeout() -> float:
    """Seconds a store may take to serve after a start or restart (``LEADERSHIP_TEST_SERVER_TIMEOUT``)."""
    raw = os.environ.get(ENV_PREFIX + "SERVER_TIMEOUT", "90")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_PREFIX}SERVER_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{ENV_PREFIX}SERVER_TIMEOUT must be positive, got {raw!r}")
    return value


def env_url(scheme: str) -> str | None:
    """The URL of an external server for ``scheme`` (``LEADERSHIP_TEST_<SCHEME>_URL``), if set."""
    return os.environ.get(f"{ENV_PREFIX}{scheme.upper()}_URL") or None


class _Counter:
    """Turns a per-process counter (reset by a server restart) into a monotonic one."""

    def __init__(self) -> None:
        self._base = 0
        self._last = 0

    def update(self, raw: int) -> int:
        if raw < self._last:  # the server restarted behind our back
            self._base += self._last
        self._last = raw
        return self.value

    def rebase(self) -> None:
        """The server is about to restart: later readings count from zero again."""
        self._base += self._last
        self._last = 0

    @property
    def value(self) -> int:
        return self._base + self._last


@dataclasses.dataclass(eq=False)
class Member:
    """One server process of a store (one member of a raft cluster, one database server, ...)."""

    index: int
    #: Name inside the store (member name, server id, node name); "" if not ours to know.
    name: str
    #: Client address as seen from the test process.
    host: str
    port: int
    #: What a fault-injecting handle controls (a container, a process); None when external.
    handle: Any = None
    running: bool = True
    #: Probes this handle sent since the process started, for stores that count them as client
    #: requests (a handle subtracts them in ``read_requests``).
    probes: int = 0
    requests: _Counter = dataclasses.field(default_factory=_Counter)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def container(self) -> Any:
        """The earlier name of :attr:`handle` (a container handle's ``DockerContainer``)."""
        return self.handle


@dataclasses.dataclass(frozen=True)
class FaultProfile:
    """How the fault campaign exercises a store: the candidates' ttl, and how long after a healed
    fault some candidate must lead again (ttl + ``recovery_slack``)."""

    ttl: float = 2.0
    recovery_slack: float = 3.0
    #: ttl on a store cluster, when a member election stalls renewals for longer than ``ttl``.
    cluster_ttl: float | None = None


class StoreServer:
    """A running store, as the conformance suite and a plugin's tests see it.

    ``url``
        A leadership store URL reaching every member (``leadership.connect(url)`` works).
    ``can_inject_faults``
        The one switch for the fault tests: True when :meth:`pause`, :meth:`unpause`,
        :meth:`restart`, :meth:`kill_member` and :meth:`start_member` work; False for an
        external server, whose fault methods raise :class:`FaultInjectionUnavailable`.
    ``members``
        The store's server processes, in a stable order (:class:`Member`).

    Every call is synchronous and may block only as documented on it; none waits on a client
    of the store. A subclass defines the store's probes (:meth:`check_serving`,
    :meth:`read_requests`, :meth:`is_leader`) and, for a throw-away server, the classmethod
    :meth:`start`; the fault methods come from a base class that controls the processes
    (:class:`~leadership_conformance.containers.ContainerServer`,
    :class:`~leadership_conformance.process.ProcessServer`).
    """

    #: The store's URL scheme (also the entry point's name and ``LEADERSHIP_TEST_<SCHEME>_URL``).
    scheme: ClassVar[str] = ""
    #: Client port of a member when a URL names none.
    default_port: ClassVar[int] = 0
    #: How the fault campaign (``nox -s faults``) exercises this store.
    fault_profile: ClassVar[FaultProfile] = FaultProfile()
    can_inject_faults: bool = False

    def __init__(self, members: Sequence[Member], *, url: str | None = None) -> None:
        self.members = list(members)
        self.url = url or f"{self.scheme}://{','.join(m.address for m in self.members)}"
        self._paused = False
        self._stopped = False

    def __repr__(self) -> str:
        kind = "fault-injecting" if self.can_inject_faults else "external"
        return f"<{type(self).__name__} {self.url} ({kind}, {len(self.members)} member(s))>"

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- constructors ---------------------------------------------------------------------------

    @classmethod
    def start(cls: type[_S], members: int = 1) -> _S:
        """Start a throw-away server of ``members`` members and return once every one serves
        (blocks up to :func:`startup_timeout`; raises :class:`ServerStartError` with the logs).
        A store that cannot run a cluster raises ValueError for ``members > 1``."""
        raise NotImplementedError(f"{cls.__name__} does not start servers: define the classmethod start(members)")

    @classmethod
    def external(cls: type[_S], url: str) -> _S:
        """A handle on a server someone else runs, at ``url``: probes and request counts work
        where the server allows them; faults raise :class:`FaultInjectionUnavailable`."""
        return cls(_members_of(cls.scheme, url, cls.default_port), url=url)

    # -- what a store defines: probes (each bounded by PROBE_TIMEOUT, never retried inside) -----

    def check_serving(self, member: Member) -> None:
        """Return if ``member`` serves client requests now; raise one of ``PROBE_ERRORS`` if not."""

    def read_requests(self, member: Member) -> int | None:
        """Client requests ``member``'s current process has handled, or None if unknown."""
        return None

    def is_leader(self, member: Member) -> bool:
        """Whether ``member`` leads the store's own consensus (raft, ZAB); a single server
        leads whenever it serves."""
        return len(self.members) == 1

    # -- fault injection (None here: the handle of an external server) -------------------------

    def _refuse(self, what: str) -> FaultInjectionUnavailable:
        return FaultInjectionUnavailable(
            f"{self!r} cannot {what}: it is an external server (can_inject_faults is False)"
        )

    def pause(self) -> None:
        """Freeze every member: connections stay open, nothing answers (``docker pause``,
        SIGSTOP). Returns at once; requests sent meanwhile hang until :meth:`unpause`."""
        raise self._refuse("pause")

    def unpause(self) -> None:
        """Resume the frozen members; returns at once (the store answers what was pending)."""
        raise self._refuse("unpause")

    def restart(self) -> None:
        """Stop every member (SIGTERM, up to 10 s) and start it again with its data and ports;
        return once all serve (blocks up to :func:`startup_timeout`)."""
        raise self._refuse("restart")

    def kill_member(self, index: int) -> None:
        """SIGKILL one member, keeping its data, so :meth:`start_member` can bring it back."""
        raise self._refuse("kill a member")

    def start_member(self, index: int) -> None:
        """Start a killed member again with its data; return once it serves."""
        raise self._refuse("start a member")

    # -- observation -----------------------------------------------------------------------------

    def wait_serving(self, members: Sequence[Member] | None = None, timeout: float | None = None) -> None:
        """Block until the given (default: all running) members serve, or raise
        :class:`ServerStartError` after ``timeout`` (default :func:`startup_timeout`)."""
        pending = [m for m in (self.members if members is None else members) if m.running]
        deadline = time.monotonic() + (startup_timeout() if timeout is None else timeout)
        errors: dict[int, str] = {}
        while pending:
            for member in list(pending):
                try:
                    self.check_serving(member)
                except PROBE_ERRORS as exc:
                    errors[member.index] = f"{type(exc).__name__}: {exc}"
                    self._fail_if_exited(member)
                else:
                    pending.remove(member)
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"{self.scheme} did not serve within the deadline at {self.url}: "
                    + "; ".join(f"member {m.index} ({m.address}): {errors.get(m.index)}" for m in pending)
                    + "".join(self._logs_for_error(m) for m in pending)
                )
            time.sleep(_POLL_INTERVAL)

    def _fail_if_exited(self, member: Member) -> None:
        """Raise :class:`ServerStartError` at once if ``member``'s process is gone."""

    def _logs_for_error(self, member: Member, lines: int = 60) -> str:
        return ""

    def logs(self) -> str:
        """Every member's log (for debugging a failed test); "" when the handle has none."""
        return "".join(self._logs_for_error(m, lines=10_000) for m in self.members)

    def leftovers(self, prefix: str) -> list[str] | None:
        """What the store still holds for election keys containing ``prefix`` (entries), and
        the sessions or leases still alive, each described in a string; None if this handle
        cannot tell. The fault campaign requires it empty once every agent stopped. Optional:
        the default cannot tell."""
        return None

    def request_count(self) -> int | None:
        """Client requests the store has handled since it started, summed over members and
        monotonic across restarts, or None if the store does not expose the count.

        A request is one message a client sent that the server processed: a call, a watch
        registration, a keepalive or ping; the handle's own probes are not counted. While
        paused: the count before the pause. Blocks for one probe per member at most."""
        total, known = 0, False
        for member in self.members:
            if member.running and not self._paused:
                try:
                    raw = self.read_requests(member)
                except PROBE_ERRORS as exc:
                    logger.debug("request count of %s unavailable: %s", member.address, exc)
                    raw = None
                if raw is None:
                    if len(self.members) == 1:
                        return None
                else:
                    member.requests.update(raw)
                    known = True
            # a member that is down or paused counts what it had handled
            known = known or member.requests.value > 0 or not member.running or self._paused
            total += member.requests.value
        return total if known else None

    def _fold_requests(self, member: Member) -> None:
        """Read a member's count once more before its process goes away."""
        if member.running and not self._paused:
            try:
                raw = self.read_requests(member)
            except PROBE_ERRORS:
                raw = None
            if raw is not None:
                member.requests.update(raw)
        member.requests.rebase()

    def leader_member(self) -> int | None:
        """Index of the member that leads the store, or None if none can be determined (paused,
        mid-election). Blocks for one probe per member at most."""
        if self._paused:
            return None
        for member in self.members:
            if not member.running:
                continue
            try:
                if self.is_leader(member):
                    return member.index
            except PROBE_ERRORS:
                continue
        return None

    def stop(self) -> None:
        """Release the server (remove containers, end processes). Idempotent; an external
        server is left running."""
        self._stopped = True


class ExternalServer(StoreServer):
    """The handle :func:`server_for` gives for ``LEADERSHIP_TEST_<SCHEME>_URL`` when no plugin
    registered a handle class for the scheme: the URL, nothing more (no faults, no counts)."""

    def __init__(self, url: str) -> None:
        super().__init__(_members_of("", url, 0), url=url)


def _members_of(scheme: str, url: str, default_port: int) -> list[Member]:
    """The members named in ``url``'s host list (credentials and options dropped)."""
    got, sep, rest = url.partition("://")
    if not sep or (scheme and got != scheme):
        raise ValueError(f"{ENV_PREFIX}{(scheme or got).upper()}_URL must be a {scheme or got}:// URL, got {url!r}")
    netloc = rest.split("/", 1)[0].split("?", 1)[0].rpartition("@")[2]
    members: list[Member] = []
    for i, part in enumerate(p for p in netloc.split(",") if p):
        host, colon, port = part.rpartition(":")
        if not colon or not port.isdigit():
            host, port = part, str(default_port)
        members.append(Member(i, "", host.strip("[]"), int(port)))
    return members


def registered_servers() -> dict[str, metadata.EntryPoint]:
    """The server handles plugins registered (entry-point group ``leadership_conformance.servers``),
    by URL scheme. Nothing is imported."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def server_class(scheme: str) -> type[StoreServer]:
    """The handle class registered for ``scheme``; ValueError naming what is registered."""
    registered = registered_servers()
    if scheme not in registered:
        known = ", ".join(sorted(registered)) or "none"
        raise ValueError(
            f"unknown backend {scheme!r}: no server handle registered for it under the entry-point group "
            f"{ENTRY_POINT_GROUP!r} (registered: {known}). Install the plugin with its test extra, "
            "e.g. pip install 'leadership-<store>[testing]'"
        )
    cls = registered[scheme].load()
    if not (isinstance(cls, type) and issubclass(cls, StoreServer)):
        raise TypeError(f"entry point {registered[scheme].value!r} for {scheme!r} is not a StoreServer subclass")
    return cls


def server_for(backend: str, members: int = 1) -> StoreServer:
    """The store the tests should use: the external server named by
    ``LEADERSHIP_TEST_<BACKEND>_URL`` if set, else a new throw-away server (a cluster of
    ``members``) from the handle the backend's plugin registered."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    url = env_url(backend)
    if url and backend not in registered_servers():
        logger.info("using the external %s server at %s (no handle registered: URL only)", backend, url)
        return ExternalServer(url)
    cls = server_class(backend)
    if url:
        logger.info("using the external %s server at %s", backend, url)
        return cls.external(url)
    return cls.start(members)


# Names this module held before each plugin brought its own handle (start_<store>,
# <Store>Server, <STORE>_IMAGE): found in the registered plugins' testing modules.
def __getattr__(name: str) -> Any:
    if name.startswith("_"):
        raise AttributeError(name)
    for ep in registered_servers().values():
        module = ep.module
        try:
            holder = importlib.import_module(module)
        except ImportError:
            continue
        if name not in getattr(holder, "__all__", ()):
            continue
        found = getattr(holder, name)
        warnings.warn(
            f"leadership_conformance.servers.{name} moved to {module}.{name}; "
            f"or use leadership_conformance.servers.server_for({ep.name!r})",
            DeprecationWarning,
            stacklevel=2,
        )
        return found
    raise AttributeError(
        f"module 'leadership_conformance.servers' has no attribute {name!r}: store-specific server "
        "handles moved into their plugins (leadership_<store>.testing, installed with the plugin's "
        "[testing] extra); use server_for('<scheme>') or import the plugin's handle"
    )
