"""The project's one error hierarchy.

::

    RouterError
     ├── SchemaError             a message failed to decode or validate (kind says how)
     ├── DeadlineExceeded        the request's deadline passed before it was answered
     ├── InvalidOutput           the model answered, but the answer failed a check
     └── UpstreamError           calling a model failed
          ├── UpstreamTimeout        (retriable)
          ├── UpstreamRateLimited    (retriable; carries retry_after_s)
          ├── UpstreamUnavailable    (retriable: 5xx, connection refused or reset)
          ├── UpstreamRejected       4xx other than 429: the request itself is at fault
          └── UpstreamMalformed      the response is not what the protocol promises

``retriable`` says whether the same call may succeed if made again.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DeadlineExceeded",
    "InvalidOutput",
    "RouterError",
    "SchemaError",
    "UpstreamError",
    "UpstreamMalformed",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
]


class RouterError(Exception):
    """Base of every error the router raises on purpose."""

    retriable: bool = False


class SchemaError(RouterError):
    """A message could not be decoded into its schema.

    ``kind`` is one of ``too_large``, ``not_json``, ``unknown_version``, ``invalid``;
    ``errors`` holds pydantic's error list where there is one.
    """

    def __init__(self, kind: str, message: str, errors: list[dict[str, Any]] | None = None):
        super().__init__(message)
        self.kind = kind
        self.errors = errors or []


class DeadlineExceeded(RouterError):
    """The request's deadline has passed."""


class InvalidOutput(RouterError):
    """An answer failed the check named by ``check``."""

    def __init__(self, check: str, message: str):
        super().__init__(message)
        self.check = check


class UpstreamError(RouterError):
    """Calling a model failed. ``status`` is the HTTP status where there was one."""

    cause: str = "upstream_error"

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


class UpstreamTimeout(UpstreamError):
    retriable = True
    cause = "timeout"


class UpstreamRateLimited(UpstreamError):
    retriable = True
    cause = "rate_limited"

    def __init__(
        self, message: str, *, status: int | None = 429, retry_after_s: float | None = None
    ):
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class UpstreamUnavailable(UpstreamError):
    retriable = True


class UpstreamRejected(UpstreamError):
    cause = "rejected"


class UpstreamMalformed(UpstreamError):
    pass
