"""What the benchmarks need besides leadership: store servers and the peers' tools.

- Servers: the conformance kit's throw-away containers (``LEADERSHIP_TEST_<STORE>_IMAGE`` picks
  the image, ``LEADERSHIP_TEST_<STORE>_URL`` an already running server; see conformance/README.md).
- ``etcdctl`` (etcd's own Go election, ``etcdctl elect``): from PATH or ``$BENCH_ETCDCTL``;
  when missing and apt-get is usable, Debian's ``etcd-client`` package is installed.
- ``consul`` (``consul lock``): from PATH or ``$BENCH_CONSUL``; when missing, the binary is
  copied out of the Consul server image (``docker create`` + ``docker cp``), so the peer is the
  very build the server runs.
- kazoo comes with the ZooKeeper plugin.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "leadership-bench"


def start_server(store: str) -> Any:
    """A server handle (``.url``, ``.request_count()``, ``.stop()``) for ``store``: the one the
    store's plugin registers with the conformance kit (``leadership_<store>.testing``)."""
    from leadership_conformance.servers import server_for

    return server_for(store)


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def etcdctl() -> str:
    found = os.environ.get("BENCH_ETCDCTL") or shutil.which("etcdctl")
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        _say("etcdctl not found: installing Debian's etcd-client (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "etcd-client"],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        found = shutil.which("etcdctl")
    if not found:
        raise SystemExit("bench: etcdctl not found; install etcd-client (Debian) or set BENCH_ETCDCTL")
    return found


def consul() -> str:
    found = os.environ.get("BENCH_CONSUL") or shutil.which("consul")
    if found:
        return found
    target = CACHE / "consul"
    if target.exists():
        return str(target)
    image = os.environ.get("LEADERSHIP_TEST_CONSUL_IMAGE") or "hashicorp/consul:1.20"
    _say(f"consul not found: copying /usr/bin/consul (or /bin/consul) out of {image}")
    CACHE.mkdir(parents=True, exist_ok=True)
    cid = subprocess.run(["docker", "create", image], check=True, capture_output=True, text=True).stdout.strip()
    try:
        for path in ("/usr/bin/consul", "/bin/consul", "/usr/local/bin/consul"):
            if subprocess.run(["docker", "cp", f"{cid}:{path}", str(target)], capture_output=True).returncode == 0:
                return str(target)
    finally:
        subprocess.run(["docker", "rm", cid], capture_output=True)
    raise SystemExit(f"bench: no consul binary in {image}; install consul or set BENCH_CONSUL")


_TOOLS: dict[str, str] = {}


def check_peers(stores: list[str]) -> None:
    if "etcd" in stores:
        _TOOLS["BENCH_ETCDCTL"] = etcdctl()
    if "consul" in stores:
        _TOOLS["BENCH_CONSUL"] = consul()
    if "zookeeper" in stores:
        import kazoo  # noqa: F401 - the peer recipe, installed with the ZooKeeper plugin
    os.environ.update(_TOOLS)


def env() -> dict[str, str]:
    return {**os.environ, **_TOOLS}


def server_handle(store: str, url: str) -> Any:
    """A handle (``request_count()``) for the already running server at ``url``."""
    os.environ[f"LEADERSHIP_TEST_{store.upper()}_URL"] = url
    return start_server(store)
