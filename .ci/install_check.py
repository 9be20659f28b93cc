"""Install the built wheels the way a user will, each extra in a fresh venv, and check they work.

Usage: ``python3 .ci/install_check.py [DIST_DIR]`` after ``nox -s build`` (DIST_DIR defaults to
dist/). Needs only the standard library and network access to PyPI for third-party packages.

For every extra of the core (read from its wheel: ``leadership[consul]``, ``[etcd]``,
``[zookeeper]``, ``[all]``, ...), and for ``leadership-conformance`` used by a throwaway plugin
written to a temporary folder:

- a new venv, ``pip install --find-links DIST_DIR -c <ours pinned to the built versions> ...``;
- the installed distributions (``name==version``) printed; each of this repo's distributions
  must be installed at the built version *from the built wheel* (its RECORD hashes equal the
  wheel's), so a same-named package on PyPI cannot pass for ours;
- ``leadership backends`` lists each plugin at its built version and each backend's URL
  scheme; an election on ``memory://`` runs (elected,
  fencing token, a follower sees the leader); each backend's URL parser rejects an unknown
  option with ConfigurationError; every package carries ``py.typed``; with leadership-prometheus
  installed, the election shows up in its ``leadership_is_leader`` gauge;
- the throwaway plugin registers its backend through the ``leadership`` entry point group and
  passes part of the conformance suite, selected by mixin name (``-k TokenTests``, which only
  the kit's ``pytest11`` plugin makes possible); so does each example backend under examples/, whose test
  server the kit finds through its ``leadership_conformance.servers`` entry point.

Venvs live under .ci/work/install/ (git-ignored) and are recreated on every run.
"""

from __future__ import annotations

import csv
import email.parser
import io
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".ci/work/install"
WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_]+)-(?P<version>[^-]+)-py3-none-any\.whl$")

# Plugins that serve a URL scheme of their own name; `leadership backends` must list it, and its
# URL parser is exercised. Any other plugin (an observer such as leadership-prometheus) must
# still show up among the loaded plugins.
BACKENDS = {"consul", "etcd", "zookeeper"}

SMOKE = """
import importlib.resources, importlib.util, sys, time
import leadership

with leadership.connect("memory://install-check") as store:
    candidate = leadership.Candidate(store, "check/leader", "a", ttl=5)
    stream = candidate.run_for_election()
    assert next(stream) is False, "a candidate's stream starts with False"
    assert next(stream) is True, "the only candidate is elected"
    token = candidate.term.token
    follower = leadership.Follower(store, "check/leader")
    assert next(follower.follow_election()) == "a", "the follower sees the leader"
    follower.stop()
    if importlib.util.find_spec("leadership_prometheus"):  # the observer plugin, loaded by entry point
        from prometheus_client import generate_latest

        gauge = 'leadership_is_leader{key="check/leader",name="a"} 1.0'
        deadline = time.monotonic() + 5
        while gauge not in generate_latest().decode():
            assert time.monotonic() < deadline, f"no {gauge!r} in the metrics: {generate_latest().decode()}"
            time.sleep(0.05)
        print("leadership-prometheus: the elected hook set leadership_is_leader")
    candidate.stop()
for scheme in filter(None, sys.argv[1].split(",")):
    try:
        leadership.connect(f"{scheme}://127.0.0.1:1?no-such-option=1")
    except leadership.ConfigurationError as err:
        assert "no-such-option" in str(err), err
    else:
        raise SystemExit(f"{scheme}:// accepted an unknown URL option")
for package in sys.argv[2].split(","):
    assert importlib.resources.files(package).joinpath("py.typed").is_file(), f"{package} lacks py.typed"
print(f"election on memory:// ok (token {token}); URL options checked for {sys.argv[1] or 'no backend'}")
"""

THROWAWAY_PYPROJECT = """
[build-system]
requires = ["hatchling>=1.27"]
build-backend = "hatchling.build"

[project]
name = "leadership-scratch"
version = "0.0.1"
dependencies = ["leadership-conformance"]

[project.entry-points.leadership]
scratch = "leadership_scratch"

[tool.hatch.build.targets.wheel]
packages = ["leadership_scratch"]
"""

THROWAWAY_PLUGIN = '''
"""A throwaway third-party backend: the memory store under its own scheme."""
from leadership import hookimpl
from leadership.backends.memory import MemoryBackend


class ScratchBackend(MemoryBackend):
    """The memory store, registered as scratch://."""


@hookimpl
def leadership_register_backends(register):
    register.add("scratch", ScratchBackend, description="install check")
'''

THROWAWAY_TEST = '''
import uuid

import pytest
from leadership_conformance import BadInputTests, CandidateTests, FollowerTests, TokenTests


class ScratchServer:
    can_inject_faults = False

    def __init__(self):
        self.url = f"scratch://{uuid.uuid4().hex[:8]}"


class TestScratchConformance(CandidateTests, FollowerTests, TokenTests, BadInputTests):
    ttl = 0.6
    store_slack = 0.05
    supports_processes = False
    counts_requests = False
    handover_timeout = 3.0

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls):
        yield ScratchServer()
'''


# The part of the suite the examples run here: quick, and through every layer (streams, tokens,
# followers, a SIGKILLed leader, bad input). Their whole suite runs in `nox -s conformance`.
EXAMPLE_TESTS = "stream_starts or tokens_strictly or bad_input or killed_leader or follower_sees"


class CheckFailed(Exception):
    pass


def built_wheels(dist: Path) -> dict[str, tuple[str, Path]]:
    """Canonical distribution name -> (version, wheel) for every wheel in ``dist``."""
    found: dict[str, tuple[str, Path]] = {}
    for wheel in sorted(dist.glob("*.whl")):
        match = WHEEL.match(wheel.name)
        if match:
            found[match["name"].lower().replace("_", "-")] = (match["version"], wheel)
    if "leadership" not in found:
        raise CheckFailed(f"no leadership wheel in {dist}: run `nox -s build` first")
    return found


def run(cmd: list[str], log: list[str], **kwargs: object) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise CheckFailed(f"`{' '.join(map(str, cmd))}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return str(proc.stdout)


def record_entries(text: str) -> set[tuple[str, str]]:
    """(path, hash) of a RECORD, without the files pip writes or rewrites itself."""
    skip = ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
    return {
        (row[0], row[1])
        for row in csv.reader(io.StringIO(text))
        if row and row[1] and not row[0].endswith(skip) and "__pycache__" not in row[0]
    }


def core_extras(wheel: Path) -> dict[str, set[str]]:
    """Extra -> this repo's distributions it installs, read from the built core wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    extras: dict[str, set[str]] = {extra: set() for extra in meta.get_all("Provides-Extra") or []}
    for req in meta.get_all("Requires-Dist") or []:
        match = re.match(r"^(leadership-[a-z0-9-]+).*extra\s*==\s*['\"]([^'\"]+)['\"]", req)
        if match:
            extras[match[2]].add(match[1])
    return extras


def check_from_wheels(venv: Path, built: dict[str, tuple[str, Path]], expected: set[str], log: list[str]) -> None:
    freeze = run([str(venv / "bin/python"), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"], log)
    installed = dict(line.split("==", 1) for line in freeze.split() if "==" in line)
    log.append("installed: " + " ".join(f"{n}=={v}" for n, v in sorted(installed.items(), key=lambda x: x[0].lower())))
    ours = {n.lower(): v for n, v in installed.items() if n.lower().replace("_", "-") in built}
    if set(ours) != expected:
        raise CheckFailed(f"expected this repo's distributions {sorted(expected)}, installed {sorted(ours)}")
    site = next(venv.glob("lib/python3*/site-packages"))
    for name, version in ours.items():
        want_version, wheel = built[name]
        if version != want_version:
            raise CheckFailed(f"{name} installed at {version}, built at {want_version}")
        record = next(site.glob(f"{name.replace('-', '_')}-{version}.dist-info/RECORD"))
        with zipfile.ZipFile(wheel) as zf:
            wheel_record = zf.read(f"{name.replace('-', '_')}-{version}.dist-info/RECORD").decode()
        missing = record_entries(wheel_record) - record_entries(record.read_text())
        if missing:
            raise CheckFailed(f"{name} {version} was not installed from {wheel.name}: differs in {sorted(missing)[:3]}")


def check_plugins_loaded(listing: str, ours: set[str], built: dict[str, tuple[str, Path]]) -> list[str]:
    """Each installed plugin is listed by `leadership backends` at its built version; each backend's
    scheme too. Returns the schemes of the backends installed."""
    schemes = []
    for dist in sorted(ours - {"leadership", "leadership-conformance"}):
        version = built[dist][0]
        if not re.search(rf"^\s+\S+\s+{re.escape(dist)} {re.escape(version)}$", listing, re.M):
            raise CheckFailed(f"`leadership backends` does not list the plugin {dist} {version}:\n{listing}")
        scheme = dist.removeprefix("leadership-")
        if scheme in BACKENDS:
            if f"{scheme}://" not in listing:
                raise CheckFailed(f"`leadership backends` does not list {scheme}://:\n{listing}")
            schemes.append(scheme)
    if "memory://" not in listing:
        raise CheckFailed(f"`leadership backends` does not list memory://:\n{listing}")
    return schemes


def check_extra(
    extra: str, expected: set[str], dist: Path, built: dict[str, tuple[str, Path]], constraints: Path
) -> list[str]:
    log = [f"== leadership[{extra}]"]
    start = time.monotonic()
    venv = WORK / extra
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)], log)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "--find-links", str(dist), "-c", str(constraints), f"leadership[{extra}]"], log)
    check_from_wheels(venv, built, {"leadership", *expected}, log)
    listing = run([str(venv / "bin/leadership"), "backends"], log)
    backends = check_plugins_loaded(listing, {"leadership", *expected}, built)
    schemes = ", ".join(f"{b}://" for b in ["memory", *backends])
    log.append(f"`leadership backends` lists plugins {', '.join(sorted(expected))} and schemes {schemes}")
    packages = ",".join(["leadership", *(d.replace("-", "_") for d in sorted(expected))])
    log.extend(run([str(venv / "bin/python"), "-c", SMOKE, ",".join(backends), packages], log).strip().splitlines())
    log.append(f"ok in {time.monotonic() - start:.0f}s")
    return log


def check_kit(dist: Path, built: dict[str, tuple[str, Path]], constraints: Path) -> list[str]:
    log = ["== leadership-conformance, used by a throwaway plugin outside the repo and by examples/*"]
    start = time.monotonic()
    venv = WORK / "conformance"
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)], log)
    with tempfile.TemporaryDirectory(prefix="leadership-scratch-") as tmp:
        plugin = Path(tmp)
        (plugin / "leadership_scratch").mkdir()
        (plugin / "leadership_scratch/__init__.py").write_text(textwrap.dedent(THROWAWAY_PLUGIN))
        (plugin / "pyproject.toml").write_text(textwrap.dedent(THROWAWAY_PYPROJECT))
        (plugin / "tests").mkdir()
        (plugin / "tests/test_conformance.py").write_text(textwrap.dedent(THROWAWAY_TEST))
        pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        run([*pip, "--find-links", str(dist), "-c", str(constraints), "leadership-conformance", str(plugin)], log)
        check_from_wheels(venv, built, {"leadership", "leadership-conformance"}, log)
        listing = run([str(venv / "bin/leadership"), "backends"], log)
        if "scratch://" not in listing:
            raise CheckFailed(f"the throwaway plugin's backend is not listed:\n{listing}")
        # -k by mixin name works only through the kit's pytest11 plugin: without it, nothing is
        # selected and pytest exits 5, failing the check.
        pytest = [str(venv / "bin/python"), "-m", "pytest", "-q", "--strict-markers", "-p", "no:cacheprovider"]
        out = run([*pytest, "tests", "-k", "CandidateTests or TokenTests or BadInputTests"], log, cwd=plugin)
        summary = out.strip().splitlines()[-1]
        if "deselected" not in summary:
            raise CheckFailed(f"-k by mixin name selected every test, so it did not select at all: {summary}")
        log.append("pytest -k 'CandidateTests or TokenTests or BadInputTests': " + summary)
    # The repo's example backends (examples/*), installed as their authors' users would: their
    # test server comes through the kit's entry point group, from the installed wheels.
    for example in sorted(ROOT.glob("examples/*/tests/test_conformance.py")):
        folder = example.parent.parent
        run([*pip, "--find-links", str(dist), "-c", str(constraints), f"{folder}[testing]"], log)
        out = run([*pytest, str(example.relative_to(folder)), "-k", EXAMPLE_TESTS], log, cwd=folder)
        log.append(f"pytest {folder.relative_to(ROOT)} (part of the suite): " + out.strip().splitlines()[-1])
    log.append(f"ok in {time.monotonic() - start:.0f}s")
    return log


def main(argv: list[str]) -> int:
    dist = Path(argv[0]) if argv else ROOT / "dist"
    dist = dist.resolve()
    try:
        built = built_wheels(dist)
    except CheckFailed as err:
        print(f"install_check: {err}", file=sys.stderr)
        return 1
    extras = core_extras(built["leadership"][1])
    if "all" not in extras or not extras["all"]:
        print("install_check: the core wheel has no extra 'all'", file=sys.stderr)
        return 1
    WORK.mkdir(parents=True, exist_ok=True)
    constraints = WORK / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, (version, _) in sorted(built.items())))
    print("install_check: built " + ", ".join(f"{n}=={v}" for n, (v, _) in sorted(built.items())), flush=True)
    start = time.monotonic()
    failed = 0
    # Two at a time: pip mostly waits on the network, and the machine has two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {
            f"leadership[{extra}]": pool.submit(check_extra, extra, expected, dist, built, constraints)
            for extra, expected in extras.items()
        }
        jobs["leadership-conformance"] = pool.submit(check_kit, dist, built, constraints)
        for label, job in jobs.items():
            try:
                print("\n".join(job.result()), flush=True)
            except CheckFailed as err:
                failed += 1
                print(f"== {label} FAILED: {err}", flush=True)
    print(f"install_check: {len(jobs) - failed}/{len(jobs)} venvs ok in {time.monotonic() - start:.0f}s", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
