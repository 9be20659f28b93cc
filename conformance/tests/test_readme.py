"""The kit's README lists every knob and every mixin an author can use (a new one must be
documented to pass)."""

from __future__ import annotations

import typing
from pathlib import Path

import leadership_conformance
from leadership_conformance import suite

README = (Path(__file__).parents[1] / "README.md").read_text()


def _knobs() -> set[str]:
    names: set[str] = set()
    for name in suite.__all__:
        cls = getattr(suite, name)
        for klass in cls.__mro__:
            hints = typing.get_type_hints(klass) if klass.__module__ == suite.__name__ else {}
            names.update(n for n, hint in hints.items() if typing.get_origin(hint) is typing.ClassVar)
    return names


def test_every_knob_is_in_the_readme() -> None:
    knobs = _knobs()
    assert {"ttl", "queue_settle", "many_elections", "cluster_recovery_time"} <= knobs
    missing = sorted(k for k in knobs if f"`{k}`" not in README)
    assert not missing, f"knobs missing from conformance/README.md: {missing}"


def test_every_mixin_is_in_the_readme() -> None:
    mixins = [n for n in leadership_conformance.__all__ if n.endswith("Tests")]
    assert "ClusterFailoverTests" in mixins
    missing = [m for m in mixins if f"`{m}`" not in README]
    assert not missing, f"mixins missing from conformance/README.md: {missing}"
