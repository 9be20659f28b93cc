"""A candidate or follower in its own OS process, driven over stdin/stdout, so the suite can
SIGKILL or SIGSTOP it like a real service.

    python -m leadership_conformance.agent --url URL --key KEY --name NAME --ttl TTL
    python -m leadership_conformance.agent --url URL --key KEY --follower

stdout: one JSON object a line: ``{"t": <CLOCK_MONOTONIC>, "event": ..., ...}``; events are
``ready``, ``elected`` (``value`` bool, ``token``), ``leader`` (``leader``, ``token``: the
follower's ``terms()``), ``name`` (``leader``: its ``follow_election()``),
``status`` (``is_leader``, ``token``), ``resigned`` (``token``: the term given up, None if none),
``ended``, ``error`` (``error``), ``sample`` (``is_leader``, ``token``, ``t_read``: an
``is_leader`` read every ``--sample`` seconds). stdin commands: ``resign``, ``stop``, ``status``.

``--history FILE`` also appends every event, with ``agent`` and ``key``, to FILE as JSON lines
(the fault campaign's history; a restarted agent appends to the same file after a ``ready``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from typing import Any

import leadership

_out_lock = threading.Lock()
#: (file, agent, key) when --history is given.
_history: tuple[Any, str, str] | None = None


def emit(event: str, **fields: Any) -> None:
    record = {"t": time.monotonic(), "event": event, **fields}
    line = json.dumps(record)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        if _history is not None:
            file, agent, key = _history
            file.write(json.dumps({**record, "agent": agent, "key": key}) + "\n")
            file.flush()


class Recorder:
    """Reports leadership transitions from the observer hooks, which run at the exact moment of
    the change on the store's loop — the times the suite's one-leader-at-a-time check needs."""

    def __init__(self, emit: Any) -> None:
        self.emit = emit

    @leadership.hookimpl
    def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
        self.emit("transition", value=True, token=token)

    @leadership.hookimpl
    def leadership_demoted(self, key: str, name: str, token: int, reason: str, store: str) -> None:
        self.emit("transition", value=False, token=token, reason=reason)


def recording_plugin_manager(emit: Any) -> Any:
    pm = leadership.get_plugin_manager()
    pm.register(Recorder(emit), name="conformance-recorder")
    return pm


def _candidate(args: argparse.Namespace, store: leadership.Store) -> None:
    candidate = leadership.Candidate(store, args.key, args.name, ttl=args.ttl)

    def stream() -> None:
        try:
            for elected in candidate.run_for_election():
                term = candidate.term
                emit("elected", value=elected, token=term.token if (elected and term) else None)
            emit("ended")
        except Exception as exc:  # noqa: BLE001 - reported to the test
            emit("error", error=f"{type(exc).__name__}: {exc}")

    threading.Thread(target=stream, daemon=True).start()
    if args.sample > 0:
        threading.Thread(target=_sample, args=(candidate, args.sample), daemon=True).start()
    emit("ready")
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "status":
            t_read = time.monotonic()  # the read happens between t_read and the event's t
            term = candidate.term
            emit("status", is_leader=term is not None, token=term.token if term else None, t_read=t_read)
        elif cmd == "resign":
            term = candidate.term  # None: it did not lead, and resign() does nothing
            candidate.resign()
            emit("resigned", token=term.token if term else None)
        elif cmd == "stop":
            candidate.stop()
            emit("stopped")
            break


def _sample(candidate: leadership.Candidate, every: float) -> None:
    """Read ``is_leader`` (through ``term``: one read gives both) as application code would."""
    while True:
        t_read = time.monotonic()
        term = candidate.term
        emit("sample", is_leader=term is not None, token=term.token if term else None, t_read=t_read)
        time.sleep(every)


def _follower(args: argparse.Namespace, store: leadership.Store) -> None:
    # Two followers, one per stream: terms() ("leader" events, with the token) and
    # follow_election() ("name" events), since each stream has one consumer. They watch on their
    # own, so one may see a term the other missed; compare each only with itself.
    follower = leadership.Follower(store, args.key)
    names = leadership.Follower(store, args.key)

    def stream() -> None:
        try:
            for term in follower.terms():
                emit("leader", leader=term.leader if term else None, token=term.token if term else None)
            emit("ended")
        except Exception as exc:  # noqa: BLE001
            emit("error", error=f"{type(exc).__name__}: {exc}")

    def name_stream() -> None:
        try:
            for name in names.follow_election():
                emit("name", leader=name)
        except Exception as exc:  # noqa: BLE001
            emit("error", error=f"follow_election: {type(exc).__name__}: {exc}")

    threading.Thread(target=stream, daemon=True).start()
    threading.Thread(target=name_stream, daemon=True).start()
    emit("ready")
    for line in sys.stdin:
        if line.strip() == "stop":
            names.stop()
            follower.stop()
            emit("stopped")
            break


def _connect(url: str) -> leadership.Store:
    """Connect as a service under a supervisor would: a store this process cannot reach when it
    starts (a partition or a store outage that began before it, as the fault campaign makes) is
    retried, not fatal. A test that needs the agent waits for its ``ready`` event, with a
    deadline of its own."""
    while True:
        try:
            return leadership.connect(url, plugin_manager=recording_plugin_manager(emit))
        except leadership.StoreUnavailableError as exc:
            logging.getLogger("leadership_conformance.agent").warning("%s; connecting again", exc)
            emit("connect_retry", error=str(exc))
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--name", default="")
    parser.add_argument("--ttl", type=float, default=15.0)
    parser.add_argument("--follower", action="store_true")
    parser.add_argument("--history", default="", help="append every event to this JSON-lines file")
    parser.add_argument("--sample", type=float, default=0.0, help="read is_leader every SAMPLE seconds")
    args = parser.parse_args()
    if args.history:
        global _history
        # Open for the process's life; every line is flushed, so a SIGKILL loses nothing written.
        _history = (open(args.history, "a", encoding="utf-8"), args.name or "follower", args.key)  # noqa: SIM115
    # INFO by default: a failing test shows the agent's last lines, retries and elections included.
    level = os.environ.get("LEADERSHIP_AGENT_LOG_LEVEL", "INFO").upper()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    log_dir = os.environ.get("LEADERSHIP_AGENT_LOG_DIR")
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        name = "follower" if args.follower else args.name
        handlers.append(logging.FileHandler(os.path.join(log_dir, f"{args.key.replace('/', '_')}-{name}.log")))
    logging.basicConfig(level=level, handlers=handlers, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    store = _connect(args.url)
    try:
        (_follower if args.follower else _candidate)(args, store)
    finally:
        store.close()


if __name__ == "__main__":
    main()
