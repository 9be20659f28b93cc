"""Hook specifications. Plugins implement them with ``@leadership.hookimpl``.

Backends are contributed through :func:`leadership_register_backends`; the other hooks observe
elections (metrics, logging, audit) without touching the core. Observer hooks run on the event
loop that drives the election: keep them fast and non-blocking. An exception raised by an
observer is logged and otherwise ignored; it never disturbs an election.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .registry import BackendRegistry

__all__ = [
    "hookspec",
    "leadership_demoted",
    "leadership_elected",
    "leadership_leader_changed",
    "leadership_register_backends",
    "leadership_session_refreshed",
    "leadership_store_error",
]

hookspec = pluggy.HookspecMarker("leadership")


@hookspec
def leadership_register_backends(register: BackendRegistry) -> None:
    """Register the store backends this plugin provides.

    :param register: the core's registry; call ``register.add(scheme, factory, ...)`` once per
        URL scheme. The core validates the scheme and refuses duplicates.
    """


@hookspec
def leadership_elected(key: str, name: str, token: int, store: str) -> None:
    """A candidate in this process became the leader.

    :param key: the election key.
    :param name: the candidate's name.
    :param token: the term's fencing token.
    :param store: the store URL, password redacted.
    """


@hookspec
def leadership_demoted(key: str, name: str, token: int, reason: str, store: str) -> None:
    """A candidate in this process stopped being the leader.

    :param key: the election key.
    :param name: the candidate's name.
    :param token: the fencing token of the term that ended.
    :param reason: why: ``"resigned"``, ``"stopped"``, ``"session_lost"`` (lease expired, or
        could not be confirmed before the deadline) or ``"replaced"`` (the store shows another
        leader or none).
    :param store: the store URL, password redacted.
    """


@hookspec
def leadership_leader_changed(key: str, leader: str | None, token: int | None, store: str) -> None:
    """A follower in this process saw the leader of ``key`` change.

    :param key: the election key.
    :param leader: the new leader's name, or None when nobody leads.
    :param token: the new term's fencing token, or None when nobody leads.
    :param store: the store URL, password redacted.
    """


@hookspec
def leadership_store_error(
    error: BaseException, operation: str, attempt: int, retry_in: float | None, store: str
) -> None:
    """Talking to the store failed.

    :param error: the exception.
    :param operation: what was being done: ``"refresh"``, ``"campaign"``, ``"observe"``, ...
    :param attempt: how many times in a row this operation has failed (1 for the first).
    :param retry_in: seconds until the core retries, or None when it will not (permanent error).
    :param store: the store URL, password redacted.
    """


@hookspec
def leadership_session_refreshed(ttl: float, duration: float, store: str) -> None:
    """The store confirmed a session refresh (a keepalive round trip).

    :param ttl: the session's ttl, in seconds.
    :param duration: seconds from sending the refresh to its confirmation.
    :param store: the store URL, password redacted.
    """
