"""Discovery, registration, URL dispatch and observer hooks."""

from __future__ import annotations

import threading
import time
from typing import Any

import pluggy
import pytest

import leadership
from leadership.backends.memory import MemoryBackend
from leadership.plugins import backend_registry, find_backend, list_plugin_distinfo


def test_memory_registered_through_the_hook() -> None:
    pm = leadership.get_plugin_manager()
    assert pm.get_plugin("memory") is not None
    info = find_backend(pm, "memory")
    assert info.plugin == "memory" and info.factory is MemoryBackend
    assert list_plugin_distinfo(pm)[0][:2] == ("memory", "leadership (built-in)") or any(
        row[0] == "memory" for row in list_plugin_distinfo(pm)
    )


def test_disabled_plugins_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEADERSHIP_DISABLED_PLUGINS", "memory, other")
    pm = leadership.get_plugin_manager()
    assert pm.is_blocked("memory")
    with pytest.raises(leadership.UnknownBackendError, match="installed backends"):
        leadership.connect("memory://", plugin_manager=pm)


def test_unknown_scheme_lists_installed_and_package() -> None:
    with pytest.raises(leadership.UnknownBackendError) as err:
        leadership.connect("nosuchstore://127.0.0.1:1")
    assert "memory" in str(err.value) and "nosuchstore" in str(err.value)
    pm = leadership.get_plugin_manager(load_entrypoints=False)
    with pytest.raises(leadership.UnknownBackendError, match=r"pip install 'leadership\[etcd\]'"):
        leadership.connect("etcd://127.0.0.1:2379", plugin_manager=pm)


class ThirdParty:
    """A backend plugin written the way a user would: register through the hook."""

    @leadership.hookimpl
    def leadership_register_backends(self, register: leadership.BackendRegistry) -> None:
        register.add("mem2", MemoryBackend, description="memory under another name")


def test_third_party_backend_via_hook() -> None:
    pm = leadership.get_plugin_manager(load_entrypoints=False)
    pm.register(ThirdParty(), name="third-party")
    assert "mem2" in backend_registry(pm).schemes()
    with leadership.connect("mem2://thirdparty", plugin_manager=pm) as store:
        c = leadership.Candidate(store, "k", "a", ttl=1)
        assert c.wait_elected(5).leader == "a"


def test_duplicate_scheme_is_refused() -> None:
    class Dup:
        @leadership.hookimpl
        def leadership_register_backends(self, register: leadership.BackendRegistry) -> None:
            register.add("memory", MemoryBackend)

    pm = leadership.get_plugin_manager(load_entrypoints=False)
    pm.register(Dup(), name="dup")
    with pytest.raises(leadership.BackendRegistrationError, match="'memory' registered twice.*'dup'"):
        backend_registry(pm)


@pytest.mark.parametrize("scheme", ["", "Etcd", "1x", "a b", None])
def test_invalid_scheme_is_refused(scheme: Any) -> None:
    registry = leadership.BackendRegistry()
    with pytest.raises(leadership.BackendRegistrationError, match="invalid"):
        registry.add(scheme, MemoryBackend)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @leadership.hookimpl
    def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
        self.calls.append(("elected", {"key": key, "name": name, "token": token}))

    @leadership.hookimpl
    def leadership_demoted(self, key: str, name: str, token: int, reason: str, store: str) -> None:
        self.calls.append(("demoted", {"name": name, "reason": reason, "token": token}))

    @leadership.hookimpl
    def leadership_leader_changed(self, key: str, leader: str | None, token: int | None, store: str) -> None:
        self.calls.append(("leader_changed", {"leader": leader, "token": token}))

    @leadership.hookimpl
    def leadership_store_error(
        self, error: BaseException, operation: str, attempt: int, retry_in: float | None, store: str
    ) -> None:
        self.calls.append(("store_error", {"operation": operation, "attempt": attempt, "error": error}))


class Broken:
    @leadership.hookimpl
    def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
        raise RuntimeError("observer bug")


def test_observer_hooks(url: str, cluster: Any) -> None:
    pm = leadership.get_plugin_manager(load_entrypoints=False)
    rec = Recorder()
    pm.register(rec)
    pm.register(Broken())  # an observer's exception never disturbs the election
    with leadership.connect(url, plugin_manager=pm) as store:
        f = leadership.Follower(store, "k")
        terms = f.terms()
        assert next(terms) is None
        c = leadership.Candidate(store, "k", "a", ttl=0.5)
        term = c.wait_elected(5)
        assert next(terms) == term
        c.resign()
        c.wait_elected(5)
        cluster.set_available(False)
        deadline = time.monotonic() + 3
        while not any(n == "store_error" for n, _ in rec.calls) and time.monotonic() < deadline:
            time.sleep(0.01)
        cluster.set_available(True)
        c.stop()
        f.stop()
    names = [n for n, _ in rec.calls]
    assert ("elected", {"key": "k", "name": "a", "token": term.token}) in rec.calls
    assert ("demoted", {"name": "a", "reason": "resigned", "token": term.token}) in rec.calls
    assert ("leader_changed", {"leader": "a", "token": term.token}) in rec.calls
    assert "store_error" in names
    assert all(isinstance(d["error"], leadership.StoreError) for n, d in rec.calls if n == "store_error")


def test_hook_specs_are_typed_and_documented() -> None:
    """Every hook is leadership_-prefixed, typed, and documents each parameter."""
    import inspect

    from leadership import hookspecs

    pm = pluggy.PluginManager("leadership")
    pm.add_hookspecs(hookspecs)
    hooks = [name for name in dir(pm.hook) if name.startswith("leadership_")]
    assert sorted(hooks) == sorted(n for n in hookspecs.__all__ if n.startswith("leadership_"))
    for name in hooks:
        fn = getattr(hookspecs, name)
        sig = inspect.signature(fn)
        doc = inspect.getdoc(fn) or ""
        for param in sig.parameters.values():
            assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) has no type"
            assert f":param {param.name}:" in doc, f"{name} does not document parameter {param.name!r}"


def test_sync_api_threads_end_with_store(url: str) -> None:
    before = {t for t in threading.enumerate() if t.name.startswith("leadership-")}
    with leadership.connect(url) as store:
        leadership.Candidate(store, "k", "a", ttl=1).wait_elected(5)
    after = {t for t in threading.enumerate() if t.name.startswith("leadership-")}
    assert after <= before


def test_every_hook_documented_in_readme_with_its_signature() -> None:
    import inspect
    import pathlib

    from leadership import hookspecs

    readme = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
    for name in hookspecs.__all__:
        if not name.startswith("leadership_"):
            continue
        sig = inspect.signature(getattr(hookspecs, name))
        text = f"{name}{sig}".replace("'", "")
        assert f"`{text}`" in readme, f"README.md must document the hook as `{text}`"


def _notify_elected(pm: pluggy.PluginManager) -> None:
    from leadership._observers import Observers

    Observers(pm, "memory://x").elected("k", "a", 7)


def test_observer_hooks_follow_pluggy_order_and_wrappers() -> None:
    """tryfirst/trylast order the observers, and both kinds of wrapper wrap them, as in pluggy."""
    calls: list[str] = []

    class First:
        @leadership.hookimpl(tryfirst=True)
        def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
            calls.append("first")

    class Plain:
        @leadership.hookimpl
        def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
            calls.append("plain")

    class Last:
        @leadership.hookimpl(trylast=True)
        def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
            calls.append("last")

    class NewStyle:
        @leadership.hookimpl(wrapper=True)
        def leadership_elected(self, key: str, name: str, token: int, store: str) -> Any:
            calls.append(f"wrapper before {key} {token}")
            result = yield
            calls.append(f"wrapper after {len(result)} results")
            return result

    class OldStyle:
        @leadership.hookimpl(hookwrapper=True)
        def leadership_elected(self, key: str, name: str, token: int, store: str) -> Any:
            calls.append("hookwrapper before")
            outcome = yield
            calls.append(f"hookwrapper after {outcome.get_result()!r}")

    pm = leadership.get_plugin_manager(load_entrypoints=False)
    # Registered in an order that differs from the call order, so the order is pluggy's doing.
    for plugin in (Last(), Plain(), NewStyle(), First(), OldStyle()):
        pm.register(plugin)
    _notify_elected(pm)
    assert calls == [
        "hookwrapper before",
        "wrapper before k 7",
        "first",
        "plain",
        "last",
        "wrapper after 0 results",  # pluggy keeps no None results
        "hookwrapper after []",
    ]


def test_a_raising_observer_hides_the_event_from_no_other(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []

    class Raises:
        @leadership.hookimpl(tryfirst=True)
        def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
            raise RuntimeError("observer bug")

    class WrapperRaisesBefore:
        @leadership.hookimpl(wrapper=True)
        def leadership_elected(self, key: str, name: str, token: int, store: str) -> Any:
            raise RuntimeError("wrapper bug before")
            yield  # pragma: no cover

    class WrapperRaisesAfter:
        @leadership.hookimpl(hookwrapper=True)
        def leadership_elected(self, key: str, name: str, token: int, store: str) -> Any:
            yield
            raise RuntimeError("wrapper bug after")

    class Records:
        @leadership.hookimpl(trylast=True)
        def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
            calls.append(name)

    pm = leadership.get_plugin_manager(load_entrypoints=False)
    for plugin in (Records(), WrapperRaisesBefore(), Raises(), WrapperRaisesAfter()):
        pm.register(plugin)
    with caplog.at_level("ERROR", logger="leadership"):
        _notify_elected(pm)
    assert calls == ["a"], "the raising observers must not hide the event from the others"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Raises.leadership_elected" in logged and "WrapperRaisesBefore" in logged
    assert "WrapperRaisesAfter" in logged


def test_register_backends_errors_are_not_swallowed() -> None:
    """Only observers are isolated: a registration error still reaches the user."""

    class Bad:
        @leadership.hookimpl
        def leadership_register_backends(self, register: leadership.BackendRegistry) -> None:
            register.add("Bad Scheme", MemoryBackend)

    pm = leadership.get_plugin_manager(load_entrypoints=False)
    pm.register(Bad(), name="bad")
    with pytest.raises(leadership.BackendRegistrationError, match="'bad'"):
        backend_registry(pm)
