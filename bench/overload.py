"""Overload: N candidates for one key in one process on one store connection, at a short ttl.

    python bench/overload.py URL --candidates 100 --ttl 2 --duration 60

Uses the public sync API as a user would (one thread consuming each candidate's stream) and
prints one line of figures: when the first leader was elected, the share of samples (every
50 ms) with exactly one leader / none / several, elections and demotions by reason, streams that
ended with an error, and the process's log lines (WARNING and above, any logger) per minute.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import threading
import time
import uuid
from typing import Any

import leadership


class Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}"[:300])


class Tally:
    def __init__(self) -> None:
        self.elected = 0
        self.demoted: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()

    @leadership.hookimpl
    def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
        self.elected += 1

    @leadership.hookimpl
    def leadership_demoted(self, key: str, name: str, token: int, reason: str, store: str) -> None:
        self.demoted[reason] += 1

    @leadership.hookimpl
    def leadership_store_error(
        self, error: BaseException, operation: str, attempt: int, retry_in: float | None, store: str
    ) -> None:
        self.errors[f"{operation}:{type(error).__name__}"] += 1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--duration", type=float, default=60.0)
    args = parser.parse_args()
    # Every logger's lines count (a backend's client library logs too), as a user's log shows them.
    count = Count()
    logging.getLogger().addHandler(count)
    logging.getLogger().setLevel(logging.WARNING)
    tally = Tally()
    pm = leadership.get_plugin_manager()
    pm.register(tally, name="overload-tally")
    key = f"overload/{uuid.uuid4().hex[:8]}"
    store = leadership.connect(args.url, plugin_manager=pm)
    t0 = time.monotonic()
    candidates = [leadership.Candidate(store, key, f"c{i}", ttl=args.ttl) for i in range(args.candidates)]
    ended: list[str] = []

    def consume(c: leadership.Candidate) -> None:
        try:
            for _ in c.run_for_election():
                pass
        except Exception as exc:  # noqa: BLE001 - counted
            ended.append(f"{type(exc).__name__}: {exc}")

    for c in candidates:
        threading.Thread(target=consume, args=(c,), daemon=True).start()
    first: float | None = None
    samples: collections.Counter[str] = collections.Counter()
    while time.monotonic() - t0 < args.duration:
        leaders = sum(1 for c in candidates if c.is_leader)
        if leaders and first is None:
            first = time.monotonic() - t0
        if first is not None:
            samples["one" if leaders == 1 else ("none" if leaders == 0 else "several")] += 1
        time.sleep(0.05)
    running = sum(1 for c in candidates if c.aio.running)
    t_close = time.monotonic()
    store.close()
    close_took = time.monotonic() - t_close
    total = sum(samples.values()) or 1
    minutes = args.duration / 60
    result: dict[str, Any] = {
        "url": args.url,
        "candidates": args.candidates,
        "ttl": args.ttl,
        "duration_s": args.duration,
        "first_leader_after_s": None if first is None else round(first, 2),
        "one_leader_share": round(samples["one"] / total, 3),
        "no_leader_share": round(samples["none"] / total, 3),
        "several_leaders_samples": samples["several"],
        "elections": tally.elected,
        "demotions": dict(tally.demoted),
        "store_errors": dict(tally.errors),
        "streams_ended_by_error": len(ended),
        "streams_running_at_end": running,
        "log_lines_per_min": round(len(count.lines) / minutes, 1),
        "close_s": round(close_took, 2),
    }
    print(json.dumps(result))
    for line in count.lines[:8]:
        print("  log:", line)
    for line in ended[:3]:
        print("  ended:", line)


if __name__ == "__main__":
    main()
