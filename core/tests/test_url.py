from __future__ import annotations

import pytest

import leadership
from leadership import ConfigurationError, StoreURL
from leadership.url import Endpoint


def test_parse_multi_host_with_options() -> None:
    u = StoreURL.parse("etcd://user:p%40ss@h1:2379,h2:2380,[::1]:2381/ns?timeout=2&tls=true")
    assert u.scheme == "etcd"
    assert u.endpoints == [Endpoint("h1", 2379), Endpoint("h2", 2380), Endpoint("::1", 2381)]
    assert u.username == "user" and u.password == "p@ss"
    assert u.path == "/ns" and u.options == {"timeout": "2", "tls": "true"}
    assert "p@ss" not in u.redacted() and "p%40ss" not in u.redacted()


def test_option_values_may_hold_paths() -> None:
    u = StoreURL.parse("zookeeper://h:2181?ca_cert=/etc/ca.pem&tls=true")
    assert u.path == "" and u.options == {"ca_cert": "/etc/ca.pem", "tls": "true"}
    u = StoreURL.parse("zookeeper://h:2181/chroot/x?ca_cert=/etc/ca.pem")
    assert u.path == "/chroot/x" and u.options == {"ca_cert": "/etc/ca.pem"}


def test_memory_urls() -> None:
    assert StoreURL.parse("memory://").endpoints == []
    assert StoreURL.parse("memory://x").endpoints == [Endpoint("x", None)]
    assert StoreURL.parse("memory://?").options == {}


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("127.0.0.1:2379", "no scheme"),
        ("1tcd://h:1", "invalid scheme"),
        ("etcd://h:0", "invalid port"),
        ("etcd://h:99999", "invalid port"),
        ("etcd://h:abc", "invalid port"),
        ("etcd://h1,,h2", "empty host"),
        ("etcd://::1:2379", "bracketed"),
        ("etcd://h:1?a=1&a=2", "given twice"),
        ("etcd://h:1?a", "malformed query"),
        ("etcd://h$x:1", "invalid host"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        StoreURL.parse(url)


def test_bad_url_raises_at_connect() -> None:
    with pytest.raises(ConfigurationError):
        leadership.connect("memory://a:1")
    with pytest.raises(ConfigurationError, match="unknown option"):
        leadership.connect("memory://x?bogus=1")
    with pytest.raises(ConfigurationError, match="must be a str"):
        leadership.connect(42)  # type: ignore[arg-type]


def test_option_conversion_errors_name_what_is_allowed() -> None:
    u = StoreURL.parse("etcd://h:1?timeout=abc")
    with pytest.raises(ConfigurationError, match=r"timeout='abc' is invalid \(allowed: seconds\)"):
        u.option("timeout", float, allowed="seconds")


def test_bad_ttl_and_arguments(store: leadership.Store) -> None:
    with pytest.raises(leadership.InvalidTTLError, match="minimum of 0.05s"):
        leadership.Candidate(store, "k", "a", ttl=0.01)
    with pytest.raises(ValueError):  # InvalidTTLError is a ValueError
        leadership.Candidate(store, "k", "a", ttl=-1)
    with pytest.raises(leadership.InvalidTTLError, match="number"):
        leadership.Candidate(store, "k", "a", ttl="15")  # type: ignore[arg-type]
    with pytest.raises(leadership.InvalidArgumentError, match="retry"):
        leadership.Candidate(store, "k", "a", ttl=1, retry=3)  # type: ignore[arg-type]
    with pytest.raises(leadership.InvalidArgumentError, match="Store"):
        leadership.Candidate("memory://", "k", "a")  # type: ignore[arg-type]
    with pytest.raises(leadership.InvalidArgumentError, match="initial"):
        leadership.RetryPolicy(initial=0)
