"""The ``leadership`` command.

``run`` (a command only while leading), ``watch``, ``status``, ``campaign``, ``demo`` and
``backends``. Input is checked before anything touches the store: a bad key, URL, ttl or command
is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

from .. import __version__
from ..errors import InvalidArgumentError, LeadershipError
from . import query
from ._common import (
    EXIT_ERROR,
    EXIT_USAGE,
    STORE_ENV,
    Parser,
    Reporter,
    UsageError,
    add_json_option,
    add_store_option,
    checked_key,
    checked_name,
    checked_ttl,
    port_number,
    positive_seconds,
    redacted,
    store_url,
)
from .demo import add_demo_parsers
from .run import RunOptions, Supervisor, default_name

__all__ = ["main"]

_EPILOG = {
    "run": """\
        example:
          leadership run --store etcd://10.0.0.1:2379 jobs/nightly -- ./nightly.sh --full

        CMD starts once elected, in its own process group, with LEADERSHIP_TOKEN (the term's
        fencing token), LEADERSHIP_KEY, LEADERSHIP_NAME and LEADERSHIP_STORE in its environment.
        On any loss of leadership it gets SIGTERM, then SIGKILL after --grace, and never later than
        the store could let another candidate win. Exit status: CMD's (--on-exit exit), 128+N
        after signal N, 1 on a store error, 2 on bad input.""",
    "watch": """\
        example:
          leadership watch --store zookeeper://zk1:2181 service/scheduler/leader

        One line per leader change until interrupted; exit 1 on a permanent store error.""",
    "status": """\
        example:
          leadership status --store consul://127.0.0.1:8500 jobs/nightly && echo someone leads

        Prints the leader and token. Exit 0 when someone leads, 3 when nobody does, 1 on a store
        error.""",
    "campaign": """\
        example:
          leadership campaign --store etcd://127.0.0.1:2379 service/scheduler/leader host-a

        Prints elected/demoted as it happens; releases leadership at once on Ctrl-C.""",
}


def _sub(sub: Any, name: str, help_text: str, usage: str | None = None) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        usage=usage,
        help=help_text,
        description=help_text,
        epilog=textwrap.dedent(_EPILOG[name]) if name in _EPILOG else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="leadership",
        description="Distributed leader election: run a command only while it leads, watch an election.",
        epilog=f"The store URL of every command defaults to ${STORE_ENV}. 'leadership COMMAND --help' for more.",
    )
    parser.add_argument("--version", action="version", version=f"leadership {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does (to stderr)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, help="one of:")

    run = _sub(
        sub,
        "run",
        "run a command only while this process leads an election",
        usage="leadership run [--store URL] KEY [options] -- CMD [ARG ...]",
    )
    add_store_option(run)
    run.add_argument("key", metavar="KEY", help="the election key, e.g. jobs/nightly")
    run.add_argument("--name", help="this candidate's name (default: HOSTNAME-PID)")
    run.add_argument(
        "--ttl", type=positive_seconds, help="session ttl in seconds (default: 15, or the store's minimum)"
    )
    run.add_argument(
        "--grace",
        type=positive_seconds,
        metavar="S",
        default=10.0,
        help="seconds between SIGTERM and SIGKILL (default 10); capped on a lost session, see below",
    )
    run.add_argument(
        "--on-exit",
        choices=["exit", "resign", "restart"],
        default="exit",
        help="when CMD exits by itself: release and exit with its status (default), "
        "resign and campaign again, or restart it while leading",
    )
    run.add_argument(
        "--safety-margin",
        type=positive_seconds,
        metavar="S",
        help="seconds the candidate demotes itself before the store could expire its session "
        "(default: ttl/10, at most 1); more gives CMD more time to stop after a lost session",
    )
    run.add_argument(
        "--metrics-port",
        type=port_number,
        metavar="PORT",
        help="serve Prometheus metrics on this port (needs leadership[prometheus])",
    )
    run.add_argument(
        "--metrics-address",
        metavar="ADDR",
        default="0.0.0.0",
        help="address the metrics server listens on (default 0.0.0.0: every interface)",
    )
    add_json_option(run, "run's own messages (stderr)")

    watch = _sub(sub, "watch", "print every change of leader of an election")
    add_store_option(watch)
    watch.add_argument("key", metavar="KEY", help="the election key")
    add_json_option(watch, "each change")

    status = _sub(sub, "status", "print who leads an election; exit 0 if someone does, 3 if nobody")
    add_store_option(status)
    status.add_argument("key", metavar="KEY", help="the election key")
    status.add_argument("--wait", type=positive_seconds, metavar="S", help="wait up to S seconds for someone to lead")
    add_json_option(status, "the answer")

    campaign = _sub(sub, "campaign", "campaign and hold leadership until interrupted")
    add_store_option(campaign)
    campaign.add_argument("key", metavar="KEY", help="the election key")
    campaign.add_argument("name", metavar="NAME", help="this candidate's name")
    campaign.add_argument(
        "--ttl", type=positive_seconds, help="session ttl in seconds (default: 15, or the store's minimum)"
    )
    add_json_option(campaign, "each change")

    add_demo_parsers(sub)
    return parser


def _command(cmd: list[str] | None) -> list[str]:
    if not cmd:
        raise UsageError("no command to run: put it after '--', e.g. leadership run jobs/nightly -- ./nightly.sh")
    program = cmd[0]
    if os.sep in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise UsageError(f"command {program!r} is not an executable file")
    elif shutil.which(program) is None:
        raise UsageError(f"command {program!r} not found on PATH")
    return cmd


def _metrics(port: int | None, address: str) -> None:
    if port is None:
        return
    try:
        import prometheus_client
    except ImportError:
        raise UsageError("--metrics-port needs the Prometheus plugin: pip install 'leadership[prometheus]'") from None
    try:
        prometheus_client.start_http_server(port, addr=address)
    except OSError as exc:
        raise UsageError(f"--metrics-port {port}: {exc.strerror or exc}") from None


def _run(args: argparse.Namespace) -> int:
    url = store_url(args)
    key = checked_key(args.key)
    name = checked_name(args.name) if args.name is not None else default_name()
    ttl = checked_ttl(url, args.ttl)
    if args.safety_margin is not None and args.safety_margin >= ttl / 3:
        raise UsageError(f"--safety-margin {args.safety_margin:g} must be below ttl/3 ({ttl / 3:g}s)")
    options = RunOptions(
        store=url,
        display_store=redacted(url),
        key=key,
        name=name,
        ttl=ttl,
        grace=args.grace,
        on_exit=args.on_exit,
        command=_command(args.cmd),
        safety_margin=args.safety_margin,
    )
    _metrics(args.metrics_port, args.metrics_address)
    return asyncio.run(Supervisor(options, Reporter("leadership run", args.json)).main())


def _watch(args: argparse.Namespace) -> int:
    url = store_url(args)
    key = checked_key(args.key)
    checked_ttl(url, None)  # the URL and its options
    return asyncio.run(query.watch(url, key, args.json))


def _status(args: argparse.Namespace) -> int:
    url = store_url(args)
    key = checked_key(args.key)
    checked_ttl(url, None)
    return asyncio.run(query.status(url, key, args.wait, args.json))


def _campaign(args: argparse.Namespace) -> int:
    url = store_url(args)
    key = checked_key(args.key)
    name = checked_name(args.name)
    ttl = checked_ttl(url, args.ttl)
    return asyncio.run(query.campaign(url, key, name, ttl, args.json))


_COMMANDS = {"run": _run, "watch": _watch, "status": _status, "campaign": _campaign}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the command `run` runs, options and all.
    cmd: list[str] | None = None
    if "--" in argv:
        at = argv.index("--")
        argv, cmd = argv[:at], argv[at + 1 :]
    args = parser.parse_args(argv)
    args.cmd = cmd
    if cmd is not None and args.command != "run":
        parser.error(f"'--' is for the command 'leadership run' runs; {args.command} takes none")
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE if argv else 0
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:
        # kazoo warns about every dropped connection; the core reports what matters (one line).
        logging.getLogger("kazoo").setLevel(logging.ERROR)
    func = _COMMANDS.get(args.command) or args.func
    try:
        return int(func(args))
    except (UsageError, InvalidArgumentError) as exc:
        print(f"leadership {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LeadershipError as exc:
        print(f"leadership {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
