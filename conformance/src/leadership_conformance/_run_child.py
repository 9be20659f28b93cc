"""The command the kit's ``leadership run`` tests supervise (run as a script: no imports but the
standard library, so it starts fast).

``_run_child.py LOG NAME MODE SECONDS [STATUS]`` appends lines ``NAME PID KIND MONOTONIC TOKEN
EXTRA`` to LOG (one write each, O_APPEND: lines from several children never interleave): ``start``
(EXTRA: the pids of the other children in LOG still alive at this moment, or ``-``), a ``tick``
every 10 ms, ``term`` on SIGTERM, ``exit`` when it ends by itself after SECONDS (0: never) with
STATUS. MODE: ``term-exits`` (SIGTERM ends it with status 42) or ``ignore-term``.
"""

import os
import signal
import sys
import time

log, name, mode, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
status = int(sys.argv[5]) if len(sys.argv) > 5 else 0
fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
token = os.environ.get("LEADERSHIP_TOKEN", "-")


def write(kind: str, extra: str = "-") -> None:
    os.write(fd, f"{name} {os.getpid()} {kind} {time.monotonic():.6f} {token} {extra}\n".encode())


def others_alive() -> list[int]:
    """Other children of this log whose process still runs (a zombie does not)."""
    with open(log) as f:
        pids = {int(line.split()[1]) for line in f if line.strip()}
    alive = []
    for pid in sorted(pids - {os.getpid()}):
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                ours = b"_run_child" in f.read()
        except OSError:
            continue
        if ours and state != "Z":
            alive.append(pid)
    return alive


def on_term(signum: int, frame: object) -> None:
    write("term")
    os._exit(42)


signal.signal(signal.SIGTERM, on_term if mode == "term-exits" else signal.SIG_IGN)
write("start", ",".join(map(str, others_alive())) or "-")
end = time.monotonic() + seconds
while seconds <= 0 or time.monotonic() < end:
    write("tick")
    time.sleep(0.01)
write("exit")
sys.exit(status)
