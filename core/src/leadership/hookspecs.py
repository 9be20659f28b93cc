"""Hook specifications, and the ``hookimpl`` marker plugins implement them with.

Backends are contributed through :func:`leadership_register_backends`; the other hooks observe
elections (metrics, logging, audit) without touching the core. Observer hooks are called through
pluggy, so ``tryfirst``/``trylast`` order them and ``wrapper=True`` / ``hookwrapper=True``
implementations wrap the others, as in any pluggy project. They run on the event loop that
drives the election: keep them fast and non-blocking.

An exception raised by an observer marked with ``@leadership.hookimpl`` is logged and otherwise
ignored: the other observers still see the event and the election is never disturbed. (The
marker wraps each observer implementation in its own ``try``; a wrapper that raises before its
``yield`` is skipped, and the implementations it wraps still run.)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar, overload

import pluggy

if TYPE_CHECKING:
    from .registry import BackendRegistry

__all__ = [
    "OBSERVER_HOOKS",
    "hookimpl",
    "hookspec",
    "leadership_demoted",
    "leadership_elected",
    "leadership_leader_changed",
    "leadership_register_backends",
    "leadership_session_refreshed",
    "leadership_store_error",
]

log = logging.getLogger(__name__)
_F = TypeVar("_F", bound=Callable[..., Any])

hookspec = pluggy.HookspecMarker("leadership")
_pluggy_hookimpl = pluggy.HookimplMarker("leadership")

#: The hooks that only observe: an exception in one of their implementations is isolated.
OBSERVER_HOOKS = frozenset(
    {
        "leadership_demoted",
        "leadership_elected",
        "leadership_leader_changed",
        "leadership_session_refreshed",
        "leadership_store_error",
    }
)


def _describe(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def _isolated(fn: Callable[..., Any], hook: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def observer(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            log.exception("observer %s of %s raised; ignored", _describe(fn), hook)
            return None

    return observer


def _isolated_wrapper(fn: Callable[..., Any], hook: str) -> Callable[..., Any]:
    """The same for a wrapper (new or old style): its failure before or after its ``yield`` is
    logged, and the call goes on as if it were not there."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Generator[None, Any, Any]:
        gen = fn(*args, **kwargs)
        try:
            next(gen)
        except Exception:
            log.exception("observer wrapper %s of %s raised before its yield; ignored", _describe(fn), hook)
            return (yield)
        inner = yield  # the inner result (wrapper=True) or pluggy's Result (hookwrapper=True)
        try:
            gen.send(inner)
        except StopIteration as done:
            return done.value if done.value is not None else inner
        except Exception:
            log.exception("observer wrapper %s of %s raised after its yield; ignored", _describe(fn), hook)
            return inner
        gen.close()
        log.error("observer wrapper %s of %s yielded more than once; ignored", _describe(fn), hook)
        return inner

    return wrapper


class HookimplMarker:
    """``@leadership.hookimpl``: pluggy's implementation marker for project ``leadership``, which
    also isolates each observer hook implementation (see the module docstring). Takes the same
    options as :class:`pluggy.HookimplMarker`."""

    project_name = "leadership"

    @overload
    def __call__(
        self,
        function: _F,
        hookwrapper: bool = ...,
        optionalhook: bool = ...,
        tryfirst: bool = ...,
        trylast: bool = ...,
        specname: str | None = ...,
        wrapper: bool = ...,
    ) -> _F: ...
    @overload
    def __call__(
        self,
        function: None = ...,
        hookwrapper: bool = ...,
        optionalhook: bool = ...,
        tryfirst: bool = ...,
        trylast: bool = ...,
        specname: str | None = ...,
        wrapper: bool = ...,
    ) -> Callable[[_F], _F]: ...
    def __call__(
        self,
        function: _F | None = None,
        hookwrapper: bool = False,
        optionalhook: bool = False,
        tryfirst: bool = False,
        trylast: bool = False,
        specname: str | None = None,
        wrapper: bool = False,
    ) -> _F | Callable[[_F], _F]:
        def mark(fn: _F) -> _F:
            hook = specname or fn.__name__
            if hook in OBSERVER_HOOKS:
                fn = (_isolated_wrapper if (wrapper or hookwrapper) else _isolated)(fn, hook)  # type: ignore[assignment]
            return _pluggy_hookimpl(
                fn,
                hookwrapper=hookwrapper,
                optionalhook=optionalhook,
                tryfirst=tryfirst,
                trylast=trylast,
                specname=specname,
                wrapper=wrapper,
            )

        return mark if function is None else mark(function)


hookimpl = HookimplMarker()
"""Marks a plugin's hook implementations: ``@leadership.hookimpl def leadership_elected(...)``;
takes pluggy's options (``tryfirst``, ``trylast``, ``wrapper``, ``hookwrapper``, ...). Observer
implementations marked with it are isolated: an exception in one is logged, the others run."""


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
