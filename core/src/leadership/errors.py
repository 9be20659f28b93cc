"""The exception hierarchy. Everything raised by leadership derives from LeadershipError."""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "BackendRegistrationError",
    "ClosedError",
    "ConfigurationError",
    "ElectionTimeoutError",
    "InvalidArgumentError",
    "InvalidTTLError",
    "LeadershipError",
    "NotLeaderError",
    "PermanentStoreError",
    "SessionLostError",
    "StoreError",
    "StoreUnavailableError",
    "UnknownBackendError",
    "UsageError",
]


class LeadershipError(Exception):
    """Root of every error leadership raises."""


class InvalidArgumentError(LeadershipError, ValueError):
    """A key, name, URL, option or other argument the caller passed is malformed."""


class ConfigurationError(InvalidArgumentError):
    """A store URL or backend option is malformed or unsupported."""


class InvalidTTLError(InvalidArgumentError):
    """A ttl is outside what the backend's store can honour; the message names the range."""


class UnknownBackendError(ConfigurationError, LookupError):
    """No installed backend handles the URL's scheme."""


class BackendRegistrationError(LeadershipError):
    """A plugin tried to register a backend under an invalid or already taken name, or its
    factory did not build a Backend."""


class UsageError(LeadershipError, RuntimeError):
    """The library was called in a way it does not support: a stream iterated from two places
    at once, a blocking call made from an observer running on the store's own event loop."""


class NotLeaderError(LeadershipError):
    """Leadership was lost (or never held) where the caller required it."""


class ElectionTimeoutError(LeadershipError, TimeoutError):
    """Waiting to be elected took longer than the caller's timeout. The message names the key,
    the candidate, the timeout and who led at that moment (if anyone)."""


class ClosedError(LeadershipError, RuntimeError):
    """The store, candidate or follower was already closed or stopped."""


class StoreError(LeadershipError):
    """Something went wrong talking to the store."""


class StoreUnavailableError(StoreError):
    """Transient: the store could not be reached or did not answer in time. Retried by the core."""


class SessionLostError(StoreError):
    """The session (lease) is gone: expired, revoked, or could not be confirmed in time.

    Every election that used it has lost leadership. The core opens a new session and campaigns again.
    """


class PermanentStoreError(StoreError):
    """The store refused the request in a way retrying cannot fix (bad URL target, bad request)."""


class AuthenticationError(PermanentStoreError):
    """The store rejected the credentials or the caller lacks permission."""
