from __future__ import annotations

import re
import subprocess
import sys


def test_demo_shows_leadership_changing_hands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "leadership", "demo", "--duration", "6", "--seed", "1", "--ttl", "0.8"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    elected = re.findall(r"(node-\d)\s+elected \(fencing token (\d+)\)", out)
    assert len({name for name, _ in elected}) >= 2, out
    tokens = [int(t) for _, t in elected]
    assert tokens == sorted(tokens), out
    assert "follower   sees leader" in out and "demo finished" in out


def test_backends_lists_memory() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "leadership", "backends"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "memory://" in out
