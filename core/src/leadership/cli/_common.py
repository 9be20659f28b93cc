"""What every subcommand shares: the store option, checking input before touching the store, and
one-line messages (plain or JSON)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from typing import IO, Any, NoReturn

from .._util import validate_key, validate_name, validate_ttl
from ..plugins import default_plugin_manager, find_backend
from ..url import StoreURL

#: A sidecar's whole configuration can be this one variable.
STORE_ENV = "LEADERSHIP_STORE"
#: The library's default ttl; raised to the store's minimum where that is larger (Consul: 20 s).
DEFAULT_TTL = 15.0

#: Exit statuses: 2 for bad input (as argparse), 1 for a store error, 3 when nobody leads.
EXIT_USAGE = 2
EXIT_ERROR = 1
EXIT_NO_LEADER = 3


class UsageError(Exception):
    """Bad input found before anything touched the store: one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what was wrong and where to read more)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="URL",
        default=None,
        help=f"store URL, e.g. etcd://10.0.0.1:2379 (default: ${STORE_ENV})",
    )


def add_json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON object per line")


def store_url(args: argparse.Namespace) -> str:
    url = args.store or os.environ.get(STORE_ENV)
    if not url:
        raise UsageError(f"no store: give --store URL or set ${STORE_ENV} (e.g. etcd://127.0.0.1:2379)")
    return str(url)


def store_limits(url: str) -> tuple[float, float | None]:
    """Check the URL and its options (no I/O: the backend is built, never opened) and return the
    store's (min_ttl, max_ttl)."""
    parsed = StoreURL.parse(url)
    backend = find_backend(default_plugin_manager(), parsed.scheme).factory(parsed)
    return type(backend).min_ttl, type(backend).max_ttl


def checked_ttl(url: str, ttl: float | None) -> float:
    """``ttl``, or the default raised to the store's minimum; checked against the store's limits."""
    low, high = store_limits(url)
    if ttl is None:
        ttl = DEFAULT_TTL if high is None else min(high, DEFAULT_TTL)
        ttl = max(ttl, low)
    return validate_ttl(ttl, low, high, StoreURL.parse(url).scheme)


def checked_key(key: str) -> str:
    return validate_key(key)


def checked_name(name: str) -> str:
    return validate_name(name)


def redacted(url: str) -> str:
    return StoreURL.parse(url).redacted()


class Reporter:
    """One line per event: ``leadership CMD: text`` or, with ``--json``, a JSON object with the
    event's fields. Flushed at once: a supervisor's log must not lag behind what happened."""

    def __init__(self, prog: str, as_json: bool, stream: IO[str] | None = None) -> None:
        self.prog = prog
        self.as_json = as_json
        self.stream = stream

    def __call__(self, event: str, text: str, **fields: Any) -> None:
        stream = self.stream or sys.stderr
        if self.as_json:
            now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")
            line = json.dumps({"time": now, "event": event, **fields}, default=str)
        else:
            line = f"{self.prog}: {text}"
        print(line, file=stream, flush=True)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number of seconds >= 0")
    return value


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port {value} is out of range (1-65535)")
    return value
