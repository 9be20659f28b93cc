"""The entry point leadership loads: the metrics on prometheus_client's default registry.

Created once per process (the module is imported once), however many plugin managers load it.
"""

from __future__ import annotations

from .metrics import Metrics

metrics = Metrics()

leadership_elected = metrics.leadership_elected
leadership_demoted = metrics.leadership_demoted
leadership_store_error = metrics.leadership_store_error
leadership_session_refreshed = metrics.leadership_session_refreshed
