"""The backend registry the core owns; plugins fill it through ``leadership_register_backends``."""

from __future__ import annotations

import dataclasses
import re

from .backend import BackendFactory
from .errors import BackendRegistrationError

__all__ = ["BackendInfo", "BackendRegistry"]

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    scheme: str
    factory: BackendFactory
    plugin: str
    description: str


class BackendRegistry:
    """Scheme → backend factory. Handed to plugins by the register hook."""

    def __init__(self) -> None:
        self._backends: dict[str, BackendInfo] = {}
        self._current_plugin = "<unknown>"

    def add(self, scheme: str, factory: BackendFactory, *, description: str = "") -> None:
        """Register ``factory`` for URLs ``scheme://...``.

        :raises BackendRegistrationError: the scheme is malformed or already registered.
        """
        if not isinstance(scheme, str) or not _SCHEME.match(scheme):
            raise BackendRegistrationError(
                f"plugin {self._current_plugin!r}: backend scheme {scheme!r} is invalid; "
                "use lowercase letters, digits, '+', '.', '-', starting with a letter"
            )
        if not callable(factory):
            raise BackendRegistrationError(f"plugin {self._current_plugin!r}: factory for {scheme!r} is not callable")
        if scheme in self._backends:
            other = self._backends[scheme].plugin
            raise BackendRegistrationError(
                f"backend {scheme!r} registered twice: by plugin {other!r} and by {self._current_plugin!r}; "
                "uninstall one or block it with LEADERSHIP_DISABLED_PLUGINS"
            )
        self._backends[scheme] = BackendInfo(scheme, factory, self._current_plugin, description)

    def get(self, scheme: str) -> BackendInfo | None:
        return self._backends.get(scheme)

    def schemes(self) -> list[str]:
        return sorted(self._backends)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(sorted(self._backends.values(), key=lambda b: b.scheme))

    def __len__(self) -> int:
        return len(self._backends)
