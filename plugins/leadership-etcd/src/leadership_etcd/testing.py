"""etcd test servers for the conformance kit (``pip install 'leadership-etcd[testing]'``).

Registered under the kit's entry-point group ``leadership_conformance.servers`` as ``etcd``, so
``leadership_conformance.servers.server_for("etcd", members)`` starts one (or uses
``LEADERSHIP_TEST_ETCD_URL``). The image's contract is that of the official image
(``gcr.io/etcd-development/etcd``: no entrypoint, ``/usr/local/bin/etcd --flags``), so the same
code starts it or the look-alike the project's CI builds; ``LEADERSHIP_TEST_ETCD_IMAGE`` picks it.
"""

from __future__ import annotations

import base64
import json

from leadership_conformance.containers import (
    ContainerServer,
    Network,
    container,
    free_ports,
    host_network,
    http_request,
    image,
    prometheus_samples,
    start_containers,
    unique_name,
    with_port_retry,
)
from leadership_conformance.servers import FaultProfile, Member

__all__ = ["ETCD_IMAGE", "EtcdServer", "start_etcd"]

ETCD_IMAGE = "gcr.io/etcd-development/etcd:v3.5.17"


class EtcdServer(ContainerServer):
    """etcd (v3 API). Requests: ``grpc_server_msg_received_total`` from ``/metrics`` — every
    client message, unary calls and stream messages (watch creates, lease keepalives) alike;
    the handle's own probes are plain HTTP and do not count."""

    scheme = "etcd"
    default_port = 2379
    #: On a cluster a raft election (1-2 s) stalls lease renewals: 2 s sessions would all lapse.
    fault_profile = FaultProfile(ttl=2.0, recovery_slack=3.0, cluster_ttl=5.0)

    def check_serving(self, member: Member) -> None:
        status, body = http_request(member.host, member.port, "GET", "/health")
        reply = json.loads(body) if body else None
        health = reply.get("health") if isinstance(reply, dict) else None
        if status != 200 or str(health).lower() != "true":
            raise RuntimeError(f"/health answered {status}: {body[:200]!r}")

    def _metrics(self, member: Member) -> list[tuple[str, dict[str, str], float]]:
        status, body = http_request(member.host, member.port, "GET", "/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return list(prometheus_samples(body.decode()))

    def read_requests(self, member: Member) -> int | None:
        values = [v for name, _, v in self._metrics(member) if name == "grpc_server_msg_received_total"]
        return int(sum(values)) if values else None

    def is_leader(self, member: Member) -> bool:
        return any(name == "etcd_server_is_leader" and v == 1 for name, _, v in self._metrics(member))

    def leftovers(self, prefix: str) -> list[str] | None:
        """Keys containing ``prefix`` and every lease still granted (through the JSON gateway)."""
        member = next((m for m in self.members if m.running), None)
        if member is None:
            return None
        every_key = json.dumps({"key": base64.b64encode(b"\0").decode(), "range_end": base64.b64encode(b"\0").decode(),
                                "keys_only": True}).encode()
        status, body = http_request(member.host, member.port, "POST", "/v3/kv/range", every_key)
        if status != 200:
            raise RuntimeError(f"/v3/kv/range answered {status}: {body[:200]!r}")
        keys = [base64.b64decode(kv["key"]).decode("utf-8", "replace") for kv in json.loads(body).get("kvs", [])]
        status, body = http_request(member.host, member.port, "POST", "/v3/lease/leases", b"{}")
        if status != 200:
            raise RuntimeError(f"/v3/lease/leases answered {status}: {body[:200]!r}")
        leases = [f"lease {int(lease['ID']):x}" for lease in json.loads(body).get("leases", [])]
        return [f"key {k}" for k in keys if prefix in k] + leases

    @classmethod
    def start(cls, members: int = 1) -> EtcdServer:
        """An etcd cluster of ``members`` members (initial cluster on 127.0.0.1 ports with host
        networking, on a user-defined Docker network otherwise)."""
        return start_etcd(members)


def start_etcd(members: int = 1) -> EtcdServer:
    """See :meth:`EtcdServer.start`."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    image_name = image("etcd", ETCD_IMAGE)
    host_net = host_network()

    def start() -> EtcdServer:
        prefix = unique_name("etcd")
        names = [f"{prefix}-{i}" for i in range(members)]
        ports = free_ports(2 * members)
        peer_ports, client_ports = ports[members:], ports[:members]
        network = Network().create() if members > 1 and not host_net else None
        if host_net:
            peer_urls = [f"http://127.0.0.1:{p}" for p in peer_ports]
        elif network is not None:
            peer_urls = [f"http://{name}:2380" for name in names]
        else:
            peer_urls = ["http://localhost:2380"]
        initial_cluster = ",".join(f"{n}={u}" for n, u in zip(names, peer_urls, strict=True))
        result: list[Member] = []
        for i, name in enumerate(names):
            c = container(image_name, name, host_net, network)
            listen_client = f"http://127.0.0.1:{client_ports[i]}" if host_net else "http://0.0.0.0:2379"
            listen_peer = peer_urls[i] if host_net else "http://0.0.0.0:2380"
            if not host_net:
                c.with_bind_ports(2379, client_ports[i])
            c.with_command(
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
            result.append(Member(i, name, "127.0.0.1", client_ports[i], c))
        return start_containers(EtcdServer(result, network=network), 2379)

    return with_port_retry(start)
