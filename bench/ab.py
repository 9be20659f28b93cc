"""Two or more versions of leadership against each other and the store's peer, in one run.

    python bench/ab.py zookeeper --tree before=/path/to/old/checkout --tree after=. [--rounds 100]

Each ``--tree NAME=PATH`` is a checkout of this repository: its contenders import the core and
the plugins from that checkout (``PYTHONPATH``; everything else comes from the running
environment, ``nox -s bench``'s). Each tree gets its own pair of processes (as in
bench/handover.py), and so does the peer (kazoo's ``Election`` on ZooKeeper, ``etcdctl elect``,
``consul lock``); every round times one graceful handover of each, in a shuffled order, on the
same server. Sequential runs on this machine drift by more than the differences measured here
(the server's write latency moves from run to run), so only handovers timed side by side are
compared: the table gives each contender's p50/p90 and, per pair, the median of the paired
differences.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import handover
import tools


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", choices=sorted(handover.PEERS))
    parser.add_argument("--tree", action="append", required=True, help="NAME=PATH of a checkout")
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--settle", type=float, default=0.3)
    args = parser.parse_args()
    trees: dict[str, Path] = {}
    for spec in args.tree:
        name, sep, path = spec.partition("=")
        if not sep or not name or not (Path(path) / "core" / "src" / "leadership").is_dir():
            parser.error(f"--tree {spec!r}: expected NAME=PATH of a checkout of this repository")
        trees[name] = Path(path).resolve()
    peer = handover.PEERS[args.store]
    if peer in trees:
        parser.error(f"{peer!r} names the peer; choose another tree name")
    server = tools.start_server(args.store)
    plain = tools.env()
    pairs: dict[str, handover.Pair] = {}
    try:
        for name, tree in trees.items():
            # The core and every plugin (plugins are loaded by entry point, all of them).
            paths = [str(tree / "core" / "src"), *sorted(str(p) for p in tree.glob("plugins/*/src"))]
            env = {**plain, "PYTHONPATH": os.pathsep.join([*paths, *filter(None, [plain.get("PYTHONPATH")])])}
            tools.env = lambda env=env: env  # type: ignore[misc]  # what handover.Proc starts with
            pairs[name] = handover.Pair("ours", server.url, handover.TTL[args.store])
        tools.env = lambda: plain
        pairs[peer] = handover.Pair(peer, server.url, handover.TTL[args.store])
        time.sleep(1.0)
        samples: dict[str, list[float]] = {name: [] for name in pairs}
        load = [os.getloadavg()[0]]
        order = list(pairs)
        for i in range(args.warmup + args.rounds):
            random.shuffle(order)
            for name in order:
                took = pairs[name].handover()
                if i >= args.warmup:
                    samples[name].append(1000 * took)
                time.sleep(args.settle)
        load.append(os.getloadavg()[0])
    finally:
        for pair in pairs.values():
            pair.close()
        server.stop()
    print(f"\n{args.store}: {args.rounds} handovers each, side by side (load average {load[0]:.1f}-{load[-1]:.1f})")
    print("| contender | p50 | p90 |\n|---|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values):.2f} ms | {handover.pct(values, 0.9):.2f} ms |")
    print("\n| pair | median paired difference | p50 ratio |\n|---|---|---|")
    named = list(trees)
    compared = [(name, peer) for name in named] + [(b, a) for i, a in enumerate(named) for b in named[i + 1 :]]
    for a, b in compared:
        diffs = [x - y for x, y in zip(samples[a], samples[b], strict=True)]
        ratio = statistics.median(samples[a]) / statistics.median(samples[b])
        print(f"| {a} - {b} | {statistics.median(diffs):+.2f} ms | {ratio:.3f} |")

if __name__ == "__main__":
    main()
