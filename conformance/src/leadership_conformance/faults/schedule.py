"""A seeded random fault schedule: the same seed gives the same schedule.

A schedule is a list of :class:`Fault` specs (start offset, kind, which key, a number in [0, 1)
that picks the target among those that fit when the fault starts, a duration and a parameter).
Targets are roles (the leader of a key, a waiter, any agent), resolved at run time: the same
seed replays the same sequence of fault kinds, roles and timings.
"""

from __future__ import annotations

import dataclasses
import random

__all__ = ["AGENT_KINDS", "CLUSTER_KINDS", "STORE_KINDS", "Fault", "make_schedule"]

#: Faults of one agent process or of its link.
AGENT_KINDS = ("kill_leader", "kill_waiter", "stop_leader", "partition", "cut", "reset", "latency")
#: Faults of the whole store, or of many agents at once.
STORE_KINDS = ("store_pause", "store_restart", "resign_storm")
#: With a store cluster: the store's own leader member killed, then started again.
CLUSTER_KINDS = ("member_kill",)

#: Relative frequency of each kind.
_WEIGHTS = {
    "kill_leader": 3,
    "kill_waiter": 2,
    "stop_leader": 2,
    "partition": 4,
    "cut": 3,
    "reset": 3,
    "latency": 2,
    "store_pause": 1,
    "store_restart": 1,
    "resign_storm": 2,
    "member_kill": 2,
}


@dataclasses.dataclass(frozen=True)
class Fault:
    #: Seconds after the campaign starts.
    at: float
    kind: str
    #: Index of the key the fault is about (leader/waiter roles), or of nothing.
    key: int
    #: Picks the target among the fitting ones at run time (index = int(pick * len)).
    pick: float
    #: How long the fault lasts (0 for instant ones).
    duration: float
    #: Kind-specific: latency in ms, heal with a reset (1) or not (0), resigns in a storm.
    param: float


def make_schedule(seed: int, duration: float, ttl: float, keys: int, *, cluster: bool) -> list[Fault]:
    """Faults starting in [ttl, duration - ttl], arriving every ~ttl/2 on average, overlapping."""
    rng = random.Random(seed)
    kinds = [*AGENT_KINDS, *STORE_KINDS, *(CLUSTER_KINDS if cluster else ())]
    weights = [_WEIGHTS[k] for k in kinds]
    faults: list[Fault] = []
    t = ttl
    while True:
        t += rng.expovariate(2.0 / ttl)
        if t > duration - ttl:
            return faults
        kind = rng.choices(kinds, weights)[0]
        if kind == "stop_leader":
            length = ttl * rng.uniform(1.1, 1.6)  # past the ttl: the leader must demote itself
        elif kind in ("reset",):
            length = 0.0
        elif kind == "store_restart":
            length = 0.0  # as long as the restart takes
        else:
            length = rng.uniform(0.3, 2 * ttl)
        if kind == "latency":
            param = rng.uniform(5, 1000 * ttl / 12)  # each way: a round trip under ttl/6
        elif kind == "resign_storm":
            param = float(rng.randint(3, 8))
        else:
            param = float(rng.random() < 0.5)  # partition / cut: heal with a reset or not
        faults.append(Fault(round(t, 3), kind, rng.randrange(keys), rng.random(), round(length, 3), round(param, 3)))
