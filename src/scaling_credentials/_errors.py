"""The exception tree of scaling-credentials.

::

    ScalingCredentialsError
    ├── ConfigurationError        (also ValueError)
    ├── InvalidKeyFormatError     (also ValueError)
    ├── ProviderError             .provider
    │   ├── SecretNotFoundError
    │   └── ProviderTimeoutError
    └── ScalingAPIError           .status_code .type .code .request_id .response

No message in this tree ever contains a secret value: providers describe *where* they
looked, never *what* they found. As a last line of defence, every message is masked when
the error is built (:func:`scaling_credentials.toolkit.redact`): a key pasted into a
setting that a message quotes comes out as ``scl_live_****abcd``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = [
    "ConfigurationError",
    "InvalidKeyFormatError",
    "ProviderError",
    "ProviderTimeoutError",
    "ScalingAPIError",
    "ScalingCredentialsError",
    "SecretNotFoundError",
]


class ScalingCredentialsError(Exception):
    """Base class of every error raised by scaling-credentials.

    Its text arguments are masked when it is built: keys, Vault tokens and AWS
    credentials in a message never reach a log or a traceback.
    """

    def __init__(self, *args: object) -> None:
        super().__init__(*(_masked(a) if isinstance(a, str) else a for a in args))


def _masked(text: str) -> str:
    from ._redact import redact  # imported late: _redact needs _key, which needs us

    return redact(text)


class ConfigurationError(ScalingCredentialsError, ValueError):
    """Raised when the library is configured wrongly: a bad source URI, a missing extra,
    an unset environment, or a host the key must not be sent to."""


class InvalidKeyFormatError(ScalingCredentialsError, ValueError):
    """Raised when a value is not a Scaling API key (``scl_live_<token>``).

    The message says what is wrong with the value, never the value itself.
    """


class ProviderError(ScalingCredentialsError):
    """Raised when a provider cannot fetch the key from its backend.

    ``provider`` is the provider's description (safe to log); the backend's own
    exception, when there is one, is chained as ``__cause__``.
    """

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = None if provider is None else _masked(provider)


class SecretNotFoundError(ProviderError):
    """Raised when the secret does not exist where the provider looked."""


class ProviderTimeoutError(ProviderError):
    """Raised when a fetch did not finish within the cache's ``fetch_timeout``."""


class ScalingAPIError(ScalingCredentialsError):
    """Raised by :func:`raise_for_scaling_error` for a non-2xx Scaling API answer.

    ``status_code`` is always the HTTP status; ``type``, ``code`` and ``request_id``
    come from the documented JSON error body and are ``None`` when the body is not
    that JSON (a proxy's HTML page, say).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        type: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
        response: httpx.Response | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type
        self.code = code
        self.request_id = request_id
        self.response = response

    def __reduce__(self) -> tuple[object, ...]:
        # Picklable for process pools, without the response: its request carries the
        # Authorization header.
        return (
            _rebuild_api_error,
            (str(self), self.status_code, self.type, self.code, self.request_id),
        )


def _rebuild_api_error(
    message: str, status_code: int, type_: str | None, code: str | None, request_id: str | None
) -> ScalingAPIError:
    return ScalingAPIError(
        message, status_code=status_code, type=type_, code=code, request_id=request_id
    )
