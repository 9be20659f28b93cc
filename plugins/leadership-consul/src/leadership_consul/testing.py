"""Consul test servers for the conformance kit (``pip install 'leadership-consul[testing]'``).

Registered under the kit's entry-point group ``leadership_conformance.servers`` as ``consul``:
``server_for("consul")`` starts one server agent (or uses ``LEADERSHIP_TEST_CONSUL_URL``, which
counts requests only with ``telemetry.prometheus_retention_time`` set). The image's contract is
that of the official ``hashicorp/consul`` image (``docker-entrypoint.sh agent ...``);
``LEADERSHIP_TEST_CONSUL_IMAGE`` picks it.
"""

from __future__ import annotations

import json
import logging
import re

from leadership_conformance.containers import (
    ContainerServer,
    container,
    free_ports,
    host_network,
    http_request,
    image,
    prometheus_samples,
    run_once,
    start_containers,
    unique_name,
    with_port_retry,
)
from leadership_conformance.servers import FaultProfile, Member

__all__ = ["CONSUL_IMAGE", "ConsulServer", "start_consul", "start_consul_cluster"]

logger = logging.getLogger(__name__)

CONSUL_IMAGE = "hashicorp/consul:1.20"


class ConsulServer(ContainerServer):
    """Consul. Requests: the HTTP API's request counts from ``/v1/agent/metrics?format=prometheus``
    (``consul_api_http`` on 1.9+, ``consul_http_<METHOD>_<path>`` on 1.8), except the paths the
    handle itself probes (``/v1/status/*``, ``/v1/agent/metrics``, ``/v1/health/node/*``).
    The kit starts Consul with ``telemetry { prometheus_retention_time }``, which makes the
    counters cumulative."""

    scheme = "consul"
    default_port = 8500
    #: Consul's smallest ttl is 20 s; its session invalidation and a client agent add seconds.
    fault_profile = FaultProfile(ttl=20.0, recovery_slack=5.0)
    _OWN_PATHS = ("v1_status_", "v1_agent_metrics", "v1_health_node")

    def check_serving(self, member: Member) -> None:
        status, body = http_request(member.host, member.port, "GET", "/v1/status/leader")
        if status != 200 or body.strip() in (b"", b'""'):
            raise RuntimeError(f"/v1/status/leader answered {status}: {body[:200]!r}")
        if not member.name:  # an external agent: its node name is not ours to know
            return
        # Sessions need the node registered with a passing serfHealth check, which the new
        # leader does a moment after it is elected.
        status, body = http_request(member.host, member.port, "GET", f"/v1/health/node/{member.name}")
        checks = json.loads(body) if status == 200 else []
        if not isinstance(checks, list) or not any(
            isinstance(c, dict) and c.get("CheckID") == "serfHealth" and c.get("Status") == "passing" for c in checks
        ):
            raise RuntimeError(f"node {member.name!r} is not registered with a passing serfHealth check yet")

    def read_requests(self, member: Member) -> int | None:
        status, body = http_request(member.host, member.port, "GET", "/v1/agent/metrics?format=prometheus")
        if status != 200:
            return None
        total, seen = 0.0, False
        for name, labels, value in prometheus_samples(body.decode()):
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

    #: In a cluster: member index -> its raft server port (``/v1/status/leader`` names the
    #: leader by that address). Empty for a single server agent.
    server_ports: dict[int, int]

    def is_leader(self, member: Member) -> bool:
        status, body = http_request(member.host, member.port, "GET", "/v1/status/leader")
        leader = body.strip().strip(b'"').decode()
        if status != 200 or not leader:
            return False
        ports = getattr(self, "server_ports", {})
        if not ports:
            return True  # one server agent: it leads whenever a leader exists
        port = ports.get(member.index)  # None: the client agent, never the leader
        return port is not None and leader.rpartition(":")[2] == str(port)

    def leftovers(self, prefix: str) -> list[str] | None:
        """KV keys containing ``prefix`` and every session still alive."""
        member = next((m for m in reversed(self.members) if m.running), None)  # the client agent first
        if member is None:
            return None
        status, body = http_request(member.host, member.port, "GET", "/v1/kv/?keys")
        if status not in (200, 404):
            raise RuntimeError(f"/v1/kv/?keys answered {status}: {body[:200]!r}")
        keys = [k for k in (json.loads(body) if status == 200 else []) if prefix in k]
        status, body = http_request(member.host, member.port, "GET", "/v1/session/list")
        if status != 200:
            raise RuntimeError(f"/v1/session/list answered {status}: {body[:200]!r}")
        sessions = [f"session {s.get('ID')} ({s.get('Name', '')})" for s in json.loads(body)]
        return [f"key {k}" for k in keys] + sessions

    @classmethod
    def start(cls, members: int = 1) -> ConsulServer:
        """One server agent, or ``members`` (3 or more) servers and a client agent."""
        if members == 1:
            return start_consul()
        return start_consul_cluster(members)


_CONSUL_VERSIONS: dict[str, tuple[int, int]] = {}


def _consul_version(image_name: str) -> tuple[int, int]:
    """(major, minor) of the Consul in ``image_name``: config keys differ across versions and
    Consul rejects keys it does not know (1.8 has no ``ports.grpc_tls``, which 1.14+ opens by default)."""
    if image_name not in _CONSUL_VERSIONS:
        text = run_once(image_name, ["version"])
        m = re.search(r"Consul v(\d+)\.(\d+)", text)
        if not m:
            raise RuntimeError(f"cannot tell the Consul version of {image_name}: 'version' printed {text[:200]!r}")
        _CONSUL_VERSIONS[image_name] = (int(m[1]), int(m[2]))
        logger.info("%s runs Consul %d.%d", image_name, *_CONSUL_VERSIONS[image_name])
    return _CONSUL_VERSIONS[image_name]


def start_consul(dev: bool = False) -> ConsulServer:
    """A single Consul server agent, bound to 127.0.0.1 on free ports with host networking.

    By default a server with ``-bootstrap-expect=1`` and a data dir, so ``restart()`` keeps
    keys, sessions and the raft index (fencing tokens keep increasing). ``dev=True`` runs
    ``agent -dev`` instead: faster to start, but a restart loses all data."""
    image_name = image("consul", CONSUL_IMAGE)
    host_net = host_network()
    # Host networking shares the ports of every agent on the machine: name all of them.
    version = _consul_version(image_name) if host_net else (0, 0)
    node = "leadership-test"

    def start() -> ConsulServer:
        http_port, serf_lan, serf_wan, server_port, grpc_tls_port = free_ports(5)
        c = container(image_name, unique_name("consul"), host_net)
        if host_net:
            bind = ["-bind=127.0.0.1", "-client=127.0.0.1"]
            ports = f"http = {http_port}, serf_lan = {serf_lan}, serf_wan = {serf_wan}, server = {server_port}"
            if version >= (1, 14):  # opened by default since 1.14 (8503); 1.8 rejects the key
                ports += f", grpc_tls = {grpc_tls_port}"
        else:
            bind = ["-client=0.0.0.0"]
            ports = "http = 8500"
            c.with_bind_ports(8500, http_port)
        # DNS and plain gRPC are not used: off, so they cannot clash on the host.
        ports += ", dns = -1, grpc = -1"
        mode = ["-dev"] if dev else ["-server", "-bootstrap-expect=1", "-hcl=performance { raft_multiplier = 1 }"]
        c.with_command(
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
        return start_containers(ConsulServer([Member(0, node, "127.0.0.1", http_port, c)]), 8500)

    return with_port_retry(start)


def start_consul_cluster(servers: int = 3) -> ConsulServer:
    """``servers`` Consul server agents and one client agent, as Consul is deployed: the
    application talks to its local (client) agent, which forwards to the servers' raft leader.

    ``url`` names the client agent (a consul:// URL names exactly one agent); ``members`` are the
    servers (indexes 0 to servers-1, so ``leader_member()``, ``kill_member()`` and
    ``start_member()`` act on them) followed by the client agent, which is never the leader.
    Host networking only: every agent on its own free 127.0.0.1 ports."""
    if servers < 3:
        raise ValueError(f"a Consul cluster needs at least 3 servers (a quorum survives one loss), got {servers}")
    if not host_network():
        raise ValueError("the Consul cluster runs with host networking only: set LEADERSHIP_TEST_NETWORK=host")
    image_name = image("consul", CONSUL_IMAGE)
    version = _consul_version(image_name)

    def start() -> ConsulServer:
        prefix = unique_name("consul")
        ports = free_ports(5 * (servers + 1))
        agents = [ports[5 * i : 5 * i + 5] for i in range(servers + 1)]
        join = [f"-retry-join=127.0.0.1:{a[1]}" for a in agents[:servers]]
        members: list[Member] = []
        server_ports: dict[int, int] = {}
        for i, (http_port, serf_lan, serf_wan, server_port, grpc_tls_port) in enumerate(agents):
            is_server = i < servers
            node = f"leadership-test-{i}" if is_server else "leadership-test-client"
            c = container(image_name, f"{prefix}-{i}", True)
            hcl_ports = f"http = {http_port}, serf_lan = {serf_lan}, serf_wan = {serf_wan}, server = {server_port}"
            if version >= (1, 14):
                hcl_ports += f", grpc_tls = {grpc_tls_port}"
            hcl_ports += ", dns = -1, grpc = -1"
            mode = ["-server", f"-bootstrap-expect={servers}", "-hcl=performance { raft_multiplier = 1 }"]
            c.with_command(
                [
                    "agent",
                    *(mode if is_server else []),
                    f"-node={node}",
                    "-bind=127.0.0.1",
                    "-client=127.0.0.1",
                    *join,
                    "-log-level=info",
                    f"-hcl=ports {{ {hcl_ports} }}",
                    '-hcl=telemetry { prometheus_retention_time = "24h" }',
                ]
            )
            members.append(Member(i, node, "127.0.0.1", http_port, c))
            if is_server:
                server_ports[i] = server_port
        server = ConsulServer(members, url=f"consul://127.0.0.1:{agents[-1][0]}")
        server.server_ports = server_ports
        return start_containers(server, 8500)

    return with_port_retry(start)
