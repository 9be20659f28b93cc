"""Store servers for the conformance suite and the plugins' integration tests.

``server_for("etcd")`` (or :func:`start_etcd`, :func:`start_zookeeper`, :func:`start_consul`)
starts a throw-away store in Docker through testcontainers and returns a :class:`StoreServer`:
its ``url`` is a leadership store URL, and it can pause, restart or kill the store for fault
tests and count the requests the store has handled. Use it as a context manager, or call
``stop()``: the containers are removed there (the Ryuk reaper may be disabled).

The images' command line / environment contract is that of the official images, so the same
code starts them or the look-alike images ``.ci/images/build.sh`` builds from Debian packages:

- etcd: ``gcr.io/etcd-development/etcd`` — no entrypoint, ``/usr/local/bin/etcd --flags``.
- ZooKeeper: ``zookeeper`` — ``/docker-entrypoint.sh`` writes ``zoo.cfg`` from ``ZOO_*``.
- Consul: ``hashicorp/consul`` — ``docker-entrypoint.sh agent ...``.

Environment variables:

``LEADERSHIP_TEST_ETCD_IMAGE``, ``LEADERSHIP_TEST_ZOOKEEPER_IMAGE``, ``LEADERSHIP_TEST_CONSUL_IMAGE``
    The image to start (defaults: ``gcr.io/etcd-development/etcd:v3.5.17``, ``zookeeper:3.9``,
    ``hashicorp/consul:1.20``).
``LEADERSHIP_TEST_ETCD_URL``, ``LEADERSHIP_TEST_ZOOKEEPER_URL``, ``LEADERSHIP_TEST_CONSUL_URL``
    Use the already running server at this store URL (e.g. ``etcd://127.0.0.1:2379``) instead of
    starting a container. Its handle has ``can_inject_faults = False``; ``request_count()``
    still works where the server exposes its metrics (ZooKeeper needs ``mntr`` whitelisted,
    Consul ``telemetry.prometheus_retention_time``).
``LEADERSHIP_TEST_NETWORK``
    ``host``: containers use the host network and listen on free ports of 127.0.0.1 (for a
    Docker daemon without a bridge, as on the project's CI). Unset or ``bridge``: the default
    bridge network with the client ports published on the Docker host.
``LEADERSHIP_TEST_SERVER_TIMEOUT``
    Seconds a store may take to serve after a start or restart (default 90).

``TESTCONTAINERS_RYUK_DISABLED=true`` is honoured by testcontainers itself.
"""

from __future__ import annotations

import abc
import concurrent.futures
import contextlib
import dataclasses
import http.client
import json
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient
from testcontainers.core.network import Network

__all__ = [
    "CONSUL_IMAGE",
    "ETCD_IMAGE",
    "ZOOKEEPER_IMAGE",
    "ConsulServer",
    "EtcdServer",
    "FaultInjectionUnavailable",
    "Member",
    "ServerStartError",
    "StoreServer",
    "ZooKeeperServer",
    "server_for",
    "start_consul",
    "start_etcd",
    "start_zookeeper",
]

logger = logging.getLogger(__name__)

ETCD_IMAGE = "gcr.io/etcd-development/etcd:v3.5.17"
ZOOKEEPER_IMAGE = "zookeeper:3.9"
CONSUL_IMAGE = "hashicorp/consul:1.20"

_ENV_PREFIX = "LEADERSHIP_TEST_"
_DEFAULT_IMAGES = {"etcd": ETCD_IMAGE, "zookeeper": ZOOKEEPER_IMAGE, "consul": CONSUL_IMAGE}
_DEFAULT_PORTS = {"etcd": 2379, "zookeeper": 2181, "consul": 8500}
_BACKENDS = tuple(_DEFAULT_IMAGES)

#: Client-side timeout of one probe (health check, metrics read).
_PROBE_TIMEOUT = 2.0
_POLL_INTERVAL = 0.05
#: Grace period docker gives a server between SIGTERM and SIGKILL on restart().
_STOP_TIMEOUT = 10
#: Attempts to start a store when a port picked as free was taken meanwhile.
_START_ATTEMPTS = 3
_ADDRESS_IN_USE = re.compile(r"address already in use|port is already allocated", re.IGNORECASE)

#: What a probe of a store that does not serve (yet) raises: refused or reset connections,
#: timeouts, HTTP errors, unparsable replies, "not serving" answers.
_PROBE_ERRORS = (OSError, ValueError, RuntimeError, http.client.HTTPException)

_S = TypeVar("_S", bound="StoreServer")
_T = TypeVar("_T")


class ServerStartError(RuntimeError):
    """A store did not serve within its deadline; the message carries the container logs."""


class FaultInjectionUnavailable(RuntimeError):
    """The handle wraps an external server: it cannot pause, restart or kill it."""


def _startup_timeout() -> float:
    raw = os.environ.get(_ENV_PREFIX + "SERVER_TIMEOUT", "90")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{_ENV_PREFIX}SERVER_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{_ENV_PREFIX}SERVER_TIMEOUT must be positive, got {raw!r}")
    return value


def _host_network() -> bool:
    mode = os.environ.get(_ENV_PREFIX + "NETWORK", "").strip().lower()
    if mode not in ("", "host", "bridge"):
        raise ValueError(f"{_ENV_PREFIX}NETWORK must be 'host' or 'bridge', got {mode!r}")
    return mode == "host"


def _image(backend: str) -> str:
    return os.environ.get(f"{_ENV_PREFIX}{backend.upper()}_IMAGE") or _DEFAULT_IMAGES[backend]


def _free_ports(count: int) -> list[int]:
    """Ports nobody listens on, below the kernel's ephemeral range (where the OS hands out the
    local ports of outgoing connections, which could take a server's port across a restart)."""
    low, high = 15000, 32767
    with contextlib.suppress(OSError, ValueError), open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        high = min(high, int(f.read().split()[0]) - 1)
    candidates = list(range(low, max(high, low + 1000)))
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == count:
            return ports
    raise RuntimeError(f"found only {len(ports)} free ports of {count}")


# --- protocol helpers (stdlib only, short timeouts) -------------------------------------------


def _http(host: str, port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=_PROBE_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _four_letter_word(host: str, port: int, command: str) -> str:
    with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT) as s:
        s.sendall(command.encode("ascii"))
        chunks: list[bytes] = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


_PROM_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_PROM_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _prometheus(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _PROM_LINE.match(line)
        if not m:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        yield m["name"], dict(_PROM_LABEL.findall(m["labels"] or "")), value


# --- handles ----------------------------------------------------------------------------------


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
    """One server process of a store."""

    index: int
    #: Name inside the store (etcd member name, ZooKeeper myid, Consul node name).
    name: str
    #: Client address as seen from the test process.
    host: str
    port: int
    #: None for an external server.
    container: DockerContainer | None = None
    running: bool = True
    #: Four-letter words / probes this handle sent since the process started (ZooKeeper
    #: counts them as client packets; they are subtracted).
    probes: int = 0
    requests: _Counter = dataclasses.field(default_factory=_Counter)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class StoreServer(abc.ABC):
    """A running store the tests talk to, with the fault injection the conformance kit uses."""

    #: Store URL scheme.
    scheme: str = ""
    #: Leadership store URL of all members, e.g. ``etcd://127.0.0.1:23791``.
    url: str
    #: False for an external server (given by environment variable): no pause/restart/kill.
    can_inject_faults: bool
    members: list[Member]

    def __init__(
        self,
        members: list[Member],
        *,
        network: Network | None = None,
        url_options: str = "",
    ) -> None:
        self.members = members
        self.can_inject_faults = all(m.container is not None for m in members)
        self._network = network
        self._paused = False
        self._stopped = False
        self.url = f"{self.scheme}://{','.join(m.address for m in members)}{url_options}"

    def __repr__(self) -> str:
        kind = "container" if self.can_inject_faults else "external"
        return f"<{type(self).__name__} {self.url} ({kind}, {len(self.members)} member(s))>"

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- what each store defines

    @abc.abstractmethod
    def _check_serving(self, member: Member) -> None:
        """Return when ``member`` serves client requests; raise (any error) otherwise."""

    @abc.abstractmethod
    def _read_requests(self, member: Member) -> int | None:
        """Client requests ``member``'s current process has handled, or None if unknown."""

    @abc.abstractmethod
    def _is_leader(self, member: Member) -> bool:
        """Whether ``member`` is the store's leader (raft / ZAB)."""

    # -- fault injection

    def _containers(self, members: Iterable[Member] | None = None) -> list[tuple[Member, DockerContainer]]:
        if not self.can_inject_faults:
            raise FaultInjectionUnavailable(f"{self!r} is an external server: it cannot be paused or restarted")
        if self._stopped:
            raise RuntimeError(f"{self!r} was stopped")
        return [(m, m.container) for m in (self.members if members is None else members) if m.container is not None]

    def pause(self) -> None:
        """Freeze every member (``docker pause``): connections stay open, nothing answers."""
        for member, container in self._containers():
            if member.running:
                container.get_wrapped_container().pause()
        self._paused = True
        logger.info("paused %s", self.url)

    def unpause(self) -> None:
        for member, container in self._containers():
            if member.running:
                container.get_wrapped_container().unpause()
        self._paused = False
        logger.info("unpaused %s", self.url)

    def restart(self) -> None:
        """Stop and start the same containers (same ports, same data); return once serving."""
        pairs = self._containers()
        if self._paused:
            self.unpause()
        for member, _ in pairs:
            self._fold_requests(member)
        _each(lambda p: p[1].get_wrapped_container().stop(timeout=_STOP_TIMEOUT), pairs)
        for member, _ in pairs:
            member.running = False
        logger.info("stopped %s for a restart", self.url)
        self._start_members([m for m, _ in pairs])

    def kill_member(self, index: int) -> None:
        """SIGKILL one member; its container stays, so :meth:`start_member` brings it back."""
        ((member, container),) = self._containers([self.members[index]])
        if member.running:
            self._fold_requests(member)
            container.get_wrapped_container().kill()
            member.running = False
            logger.info("killed member %d (%s) of %s", index, member.name, self.url)

    def start_member(self, index: int) -> None:
        """Start a killed member again, with its data; return once it serves."""
        ((member, _),) = self._containers([self.members[index]])
        if not member.running:
            self._start_members([member])

    def _start_members(self, members: list[Member]) -> None:
        for member in members:
            assert member.container is not None
            member.container.get_wrapped_container().start()
            member.running = True
            member.probes = 0
            member.requests.rebase()
        self.wait_serving(members)
        logger.info("started %s", ", ".join(f"{m.name}@{m.address}" for m in members))

    def wait_serving(self, members: Sequence[Member] | None = None, timeout: float | None = None) -> None:
        """Block until the given (default: all running) members serve; raise ServerStartError."""
        members = [m for m in (self.members if members is None else members) if m.running]
        deadline = time.monotonic() + (_startup_timeout() if timeout is None else timeout)
        pending = list(members)
        errors: dict[int, str] = {}
        while pending:
            for member in list(pending):
                try:
                    self._check_serving(member)
                except _PROBE_ERRORS as exc:
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
        if member.container is None:
            return
        wrapped = member.container.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            raise ServerStartError(
                f"{self.scheme} member {member.index} ({member.address}) exited with code "
                f"{wrapped.attrs.get('State', {}).get('ExitCode')}" + self._logs_for_error(member)
            )

    @staticmethod
    def _logs_for_error(member: Member, lines: int = 60) -> str:
        if member.container is None:
            return ""
        try:
            raw = member.container.get_wrapped_container().logs(tail=lines)
        except Exception as exc:  # noqa: BLE001 - best effort, for an error message
            return f"\n--- no logs for {member.name}: {exc}"
        return f"\n--- last {lines} log lines of {member.name}:\n{raw.decode('utf-8', 'replace')}"

    def logs(self) -> str:
        """Every member's container log (for debugging a failed test)."""
        return "".join(self._logs_for_error(m, lines=10_000) for m in self.members)

    def stop(self) -> None:
        """Remove the containers (and their volumes and network). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for member in self.members:
            if member.container is not None:
                with contextlib.suppress(Exception):
                    member.container.stop(force=True, delete_volume=True)
                member.running = False
        if self._network is not None:
            with contextlib.suppress(Exception):
                self._network.remove()
        if self.can_inject_faults:
            logger.info("removed %s", self.url)

    # -- observation

    def _fold_requests(self, member: Member) -> None:
        """Read a member's count once more before its process goes away."""
        if member.running and not self._paused:
            with contextlib.suppress(Exception):
                raw = self._read_requests(member)
                if raw is not None:
                    member.requests.update(raw)
        member.requests.rebase()

    def request_count(self) -> int | None:
        """Client requests the store has handled since it started (summed over members,
        monotonic across restarts), or None if the store does not expose the count.
        The handle's own probes are not counted. While paused: the count before the pause."""
        total = 0
        for member in self.members:
            if member.running and not self._paused:
                try:
                    raw = self._read_requests(member)
                except _PROBE_ERRORS as exc:
                    logger.debug("request count of %s unavailable: %s", member.address, exc)
                    raw = None
                if raw is None:
                    if len(self.members) == 1:
                        return None
                else:
                    member.requests.update(raw)
            total += member.requests.value
        return total

    def leader_member(self) -> int | None:
        """Index of the member that is the store's leader, or None if none can be determined."""
        if self._paused:
            return None
        for member in self.members:
            if not member.running:
                continue
            with contextlib.suppress(Exception):
                if self._is_leader(member):
                    return member.index
        return None


def _each(fn: Callable[[_T], object], items: Sequence[_T]) -> None:
    """Run ``fn`` on every item concurrently (docker stop of several members)."""
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    with concurrent.futures.ThreadPoolExecutor(len(items)) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


class EtcdServer(StoreServer):
    """etcd (v3 API). Requests: ``grpc_server_msg_received_total`` from ``/metrics`` — every
    client message, unary calls and stream messages (watch creates, lease keepalives) alike;
    the handle's own probes are plain HTTP and do not count."""

    scheme = "etcd"

    def _check_serving(self, member: Member) -> None:
        status, body = _http(member.host, member.port, "GET", "/health")
        reply = json.loads(body) if body else None
        health = reply.get("health") if isinstance(reply, dict) else None
        if status != 200 or str(health).lower() != "true":
            raise RuntimeError(f"/health answered {status}: {body[:200]!r}")

    def _metrics(self, member: Member) -> list[tuple[str, dict[str, str], float]]:
        status, body = _http(member.host, member.port, "GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return list(_prometheus(body.decode()))

    def _read_requests(self, member: Member) -> int | None:
        values = [v for name, _, v in self._metrics(member) if name == "grpc_server_msg_received_total"]
        return int(sum(values)) if values else None

    def _is_leader(self, member: Member) -> bool:
        return any(name == "etcd_server_is_leader" and v == 1 for name, _, v in self._metrics(member))


class ZooKeeperServer(StoreServer):
    """ZooKeeper. Requests: ``zk_packets_received`` from the ``mntr`` four-letter word, minus
    the four-letter words this handle sent (ZooKeeper counts those too). Client pings count."""

    scheme = "zookeeper"

    def _word(self, member: Member, command: str) -> str:
        reply = _four_letter_word(member.host, member.port, command)
        # ZooKeeper counts a four-letter word as a client packet only while it serves.
        if "not currently serving" not in reply:
            member.probes += 1
        return reply

    def _check_serving(self, member: Member) -> None:
        reply = self._word(member, "srvr")
        if "Mode:" not in reply:  # "This ZooKeeper instance is not currently serving requests"
            raise RuntimeError(f"srvr answered {reply.strip()[:200]!r}")

    def _read_requests(self, member: Member) -> int | None:
        reply = self._word(member, "mntr")
        m = re.search(r"^zk_packets_received\s+(\d+)", reply, re.MULTILINE)
        if not m:
            return None
        return max(0, int(m[1]) - member.probes)

    def _is_leader(self, member: Member) -> bool:
        m = re.search(r"^Mode:\s*(\w+)", self._word(member, "srvr"), re.MULTILINE)
        return m is not None and m[1] in ("leader", "standalone")


class ConsulServer(StoreServer):
    """Consul. Requests: the HTTP API's request counts from ``/v1/agent/metrics?format=prometheus``
    (``consul_api_http`` on 1.9+, ``consul_http_<METHOD>_<path>`` on 1.8), except the paths the
    handle itself probes (``/v1/status/*``, ``/v1/agent/metrics``, ``/v1/health/node/*``).
    The kit starts Consul with ``telemetry { prometheus_retention_time }``, which makes the
    counters cumulative."""

    scheme = "consul"
    _OWN_PATHS = ("v1_status_", "v1_agent_metrics", "v1_health_node")

    def _check_serving(self, member: Member) -> None:
        status, body = _http(member.host, member.port, "GET", "/v1/status/leader")
        if status != 200 or body.strip() in (b"", b'""'):
            raise RuntimeError(f"/v1/status/leader answered {status}: {body[:200]!r}")
        if not member.name:  # an external agent: its node name is not ours to know
            return
        # Sessions need the node registered with a passing serfHealth check, which the new
        # leader does a moment after it is elected.
        status, body = _http(member.host, member.port, "GET", f"/v1/health/node/{member.name}")
        checks = json.loads(body) if status == 200 else []
        if not isinstance(checks, list) or not any(
            isinstance(c, dict) and c.get("CheckID") == "serfHealth" and c.get("Status") == "passing" for c in checks
        ):
            raise RuntimeError(f"node {member.name!r} is not registered with a passing serfHealth check yet")

    def _read_requests(self, member: Member) -> int | None:
        status, body = _http(member.host, member.port, "GET", "/v1/agent/metrics?format=prometheus")
        if status != 200:
            return None
        total, seen = 0.0, False
        for name, labels, value in _prometheus(body.decode()):
            if name == "consul_api_http_count":
                path = labels.get("path", "")
            elif name.startswith("consul_http_") and name.endswith("_count"):
                # consul_http_PUT_v1_kv___count: method, then the path with "/" as "_"
                path = name[len("consul_http_") : -len("_count")].partition("_")[2]
            else:
                continue
            seen = True
            if not path.startswith(self._OWN_PATHS):
                total += value
        return int(total) if seen else None

    def _is_leader(self, member: Member) -> bool:
        # One server agent: it leads whenever a leader exists.
        status, body = _http(member.host, member.port, "GET", "/v1/status/leader")
        return status == 200 and body.strip() not in (b"", b'""')


_SERVER_TYPES: dict[str, type[StoreServer]] = {
    "etcd": EtcdServer,
    "zookeeper": ZooKeeperServer,
    "consul": ConsulServer,
}


# --- starting containers ----------------------------------------------------------------------


def _container(image: str, name: str, host_network: bool, network: Network | None) -> DockerContainer:
    if host_network:
        # network= (not network_mode=) also stops testcontainers from adding its own network.
        return DockerContainer(image, name=name).with_kwargs(network="host")
    container = DockerContainer(image, name=name)
    if network is not None:
        container.with_network(network).with_network_aliases(name)
    return container


def _start_containers(server: StoreServer, backend: str, client_port: int, host_network: bool) -> StoreServer:
    """Start every member's container, then wait until all serve; clean up on failure."""
    try:
        for member in server.members:
            assert member.container is not None
            try:
                member.container.start()
            except Exception as exc:
                hint = ""
                if re.search(r"pull|not found|no such image", str(exc), re.IGNORECASE):
                    hint = (
                        f" (is the image present? Build the look-alike images with .ci/images/build.sh "
                        f"and point {_ENV_PREFIX}{backend.upper()}_IMAGE at one)"
                    )
                raise ServerStartError(f"cannot start {member.container.image}: {exc}{hint}") from exc
        if not host_network:
            _remap_published_ports(server, client_port)
        server.wait_serving()
    except BaseException:
        server.stop()
        raise
    logger.info("started %r", server)
    return server


def _with_port_retry(start: Callable[[], StoreServer]) -> StoreServer:
    """Ports are picked as free before the container binds them; retry if one was taken."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            return start()
        except ServerStartError as exc:
            if attempt == _START_ATTEMPTS or not _ADDRESS_IN_USE.search(str(exc)):
                raise
            logger.warning("a port was taken meanwhile; starting again (attempt %d)", attempt + 1)
    raise AssertionError("unreachable")


def _prefix(backend: str) -> str:
    return f"leadership-{backend}-{uuid.uuid4().hex[:8]}"


def start_etcd(members: int = 1) -> StoreServer:
    """An etcd cluster of ``members`` members (initial cluster on 127.0.0.1 ports with host
    networking, on a user-defined Docker network otherwise)."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    image = _image("etcd")
    host_network = _host_network()

    def start() -> StoreServer:
        prefix = _prefix("etcd")
        names = [f"{prefix}-{i}" for i in range(members)]
        client_ports = _free_ports(2 * members)
        peer_ports, client_ports = client_ports[members:], client_ports[:members]
        network = Network().create() if members > 1 and not host_network else None
        if host_network:
            peer_urls = [f"http://127.0.0.1:{p}" for p in peer_ports]
        elif network is not None:
            peer_urls = [f"http://{name}:2380" for name in names]
        else:
            peer_urls = ["http://localhost:2380"]
        initial_cluster = ",".join(f"{n}={u}" for n, u in zip(names, peer_urls, strict=True))
        result: list[Member] = []
        for i, name in enumerate(names):
            container = _container(image, name, host_network, network)
            listen_client = f"http://127.0.0.1:{client_ports[i]}" if host_network else "http://0.0.0.0:2379"
            listen_peer = peer_urls[i] if host_network else "http://0.0.0.0:2380"
            if not host_network:
                container.with_bind_ports(2379, client_ports[i])
            container.with_command(
                [
                    "/usr/local/bin/etcd",
                    f"--name={name}",
                    "--data-dir=/var/lib/etcd/data",
                    f"--listen-client-urls={listen_client}",
                    # what cluster-aware clients are told: the address the tests reach
                    f"--advertise-client-urls=http://127.0.0.1:{client_ports[i]}",
                    f"--listen-peer-urls={listen_peer}",
                    f"--initial-advertise-peer-urls={peer_urls[i]}",
                    f"--initial-cluster={initial_cluster}",
                    f"--initial-cluster-token={prefix}",
                    "--initial-cluster-state=new",
                    "--logger=zap",
                    "--log-outputs=stderr",
                ]
            )
            result.append(Member(i, name, "127.0.0.1", client_ports[i], container))
        return _start_containers(EtcdServer(result, network=network), "etcd", 2379, host_network)

    return _with_port_retry(start)


def start_zookeeper(
    members: int = 1, tick_time_ms: int = 250, max_session_timeout_ms: int | None = None
) -> StoreServer:
    """A ZooKeeper server or ensemble. ``tick_time_ms`` is small so second-scale ttls work: the
    server negotiates session timeouts into [2, 20] times tickTime (``max_session_timeout_ms``
    raises the upper bound)."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if tick_time_ms < 1:
        raise ValueError(f"tick_time_ms must be >= 1, got {tick_time_ms}")
    image = _image("zookeeper")
    host_network = _host_network()
    # initLimit/syncLimit count ticks: keep them at ~10 s / ~2 s whatever the tick, so a slow
    # JVM start does not fail an ensemble with a small tick.
    init_limit = max(5, -(-10_000 // tick_time_ms))
    sync_limit = max(2, -(-2_000 // tick_time_ms))

    def start() -> StoreServer:
        prefix = _prefix("zookeeper")
        names = [f"{prefix}-{i + 1}" for i in range(members)]
        ports = _free_ports(3 * members)
        client_ports, quorum_ports, election_ports = ports[:members], ports[members:-members], ports[-members:]
        network = Network().create() if members > 1 and not host_network else None
        if host_network:
            servers = [
                f"server.{i + 1}=127.0.0.1:{quorum_ports[i]}:{election_ports[i]};127.0.0.1:{client_ports[i]}"
                for i in range(members)
            ]
        elif network is not None:
            servers = [f"server.{i + 1}={name}:2888:3888;2181" for i, name in enumerate(names)]
        else:
            servers = ["server.1=localhost:2888:3888;2181"]
        extra = [] if max_session_timeout_ms is None else [f"maxSessionTimeout={max_session_timeout_ms}"]
        if network is not None:
            extra.append("quorumListenOnAllIPs=true")
        result: list[Member] = []
        for i, name in enumerate(names):
            container = _container(image, name, host_network, network)
            if not host_network:
                container.with_bind_ports(2181, client_ports[i])
            container.with_envs(
                ZOO_MY_ID=str(i + 1),
                ZOO_SERVERS=" ".join(servers),
                ZOO_TICK_TIME=str(tick_time_ms),
                ZOO_INIT_LIMIT=str(init_limit),
                ZOO_SYNC_LIMIT=str(sync_limit),
                ZOO_STANDALONE_ENABLED="true",
                ZOO_ADMINSERVER_ENABLED="false",
                # Tests and benchmarks open many clients from one address (60 by default).
                ZOO_MAX_CLIENT_CNXNS="0",
                ZOO_4LW_COMMANDS_WHITELIST="srvr,mntr,ruok,stat,conf,cons,isro",
                ZOO_CFG_EXTRA=" ".join(extra),
            )
            result.append(Member(i, str(i + 1), "127.0.0.1", client_ports[i], container))
        return _start_containers(ZooKeeperServer(result, network=network), "zookeeper", 2181, host_network)

    return _with_port_retry(start)


_CONSUL_VERSIONS: dict[str, tuple[int, int]] = {}


def _consul_version(image: str) -> tuple[int, int]:
    """(major, minor) of the Consul in ``image``: config keys differ across versions and Consul
    rejects keys it does not know (1.8 has no ``ports.grpc_tls``, which 1.14+ opens by default)."""
    if image not in _CONSUL_VERSIONS:
        client = DockerClient()
        try:
            out: Any = client.client.containers.run(image, ["version"], remove=True, network_mode="none")
        finally:
            client.client.close()
        text = out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)
        m = re.search(r"Consul v(\d+)\.(\d+)", text)
        if not m:
            raise RuntimeError(f"cannot tell the Consul version of {image}: 'version' printed {text[:200]!r}")
        _CONSUL_VERSIONS[image] = (int(m[1]), int(m[2]))
        logger.info("%s runs Consul %d.%d", image, *_CONSUL_VERSIONS[image])
    return _CONSUL_VERSIONS[image]


def start_consul(dev: bool = False) -> StoreServer:
    """A single Consul server agent, bound to 127.0.0.1 on free ports with host networking.

    By default a server with ``-bootstrap-expect=1`` and a data dir, so :meth:`restart` keeps
    keys, sessions and the raft index (fencing tokens keep increasing). ``dev=True`` runs
    ``agent -dev`` instead: faster to start, but a restart loses all data."""
    image = _image("consul")
    host_network = _host_network()
    # Host networking shares the ports of every agent on the machine: name all of them.
    version = _consul_version(image) if host_network else (0, 0)
    node = "leadership-test"

    def start() -> StoreServer:
        prefix = _prefix("consul")
        http_port, serf_lan, serf_wan, server_port, grpc_tls_port = _free_ports(5)
        container = _container(image, prefix, host_network, None)
        if host_network:
            bind = ["-bind=127.0.0.1", "-client=127.0.0.1"]
            ports = f"http = {http_port}, serf_lan = {serf_lan}, serf_wan = {serf_wan}, server = {server_port}"
            if version >= (1, 14):  # opened by default since 1.14 (8503); 1.8 rejects the key
                ports += f", grpc_tls = {grpc_tls_port}"
        else:
            bind = ["-client=0.0.0.0"]
            ports = "http = 8500"
            container.with_bind_ports(8500, http_port)
        # DNS and plain gRPC are not used: off, so they cannot clash on the host.
        ports += ", dns = -1, grpc = -1"
        mode = ["-dev"] if dev else ["-server", "-bootstrap-expect=1", "-hcl=performance { raft_multiplier = 1 }"]
        container.with_command(
            [
                "agent",
                *mode,
                f"-node={node}",
                *bind,
                "-log-level=info",
                f"-hcl=ports {{ {ports} }}",
                # cumulative prometheus counters for request_count()
                '-hcl=telemetry { prometheus_retention_time = "24h" }',
            ]
        )
        server = ConsulServer([Member(0, node, "127.0.0.1", http_port, container)])
        return _start_containers(server, "consul", 8500, host_network)

    return _with_port_retry(start)


def _remap_published_ports(server: StoreServer, container_port: int) -> None:
    """With bridge networking, the address testcontainers says reaches the published port
    (localhost for a local daemon, the daemon's host or a gateway otherwise). The host port is
    fixed at creation, so it stays the same across restarts."""
    for member in server.members:
        assert member.container is not None
        member.host = member.container.get_container_host_ip()
        member.port = member.container.get_exposed_port(container_port)
    server.url = f"{server.scheme}://{','.join(m.address for m in server.members)}"


def _external(backend: str, url: str) -> StoreServer:
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != backend:
        raise ValueError(f"{_ENV_PREFIX}{backend.upper()}_URL must be a {backend}:// URL, got {url!r}")
    netloc, _, options = rest.partition("/")
    if "?" in netloc:
        netloc, _, query = netloc.partition("?")
        options = "?" + query
    elif options:
        options = "/" + options
    netloc = netloc.rpartition("@")[2]
    members: list[Member] = []
    for i, part in enumerate(p for p in netloc.split(",") if p):
        host, colon, port = part.rpartition(":")
        if not colon or not port.isdigit():
            host, port = part, str(_DEFAULT_PORTS[backend])
        members.append(Member(i, host.strip("[]"), host.strip("[]"), int(port)))
    if not members:
        raise ValueError(f"{_ENV_PREFIX}{backend.upper()}_URL has no host: {url!r}")
    server = _SERVER_TYPES[backend](members, url_options=options)
    server.url = url  # exactly as given (credentials, options)
    if backend == "consul":
        # Our node-name readiness check does not apply to someone else's agent.
        members[0].name = ""
    logger.info("using the external %s server at %s", backend, url)
    return server


def server_for(backend: str, members: int = 1) -> StoreServer:
    """The store the tests should use: the external server named by
    ``LEADERSHIP_TEST_<BACKEND>_URL`` if set, else a new container (cluster)."""
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(_BACKENDS)}")
    url = os.environ.get(f"{_ENV_PREFIX}{backend.upper()}_URL")
    if url:
        return _external(backend, url)
    if backend == "etcd":
        return start_etcd(members)
    if backend == "zookeeper":
        return start_zookeeper(members)
    if members != 1:
        raise ValueError("the kit starts Consul as a single server agent; members must be 1")
    return start_consul()
