"""Throw-away stores in Docker (through testcontainers), for a plugin's server handle.

A plugin subclasses :class:`ContainerServer`, defines the probes of :class:`StoreServer` and a
classmethod ``start(members)`` that builds one container per member with :func:`container`,
then calls :func:`start_containers` inside :func:`with_port_retry`::

    class MyStoreServer(ContainerServer):
        scheme = "mystore"
        default_port = 7000

        def check_serving(self, member):
            status, _ = http_request(member.host, member.port, "GET", "/health")
            if status != 200:
                raise RuntimeError(f"/health answered {status}")

        @classmethod
        def start(cls, members=1):
            def attempt():
                (port,) = free_ports(1)
                c = container(image("mystore", "mystore:1.0"), unique_name("mystore"), host_network())
                c.with_command(["mystore", f"--port={port}"])
                return start_containers(cls([Member(0, "m0", "127.0.0.1", port, c)]), 7000)
            return with_port_retry(attempt)

Environment variables:

``LEADERSHIP_TEST_<SCHEME>_IMAGE``
    The image to start instead of the plugin's default (:func:`image`).
``LEADERSHIP_TEST_NETWORK``
    ``host``: containers use the host network and listen on free ports of 127.0.0.1 (for a
    Docker daemon without a bridge, as on the project's CI). Unset or ``bridge``: the default
    bridge network with the client ports published on the Docker host.

``TESTCONTAINERS_RYUK_DISABLED=true`` is honoured by testcontainers itself; the handles remove
their containers in :meth:`ContainerServer.stop` either way.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import logging
import os
import random
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from testcontainers.core.container import DockerContainer
from testcontainers.core.docker_client import DockerClient
from testcontainers.core.network import Network

from .servers import (
    ENV_PREFIX,
    PROBE_TIMEOUT,
    FaultInjectionUnavailable,
    Member,
    ServerStartError,
    StoreServer,
)

__all__ = [
    "ContainerServer",
    "DockerContainer",
    "Network",
    "container",
    "docker_available",
    "free_ports",
    "host_network",
    "http_request",
    "image",
    "prometheus_samples",
    "run_once",
    "start_containers",
    "unique_name",
    "with_port_retry",
]

logger = logging.getLogger(__name__)

#: Grace period docker gives a server between SIGTERM and SIGKILL on restart().
STOP_TIMEOUT = 10
#: Attempts to start a store when a port picked as free was taken meanwhile.
_START_ATTEMPTS = 3
_ADDRESS_IN_USE = re.compile(r"address already in use|port is already allocated", re.IGNORECASE)

_C = TypeVar("_C", bound="ContainerServer")
_T = TypeVar("_T")


def docker_available() -> bool:
    """Whether a Docker daemon answers (what testcontainers would use)."""
    try:
        client = DockerClient()
        client.client.ping()
        client.client.close()
    except Exception:  # noqa: BLE001 - any failure means "no Docker" here
        return False
    return True


def host_network() -> bool:
    """``LEADERSHIP_TEST_NETWORK=host``: containers share the host's network."""
    mode = os.environ.get(ENV_PREFIX + "NETWORK", "").strip().lower()
    if mode not in ("", "host", "bridge"):
        raise ValueError(f"{ENV_PREFIX}NETWORK must be 'host' or 'bridge', got {mode!r}")
    return mode == "host"


def image(scheme: str, default: str) -> str:
    """``LEADERSHIP_TEST_<SCHEME>_IMAGE`` if set, else ``default``."""
    return os.environ.get(f"{ENV_PREFIX}{scheme.upper()}_IMAGE") or default


def unique_name(scheme: str) -> str:
    """A container name (prefix) no other test run uses."""
    return f"leadership-{scheme}-{uuid.uuid4().hex[:8]}"


def free_ports(count: int) -> list[int]:
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


# --- probe helpers (stdlib only, short timeouts) ----------------------------------------------


def http_request(host: str, port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One HTTP request with the probe timeout: (status, body)."""
    conn = http.client.HTTPConnection(host, port, timeout=PROBE_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


_PROM_LINE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_PROM_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def prometheus_samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition."""
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


# --- the handle -------------------------------------------------------------------------------


class ContainerServer(StoreServer):
    """A store whose members run in Docker containers (``Member.handle`` is a
    :class:`DockerContainer`); an external server's members have no container."""

    def __init__(self, members: Sequence[Member], *, url: str | None = None, network: Network | None = None) -> None:
        super().__init__(members, url=url)
        self.can_inject_faults = bool(self.members) and all(m.handle is not None for m in self.members)
        self._network = network

    def _containers(self, members: Iterable[Member] | None = None) -> list[tuple[Member, DockerContainer]]:
        if not self.can_inject_faults:
            raise FaultInjectionUnavailable(
                f"{self!r} is an external server: it cannot be paused or restarted (can_inject_faults is False)"
            )
        if self._stopped:
            raise RuntimeError(f"{self!r} was stopped")
        return [(m, m.handle) for m in (self.members if members is None else members) if m.handle is not None]

    def pause(self) -> None:
        for member, c in self._containers():
            if member.running:
                c.get_wrapped_container().pause()
        self._paused = True
        logger.info("paused %s", self.url)

    def unpause(self) -> None:
        for member, c in self._containers():
            if member.running:
                c.get_wrapped_container().unpause()
        self._paused = False
        logger.info("unpaused %s", self.url)

    def restart(self) -> None:
        pairs = self._containers()
        if self._paused:
            self.unpause()
        for member, _ in pairs:
            self._fold_requests(member)
        _each(lambda p: p[1].get_wrapped_container().stop(timeout=STOP_TIMEOUT), pairs)
        for member, _ in pairs:
            member.running = False
        logger.info("stopped %s for a restart", self.url)
        self._start_members([m for m, _ in pairs])

    def kill_member(self, index: int) -> None:
        ((member, c),) = self._containers([self.members[index]])
        if member.running:
            self._fold_requests(member)
            c.get_wrapped_container().kill()
            member.running = False
            logger.info("killed member %d (%s) of %s", index, member.name, self.url)

    def start_member(self, index: int) -> None:
        ((member, _),) = self._containers([self.members[index]])
        if not member.running:
            self._start_members([member])

    def _start_members(self, members: list[Member]) -> None:
        for member in members:
            member.handle.get_wrapped_container().start()
            member.running = True
            member.probes = 0
            member.requests.rebase()
        self.wait_serving(members)
        logger.info("started %s", ", ".join(f"{m.name}@{m.address}" for m in members))

    def _fail_if_exited(self, member: Member) -> None:
        if member.handle is None:
            return
        wrapped = member.handle.get_wrapped_container()
        wrapped.reload()
        if wrapped.status in ("exited", "dead"):
            raise ServerStartError(
                f"{self.scheme} member {member.index} ({member.address}) exited with code "
                f"{wrapped.attrs.get('State', {}).get('ExitCode')}" + self._logs_for_error(member)
            )

    def _logs_for_error(self, member: Member, lines: int = 60) -> str:
        if member.handle is None:
            return ""
        try:
            raw = member.handle.get_wrapped_container().logs(tail=lines)
        except Exception as exc:  # noqa: BLE001 - best effort, for an error message
            return f"\n--- no logs for {member.name}: {exc}"
        return f"\n--- last {lines} log lines of {member.name}:\n{raw.decode('utf-8', 'replace')}"

    def stop(self) -> None:
        """Remove the containers (and their volumes and network). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        for member in self.members:
            if member.handle is not None:
                with contextlib.suppress(Exception):
                    member.handle.stop(force=True, delete_volume=True)
                member.running = False
        if self._network is not None:
            with contextlib.suppress(Exception):
                self._network.remove()
        if self.can_inject_faults:
            logger.info("removed %s", self.url)


def _each(fn: Callable[[_T], object], items: Sequence[_T]) -> None:
    """Run ``fn`` on every item concurrently (docker stop of several members)."""
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    with concurrent.futures.ThreadPoolExecutor(len(items)) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()


# --- starting containers ----------------------------------------------------------------------


def container(image_name: str, name: str, host_net: bool, network: Network | None = None) -> DockerContainer:
    """A container to start: on the host network, or on ``network`` (with ``name`` as its alias),
    or on the default bridge."""
    if host_net:
        # network= (not network_mode=) also stops testcontainers from adding its own network.
        return DockerContainer(image_name, name=name).with_kwargs(network="host")
    c = DockerContainer(image_name, name=name)
    if network is not None:
        c.with_network(network).with_network_aliases(name)
    return c


def start_containers(server: _C, client_port: int) -> _C:
    """Start every member's container, then wait until all serve; clean up on failure. With
    bridge networking, members' addresses become the published ``client_port``."""
    try:
        for member in server.members:
            c: DockerContainer = member.handle
            try:
                c.start()
            except Exception as exc:
                hint = ""
                if re.search(r"pull|not found|no such image", str(exc), re.IGNORECASE):
                    hint = (
                        f" (is the image present? Point {ENV_PREFIX}{server.scheme.upper()}_IMAGE at one "
                        "you have; the project's CI builds look-alikes with .ci/images/build.sh)"
                    )
                raise ServerStartError(f"cannot start {c.image}: {exc}{hint}") from exc
        if not host_network():
            _remap_published_ports(server, client_port)
        server.wait_serving()
    except BaseException:
        server.stop()
        raise
    logger.info("started %r", server)
    return server


def with_port_retry(start: Callable[[], _T]) -> _T:
    """Ports are picked as free before the container binds them; start again if one was taken."""
    for attempt in range(1, _START_ATTEMPTS + 1):
        try:
            return start()
        except ServerStartError as exc:
            if attempt == _START_ATTEMPTS or not _ADDRESS_IN_USE.search(str(exc)):
                raise
            logger.warning("a port was taken meanwhile; starting again (attempt %d)", attempt + 1)
    raise AssertionError("unreachable")


def _remap_published_ports(server: StoreServer, container_port: int) -> None:
    """With bridge networking, the address testcontainers says reaches the published port
    (localhost for a local daemon, the daemon's host or a gateway otherwise). The host port is
    fixed at creation, so it stays the same across restarts."""
    for member in server.members:
        c: DockerContainer = member.handle
        member.host = c.get_container_host_ip()
        member.port = int(c.get_exposed_port(container_port))
    server.url = f"{server.scheme}://{','.join(m.address for m in server.members)}"


def run_once(image_name: str, command: list[str]) -> str:
    """Run ``command`` in a throw-away container of ``image_name`` without network; its output."""
    client = DockerClient()
    try:
        out: Any = client.client.containers.run(image_name, command, remove=True, network_mode="none")
    finally:
        client.client.close()
    return out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)
