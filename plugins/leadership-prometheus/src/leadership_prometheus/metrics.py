"""The metrics, and the observer hooks that keep them.

Names follow Prometheus conventions (a ``leadership_`` namespace, base units, ``_total`` for
counters) and the shape of client-go's leader-election metrics: client-go's
``leader_election_master_status{name}`` is ``leadership_is_leader{key,name}`` here (1 while this
process leads ``key`` as ``name``), and its ``leader_election_slowpath_total`` has no
counterpart (there is no slow path); the transitions counter says why leadership changed.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from leadership import hookimpl

__all__ = ["Metrics"]

#: Keepalive round trips: from a loopback store (~1 ms) to a slow remote one (seconds); a round
#: trip near the ttl means the session is about to be given up.
REFRESH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The metrics on one registry; an observer plugin (register it on a plugin manager)."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.is_leader = Gauge(
            "leadership_is_leader",
            "1 while this process leads the election on key as name, else 0.",
            ["key", "name"],
            registry=registry,
        )
        self.term_token = Gauge(
            "leadership_term_token",
            "Fencing token of the term this process holds on key as name (absent while not leading).",
            ["key", "name"],
            registry=registry,
        )
        self.transitions = Counter(
            "leadership_transitions_total",
            "Changes of leadership in this process: reason is elected, resigned, stopped, session_lost or replaced.",
            ["key", "reason"],
            registry=registry,
        )
        self.store_errors = Counter(
            "leadership_store_errors_total",
            "Failed store operations (refresh, campaign, observe, ...), each retry counted.",
            ["operation"],
            registry=registry,
        )
        self.refresh_seconds = Histogram(
            "leadership_session_refresh_seconds",
            "Round trip of each confirmed session refresh (keepalive).",
            buckets=REFRESH_BUCKETS,
            registry=registry,
        )

    @hookimpl
    def leadership_elected(self, key: str, name: str, token: int, store: str) -> None:
        self.is_leader.labels(key, name).set(1)
        self.term_token.labels(key, name).set(token)
        self.transitions.labels(key, "elected").inc()

    @hookimpl
    def leadership_demoted(self, key: str, name: str, token: int, reason: str, store: str) -> None:
        self.is_leader.labels(key, name).set(0)
        try:
            self.term_token.remove(key, name)
        except KeyError:
            pass
        self.transitions.labels(key, reason).inc()

    @hookimpl
    def leadership_store_error(
        self, error: BaseException, operation: str, attempt: int, retry_in: float | None, store: str
    ) -> None:
        self.store_errors.labels(operation).inc()

    @hookimpl
    def leadership_session_refreshed(self, ttl: float, duration: float, store: str) -> None:
        self.refresh_seconds.observe(duration)
