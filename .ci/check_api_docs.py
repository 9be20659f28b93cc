"""Fail when a public name has no docstring or is missing from the built API reference.

Usage: ``python .ci/check_api_docs.py SITE_DIR`` after ``mkdocs build`` (``nox -s docs`` runs
both). The public names are ``__all__`` of ``leadership``, ``leadership.aio``,
``leadership.testing``, ``leadership_conformance`` and ``leadership_conformance.servers``,
read from the source with griffe (what
mkdocstrings renders, so the two cannot disagree). Each name must have a docstring of its own —
mkdocstrings silently leaves out an object without one — and an anchor ``id="module.name"`` on
some page of the site. Needs ``griffe`` (installed with mkdocstrings-python).
"""

from __future__ import annotations

import sys
from pathlib import Path

import griffe

ROOT = Path(__file__).resolve().parent.parent
SEARCH_PATHS = [str(ROOT / "core/src"), str(ROOT / "conformance/src")]
MODULES = [
    "leadership",
    "leadership.aio",
    "leadership.testing",
    "leadership_conformance",
    "leadership_conformance.servers",
]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    site = Path(argv[0])
    pages = [p.read_text(encoding="utf-8") for p in site.rglob("*.html")]
    if not pages:
        print(f"check_api_docs: no HTML under {site}: build the site first", file=sys.stderr)
        return 2
    loader = griffe.GriffeLoader(search_paths=SEARCH_PATHS)
    for package in {m.split(".")[0] for m in MODULES}:
        loader.load(package)
    loader.resolve_aliases(implicit=False, external=False)
    problems: list[str] = []
    checked = 0
    for path in MODULES:
        module = loader.modules_collection.get_member(path)
        exports = module.exports
        if not exports:
            problems.append(f"{path}: no __all__; the reference could not tell public from private")
            continue
        for name in sorted(exports):
            checked += 1
            obj = module[name]
            target = obj.final_target if obj.is_alias else obj
            docstring = target.docstring.value.strip() if target.docstring else ""
            where = f"{target.relative_filepath}:{target.lineno}"
            if not docstring:
                problems.append(
                    f"{path}.{name} ({where}) has no docstring, so the API reference leaves it out; "
                    "write one (for a module-level variable, a string literal on the line after it)"
                )
            elif not any(f'id="{path}.{name}"' in page for page in pages):
                problems.append(f"{path}.{name} ({where}) is public but on no page of the API reference (docs/api/)")
    if problems:
        print(f"check_api_docs: {len(problems)} of {checked} public names are not documented:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"check_api_docs: {checked} public names in {', '.join(MODULES)}: each has a docstring and a reference entry")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
