"""Scaling API error bodies, raise_for_scaling_error, and ready-made httpx clients."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import httpx

from ._errors import ScalingAPIError
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "ErrorBody",
    "async_scaling_client",
    "parse_error_body",
    "raise_for_scaling_error",
    "scaling_client",
]

DEFAULT_BASE_URL = "https://api.scaling.cloud/v1"
# Error bodies are a few hundred bytes; anything far larger is not the documented JSON.
MAX_ERROR_BODY = 64 * 1024
USER_AGENT = f"scaling-credentials/{__version__} python-httpx/{httpx.__version__}"
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class ErrorBody(NamedTuple):
    """The documented error body: ``statusCode``, ``type``, ``code``, ``requestId``.
    Each field is ``None`` when absent or not a string."""

    type: str | None
    code: str | None
    request_id: str | None


_EMPTY = ErrorBody(None, None, None)


def parse_error_body(content: bytes) -> ErrorBody:
    """Parse a Scaling API error body; anything else (HTML, empty, invalid JSON, wrong
    types, too large) gives an all-``None`` :class:`ErrorBody`, never an exception."""
    if not content or len(content) > MAX_ERROR_BODY:
        return _EMPTY
    try:
        document: Any = json.loads(content)
    except (ValueError, RecursionError):
        return _EMPTY
    if not isinstance(document, dict):
        return _EMPTY

    def text(name: str) -> str | None:
        value = document.get(name)
        return value if isinstance(value, str) and len(value) <= 200 else None

    return ErrorBody(type=text("type"), code=text("code"), request_id=text("requestId"))


def _body_if_small(response: httpx.Response) -> bytes:
    length = response.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_ERROR_BODY):
        return b""
    try:
        return response.content
    except httpx.ResponseNotRead:
        try:
            return response.read()
        except (RuntimeError, httpx.StreamError):  # an async stream not yet read
            return b""


def raise_for_scaling_error(response: httpx.Response) -> httpx.Response:
    """Raise :class:`ScalingAPIError` for any non-2xx answer; return the response otherwise.

    ``status_code`` is always the HTTP status; ``type``, ``code`` and ``request_id`` come from
    the documented JSON body and are ``None`` when the body is not that JSON.
    """
    if 200 <= response.status_code < 300:
        return response
    body = parse_error_body(_body_if_small(response))
    request_id = body.request_id
    if request_id is None and (body.type or body.code):
        # The documented body without its requestId: the header is the API's own. For any
        # other body (a proxy's HTML page) a header id would be the proxy's, not Scaling's.
        request_id = response.headers.get("x-request-id")
    parts = [f"Scaling API answered {response.status_code}"]
    if body.type or body.code:
        parts.append(" " + "/".join(p for p in (body.type, body.code) if p))
    try:
        request = response.request
        parts.append(f" to {request.method} {request.url.path}")
    except RuntimeError:
        pass
    if request_id:
        parts.append(f" (requestId {request_id})")
    if body.code == "invalid_api_key":
        parts.append(": the key is invalid, expired or revoked; rotate it in its source")
    elif body.code == "missing_authorization_header":
        parts.append(": no Authorization header was sent; use ScalingAuth on the client")
    raise ScalingAPIError(
        "".join(parts),
        status_code=response.status_code,
        type=body.type,
        code=body.code,
        request_id=request_id,
        response=response,
    )


def _client_options(source: object, base_url: str, options: dict[str, Any]) -> dict[str, Any]:
    from ._auth import ScalingAuth

    auth = options.pop("auth", None)
    ttl = options.pop("ttl", None)
    allowed_hosts = options.pop("allowed_hosts", None)
    if auth is None:
        auth = ScalingAuth(source, ttl=ttl, allowed_hosts=allowed_hosts)  # type: ignore[arg-type]
    headers = httpx.Headers(
        {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
    )
    headers.update(options.pop("headers", None) or {})
    options.setdefault("timeout", DEFAULT_TIMEOUT)
    return {"base_url": base_url, "auth": auth, "headers": headers, **options}


def scaling_client(
    source: object = None, *, base_url: str = DEFAULT_BASE_URL, **httpx_options: Any
) -> httpx.Client:
    """An :class:`httpx.Client` for the Scaling API with :class:`ScalingAuth`, JSON content
    type, a project User-Agent and timeouts (5 s connect, 30 s otherwise).

    ``source`` is what :class:`ScalingAuth` takes (a provider, a cache, a source URI, or
    ``None`` for the environment); ``ttl`` and ``allowed_hosts`` are passed to it; every
    other keyword goes to :class:`httpx.Client`.
    """
    return httpx.Client(**_client_options(source, base_url, httpx_options))


def async_scaling_client(
    source: object = None, *, base_url: str = DEFAULT_BASE_URL, **httpx_options: Any
) -> httpx.AsyncClient:
    """Like :func:`scaling_client`, returning an :class:`httpx.AsyncClient`."""
    return httpx.AsyncClient(**_client_options(source, base_url, httpx_options))
