"""The history checker: what a fault campaign must prove, from what the agents recorded.

Input (:class:`History`): the agents' events (JSON lines written by ``agent.py --history``: ``t``
on the machine's CLOCK_MONOTONIC, ``agent``, ``key``, ``event`` and its fields) and the
campaign's own records: ``fault`` (``kind``, ``target``, ``start``, ``end``), ``killed`` /
``frozen`` / ``thawed`` (``agent``), ``stopping`` (the campaign asked the agents to stop),
``truth`` (``key``, ``leader``, ``token``: who leads after quiescence), ``leftovers`` (``key``,
``entries``: what the store still held after every agent stopped).

Checks (each violation names its kind):

- ``overlap``: two agents believed they led the same key at the same time: elected->demoted
  intervals from the observer hooks (zero tolerance), and sampled ``is_leader`` reads that
  returned True while another agent's interval covered the whole read;
- ``token``: fencing tokens do not strictly increase with election order on a key;
- ``recovery``: after a fault healed (with no other fault active), no agent led the key within
  the bound;
- ``dead``: a stream ended or failed, or an agent exited, without the campaign stopping it; an
  unhandled exception or "Task was destroyed" in an agent's log;
- ``follower``: after quiescence a follower does not report the true leader;
- ``leftover``: the store still holds entries after every agent stopped.

A SIGSTOPped process cannot act: its leadership counts until the freeze. Thawed after its
deadline, it must demote itself as soon as it runs (within THAW_DEMOTION_BOUND; its observer
hook may trail the thaw by the time its loop needs to run, while its ``is_leader`` reads are
False at once and are checked one by one); if it still leads later, its leadership counts again
from the thaw, and any rival elected meanwhile is an overlap.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

__all__ = ["History", "Interval", "Report", "Violation", "check", "load_history"]

Event = dict[str, Any]

#: Log lines that mean something died or failed unhandled.
_LOG_PROBLEMS = re.compile(
    r"Traceback \(most recent call last\)|Task was destroyed|exception was never retrieved|Exception in callback"
)


@dataclasses.dataclass(frozen=True)
class Interval:
    agent: str
    key: str
    start: float
    end: float
    token: int | None
    #: The part of a term after a freeze (not a new election: the token check skips it).
    resumed: bool = False


@dataclasses.dataclass(frozen=True)
class Violation:
    kind: str
    key: str
    t: float
    detail: str


@dataclasses.dataclass
class History:
    #: Agents' events, any order.
    events: list[Event]
    #: Campaign records (faults, kills, freezes, truth, leftovers, stopping).
    records: list[Event]
    #: Agent name -> log text (for unhandled errors).
    logs: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Recovery bound after a healed fault (ttl + slack).
    recovery_bound: float = 5.0
    #: Time the recording ended (open intervals end here).
    end: float | None = None


@dataclasses.dataclass
class Report:
    violations: list[Violation]
    intervals: list[Interval]
    recoveries: list[float]
    faults: dict[str, int]
    elections: int
    samples: int

    @property
    def ok(self) -> bool:
        return not self.violations

    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("overlap", "token", "recovery", "dead", "follower", "leftover")}
        for v in self.violations:
            out[v.kind] = out.get(v.kind, 0) + 1
        return out

    def recovery_stats(self) -> tuple[float, float, float] | None:
        if not self.recoveries:
            return None
        xs = sorted(self.recoveries)
        p99 = xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))]
        return statistics.median(xs), p99, xs[-1]

    def table(self) -> str:
        """The report as plain-text tables."""
        lines = ["faults injected", "  kind                 count"]
        for kind, n in sorted(self.faults.items()):
            lines.append(f"  {kind:<20} {n:>5}")
        lines.append(f"  {'total':<20} {sum(self.faults.values()):>5}")
        lines += ["", "checks", "  check                violations"]
        names = {
            "overlap": "one leader at a time",
            "token": "tokens increase",
            "recovery": "recovery in bound",
            "dead": "nothing died",
            "follower": "followers agree",
            "leftover": "store left clean",
        }
        for kind, n in self.counts().items():
            lines.append(f"  {names.get(kind, kind):<20} {n:>5}")
        stats = self.recovery_stats()
        lines.append("")
        if stats:
            p50, p99, mx = stats
            lines.append(
                f"recovery after healed faults: n={len(self.recoveries)} p50 {p50:.2f}s p99 {p99:.2f}s "
                f"max {mx:.2f}s (bound {self._bound:.2f}s)"
            )
        else:
            lines.append("recovery after healed faults: none measured")
        lines.append(f"elections {self.elections}, is_leader samples {self.samples}")
        if self.violations:
            lines += ["", "violations"]
            for v in self.violations[:50]:
                lines.append(f"  [{v.kind}] {v.key} t={v.t:.3f}: {v.detail}")
            if len(self.violations) > 50:
                lines.append(f"  ... and {len(self.violations) - 50} more")
        return "\n".join(lines)

    _bound: float = 0.0


def load_history(directory: str, recovery_bound: float) -> History:
    """Read ``*.jsonl`` agent histories, ``campaign.jsonl`` and ``*.log`` from ``directory``."""
    events: list[Event] = []
    records: list[Event] = []
    logs: dict[str, str] = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.endswith(".jsonl"):
            with open(path, encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
            (records if name == "campaign.jsonl" else events).extend(rows)
        elif name.endswith(".log"):
            with open(path, encoding="utf-8", errors="replace") as f:
                logs[name[: -len(".log")]] = f.read()
    return History(events, records, logs, recovery_bound)


def _by(records: Iterable[Event], kind: str) -> list[Event]:
    return [r for r in records if r.get("event") == kind]


def _intervals(history: History, end: float) -> tuple[list[Interval], list[Violation]]:
    """Leadership intervals per (agent, key), from the observer hooks."""
    violations: list[Violation] = []
    cut_points: dict[str, list[float]] = defaultdict(list)  # agent -> kill times
    for r in _by(history.records, "killed"):
        cut_points[r["agent"]].append(r["t"])
    per: dict[tuple[str, str], list[Event]] = defaultdict(list)
    for e in history.events:
        if e["event"] in ("transition", "ready"):
            per[(e["agent"], e["key"])].append(e)
    raw: list[Interval] = []
    for (agent, key), evs in per.items():
        evs.sort(key=lambda e: e["t"])
        kills = sorted(cut_points.get(agent, []))
        start: Event | None = None
        for e in evs:
            if start is not None:
                killed = [k for k in kills if start["t"] <= k <= e["t"]]
                if killed:  # the process died while leading: its belief ended with it
                    raw.append(Interval(agent, key, start["t"], killed[0], start.get("token")))
                    start = None
            if e["event"] == "ready":
                if start is not None:  # a new incarnation, no kill recorded: it may have led until now
                    raw.append(Interval(agent, key, start["t"], e["t"], start.get("token")))
                start = None
            elif e["value"] and start is None:
                start = e
            elif not e["value"] and start is not None:
                raw.append(Interval(agent, key, start["t"], e["t"], start.get("token")))
                start = None
        if start is not None:
            killed = [k for k in kills if k >= start["t"]]
            raw.append(Interval(agent, key, start["t"], killed[0] if killed else end, start.get("token")))
    return _clip_frozen(history, raw), violations


#: A leader thawed after its deadline passed demotes itself as soon as its loop runs again;
#: a demotion later than this after the thaw counts as leading on after the thaw.
THAW_DEMOTION_BOUND = 1.0


def _clip_frozen(history: History, intervals: list[Interval]) -> list[Interval]:
    """A SIGSTOPped process cannot act: its leadership counts until the freeze. If it demotes
    itself within THAW_DEMOTION_BOUND of the thaw (its deadline passed while frozen; its reads
    after the thaw are still checked one by one), that is all; if it still leads after that,
    its leadership counts again from the thaw."""
    freezes: dict[str, list[tuple[float, float]]] = defaultdict(list)
    frozen_at: dict[str, float] = {}
    for r in sorted([*_by(history.records, "frozen"), *_by(history.records, "thawed")], key=lambda r: r["t"]):
        if r["event"] == "frozen":
            frozen_at[r["agent"]] = r["t"]
        elif r["agent"] in frozen_at:
            freezes[r["agent"]].append((frozen_at.pop(r["agent"]), r["t"]))
    for agent, fs in frozen_at.items():
        freezes[agent].append((fs, float("inf")))
    out = []
    for iv in intervals:
        pieces = [iv]
        for fs, fe in sorted(freezes.get(iv.agent, [])):
            last = pieces[-1]
            if not (last.start <= fs < last.end):
                continue
            pieces[-1] = dataclasses.replace(last, end=fs)
            if last.end > fe + THAW_DEMOTION_BOUND:
                pieces.append(dataclasses.replace(last, start=fe, resumed=True))
        out.extend(pieces)
    return out


def _check_overlap(intervals: list[Interval], samples: list[Event]) -> list[Violation]:
    out: list[Violation] = []
    by_key: dict[str, list[Interval]] = defaultdict(list)
    for iv in intervals:
        by_key[iv.key].append(iv)
    for key, ivs in by_key.items():
        ivs.sort(key=lambda i: i.start)
        for i, a in enumerate(ivs):
            for b in ivs[i + 1 :]:
                if b.start >= a.end:
                    break
                if b.agent != a.agent:
                    out.append(
                        Violation(
                            "overlap",
                            key,
                            b.start,
                            f"{a.agent} led {a.start:.4f}-{a.end:.4f} (token {a.token}) and {b.agent} from "
                            f"{b.start:.4f} (token {b.token}): {1000 * (min(a.end, b.end) - b.start):.2f} ms overlap",
                        )
                    )
    for s in samples:
        if not s.get("is_leader"):
            continue
        lo, hi = float(s["t_read"] if "t_read" in s else s["t"]), float(s["t"])
        for iv in by_key.get(s["key"], []):
            if iv.agent != s["agent"] and iv.start <= lo and iv.end >= hi:
                out.append(
                    Violation(
                        "overlap",
                        s["key"],
                        lo,
                        f"{s['agent']} read is_leader == True (token {s.get('token')}) at {lo:.4f} while "
                        f"{iv.agent} led {iv.start:.4f}-{iv.end:.4f} (token {iv.token})",
                    )
                )
    return out


def _check_tokens(intervals: list[Interval]) -> list[Violation]:
    out: list[Violation] = []
    by_key: dict[str, list[Interval]] = defaultdict(list)
    for iv in intervals:
        if not iv.resumed:
            by_key[iv.key].append(iv)
    for key, ivs in by_key.items():
        ivs.sort(key=lambda i: i.start)
        for a, b in itertools.pairwise(ivs):
            if a.token is None or b.token is None or b.token <= a.token:
                out.append(
                    Violation(
                        "token",
                        key,
                        b.start,
                        f"{b.agent} elected at {b.start:.4f} with token {b.token} after {a.agent}'s {a.token}",
                    )
                )
    return out


def _check_recovery(history: History, intervals: list[Interval], end: float) -> tuple[list[Violation], list[float]]:
    """Each time the last fault that could keep a key leaderless heals (store faults, resign
    storms, and faults of that key's candidates; not latency, not followers): how long until
    some agent leads it. Keys already led at that moment are not counted."""
    faults = sorted(_by(history.records, "fault"), key=lambda f: f["end"])
    keys = sorted({iv.key for iv in intervals} | {r["key"] for r in _by(history.records, "truth")})
    stopping = min([r["t"] for r in _by(history.records, "stopping")], default=end)
    out: list[Violation] = []
    recoveries: list[float] = []
    for key in keys:
        relevant = [f for f in faults if f.get("blocks", True) and f.get("key", key) == key]
        for f in relevant:
            healed = f["end"]
            if healed >= stopping or any(g is not f and g["start"] <= healed < g["end"] for g in relevant):
                continue  # another fault of this key still active: not a healed state
            next_fault = min([g["start"] for g in relevant if g["start"] > healed], default=stopping)
            led = [iv for iv in intervals if iv.key == key and iv.end > healed]
            first = min((max(iv.start, healed) for iv in led), default=None)
            if first == healed:
                continue  # led when the fault healed
            if first is not None and first <= next_fault:
                took = first - healed
                recoveries.append(took)
                if took > history.recovery_bound:
                    out.append(
                        Violation(
                            "recovery",
                            key,
                            healed,
                            f"no leader until {took:.2f}s after {f['kind']} on {f.get('target')} healed "
                            f"(bound {history.recovery_bound:.2f}s)",
                        )
                    )
            elif next_fault - healed > history.recovery_bound:
                out.append(
                    Violation(
                        "recovery",
                        key,
                        healed,
                        f"no leader in the {next_fault - healed:.2f}s after {f['kind']} on {f.get('target')} "
                        f"healed (bound {history.recovery_bound:.2f}s)",
                    )
                )
    for r in _by(history.records, "truth"):
        if r.get("leader") is None:
            out.append(
                Violation("recovery", r["key"], r["t"], f"not exactly one leader after quiescence: {r.get('leaders')}")
            )
    return out, recoveries


def _check_dead(history: History) -> list[Violation]:
    out: list[Violation] = []
    stopping = min([r["t"] for r in _by(history.records, "stopping")], default=float("inf"))
    for e in history.events:
        if e["event"] == "error" or (e["event"] in ("ended", "exited") and e["t"] < stopping):
            out.append(Violation("dead", e["key"], e["t"], f"{e['agent']}: {e['event']} {e.get('error', '')}".strip()))
    for r in _by(history.records, "exited"):  # exits the campaign did not cause
        out.append(Violation("dead", r.get("key", ""), r["t"], f"{r['agent']} exited with {r.get('code')}"))
    for name, text in history.logs.items():
        for m in _LOG_PROBLEMS.finditer(text):
            line_start = text.rfind("\n", 0, m.start()) + 1
            line_end = text.find("\n", m.end())
            line = text[line_start : line_end if line_end >= 0 else None]
            out.append(Violation("dead", "", 0.0, f"log {name}: {line}"))
    return out


def _check_followers(history: History) -> list[Violation]:
    out: list[Violation] = []
    truth = {r["key"]: r for r in _by(history.records, "truth")}
    checked = {r["t"] for r in truth.values()}
    at = max(checked, default=None)
    for key, r in truth.items():
        followers = {e["agent"] for e in history.events if e["event"] == "leader" and e["key"] == key}
        for agent in sorted(followers):
            seen = [e for e in history.events if e["agent"] == agent and e["key"] == key and e["event"] == "leader"]
            seen = [e for e in seen if at is None or e["t"] <= r["t"]]
            last = max(seen, key=lambda e: e["t"]) if seen else None
            if last is None or (last.get("leader"), last.get("token")) != (r.get("leader"), r.get("token")):
                out.append(
                    Violation(
                        "follower",
                        key,
                        r["t"],
                        f"{agent} reports {last and (last.get('leader'), last.get('token'))} after quiescence; "
                        f"the leader is {(r.get('leader'), r.get('token'))}",
                    )
                )
    return out


def _check_leftovers(history: History) -> list[Violation]:
    return [
        Violation("leftover", r["key"], r["t"], f"store still holds after every agent stopped: {r['entries']}")
        for r in _by(history.records, "leftovers")
        if r.get("entries")
    ]


def check(history: History) -> Report:
    """Every check over ``history``."""
    times = [e["t"] for e in history.events] + [r["t"] for r in history.records if "t" in r]
    end = history.end if history.end is not None else max(times, default=0.0)
    intervals, violations = _intervals(history, end)
    samples = [e for e in history.events if e["event"] in ("sample", "status")]
    violations += _check_overlap(intervals, samples)
    violations += _check_tokens(intervals)
    rec_violations, recoveries = _check_recovery(history, intervals, end)
    violations += rec_violations
    violations += _check_dead(history)
    violations += _check_followers(history)
    violations += _check_leftovers(history)
    faults: dict[str, int] = defaultdict(int)
    for f in _by(history.records, "fault"):
        faults[f["kind"]] += 1
    report = Report(
        sorted(violations, key=lambda v: v.t), sorted(intervals, key=lambda i: i.start), recoveries, dict(faults),
        sum(not iv.resumed for iv in intervals), len(samples),
    )
    report._bound = history.recovery_bound
    return report
