"""Development sessions: ``nox -s demo`` | ``tests`` | ``conformance`` | ``lint`` | ``bench`` |
``build`` | ``docs`` | ``faults``.

Backends are found, not listed: every ``plugins/*`` folder with a ``pyproject.toml`` is one, and
so is every ``examples/*`` one (third-party style plugins, installed from their folder); its
conformance session is named by the URL scheme it registers for the kit's test servers
(``[project.entry-points."leadership_conformance.servers"]``), e.g. ``nox -s "conformance(NAME)"``.
A store's server comes from Docker, or from ``LEADERSHIP_TEST_<SCHEME>_URL`` (conformance/README.md);
a plugin whose test server needs no Docker says so in its pyproject:
``[tool.leadership-conformance] needs-docker = false``.
After the conformance sessions, ``conformance_report`` says which stores ran and which were
skipped; under ``CI=true`` (or ``LEADERSHIP_REQUIRE_DOCKER=1``) a skipped store fails the run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nox

nox.needs_version = ">=2024.3.2"
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "conformance", "lint"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).parent
TEST_TOOLS = ["pytest>=7.4", "pytest-timeout>=2.2"]
KIT = ["-e", "./core", "-e", "./conformance"]
SERVERS_GROUP = "leadership_conformance.servers"


def _discover(pattern: str) -> dict[str, str]:
    """{scheme: folder} of the distributions matching ``pattern`` that register a test server
    for the kit (or, lacking one, a backend): the name of their first entry point."""
    found: dict[str, str] = {}
    for pyproject in sorted(ROOT.glob(f"{pattern}/pyproject.toml")):
        entry_points = nox.project.load_toml(pyproject).get("project", {}).get("entry-points", {})
        names = [*entry_points.get(SERVERS_GROUP, {}), *entry_points.get("leadership", {})]
        if names:
            found[names[0]] = pyproject.parent.relative_to(ROOT).as_posix()
    return found


def _needs_docker(folder: str) -> bool:
    settings = nox.project.load_toml(ROOT / folder / "pyproject.toml").get("tool", {})
    return bool(settings.get("leadership-conformance", {}).get("needs-docker", True))


#: Plugins that observe elections (no store): unit-tested with the core, on the memory store.
OBSERVERS = {"prometheus": "plugins/leadership-prometheus"}
PLUGINS = {scheme: folder for scheme, folder in _discover("plugins/*").items() if folder not in OBSERVERS.values()}
EXAMPLES = _discover("examples/*")
_REPORT_DIR = ROOT / ".nox" / "_conformance" / str(os.getpid())


def ci() -> bool:
    """A run where a store must not be skipped (CI=true; LEADERSHIP_REQUIRE_DOCKER is the old name)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes") or bool(os.environ.get("LEADERSHIP_REQUIRE_DOCKER"))


def docker_available() -> bool:
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def _record(backend: str, outcome: str, detail: str = "") -> None:
    _REPORT_DIR.mkdir(parents=True, exist_ok=True)
    (_REPORT_DIR / f"{backend}.json").write_text(json.dumps({"outcome": outcome, "detail": detail}))


@nox.session
def demo(session: nox.Session) -> None:
    """A live election on the in-process memory store: candidates resign and crash, a follower watches."""
    session.install("./core")
    session.run("leadership", "demo", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests of the core on the memory store (no server needed; its conformance run is
    ``conformance(memory)``)."""
    session.install(*TEST_TOOLS, *KIT)
    session.run("pytest", "core/tests", "--timeout=120", *session.posargs)
    for path in OBSERVERS.values():
        session.install("-e", path)
        session.run("pytest", f"{path}/tests", "--timeout=120", *session.posargs)


@nox.session
@nox.parametrize("backend", [nox.param(b, id=b) for b in ["memory", *PLUGINS, *EXAMPLES]])
def conformance(session: nox.Session, backend: str) -> None:
    """The shared conformance suite against a real store (memory needs none), and the store's
    plugin tests; for memory, the kit's own tests."""
    session.notify("conformance_report")
    _record(backend, "unfinished")
    if backend == "memory":
        session.install(*TEST_TOOLS, *KIT)
        session.run("pytest", "conformance/tests", "-v", "-rs", "--timeout=300", *session.posargs)
        _record(backend, "passed")
        return
    folder = PLUGINS.get(backend) or EXAMPLES[backend]
    variable = f"LEADERSHIP_TEST_{backend.upper()}_URL"
    if _needs_docker(folder) and not os.environ.get(variable) and not docker_available():
        reason = f"no Docker daemon reachable and {variable} unset"
        _record(backend, "skipped", reason)
        if ci():
            session.error(f"conformance({backend}) skipped under CI: {reason}")
        session.skip(reason)
    # An example is installed as a third party's plugin would be: built from its own folder.
    plugin = ["-e", f"{folder}[testing]"] if backend in PLUGINS else [f"./{folder}[testing]"]
    session.install(*TEST_TOOLS, *KIT, *plugin)
    session.run(
        "pytest", f"{folder}/tests", "-v", "-rs", "--timeout=600", "--durations=15", *session.posargs
    )
    _record(backend, "passed")


@nox.session(python=False, default=False)
def conformance_report(session: nox.Session) -> None:
    """Which stores this run tested, which it skipped and how to run those (queued by conformance)."""
    records = {p.stem: json.loads(p.read_text()) for p in sorted(_REPORT_DIR.glob("*.json"))}
    shutil.rmtree(_REPORT_DIR, ignore_errors=True)
    by = {o: [b for b, r in records.items() if r["outcome"] == o] for o in ("passed", "skipped", "unfinished")}
    session.log("=" * 78)
    session.log(f"conformance: passed   {', '.join(by['passed']) or 'none'}")
    if by["unfinished"]:
        session.log(f"conformance: FAILED   {', '.join(by['unfinished'])} (see above)")
    if by["skipped"]:
        session.warn(f"conformance: SKIPPED  {', '.join(by['skipped'])}: these stores were NOT tested")
        for backend in by["skipped"]:
            session.warn(
                f"  {backend}: {records[backend]['detail']}. Run it with a Docker daemon "
                f"(nox -s 'conformance({backend})'), or against a running server: "
                f"LEADERSHIP_TEST_{backend.upper()}_URL={backend}://HOST:PORT nox -s 'conformance({backend})'"
            )
    session.log("=" * 78)
    if by["skipped"] and ci():
        session.error(f"stores skipped under CI: {', '.join(by['skipped'])}")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, and mypy --strict over every distribution."""
    folders = [*PLUGINS.values(), *EXAMPLES.values()]
    tools = ["ruff>=0.5", "mypy>=1.10", "./core", "./conformance[faults]"]
    session.install(*tools, *(f"./{p}[testing]" for p in folders), *OBSERVERS.values())
    session.run("ruff", "check", ".")
    sources = ["core/src", "conformance/src", *(f"{p}/src" for p in [*folders, *OBSERVERS.values()])]
    session.run("mypy", "--config-file", "mypy.ini", *sources)


@nox.session
def bench(session: nox.Session) -> None:
    """Handover latency and store requests against each store's peer (kazoo Election, etcdctl
    elect, consul lock; interleaved on the same servers): ``nox -s bench [-- zookeeper --rounds 20]``
    (bench/handover.py). Many elections per process: ``nox -s bench -- scale [--elections N]``
    (bench/scale.py). Needs Docker; installs etcdctl (apt) or copies consul out of its image if missing."""
    plugins = (arg for p in PLUGINS.values() for arg in ("-e", f"{p}[testing]"))
    session.install("-e", "./core", "-e", "./conformance", *plugins)
    if session.posargs[:1] == ["scale"]:
        session.run("python", "bench/scale.py", *session.posargs[1:])
    else:
        session.run("python", "bench/handover.py", *session.posargs)


def distributions() -> list[str]:
    """Every distribution's folder: core, the kit, and each plugin — the backends discovered above
    and any other ``plugins/*`` folder with a ``pyproject.toml`` (an observer plugin has no store
    to test, but it is released all the same). ``examples/*`` are third-party style: not ours to
    release."""
    folders = {p.parent.relative_to(ROOT).as_posix() for p in ROOT.glob("plugins/*/pyproject.toml")}
    return ["core", "conformance", *sorted(folders | set(PLUGINS.values()))]


@nox.session
def build(session: nox.Session) -> None:
    """sdist + wheel of every distribution into dist/, ``twine check --strict``, versions and pins checked."""
    session.install("build>=1.2", "twine>=6.1", "packaging>=24")
    shutil.rmtree("dist", ignore_errors=True)
    folders = distributions()
    for folder in folders:
        # Without --sdist/--wheel, build makes the sdist and then the wheel from that sdist: the
        # proof that each sdist builds on its own, away from the repo's other folders.
        session.run("python", "-m", "build", "--quiet", "--outdir", "dist", folder)
    session.run("twine", "check", "--strict", *sorted(str(p) for p in Path("dist").iterdir()))
    session.run("python", ".ci/check_dists.py", "dist", *folders)
    for path in sorted(Path("dist").iterdir()):
        session.log(f"{path.name}: {path.stat().st_size / 1024:.1f} KiB")


DOCS_TOOLS = ["mkdocs>=1.6,<2", "mkdocs-material>=9.5", "mkdocstrings-python>=1.10", "ruff>=0.5"]


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site into site/, strictly: any warning or an undocumented public name fails."""
    session.install(*DOCS_TOOLS)
    # mkdocstrings reads the sources (core/src, conformance/src) statically: nothing to install.
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"})
    session.run("python", ".ci/check_api_docs.py", "site")
    session.log(f"site/: {sum(1 for _ in Path('site').rglob('index.html'))} pages")


@nox.session
def faults(session: nox.Session) -> None:
    """A seeded random fault campaign against one store, with the history checker and a timeline
    PNG. Args: <scheme> [--duration S] [--seed N] [--cluster] [--out DIR]."""
    usage = f"usage: nox -s faults -- <{'|'.join(PLUGINS)}> [--duration S] [--seed N] [--cluster]"
    if not session.posargs or session.posargs[0] not in PLUGINS:
        session.error(usage)
    backend = session.posargs[0]
    if not docker_available() and not os.environ.get(f"LEADERSHIP_TEST_{backend.upper()}_URL"):
        session.error(f"faults({backend}) needs Docker, or LEADERSHIP_TEST_{backend.upper()}_URL (no store faults)")
    session.install(*TEST_TOOLS, "-e", "./core", "-e", "./conformance[faults]", "-e", f"{PLUGINS[backend]}[testing]")
    session.run("python", "-m", "leadership_conformance.faults", *session.posargs)
