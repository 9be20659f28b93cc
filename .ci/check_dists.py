"""Check what ``nox -s build`` put in dist/ before anyone installs it.

Usage: ``python .ci/check_dists.py DIST_DIR FOLDER...`` (each FOLDER holds one distribution's
pyproject.toml). Fails, listing every problem, unless:

- each folder produced exactly one wheel and one sdist, at core's version (the one source:
  ``__version__`` in core/src/leadership/__init__.py);
- every requirement on one of our distributions (plugin and kit pins on core, core's extras on
  the plugins) is ``>=X.Y,<next``, where next is X+1 from 1.0 on and 0.(Y+1) before it, since a
  0.x minor release may break;
- core's extras reach every plugin, and ``all`` includes every other extra;
- each wheel holds ``py.typed`` for each of its packages, the entry points its pyproject.toml
  declares (a plugin at least one in group ``leadership``), and the LICENSE; each folder's
  LICENSE equals the top-level one and each folder has a CHANGELOG.md, shipped in the sdist.

Needs ``packaging`` (installed by the nox session).
"""

from __future__ import annotations

import configparser
import email.parser
import re
import sys
import tarfile
import zipfile
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
VERSION_FILE = ROOT / "core/src/leadership/__init__.py"


def core_version() -> Version:
    match = re.search(r'^__version__ = "([^"]+)"$', VERSION_FILE.read_text(), re.M)
    if not match:
        sys.exit(f"check_dists: no __version__ = \"...\" line in {VERSION_FILE}")
    return Version(match.group(1))


def expected_pin(version: Version) -> str:
    major, minor = version.major, version.minor
    upper = f"{major + 1}" if major >= 1 else f"0.{minor + 1}"
    return f">={major}.{minor},<{upper}"


def wheel_metadata(wheel: zipfile.ZipFile) -> tuple[email.message.Message, str]:
    info = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    entry_points = next((n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")), None)
    meta = email.parser.Parser().parsestr(wheel.read(info).decode())
    return meta, wheel.read(entry_points).decode() if entry_points else ""


def check_folder(folder: Path, dist: Path, version: Version, ours: set[str], problems: list[str]) -> dict[str, object]:
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    name = project["name"]
    stem = f"{canonicalize_name(name).replace('-', '_')}-{version}"
    wheels = sorted(dist.glob(f"{canonicalize_name(name).replace('-', '_')}-*.whl"))
    sdists = sorted(dist.glob(f"{canonicalize_name(name).replace('-', '_')}-*.tar.gz"))
    where = f"{folder.relative_to(ROOT)} ({name})"
    if [w.name for w in wheels] != [f"{stem}-py3-none-any.whl"] or [s.name for s in sdists] != [f"{stem}.tar.gz"]:
        problems.append(
            f"{where}: expected {stem}-py3-none-any.whl and {stem}.tar.gz (core's version {version}) in "
            f"{dist}, found {[p.name for p in wheels + sdists]}; every distribution takes its version "
            f"from {VERSION_FILE.relative_to(ROOT)}"
        )
        return project
    pin = expected_pin(version)
    with zipfile.ZipFile(wheels[0]) as wheel:
        meta, entry_points = wheel_metadata(wheel)
        names = wheel.namelist()
        for req_text in meta.get_all("Requires-Dist") or []:
            req = Requirement(req_text)
            if canonicalize_name(req.name) in ours and req.specifier != SpecifierSet(pin):
                problems.append(
                    f"{where}: requires {req_text!r}, but at version {version} every requirement on one of "
                    f"this repo's distributions must be '{req.name}{pin}' (edit {folder.name}/pyproject.toml)"
                )
        for package in project_packages(folder):
            if f"{package}/py.typed" not in names:
                problems.append(f"{where}: the wheel has no {package}/py.typed (type checkers would ignore it)")
        if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
            problems.append(f"{where}: the wheel carries no LICENSE (license-files in pyproject.toml)")
    declared = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    declared.optionxform = str  # type: ignore[assignment,method-assign]
    declared.read_string(entry_points)
    groups = dict(project.get("entry-points", {}))
    if "scripts" in project:
        groups["console_scripts"] = project["scripts"]
    for group, points in groups.items():
        for point, target in points.items():
            if not declared.has_option(group, point) or declared.get(group, point).strip() != target:
                problems.append(f"{where}: the wheel lacks entry point [{group}] {point} = {target}")
    if folder.parent.name == "plugins" and "leadership" not in groups:
        problems.append(f"{where}: a plugin needs an entry point in group 'leadership' or the core never loads it")
    if (folder / "LICENSE").read_bytes() != (ROOT / "LICENSE").read_bytes():
        problems.append(f"{where}: LICENSE differs from the top-level LICENSE; copy it over")
    if not (folder / "CHANGELOG.md").is_file():
        problems.append(f"{where}: no CHANGELOG.md")
    with tarfile.open(sdists[0]) as sdist:
        members = set(sdist.getnames())
        for wanted in ("PKG-INFO", "LICENSE", "CHANGELOG.md", "README.md"):
            if f"{stem}/{wanted}" not in members:
                problems.append(f"{where}: the sdist lacks {wanted}")
    return project


def project_packages(folder: Path) -> list[str]:
    config = tomllib.loads((folder / "pyproject.toml").read_text())
    packages = config["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    return [Path(p).name for p in packages]


def check_extras(core: dict[str, object], plugins: list[str], problems: list[str]) -> None:
    extras: dict[str, list[str]] = core.get("optional-dependencies", {})  # type: ignore[assignment]
    reached = {canonicalize_name(Requirement(r).name) for reqs in extras.values() for r in reqs}
    for plugin in plugins:
        if canonicalize_name(plugin) not in reached:
            problems.append(f"core/pyproject.toml: no extra installs the plugin {plugin}; add one")
    every = {r for name, reqs in extras.items() if name != "all" for r in reqs}
    missing = sorted(every - set(extras.get("all", [])))
    if missing:
        problems.append(f"core/pyproject.toml: extra 'all' lacks {missing}, which other extras install")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    dist, folders = Path(argv[0]), [ROOT / f for f in argv[1:]]
    version = core_version()
    projects = {f: tomllib.loads((f / "pyproject.toml").read_text())["project"] for f in folders}
    ours = {canonicalize_name(p["name"]) for p in projects.values()}
    problems: list[str] = []
    for folder in folders:
        check_folder(folder, dist, version, ours, problems)
    core = projects.get(ROOT / "core")
    if core is None:
        problems.append("core is not among the folders built")
    else:
        check_extras(core, [p["name"] for f, p in projects.items() if f.parent.name == "plugins"], problems)
    if problems:
        print(f"check_dists: {len(problems)} problem(s) in {dist}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"check_dists: {len(folders)} distributions at {version}, pins on each other {expected_pin(version)}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
