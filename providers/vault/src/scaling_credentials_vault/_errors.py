"""Translating hvac and requests failures into a form that is safe to chain.

hvac's exceptions carry the response body (``.text``, ``.json``) and requests' carry the
prepared request, whose headers hold the Vault token. Neither is ever chained: each
failure is copied into a :class:`VaultCallError` that keeps only the status, Vault's
error strings (redacted, shortened) and the request path, and that is
raised outside the ``except`` block so that the original is not kept as ``__context__``
either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from scaling_credentials.toolkit import redact

__all__ = ["RedirectRefused", "VaultCallError", "call", "clip"]

T = TypeVar("T")

_MAX_TEXT = 300


def clip(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` redacted (known secrets, Vault token shapes, keys), on one line (Vault's
    multi-error strings span several) and cut to a length fit for a message."""
    text = " ".join(redact(text, secrets).split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


class RedirectRefused(Exception):
    """Vault's address redirected a request to another origin, and it was not followed.

    ``origin`` is the target's ``scheme://host:port`` only: a hostile ``Location`` may
    carry what it was sent in its path or query.
    """

    def __init__(self, origin: str) -> None:
        self.origin = origin
        super().__init__(f"redirect to another origin refused: {origin}")


class VaultCallError(Exception):
    """A failed call to Vault, reduced to what is safe to show and chain.

    ``kind`` is ``"http"`` (Vault answered with an error status), ``"connection"``,
    ``"timeout"``, ``"tls"``, ``"redirect"`` (a redirect to another origin, refused:
    ``detail`` is that origin) or ``"other"``. ``status`` is the HTTP status for
    ``"http"``; ``errors`` and ``warnings`` are Vault's strings, redacted; ``metadata``
    holds the KV v2 version metadata of a 404 for a deleted or destroyed version.
    """

    def __init__(
        self,
        kind: str,
        *,
        status: int | None = None,
        errors: tuple[str, ...] = (),
        warnings: tuple[str, ...] = (),
        method: str | None = None,
        path: str | None = None,
        metadata: dict[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        self.kind = kind
        self.status = status
        self.errors = errors
        self.warnings = warnings
        self.method = method
        self.path = path
        self.metadata = metadata
        self.detail = detail
        super().__init__(self.describe(with_request=True))

    def describe(self, *, with_request: bool = False) -> str:
        """A one-line summary: status and Vault's errors, or the transport problem."""
        if self.kind == "http":
            reason = "; ".join(e for e in self.errors if e) or "no error message"
            text = f"HTTP {self.status}: {reason}"
        else:
            text = f"{self.kind} error: {self.detail}" if self.detail else f"{self.kind} error"
        if with_request and self.method and self.path:
            text += f" (on {self.method.upper()} {self.path})"
        return text

    def mentions(self, *needles: str) -> bool:
        """Whether any of Vault's error strings contains one of ``needles`` (lowercase)."""
        haystack = " ".join(self.errors).lower()
        return any(n in haystack for n in needles)

    def is_missing_route(self) -> bool:
        """Vault's answer for a path under no mount (``no handler for route``)."""
        return self.mentions("no handler for route", "unsupported path")

    def is_client_error(self) -> bool:
        """A 4xx answer other than 429: the request itself was refused."""
        return (
            self.kind == "http"
            and self.status is not None
            and 400 <= self.status < 500
            and (self.status != 429)
        )

    def is_sealed(self) -> bool:
        """Vault's answer while sealed."""
        return self.status == 503 and self.mentions("sealed")


def _path_of(url: object) -> str | None:
    if not isinstance(url, str):
        return None
    return urlsplit(url).path or None


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def _translate(exc: BaseException, secrets: Iterable[str]) -> VaultCallError:
    import hvac.exceptions
    import requests

    secrets = tuple(secrets)
    if isinstance(exc, RedirectRefused):
        return VaultCallError("redirect", detail=clip(exc.origin, secrets))
    if isinstance(exc, hvac.exceptions.VaultError):
        body = exc.json if isinstance(exc.json, dict) else {}
        metadata: dict[str, Any] | None = None
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("metadata"), dict):
            raw = data["metadata"]
            # Only the version bookkeeping: never anything from the secret's data.
            metadata = {
                "version": raw.get("version"),
                "deletion_time": raw.get("deletion_time") or "",
                "destroyed": bool(raw.get("destroyed", False)),
            }
        errors = _strings(body.get("errors"))
        if not errors and not body and isinstance(exc.args[0] if exc.args else None, str):
            # Not JSON (a proxy's page): keep a redacted, short excerpt of the message.
            errors = (str(exc.args[0]),)
        return VaultCallError(
            "http",
            status=_status_of(exc),
            errors=tuple(clip(e, secrets) for e in errors),
            warnings=tuple(clip(w, secrets) for w in _strings(body.get("warnings"))),
            method=exc.method if isinstance(exc.method, str) else None,
            path=_path_of(exc.url),
            metadata=metadata,
        )
    if isinstance(exc, requests.exceptions.SSLError):
        return VaultCallError("tls", detail=clip(_root_reason(exc), secrets))
    if isinstance(exc, requests.exceptions.Timeout):
        return VaultCallError("timeout", detail="no answer within the timeout")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return VaultCallError("connection", detail=clip(_root_reason(exc), secrets))
    return VaultCallError("other", detail=type(exc).__name__)


_STATUS_BY_CLASS = {
    "InvalidRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "InvalidPath": 404,
    "RateLimitExceeded": 429,
    "InternalServerError": 500,
    "VaultNotInitialized": 501,
    "BadGateway": 502,
    "VaultDown": 503,
}


def _status_of(exc: BaseException) -> int | None:
    # hvac maps statuses to classes and drops the number; map back.
    return _STATUS_BY_CLASS.get(type(exc).__name__)


def _root_reason(exc: BaseException) -> str:
    # requests wraps urllib3 wraps socket errors; the innermost says what happened
    # ("Connection refused", "certificate verify failed").
    seen: set[int] = set()
    current: BaseException | None = exc
    reason = str(exc)
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current)
        if text:
            reason = text
        current = current.__cause__ or current.__context__
        if current is None:
            break
    for marker in ("Connection refused", "Name or service not known", "timed out"):
        if marker in reason:
            return marker.lower()
    if "CERTIFICATE_VERIFY_FAILED" in reason or "certificate verify failed" in reason:
        return "certificate verify failed"
    return reason


def call(fn: Callable[[], T], *, secrets: Iterable[str] = ()) -> T:
    """Run one hvac call; on failure raise a :class:`VaultCallError` with no context."""
    failure: VaultCallError
    try:
        return fn()
    except Exception as exc:  # every hvac/requests failure: translated below
        failure = _translate(exc, secrets)
        del exc
    raise failure
