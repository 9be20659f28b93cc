"""Prometheus metrics for leadership elections, as an observer plugin.

Installed, it registers its metrics with ``prometheus_client``'s default registry, so an
application that already serves ``/metrics`` exposes them without a code change;
``leadership run --metrics-port P`` serves them for a supervised command.
"""

from __future__ import annotations

from .metrics import Metrics

__all__ = ["Metrics"]
