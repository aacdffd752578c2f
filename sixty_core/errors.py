"""The error tree of sixty_core: one shallow hierarchy under :class:`SixtyError`.

Every error carries a message a user can act on. The HTTP layer maps each class to a
status code (see ``sixty_core.api.errors``); the CLI prints the message and exits non-zero.
"""

from __future__ import annotations


class SixtyError(Exception):
    """Base class of every error raised on purpose by sixty_core."""


class ConfigError(SixtyError):
    """A setting, flag or environment variable has a value that cannot work."""


class ProvisionError(SixtyError):
    """A Postgres backend could not be provisioned or reached."""


class DockerUnavailableError(ProvisionError):
    """The container backend was chosen but no Docker engine answers."""


class ImageUnavailableError(ProvisionError):
    """The container backend's image is neither local nor pullable."""


class SeedError(SixtyError):
    """Seeding was asked for with bad arguments or failed half-way (and was rolled back)."""


class ValidationError(SixtyError):
    """A request carries missing, malformed or disallowed fields."""


class AuthError(SixtyError):
    """The bearer token is missing, unknown, expired or revoked."""


class ForbiddenError(SixtyError):
    """The caller is authenticated but may not touch this resource."""


class NotFoundError(SixtyError):
    """The resource does not exist (or is not visible to the caller)."""


class ConflictError(SixtyError):
    """The write conflicts with the current state (duplicate, concurrent change)."""


class IdempotencyKeyReusedError(SixtyError):
    """An Idempotency-Key came back with a request body other than the one it was made for."""


class TooManyRequestsError(SixtyError):
    """The caller holds too many of a bounded resource (e.g. open event streams)."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimeoutError(SixtyError):
    """The client did not send its whole request body in time."""


class ClientDisconnectedError(SixtyError):
    """The client went away before its request was read; nobody is left to answer."""


class OverloadedError(SixtyError):
    """The service sheds load: too many requests are waiting for a connection."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DatabaseUnavailableError(SixtyError):
    """The database did not answer, refused, or cancelled a statement on a timeout."""

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamError(SixtyError):
    """The edge upstream failed and no fallback could serve the request."""


class UpstreamTimeoutError(UpstreamError):
    """The edge upstream did not answer within its deadline."""


class CircuitOpenError(UpstreamError):
    """The circuit breaker in front of the edge upstream is open."""


class LifecycleError(SixtyError):
    """An object was used in the wrong lifecycle state (e.g. acquire on a closed pool)."""
