"""ZooKeeper test servers for the conformance kit (``pip install 'leadership-zookeeper[testing]'``).

Registered under the kit's entry-point group ``leadership_conformance.servers`` as ``zookeeper``:
``server_for("zookeeper", members)`` starts a server or an ensemble (or uses
``LEADERSHIP_TEST_ZOOKEEPER_URL``). The image's contract is that of the official ``zookeeper``
image (``/docker-entrypoint.sh`` writes ``zoo.cfg`` from ``ZOO_*``);
``LEADERSHIP_TEST_ZOOKEEPER_IMAGE`` picks it. An external server counts requests only with the
``mntr`` four-letter word whitelisted.
"""

from __future__ import annotations

import re
import socket

from leadership_conformance.containers import (
    ContainerServer,
    Network,
    container,
    free_ports,
    host_network,
    image,
    start_containers,
    unique_name,
    with_port_retry,
)
from leadership_conformance.servers import PROBE_TIMEOUT, FaultProfile, Member

__all__ = ["ZOOKEEPER_IMAGE", "ZooKeeperServer", "start_zookeeper"]

ZOOKEEPER_IMAGE = "zookeeper:3.9"


def four_letter_word(host: str, port: int, command: str) -> str:
    """Send a four-letter word (``srvr``, ``mntr``, ...) and read the reply to the end."""
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT) as s:
        s.sendall(command.encode("ascii"))
        chunks: list[bytes] = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class ZooKeeperServer(ContainerServer):
    """ZooKeeper. Requests: ``zk_packets_received`` from the ``mntr`` four-letter word, minus
    the four-letter words this handle sent (ZooKeeper counts those too). Client pings count."""

    scheme = "zookeeper"
    default_port = 2181
    fault_profile = FaultProfile(ttl=2.0, recovery_slack=3.0)

    def _word(self, member: Member, command: str) -> str:
        reply = four_letter_word(member.host, member.port, command)
        # ZooKeeper counts a four-letter word as a client packet only while it serves.
        if "not currently serving" not in reply:
            member.probes += 1
        return reply

    def check_serving(self, member: Member) -> None:
        reply = self._word(member, "srvr")
        if "Mode:" not in reply:  # "This ZooKeeper instance is not currently serving requests"
            raise RuntimeError(f"srvr answered {reply.strip()[:200]!r}")

    def read_requests(self, member: Member) -> int | None:
        reply = self._word(member, "mntr")
        m = re.search(r"^zk_packets_received\s+(\d+)", reply, re.MULTILINE)
        if not m:
            return None
        return max(0, int(m[1]) - member.probes)

    def leftovers(self, prefix: str) -> list[str] | None:
        """Ephemeral znodes still held (the entries of live sessions), from ``mntr`` of the
        leading member. ZooKeeper keeps the persistent parent znodes of election keys: not counted."""
        leader = self.leader_member()
        if leader is None:
            return None
        reply = self._word(self.members[leader], "mntr")
        m = re.search(r"^zk_ephemerals_count\s+(\d+)", reply, re.MULTILINE)
        if m is None:
            return None
        count = int(m[1])
        return [f"{count} ephemeral znode(s) of live sessions"] if count else []

    def is_leader(self, member: Member) -> bool:
        m = re.search(r"^Mode:\s*(\w+)", self._word(member, "srvr"), re.MULTILINE)
        return m is not None and m[1] in ("leader", "standalone")

    @classmethod
    def start(cls, members: int = 1) -> ZooKeeperServer:
        """A server or ensemble with tickTime 250 ms (see :func:`start_zookeeper`) that grants
        session timeouts of 0.5-60 s: long sessions ping rarely, which keeps client pings (counted
        as packets) from blurring the no-herd test's request counts."""
        return start_zookeeper(members, max_session_timeout_ms=60_000)


def start_zookeeper(
    members: int = 1, tick_time_ms: int = 250, max_session_timeout_ms: int | None = None
) -> ZooKeeperServer:
    """A ZooKeeper server or ensemble. ``tick_time_ms`` is small so second-scale ttls work: the
    server negotiates session timeouts into [2, 20] times tickTime (``max_session_timeout_ms``
    raises the upper bound)."""
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if tick_time_ms < 1:
        raise ValueError(f"tick_time_ms must be >= 1, got {tick_time_ms}")
    image_name = image("zookeeper", ZOOKEEPER_IMAGE)
    host_net = host_network()
    # initLimit/syncLimit count ticks: keep them at ~10 s / ~2 s whatever the tick, so a slow
    # JVM start does not fail an ensemble with a small tick.
    init_limit = max(5, -(-10_000 // tick_time_ms))
    sync_limit = max(2, -(-2_000 // tick_time_ms))

    def start() -> ZooKeeperServer:
        prefix = unique_name("zookeeper")
        names = [f"{prefix}-{i + 1}" for i in range(members)]
        ports = free_ports(3 * members)
        client_ports, quorum_ports, election_ports = ports[:members], ports[members:-members], ports[-members:]
        network = Network().create() if members > 1 and not host_net else None
        if host_net:
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
            c = container(image_name, name, host_net, network)
            if not host_net:
                c.with_bind_ports(2181, client_ports[i])
            c.with_envs(
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
            result.append(Member(i, str(i + 1), "127.0.0.1", client_ports[i], c))
        return start_containers(ZooKeeperServer(result, network=network), 2181)

    return with_port_retry(start)
