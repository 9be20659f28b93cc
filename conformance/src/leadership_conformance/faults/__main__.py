"""``python -m leadership_conformance.faults <backend> [--duration S] [--seed N] [--cluster]``:
a fault campaign against a throw-away store (or LEADERSHIP_TEST_<STORE>_URL, then without store
faults), its checks as tables, and a timeline PNG. Exit status 1 on any violation."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time

from ..servers import registered_servers, server_for
from .campaign import Campaign
from .checker import load_history
from .timeline import draw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m leadership_conformance.faults", description=__doc__)
    parser.add_argument("backend", choices=sorted(registered_servers()))
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults (default 60)")
    parser.add_argument("--seed", type=int, default=None, help="replay this schedule (default: a fresh seed)")
    parser.add_argument("--cluster", action="store_true", help="a 3-member store; its leader member is killed too")
    parser.add_argument("--out", default="", help="directory for histories, logs and the PNG")
    parser.add_argument("--png", default="", help="where to write the timeline (default <out>/timeline.png)")
    args = parser.parse_args(argv)
    if args.duration <= 0:
        parser.error(f"--duration must be positive, got {args.duration:g}")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    replay = f"nox -s faults -- {args.backend} --duration {args.duration:g} --seed {seed}"
    replay += " --cluster" if args.cluster else ""
    print(f"fault campaign on {args.backend}{' cluster' if args.cluster else ''}: seed {seed} (replay: {replay})")
    sys.stdout.flush()
    out = args.out or os.path.join(".faults", f"{args.backend}{'-cluster' if args.cluster else ''}-{seed}")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    started = time.monotonic()
    with server_for(args.backend, members=3 if args.cluster else 1) as server:
        campaign = Campaign(server, args.backend, duration=args.duration, seed=seed, out=out, cluster=args.cluster)
        print(f"{len(campaign.schedule)} faults scheduled over {args.duration:g}s, ttl {campaign.ttl:g}s, "
              f"recovery bound {campaign.bound:g}s; history in {out}")
        sys.stdout.flush()
        report = campaign.run()
    print(report.table())
    if campaign.skipped:
        print("scheduled but skipped (no fitting target at the time): "
              + ", ".join(f"{k} {n}" for k, n in sorted(campaign.skipped.items())))
    png = args.png or os.path.join(out, "timeline.png")
    title = f"{args.backend}{' cluster' if args.cluster else ''}: seed {seed}, {args.duration:g}s"
    draw(load_history(out, campaign.bound), report, png, title)
    print(f"timeline: {png}; took {time.monotonic() - started:.0f}s")
    verdict = "PASS" if report.ok else f"FAIL ({len(report.violations)} violations)"
    print(f"{verdict}: seed {seed} (replay: {replay})")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
