"""Plugin discovery: the hook specs, entry points in group ``leadership``, the built-in backends.

Loading follows one readable sequence: add specs → block names from the environment → load entry
points → register built-ins → check pending hook implementations.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os

import pluggy

from . import hookspecs
from .errors import UnknownBackendError
from .hookspecs import hookimpl
from .registry import BackendInfo, BackendRegistry

__all__ = [
    "DISABLED_PLUGINS_ENV",
    "ENTRY_POINT_GROUP",
    "backend_registry",
    "default_plugin_manager",
    "get_plugin_manager",
    "hookimpl",
    "list_plugin_distinfo",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "leadership"
#: Comma-separated plugin names (entry point names, or "memory") never to load.
DISABLED_PLUGINS_ENV = "LEADERSHIP_DISABLED_PLUGINS"

#: Where the backends this project maintains live, for the "not installed" message.
KNOWN_BACKEND_PACKAGES = {
    "consul": "leadership[consul]",
    "etcd": "leadership[etcd]",
    "zookeeper": "leadership[zookeeper]",
}

_default: pluggy.PluginManager | None = None
_registries: dict[int, BackendRegistry] = {}


def get_plugin_manager(*, load_entrypoints: bool = True) -> pluggy.PluginManager:
    """A fresh plugin manager with the hook specs, installed plugins and built-in backends.

    :param load_entrypoints: load third-party plugins from the ``leadership`` entry point group.
    """
    from .backends import memory

    pm = pluggy.PluginManager("leadership")
    pm.add_hookspecs(hookspecs)
    for name in os.environ.get(DISABLED_PLUGINS_ENV, "").split(","):
        if name.strip():
            pm.set_blocked(name.strip())
    if load_entrypoints:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    if not pm.is_blocked("memory"):
        pm.register(memory, name="memory")
    pm.check_pending()
    return pm


def default_plugin_manager() -> pluggy.PluginManager:
    """The process-wide manager ``leadership.connect`` uses, built on first use."""
    global _default
    if _default is None:
        _default = get_plugin_manager()
    return _default


def backend_registry(pm: pluggy.PluginManager) -> BackendRegistry:
    """Ask every plugin to register its backends; cached per manager."""
    registry = _registries.get(id(pm))
    if registry is not None and getattr(registry, "_pm", None) is pm:
        return registry
    registry = BackendRegistry()
    for impl in reversed(pm.hook.leadership_register_backends.get_hookimpls()):
        registry._current_plugin = impl.plugin_name
        impl.function(register=registry)
    registry._current_plugin = "<unknown>"
    registry._pm = pm  # type: ignore[attr-defined]
    _registries[id(pm)] = registry
    return registry


def find_backend(pm: pluggy.PluginManager, scheme: str) -> BackendInfo:
    registry = backend_registry(pm)
    info = registry.get(scheme)
    if info is not None:
        return info
    installed = ", ".join(registry.schemes()) or "none"
    hint = ""
    if scheme in KNOWN_BACKEND_PACKAGES:
        hint = f"; install it with: pip install '{KNOWN_BACKEND_PACKAGES[scheme]}'"
        if pm.is_blocked(scheme):
            hint = f"; it is blocked by {DISABLED_PLUGINS_ENV}"
    raise UnknownBackendError(f"no leadership backend for scheme {scheme!r} (installed backends: {installed}){hint}")


def list_plugin_distinfo(pm: pluggy.PluginManager) -> list[tuple[str, str, str]]:
    """(plugin name, distribution, version) for every registered plugin, built-ins included."""
    rows: list[tuple[str, str, str]] = []
    dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = dists.get(id(plugin))
        if dist is not None:
            rows.append((name, dist.project_name, dist.version))
        else:
            try:
                version = importlib.metadata.version("leadership")
            except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a checkout
                version = "unknown"
            rows.append((name, "leadership (built-in)", version))
    return sorted(rows)
