"""``leadership run``: run a command only while this process leads.

The safety rule: the command is dead before the store could let anyone else win. On a loss of
leadership the command's group gets SIGTERM at once and SIGKILL after ``--grace``, but never later
than the moment the store could expire this process's session:

* the session's deadline passed (the store unreachable, this process stalled): the core demoted
  the candidate at ``deadline`` = last confirmed refresh + the session's guarantee - the safety
  margin; the store cannot expire the session before ``deadline + margin``. SIGKILL goes out by
  ``deadline + margin / 2`` (the other half stays for clock drift between here and the store);
* the store itself said the session is gone, or shows another leader: someone else may lead
  already, so SIGKILL goes out at once.

``--safety-margin`` raises the margin (the candidate then demotes itself earlier), which gives the
command more time to stop after a lost session.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import time
from collections.abc import Sequence
from typing import Any

from .. import aio
from .._session import Generation
from ..candidate import AsyncCandidate
from ..errors import InvalidArgumentError, LeadershipError
from ..plugins import default_plugin_manager, hookimpl
from ._child import Child, KillSwitch, Watchdog
from ._common import EXIT_ERROR, EXIT_USAGE, Reporter

__all__ = ["RunOptions", "Supervisor"]

#: A command that exits sooner than this after a start is restarted only after this long
#: (--on-exit restart), so a command that cannot start does not spin.
RESTART_BACKOFF = 1.0


@dataclasses.dataclass
class RunOptions:
    store: str
    display_store: str
    key: str
    name: str
    ttl: float
    grace: float
    on_exit: str
    command: Sequence[str]
    safety_margin: float | None = None


@dataclasses.dataclass
class Loss:
    """One end of leadership, as the core reported it."""

    reason: str
    at: float
    #: Monotonic time by which the command must be dead.
    kill_by: float
    #: The earliest the store could expire the session (None: it may have already).
    store_expiry: float | None = None


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Supervisor:
    def __init__(self, options: RunOptions, say: Reporter) -> None:
        self.o = options
        self.say = say
        self.candidate: AsyncCandidate | None = None
        self.loss: Loss | None = None
        self.lost = asyncio.Event()
        self.elected = asyncio.Event()
        self.ended: BaseException | None = None
        self.stream_done = False
        self.signalled = asyncio.Event()
        self.signum = 0
        #: The running command, and the session generation it was started on.
        self.child: Child | None = None
        self.leading_on: Generation | None = None

    # -- the core's reports -------------------------------------------------------------------
    @hookimpl
    def leadership_demoted(self, key: str, name: str, token: int, reason: str, store: str) -> None:
        """Called inside the core's demotion, before the stream reports False: the moment to
        read the session deadline the demotion was computed from."""
        if key == self.o.key and name == self.o.name and self.candidate is not None:
            self.loss = self._loss(reason, time.monotonic())

    @hookimpl
    def leadership_session_refreshed(self, ttl: float, duration: float, store: str) -> None:
        # Called before the core extends the deadline: re-arm once it has.
        if self.child is not None:
            asyncio.get_running_loop().call_soon(self._arm)

    def _arm(self) -> None:
        """Arm the kill switch with the moment the command must be dead if the session is not
        confirmed again: half-way between the demotion deadline and the store's earliest expiry
        (the same moment the loss path computes)."""
        candidate, child, gen = self.candidate, self.child, self.leading_on
        if candidate is None or child is None or gen is None or candidate._shared is None:
            return
        if candidate._gen is not gen or not gen.alive():
            return  # lost: the loss path takes over
        margin = candidate._shared._margin(gen.raw)
        self.killswitch.arm(child.pgid, gen.deadline + margin / 2)

    def _loss(self, reason: str, now: float) -> Loss:
        candidate = self.candidate
        assert candidate is not None
        gen, shared = candidate._gen, candidate._shared
        # run resigns and stops only once the command is dead; a command still running meets a
        # loss that is not our doing ("stopped": the election ended on a store error, and the
        # entry is being withdrawn).
        if reason != "session_lost" or gen is None or shared is None or now < gen.deadline - 0.001:
            return Loss(reason, now, now)  # the store let go of us, or is about to: another may lead
        # The deadline passed: the store cannot expire the session before deadline + margin.
        expiry = gen.deadline + shared._margin(gen.raw)
        return Loss(reason, now, min(now + self.o.grace, (gen.deadline + expiry) / 2), expiry)

    async def _pump(self, candidate: AsyncCandidate) -> None:
        try:
            async for elected in candidate.run_for_election():
                if elected:
                    self.lost.clear()
                    self.elected.set()
                else:
                    self.elected.clear()
                    self.lost.set()
        except LeadershipError as exc:
            self.ended = exc
        finally:
            self.stream_done = True
            self.lost.set()
            self.elected.set()

    def _on_signal(self, signum: int) -> None:
        self.signum = signum
        self.signalled.set()

    # -- the loop -------------------------------------------------------------------------------
    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        pm = default_plugin_manager()
        pm.register(self, name="leadership-run")
        self.watchdog = Watchdog()
        self.killswitch = KillSwitch()
        try:
            store = await aio.connect(self.o.store, plugin_manager=pm, safety_margin=self.o.safety_margin)
            try:
                self.candidate = aio.Candidate(store, self.o.key, self.o.name, self.o.ttl)
                pump = asyncio.ensure_future(self._pump(self.candidate))
                try:
                    return await self._supervise(self.candidate)
                finally:
                    if self.child is not None and self.child.returncode is None:
                        # Only an unexpected error gets here with the command alive: never
                        # release leadership while it runs.
                        await self.child.stop(time.monotonic())
                    # Only now, with the command dead: release leadership at once.
                    await self.candidate.stop()
                    await asyncio.gather(pump, return_exceptions=True)
                    self.say("released", f"released {self.o.key}", key=self.o.key, name=self.o.name)
            finally:
                await store.close()
        finally:
            self.killswitch.close()
            self.watchdog.close()
            pm.unregister(self)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    async def _first(self, *aws: Any) -> None:
        tasks = [asyncio.ensure_future(a) for a in aws]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                if not t.done():
                    t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _supervise(self, candidate: AsyncCandidate) -> int:
        self.say(
            "campaigning",
            f"campaigning for {self.o.key} as {self.o.name} on {self.o.display_store} (ttl {self.o.ttl:g}s)",
            key=self.o.key,
            name=self.o.name,
            store=self.o.display_store,
            ttl=self.o.ttl,
        )
        while True:
            await self._first(self.elected.wait(), self.signalled.wait())
            if self.signalled.is_set():
                self.say("signalled", f"got signal {self.signum} while not leading; exiting", signal=self.signum)
                return 128 + self.signum
            if self.stream_done:
                return self._stream_ended()
            term = candidate.term
            if term is None:  # lost again before we got here
                self.elected.clear()
                continue
            status = await self._lead(candidate, term.token)
            if status is not None:
                return status

    def _stream_ended(self) -> int:
        error = self.ended or candidate_error(self.candidate)
        self.say("error", f"the election ended: {error}", error=str(error))
        # Bad input only the store could judge (a ttl below ZooKeeper's server minimum) is still bad input.
        return EXIT_USAGE if isinstance(error, InvalidArgumentError) else EXIT_ERROR

    async def _lead(self, candidate: AsyncCandidate, token: int) -> int | None:
        """Run the command while leading; None to campaign again, else run's exit status."""
        env = dict(os.environ)
        env.update(
            LEADERSHIP_TOKEN=str(token),
            LEADERSHIP_KEY=self.o.key,
            LEADERSHIP_NAME=self.o.name,
            LEADERSHIP_STORE=self.o.display_store,
        )
        self.say("elected", f"elected for {self.o.key} (token {token})", key=self.o.key, name=self.o.name, token=token)
        while True:
            try:
                child = await Child.start(self.o.command, env, self.watchdog)
            except OSError as exc:
                self.say("error", f"cannot start {self.o.command[0]}: {exc}", error=str(exc))
                return 127
            self.say(
                "started", f"started {self.o.command[0]} (pid {child.pid}, token {token})", pid=child.pid, token=token
            )
            self.child, self.leading_on, self.loss = child, candidate._gen, None
            self._arm()
            try:
                outcome, status = await self._watch_child(child)
            finally:
                self.killswitch.disarm()
            self.child = None  # left set on an error: main() kills it before releasing
            if outcome == "lost":
                return None
            if outcome == "end":
                return status
            self.say("exited", f"{self.o.command[0]} exited with status {status}", pid=child.pid, status=status)
            if self.o.on_exit == "exit":
                return status
            if self.o.on_exit == "resign":
                await candidate.resign()
                self.say("resigned", f"resigned {self.o.key}; campaigning again", key=self.o.key)
                return None
            # restart, while still leading
            if time.monotonic() - child.started < RESTART_BACKOFF:
                await self._first(asyncio.sleep(RESTART_BACKOFF), self.lost.wait(), self.signalled.wait())
            if self.signalled.is_set():
                return 128 + self.signum
            if self.lost.is_set() or not candidate.is_leader:
                return None

    async def _watch_child(self, child: Child) -> tuple[str, int]:
        """Until the command ends: ("exited", its status) when it ended by itself, ("end", run's
        exit status) on a signal or when the election ended, ("lost", 0) to campaign again."""
        waiting = asyncio.ensure_future(child.proc.wait())
        await self._first(asyncio.shield(waiting), self.lost.wait(), self.signalled.wait())
        # The kill switch may have acted before this loop saw the loss: a loss all the same.
        if self.killswitch.fired_at is not None or (self.lost.is_set() and not waiting.done()):
            await self._stop_on_loss(child)
            waiting.cancel()
            return ("end", self._stream_ended()) if self.stream_done else ("lost", 0)
        if self.signalled.is_set() and not waiting.done():
            return "end", await self._stop_on_signal(child)
        return "exited", await child.wait()

    async def _stop_on_loss(self, child: Child) -> None:
        loss = self.loss or Loss("stopped", time.monotonic(), time.monotonic())
        self.say(
            "lost",
            f"lost leadership of {self.o.key} ({loss.reason}): stopping {self.o.command[0]} "
            f"(pid {child.pid}), SIGKILL in {max(0.0, loss.kill_by - time.monotonic()):.3f}s",
            key=self.o.key,
            reason=loss.reason,
            pid=child.pid,
            kill_in=round(max(0.0, loss.kill_by - time.monotonic()), 6),
        )
        status, killed = await child.stop(loss.kill_by)
        dead = time.monotonic()
        killed = killed or self.killswitch.fired_at is not None
        self.say(
            "stopped",
            f"{self.o.command[0]} (pid {child.pid}) is dead {1000 * (dead - loss.at):.1f} ms after the loss"
            f"{' (SIGKILL)' if killed else ''}; status {status}",
            pid=child.pid,
            status=status,
            killed=killed,
            reason=loss.reason,
            loss_to_dead=round(dead - loss.at, 6),
            bound=round(loss.kill_by - loss.at, 6),
            store_expiry=None if loss.store_expiry is None else round(loss.store_expiry - loss.at, 6),
        )

    async def _stop_on_signal(self, child: Child) -> int:
        signum = self.signum
        self.say(
            "signalled", f"got signal {signum}: passing it to {self.o.command[0]} (pid {child.pid})", signal=signum
        )
        kill_by = time.monotonic() + self.o.grace
        stopping = asyncio.ensure_future(child.stop(kill_by, first=signum))
        await self._first(asyncio.shield(stopping), self.lost.wait())
        loss = self.loss
        if not stopping.done() and loss is not None and loss.kill_by < kill_by:
            # Leadership lost while the command winds down: the loss's cap applies.
            delay = loss.kill_by - time.monotonic()
            await self._first(asyncio.shield(stopping), asyncio.sleep(max(0.0, delay)))
            if not stopping.done():
                child.signal_group(signal.SIGKILL)
        status, killed = await stopping
        self.say(
            "exited", f"{self.o.command[0]} exited with status {status}", pid=child.pid, status=status, killed=killed
        )
        return status


def candidate_error(candidate: AsyncCandidate | None) -> BaseException | str:
    if candidate is not None and candidate.last_error is not None:
        return candidate.last_error
    return "the candidate stopped"
