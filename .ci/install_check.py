"""Install the built wheels the way a user will, each extra in a fresh venv, and check they work.

Usage: ``python3 .ci/install_check.py [DIST_DIR]`` after ``nox -s build`` (DIST_DIR defaults to
dist/). Needs only the standard library and network access to PyPI for third-party packages.

For ``leadership[consul]``, ``[etcd]``, ``[zookeeper]`` and ``[all]``, and for
``leadership-conformance`` used by a throwaway plugin written to a temporary folder:

- a new venv, ``pip install --find-links DIST_DIR -c <ours pinned to the built versions> ...``;
- the installed distributions (``name==version``) printed; each of this repo's distributions
  must be installed at the built version *from the built wheel* (its RECORD hashes equal the
  wheel's), so a same-named package on PyPI cannot pass for ours;
- ``leadership backends`` lists each expected backend; an election on ``memory://`` runs (elected,
  fencing token, a follower sees the leader); each backend's URL parser rejects an unknown
  option with ConfigurationError; every package carries ``py.typed``;
- the throwaway plugin registers its backend through the ``leadership`` entry point group and
  passes part of the conformance suite under ``pytest --strict-markers`` (the markers come from
  the kit's ``pytest11`` entry point).

Venvs live under .ci/work/install/ (git-ignored) and are recreated on every run.
"""

from __future__ import annotations

import csv
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

# extra -> backends `leadership backends` must list (memory is always there)
EXTRAS = {
    "consul": ["consul"],
    "etcd": ["etcd"],
    "zookeeper": ["zookeeper"],
    "all": ["consul", "etcd", "zookeeper"],
}

SMOKE = """
import importlib.resources, sys
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
    candidate.stop()
for scheme in sys.argv[1].split(","):
    try:
        leadership.connect(f"{scheme}://127.0.0.1:1?no-such-option=1")
    except leadership.ConfigurationError as err:
        assert "no-such-option" in str(err), err
    else:
        raise SystemExit(f"{scheme}:// accepted an unknown URL option")
for package in sys.argv[2].split(","):
    assert importlib.resources.files(package).joinpath("py.typed").is_file(), f"{package} lacks py.typed"
print(f"election on memory:// ok (token {token}); URL options checked for {sys.argv[1]}")
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


@pytest.mark.conformance
class TestScratchConformance(CandidateTests, FollowerTests, TokenTests, BadInputTests):
    ttl = 0.6
    store_slack = 0.05
    supports_processes = False
    supports_store_faults = False
    counts_requests = False
    handover_timeout = 3.0

    @pytest.fixture(scope="class")
    @classmethod
    def leadership_server(cls):
        yield ScratchServer()
'''


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


def check_extra(extra: str, dist: Path, built: dict[str, tuple[str, Path]], constraints: Path) -> list[str]:
    log = [f"== leadership[{extra}]"]
    start = time.monotonic()
    venv = WORK / extra
    shutil.rmtree(venv, ignore_errors=True)
    run([sys.executable, "-m", "venv", str(venv)], log)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "--find-links", str(dist), "-c", str(constraints), f"leadership[{extra}]"], log)
    backends = EXTRAS[extra]
    check_from_wheels(venv, built, {"leadership", *(f"leadership-{b}" for b in backends)}, log)
    listing = run([str(venv / "bin/leadership"), "backends"], log)
    for scheme in ["memory", *backends]:
        if f"{scheme}://" not in listing:
            raise CheckFailed(f"`leadership backends` does not list {scheme}://:\n{listing}")
    log.append(f"`leadership backends` lists {', '.join(['memory', *backends])}")
    packages = ",".join(["leadership", *(f"leadership_{b}" for b in backends)])
    log.append(run([str(venv / "bin/python"), "-c", SMOKE, ",".join(backends), packages], log).strip())
    log.append(f"ok in {time.monotonic() - start:.0f}s")
    return log


def check_kit(dist: Path, built: dict[str, tuple[str, Path]], constraints: Path) -> list[str]:
    log = ["== leadership-conformance, used by a throwaway plugin outside the repo"]
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
        out = run(
            [str(venv / "bin/python"), "-m", "pytest", "-q", "--strict-markers", "-p", "no:cacheprovider", "tests"],
            log,
            cwd=plugin,
        )
        log.append("pytest: " + out.strip().splitlines()[-1])
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
    WORK.mkdir(parents=True, exist_ok=True)
    constraints = WORK / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, (version, _) in sorted(built.items())))
    print("install_check: built " + ", ".join(f"{n}=={v}" for n, (v, _) in sorted(built.items())), flush=True)
    start = time.monotonic()
    failed = 0
    # Two at a time: pip mostly waits on the network, and the machine has two cores.
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = {f"leadership[{e}]": pool.submit(check_extra, e, dist, built, constraints) for e in EXTRAS}
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
