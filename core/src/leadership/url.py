"""Store URLs: ``scheme://host:port[,host:port...][/path][?option=value&...]``."""

from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from .errors import ConfigurationError

__all__ = ["Endpoint", "StoreURL"]

_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")
_T = TypeVar("_T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclasses.dataclass(frozen=True)
class Endpoint:
    host: str
    port: int | None

    def with_default_port(self, port: int) -> Endpoint:
        return self if self.port is not None else Endpoint(self.host, port)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclasses.dataclass
class StoreURL:
    """A parsed store URL. Backends read their options with :meth:`option` and end with
    :meth:`reject_unknown_options`, so a misspelt option is an error, not silently ignored."""

    scheme: str
    endpoints: list[Endpoint]
    path: str
    options: dict[str, str]
    username: str | None = None
    password: str | None = None
    raw: str = ""

    @classmethod
    def parse(cls, url: str) -> StoreURL:
        if not isinstance(url, str):
            raise ConfigurationError(f"store URL must be a str, got {type(url).__name__}")
        if "://" not in url:
            raise ConfigurationError(
                f"store URL {url!r} has no scheme: expected 'scheme://host:port', e.g. 'etcd://127.0.0.1:2379'"
            )
        scheme, rest = url.split("://", 1)
        scheme = scheme.lower()
        if not _SCHEME.match(scheme):
            raise ConfigurationError(f"store URL {url!r}: invalid scheme {scheme!r}")
        # The query first: option values may contain slashes (file paths).
        rest, _, query = rest.partition("?")
        netloc, sep, tail = rest.partition("/")
        path = sep + tail
        username = password = None
        if "@" in netloc:
            userinfo, netloc = netloc.rsplit("@", 1)
            user, _, pw = userinfo.partition(":")
            username = urllib.parse.unquote(user) or None
            password = urllib.parse.unquote(pw) if pw else None
        endpoints = [cls._endpoint(url, part) for part in netloc.split(",")] if netloc else []
        try:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
        except ValueError as exc:
            raise ConfigurationError(f"store URL {url!r}: malformed query string: {exc}") from None
        options: dict[str, str] = {}
        for k, v in pairs:
            if k in options:
                raise ConfigurationError(f"store URL {url!r}: option {k!r} given twice")
            options[k] = v
        return cls(scheme, endpoints, urllib.parse.unquote(path), options, username, password, url)

    @staticmethod
    def _endpoint(url: str, part: str) -> Endpoint:
        part = part.strip()
        if not part:
            raise ConfigurationError(f"store URL {url!r}: empty host in the host list")
        if part.startswith("["):
            host, _, port_s = part[1:].partition("]")
            port_s = port_s.removeprefix(":")
        elif part.count(":") == 1:
            host, port_s = part.split(":")
        elif ":" in part:
            raise ConfigurationError(f"store URL {url!r}: IPv6 hosts must be bracketed, e.g. [::1]:2379")
        else:
            host, port_s = part, ""
        if not host or not re.match(r"^[A-Za-z0-9._:%-]+$", host):
            raise ConfigurationError(f"store URL {url!r}: invalid host {host!r}")
        port: int | None = None
        if port_s:
            if not port_s.isdigit() or not 0 < int(port_s) < 65536:
                raise ConfigurationError(f"store URL {url!r}: invalid port {port_s!r} (1-65535)")
            port = int(port_s)
        return Endpoint(host, port)

    def endpoints_or(self, default: Endpoint) -> list[Endpoint]:
        """The endpoints with ``default``'s port filled in, or ``[default]`` when the URL has none."""
        if not self.endpoints:
            return [default]
        assert default.port is not None
        return [e.with_default_port(default.port) for e in self.endpoints]

    @overload
    def option(self, name: str) -> str | None: ...
    @overload
    def option(
        self, name: str, convert: Callable[[str], _T], default: None = None, *, allowed: str = ""
    ) -> _T | None: ...
    @overload
    def option(self, name: str, convert: Callable[[str], _T], default: _T, *, allowed: str = "") -> _T: ...
    def option(
        self,
        name: str,
        convert: Callable[[str], Any] = str,
        default: Any = None,
        *,
        allowed: str = "",
    ) -> Any:
        """Pop option ``name`` converted with ``convert``; a conversion failure names what is allowed."""
        if name not in self.options:
            return default
        raw = self.options.pop(name)
        try:
            return convert(raw)
        except (ValueError, TypeError) as exc:
            hint = f" (allowed: {allowed})" if allowed else ""
            raise ConfigurationError(f"store URL option {name}={raw!r} is invalid{hint}: {exc}") from None

    def reject_unknown_options(self, known: Mapping[str, str] | None = None) -> None:
        if self.options:
            names = ", ".join(sorted(self.options))
            allowed = ", ".join(sorted(known)) if known else "none"
            raise ConfigurationError(f"{self.scheme}:// URL has unknown option(s) {names}; allowed options: {allowed}")

    def redacted(self) -> str:
        """The URL with any password replaced, safe for logs."""
        if self.password is None and "token" not in self.raw and "password" not in self.raw:
            return self.raw
        hosts = ",".join(str(e) for e in self.endpoints)
        user = f"{self.username}:***@" if self.username else ""
        return f"{self.scheme}://{user}{hosts}{self.path}"


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")


def parse_seconds(value: str) -> float:
    v = float(value.removesuffix("s"))
    if not v > 0 or v != v or v == float("inf"):
        raise ValueError("expected a positive number of seconds")
    return v
