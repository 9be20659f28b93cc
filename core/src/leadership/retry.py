"""How the core retries transient store errors: :class:`RetryPolicy`.

Pass a policy as ``retry=`` to a Candidate or Follower; ``retry=None`` makes a transient store
error end the stream instead (the iterator raises it) so the caller retries on its own schedule.
"""

from __future__ import annotations

import dataclasses
import random

from .errors import InvalidArgumentError

__all__ = ["DEFAULT_RETRY", "MIN_RETRY_DELAY", "RetryPolicy"]

#: No retry of any kind comes sooner than this after a failure (seconds). Under CPU starvation a
#: store "times out" because this process is slow, and retrying in a tight loop would only add
#: to the load that caused it.
MIN_RETRY_DELAY = 0.05


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Capped, jittered exponential backoff for transient store errors.

    Retry ``n`` (1-based) waits ``min(maximum, initial * multiplier ** (n - 1))`` seconds, less
    up to ``jitter`` of it at random, and never less than :data:`MIN_RETRY_DELAY`.
    """

    initial: float = 0.05
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        for field in ("initial", "maximum", "multiplier", "jitter"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidArgumentError(f"RetryPolicy.{field} must be a number, got {type(value).__name__}")
        if not 0 < self.initial <= self.maximum:
            raise InvalidArgumentError(
                f"RetryPolicy needs 0 < initial <= maximum, got initial={self.initial!r}, maximum={self.maximum!r}"
            )
        if self.multiplier < 1:
            raise InvalidArgumentError(f"RetryPolicy.multiplier must be >= 1, got {self.multiplier!r}")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgumentError(f"RetryPolicy.jitter must be between 0 and 1, got {self.jitter!r}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return max(MIN_RETRY_DELAY, base * (1 - self.jitter * random.random()))


DEFAULT_RETRY = RetryPolicy()
