"""Run a fault campaign: candidate and follower processes on a few keys of a real store, each
behind its own fault link, under a seeded random schedule; then check the recorded history.

Every agent process appends its events to ``<out>/<agent>.jsonl`` and logs to ``<out>/*.log``;
the campaign appends its own records (faults with their windows, kills, freezes, the truth after
quiescence, what the store still holds at the end) to ``<out>/campaign.jsonl``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from typing import Any

import leadership

from ..agents import ProcessAgent
from ..proxy import FaultLink
from .checker import Report, check, load_history
from .schedule import Fault, make_schedule

__all__ = ["Campaign"]

log = logging.getLogger(__name__)


class _NoTarget(Exception):
    """No fitting target when the fault was due: it is counted as skipped."""


class _Agent:
    """One candidate or follower across its incarnations (a kill and restart keeps the name,
    key, link and history file)."""

    def __init__(self, campaign: Campaign, name: str, key: str, *, follower: bool) -> None:
        self.campaign = campaign
        self.name, self.key, self.follower = name, key, follower
        self.link = FaultLink(campaign.server)
        self.proc: ProcessAgent | None = None
        self.lock = threading.Lock()  # one process fault at a time
        self.link_lock = threading.Lock()  # one link fault at a time
        self.expected_exit = False
        self.incarnations: list[tuple[ProcessAgent, bool]] = []

    def start(self) -> None:
        out = self.campaign.out
        args = ["--history", os.path.join(out, f"{self.name}.jsonl")]
        args += ["--name", self.name] if self.follower else ["--sample", "0.1"]
        env = {"LEADERSHIP_AGENT_LOG_DIR": out, "LEADERSHIP_AGENT_LOG_LEVEL": "INFO"}
        # A restart can fall inside a partition of this agent's link or a store outage: the agent
        # keeps trying to connect until the fault heals, so its start may take that long.
        self.proc = ProcessAgent(
            self.link.url,
            self.key,
            self.name,
            self.campaign.ttl,
            follower=self.follower,
            extra_args=args,
            env=env,
            ready_timeout=30.0 + 3 * self.campaign.bound,
        )
        self.expected_exit = False

    def leading(self) -> bool:
        if self.proc is None or self.follower:
            return False
        values = [e for e in self.proc.events if e["event"] == "elected"]
        return bool(values) and bool(values[-1]["value"])

    def unexpected_exits(self) -> list[dict[str, Any]]:
        out = []
        for proc, expected in self.incarnations:
            for e in proc.events:
                if e["event"] == "exited" and not expected:
                    out.append({"t": e["t"], "agent": self.name, "key": self.key, "code": proc.proc.poll()})
        return out


class Campaign:
    def __init__(
        self, server: Any, backend: str, *, duration: float, seed: int, out: str, cluster: bool = False
    ) -> None:
        profile = type(server).fault_profile
        self.server, self.backend, self.duration, self.seed, self.out = server, backend, duration, seed, out
        self.cluster = cluster
        self.ttl = (profile.cluster_ttl or profile.ttl) if cluster else profile.ttl
        self.bound = self.ttl + profile.recovery_slack
        prefix = f"faults/{uuid.uuid4().hex[:8]}"
        self.keys = [f"{prefix}/k{i}" for i in range(2)]
        self.schedule = make_schedule(seed, duration, self.ttl, len(self.keys), cluster=cluster)
        self._records_lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.skipped: dict[str, int] = {}
        os.makedirs(out, exist_ok=True)
        self._records = open(os.path.join(out, "campaign.jsonl"), "a", encoding="utf-8")  # noqa: SIM115
        self.agents: list[_Agent] = []

    # -- records

    def record(self, event: str, **fields: Any) -> None:
        with self._records_lock:
            self._records.write(json.dumps({"t": time.monotonic(), "event": event, **fields}) + "\n")
            self._records.flush()

    def _fault(self, kind: str, target: str, start: float, **fields: Any) -> None:
        self.record("fault", kind=kind, target=target, start=start, end=time.monotonic(), **fields)

    # -- the run

    def run(self, candidates: int = 5, followers: int = 2) -> Report:
        t0 = time.monotonic()
        self.record("start", seed=self.seed, duration=self.duration, ttl=self.ttl, keys=self.keys, t0=t0)
        try:
            for i in range(candidates):
                self.agents.append(_Agent(self, f"c{i}", self.keys[i % len(self.keys)], follower=False))
            for j in range(followers):
                self.agents.append(_Agent(self, f"f{j}", self.keys[j % len(self.keys)], follower=True))
            for agent in self.agents:
                agent.start()
                assert agent.proc is not None
                agent.incarnations.append((agent.proc, False))
            for fault in self.schedule:
                time.sleep(max(0.0, t0 + fault.at - time.monotonic()))
                thread = threading.Thread(target=self._inject, args=(fault,), name=f"fault-{fault.kind}", daemon=True)
                thread.start()
                self._threads.append(thread)
            time.sleep(max(0.0, t0 + self.duration - time.monotonic()))
            for thread in self._threads:
                thread.join(self.ttl * 4 + 120)
            self._quiesce()
        finally:
            self._stop_all()
            self._records.close()
        return check(load_history(self.out, self.bound))

    def _quiesce(self) -> None:
        for agent in self.agents:
            agent.link.heal()
            agent.link.delay(0)
        time.sleep(2 * self.ttl + self.bound)
        for key in self.keys:
            leaders = []
            for agent in self.agents:
                if agent.key == key and not agent.follower and agent.proc is not None:
                    if agent.proc.proc.poll() is not None:
                        continue  # it died: the checker reports its unexpected exit
                    status = agent.proc.status(timeout=10)
                    if status["is_leader"]:
                        leaders.append((agent.name, status["token"]))
            leader, token = leaders[0] if len(leaders) == 1 else (None, None)
            self.record("truth", key=key, leader=leader, token=token, leaders=leaders)

    def _stop_all(self) -> None:
        self.record("stopping")
        for agent in self.agents:
            agent.expected_exit = True
            if agent.proc is not None:
                agent.incarnations[-1] = (agent.proc, True)
                with contextlib.suppress(Exception):
                    agent.proc.thaw()
                    agent.proc.stop(timeout=15)
                agent.proc.close()
        for agent in self.agents:
            for exit_record in agent.unexpected_exits():
                self.record("exited", **{k: v for k, v in exit_record.items() if k != "t"}, at=exit_record["t"])
            agent.link.close()
        with leadership.connect(self.server.url) as store:
            for key in self.keys:
                follower = leadership.Follower(store, key)
                term = next(iter(follower.terms()))
                follower.stop()
                entries = [f"leader {term.leader} token {term.token}"] if term is not None else []
                # The handle's own listing (entries, sessions, leases), where it can tell.
                listed = self.server.leftovers(key) if hasattr(self.server, "leftovers") else None
                entries += listed or []
                self.record("leftovers", key=key, entries=entries, listed=listed is not None)

    # -- faults

    def _pick(self, agents: list[_Agent], fault: Fault) -> _Agent | None:
        return agents[int(fault.pick * len(agents))] if agents else None

    def _skip(self, kind: str) -> None:
        self.skipped[kind] = self.skipped.get(kind, 0) + 1

    def _inject(self, fault: Fault) -> None:
        try:
            getattr(self, f"_do_{fault.kind}")(fault)
        except Exception:
            log.exception("fault %s failed to run", fault)
            self.record("fault_error", kind=fault.kind, fault=dataclasses.asdict(fault))

    def _candidates(self, key: str) -> list[_Agent]:
        return [a for a in self.agents if a.key == key and not a.follower]

    def _do_kill_leader(self, fault: Fault) -> None:
        self._kill(fault, [a for a in self._candidates(self.keys[fault.key]) if a.leading()])

    def _do_kill_waiter(self, fault: Fault) -> None:
        self._kill(fault, [a for a in self._candidates(self.keys[fault.key]) if not a.leading()])

    def _kill(self, fault: Fault, fitting: list[_Agent]) -> None:
        agent = self._pick([a for a in fitting if not a.lock.locked()], fault)
        if agent is None or not agent.lock.acquire(blocking=False):
            return self._skip(fault.kind)
        try:
            assert agent.proc is not None
            start = time.monotonic()
            agent.incarnations[-1] = (agent.proc, True)
            agent.proc.kill()
            self.record("killed", agent=agent.name, key=agent.key)
            agent.proc.close()
            time.sleep(fault.duration)
            agent.start()
            agent.incarnations.append((agent.proc, False))
            self._fault(fault.kind, agent.name, start, key=agent.key)
        finally:
            agent.lock.release()

    def _do_stop_leader(self, fault: Fault) -> None:
        fitting = [a for a in self._candidates(self.keys[fault.key]) if a.leading() and not a.lock.locked()]
        agent = self._pick(fitting, fault)
        if agent is None or not agent.lock.acquire(blocking=False):
            return self._skip(fault.kind)
        try:
            assert agent.proc is not None
            start = time.monotonic()
            agent.proc.freeze()
            self.record("frozen", agent=agent.name, key=agent.key)
            time.sleep(fault.duration)
            self.record("thawed", agent=agent.name, key=agent.key)
            agent.proc.thaw()
            self._fault(fault.kind, agent.name, start, key=agent.key)
        finally:
            agent.lock.release()

    def _link_fault(self, fault: Fault, apply: str) -> None:
        agent = self._pick([a for a in self.agents if not a.link_lock.locked()], fault)
        if agent is None or not agent.link_lock.acquire(blocking=False):
            return self._skip(fault.kind)
        try:
            start = time.monotonic()
            if apply == "reset":
                agent.link.reset()
            elif apply == "latency":
                agent.link.delay(fault.param)
                time.sleep(fault.duration)
                agent.link.delay(0)
            else:
                getattr(agent.link, apply)()
                time.sleep(fault.duration)
                agent.link.heal(reset=bool(fault.param))
            # Latency under ttl/6 and a follower's faults cannot keep a key leaderless.
            blocks = apply != "latency" and not agent.follower
            self._fault(fault.kind, agent.name, start, key=agent.key, param=fault.param, blocks=blocks)
        finally:
            agent.link_lock.release()

    def _do_partition(self, fault: Fault) -> None:
        self._link_fault(fault, "partition")

    def _do_cut(self, fault: Fault) -> None:
        self._link_fault(fault, "cut")

    def _do_reset(self, fault: Fault) -> None:
        self._link_fault(fault, "reset")

    def _do_latency(self, fault: Fault) -> None:
        self._link_fault(fault, "latency")

    def _store_fault(self, fault: Fault, run: Any) -> None:
        if not getattr(self.server, "can_inject_faults", False) or not self._store_lock.acquire(blocking=False):
            return self._skip(fault.kind)
        try:
            start = time.monotonic()
            try:
                target = run()
            except _NoTarget:
                return self._skip(fault.kind)
            self._fault(fault.kind, target or "store", start)
        finally:
            self._store_lock.release()

    def _do_store_pause(self, fault: Fault) -> None:
        def run() -> None:
            self.server.pause()
            try:
                time.sleep(fault.duration)
            finally:
                self.server.unpause()

        self._store_fault(fault, run)

    def _do_store_restart(self, fault: Fault) -> None:
        self._store_fault(fault, self.server.restart)

    def _do_member_kill(self, fault: Fault) -> None:
        def run() -> str:
            victim = self.server.leader_member()
            if victim is None:  # mid-election: nobody to kill this time
                raise _NoTarget
            self.server.kill_member(victim)
            try:
                time.sleep(fault.duration)
            finally:
                self.server.start_member(victim)
            return f"member {victim}"

        self._store_fault(fault, run)

    def _do_resign_storm(self, fault: Fault) -> None:
        start = time.monotonic()
        n = int(fault.param)
        rng_pick = fault.pick
        for i in range(n):
            leaders = [a for a in self.agents if a.leading() and not a.lock.locked()]
            agent = self._pick(leaders, dataclasses.replace(fault, pick=(rng_pick + i / n) % 1.0))
            if agent is not None and agent.proc is not None:
                with contextlib.suppress(Exception):
                    agent.proc.command("resign")
            time.sleep(fault.duration / n)
        self._fault(fault.kind, "leaders", start, param=n)
