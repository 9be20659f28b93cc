"""Development sessions. ``nox -s demo`` | ``tests`` | ``conformance`` | ``lint`` | ``bench``.

``nox -s "conformance(etcd)"`` runs one backend's suite; its server comes from Docker (official
image, or LEADERSHIP_TEST_<STORE>_IMAGE / _URL — see conformance/README.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "conformance", "lint"]
nox.options.reuse_existing_virtualenvs = True

PLUGINS = {
    "etcd": "plugins/leadership-etcd",
    "zookeeper": "plugins/leadership-zookeeper",
    "consul": "plugins/leadership-consul",
}
TEST_TOOLS = ["pytest>=7.4", "pytest-timeout>=2.2"]


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


@nox.session
def demo(session: nox.Session) -> None:
    """A live election on the in-process memory store: candidates resign and crash, a follower watches."""
    session.install("./core")
    session.run("leadership", "demo", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests of the core on the memory store (no server needed)."""
    session.install(*TEST_TOOLS, "-e", "./core", "-e", "./conformance")
    session.run("pytest", "core/tests", "--timeout=120", *session.posargs)


@nox.session
@nox.parametrize("backend", [nox.param(b, id=b) for b in ["memory", *PLUGINS]])
def conformance(session: nox.Session, backend: str) -> None:
    """The shared conformance suite against a real store (memory needs none)."""
    paths = ["-e", "./core", "-e", "./conformance"]
    if backend == "memory":
        session.install(*TEST_TOOLS, *paths)
        session.run("pytest", "core/tests/test_conformance.py", "-v", "--timeout=300", *session.posargs)
        return
    external = os.environ.get(f"LEADERSHIP_TEST_{backend.upper()}_URL")
    if not external and not docker_available():
        if os.environ.get("LEADERSHIP_REQUIRE_DOCKER"):
            session.error(f"conformance({backend}) needs Docker, and LEADERSHIP_REQUIRE_DOCKER is set")
        session.skip(f"no Docker daemon reachable and LEADERSHIP_TEST_{backend.upper()}_URL unset")
    session.install(*TEST_TOOLS, *paths, "-e", PLUGINS[backend])
    if not external:  # the kit's own server handles against the same store
        session.run("pytest", "conformance/tests", "-m", backend, "-rs", "--timeout=600")
    session.run(
        "pytest", f"{PLUGINS[backend]}/tests", "-v", "-rs", "--timeout=600", "--durations=15", *session.posargs
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and mypy --strict over every distribution."""
    session.install("ruff>=0.5", "mypy>=1.10", "./core", "./conformance", *PLUGINS.values())
    session.run("ruff", "check", ".")
    sources = ["core/src", "conformance/src", *(f"{p}/src" for p in PLUGINS.values())]
    session.run("mypy", "--config-file", "mypy.ini", *sources)


@nox.session
def bench(session: nox.Session) -> None:
    """Handover latency and store requests against each store's peer (kazoo Election, etcdctl
    elect, consul lock; interleaved on the same servers): ``nox -s bench [-- zookeeper --rounds 20]``
    (bench/handover.py). Many elections per process: ``nox -s bench -- scale [--elections N]``
    (bench/scale.py). Needs Docker; installs etcdctl (apt) or copies consul out of its image if missing."""
    session.install("-e", "./core", "-e", "./conformance", *(arg for p in PLUGINS.values() for arg in ("-e", p)))
    if session.posargs[:1] == ["scale"]:
        session.run("python", "bench/scale.py", *session.posargs[1:])
    else:
        session.run("python", "bench/handover.py", *session.posargs)
