"""Scaling API error bodies, raise_for_scaling_error, and ready-made httpx clients."""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import httpx

from ._errors import ConfigurationError, ScalingAPIError
from ._redact import looks_like_key
from ._version import __version__

__all__ = [
    "DEFAULT_BASE_URL",
    "ErrorBody",
    "ErrorBodyReader",
    "aread_error_body",
    "async_scaling_client",
    "parse_error_body",
    "raise_for_scaling_error",
    "read_error_body",
    "scaling_client",
]

DEFAULT_BASE_URL = "https://api.scaling.cloud/v1"
BASE_URL_VARIABLE = "SCALING_API_BASE_URL"
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


# How long reading one error body may take, from its first read: a documented body is a
# few hundred bytes in one packet. A body that drips (each byte within the read timeout)
# is given up on after this; a read that stalls ends with the client's read timeout, so
# a 401 holds a request at most ERROR_BODY_SECONDS plus one read timeout.
ERROR_BODY_SECONDS = 5.0
_clock: Callable[[], float] = time.monotonic


def _length(length: str | None) -> int | None:
    """Content-Length as an int; -1 when it is malformed; None when absent."""
    if length is None:
        return None
    length = length.strip()
    return int(length) if length.isdigit() else -1


def error_body_too_long(content_length: str | None) -> bool:
    """Whether a ``Content-Length`` header says, before any read, that the body is not
    the API's error JSON: longer than ``MAX_ERROR_BODY``, or not a length at all."""
    length = _length(content_length)
    return length is not None and not 0 <= length <= MAX_ERROR_BODY


class _Inflate:
    """One ``gzip`` or ``deflate`` layer of a body, decoded as httpx decodes it (one gzip
    member; deflate with a zlib header, else raw), but never producing more than
    ``MAX_ERROR_BODY + 1`` bytes in all: a decompression bomb stops here."""

    def __init__(self, encoding: str) -> None:
        self._deflate = encoding == "deflate"
        bits = zlib.MAX_WBITS if self._deflate else zlib.MAX_WBITS | 16
        self._inflater = zlib.decompressobj(bits)
        self._first = True
        self.room = MAX_ERROR_BODY + 1

    def feed(self, data: bytes) -> bytes | None:
        """The bytes ``data`` decodes to; ``None`` when they would pass the cap."""
        first, self._first = self._first, False
        try:
            out = self._inflater.decompress(data, self.room)
        except zlib.error:
            if not (first and self._deflate):
                raise
            self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)  # raw deflate
            out = self._inflater.decompress(data, self.room)
        self.room -= len(out)
        if self._inflater.unconsumed_tail or self.room <= 0:
            return None
        return out

    def finish(self) -> bytes | None:
        out = self._inflater.flush()
        self.room -= len(out)
        return None if self.room <= 0 else out


class ErrorBodyReader:
    """What one error answer's body decodes to, fed raw chunk by chunk: the one schedule
    every client's error-body read shares (httpx's :func:`read_error_body` and
    :func:`aread_error_body`, the requests and aiohttp integrations). It stops (``feed``
    returns False) once the raw or the decoded body passes ``MAX_ERROR_BODY``, when
    ``ERROR_BODY_SECONDS`` have passed, or on an encoding it cannot decode within
    bounds; :meth:`result` is then ``None``.

    ``encodings`` are the ``Content-Encoding`` values still to undo, in the order the
    header lists them (commas allowed): empty when the HTTP library decoded the body."""

    def __init__(self, encodings: Iterable[str] = ()) -> None:
        self.raw: list[bytes] = []
        self._raw_size = 0
        self._decoded: list[bytes] = []
        self._size = 0
        self._deadline = _clock() + ERROR_BODY_SECONDS
        self._layers: list[_Inflate] = []
        self.failed = False
        # Content-Encoding lists encodings in the order applied: undo them in reverse.
        # httpx ignores encodings it does not know, so do we; br and zstd have no
        # bounded decoder here, so such a body is not taken for the documented JSON.
        listed = [part for value in encodings for part in value.split(",")]
        for value in reversed(listed):
            encoding = value.strip().lower()
            if not encoding:
                continue
            if encoding in ("gzip", "deflate"):
                self._layers.append(_Inflate(encoding))
            elif encoding in ("br", "zstd"):
                self.failed = True

    def remaining(self) -> float:
        """Seconds left before reading gives up (``ERROR_BODY_SECONDS`` in all)."""
        return self._deadline - _clock()

    def feed(self, chunk: bytes) -> bool:
        """Take one raw chunk; False when reading should stop."""
        self.raw.append(chunk)
        self._raw_size += len(chunk)
        if self.failed or self._raw_size > MAX_ERROR_BODY:
            self.failed = True
            return False
        if not self._decode(chunk, final=False) or _clock() > self._deadline:
            self.failed = True
        return not self.failed

    def result(self) -> bytes | None:
        """The decoded body once the stream ended; ``None`` if reading stopped early."""
        if self.failed or not self._decode(b"", final=True):
            return None
        return b"".join(self._decoded)

    def _decode(self, data: bytes, *, final: bool) -> bool:
        try:
            for layer in self._layers:
                out = layer.feed(data) if data else b""
                tail = layer.finish() if final else b""
                if out is None or tail is None:
                    return False
                data = out + tail
        except zlib.error:
            return False  # not what it claims to be: httpx could not decode it either
        self._decoded.append(data)
        self._size += len(data)
        return self._size <= MAX_ERROR_BODY


class _ReplaySync(httpx.SyncByteStream):
    """The bytes already read, then the rest of the original stream, unread."""

    def __init__(self, head: list[bytes], rest: Iterator[bytes], original: httpx.SyncByteStream):
        self._head, self._rest, self._original = head, rest, original

    def __iter__(self) -> Iterator[bytes]:
        yield from self._head
        yield from self._rest

    def close(self) -> None:
        self._original.close()


class _ReplayAsync(httpx.AsyncByteStream):
    """The async twin of :class:`_ReplaySync`."""

    def __init__(
        self, head: list[bytes], rest: AsyncIterator[bytes], original: httpx.AsyncByteStream
    ):
        self._head, self._rest, self._original = head, rest, original

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._head:
            yield chunk
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        await self._original.aclose()


def _without_reading(response: httpx.Response) -> tuple[bool, bytes | None]:
    """``(True, body)`` when the answer is known without reading: ``None`` for a
    ``Content-Length`` over the cap or one that cannot be trusted, or the body already
    read (``None`` if over the cap). ``(False, None)`` when the body must be read."""
    if error_body_too_long(response.headers.get("content-length")):
        return True, None
    try:
        content = response.content
    except httpx.ResponseNotRead:
        pass
    else:
        return True, content if len(content) <= MAX_ERROR_BODY else None
    if response.is_stream_consumed:
        raise httpx.StreamConsumed()
    if response.is_closed:
        raise httpx.StreamClosed()
    return False, None


def read_error_body(response: httpx.Response) -> bytes | None:
    """An error answer's body when it may be the API's error JSON: at most
    ``MAX_ERROR_BODY`` bytes, counted after decoding (gzip, deflate, in any number of
    layers), read for at most ``ERROR_BODY_SECONDS``. ``None`` when the body is larger,
    slower, or not decodable within those bounds; whatever was read is then put back in
    front of the unread rest, so the caller still gets the whole response, streaming
    (and so it does when the body was read whole: the response is left unread). Raises
    :class:`RuntimeError` for an async stream (use :func:`aread_error_body`)."""
    known, content = _without_reading(response)
    if known:
        return content
    stream = response.stream
    if not isinstance(stream, httpx.SyncByteStream):
        raise RuntimeError("an async response: use aread_error_body")
    body = ErrorBodyReader(response.headers.get_list("content-encoding"))
    rest = iter(stream)
    for chunk in rest:
        if not body.feed(chunk):
            response.stream = _ReplaySync(body.raw, rest, stream)
            return None
    response.stream = _ReplaySync(body.raw, iter(()), stream)
    return body.result()


async def aread_error_body(response: httpx.Response) -> bytes | None:
    """The async twin of :func:`read_error_body`."""
    known, content = _without_reading(response)
    if known:
        return content
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise RuntimeError("a sync response: use read_error_body")
    body = ErrorBodyReader(response.headers.get_list("content-encoding"))
    rest = stream.__aiter__()
    async for chunk in rest:
        if not body.feed(chunk):
            response.stream = _ReplayAsync(body.raw, rest, stream)
            return None
    response.stream = _ReplayAsync(body.raw, _empty(), stream)
    return body.result()


async def _empty() -> AsyncIterator[bytes]:
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:  # an async generator that yields nothing
        yield chunk


def raise_for_scaling_error(response: httpx.Response) -> httpx.Response:
    """Raise :class:`ScalingAPIError` for any non-2xx answer; return the response otherwise.

    ``status_code`` is always the HTTP status; ``type``, ``code`` and ``request_id`` come from
    the documented JSON body and are ``None`` when the body is not that JSON.
    """
    if 200 <= response.status_code < 300:
        return response
    try:
        content = read_error_body(response) or b""
    except (RuntimeError, httpx.StreamError):  # an async stream not yet read
        content = b""
    body = parse_error_body(content)
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


def check_base_url(text: str, *, setting: str) -> str:
    """``text`` when it is an http(s) URL with a host and no credentials; else a
    :class:`ConfigurationError` that names ``setting`` (the variable or option it came
    from) and quotes the value only when it cannot hold a key or a password: never when
    it holds an ``@``, which may end a password that the URL did not parse far enough to
    find (a bad port, no scheme, a ``/`` in the password)."""
    if looks_like_key(text):
        raise ConfigurationError(
            f"{setting} contains an API key (scl_live_...); it is the API's address, such as "
            f"{DEFAULT_BASE_URL}: put the key in its source (SCALING_API_KEY_SOURCE, "
            "SCALING_API_KEY or SCALING_API_KEY_FILE)"
        )
    try:
        url: httpx.URL | None = httpx.URL(text)
    except (httpx.InvalidURL, TypeError, ValueError):
        url = None
    if url is not None and url.userinfo:
        raise ConfigurationError(
            f"{setting} must not hold credentials (user:password@); remove them"
        )
    if url is None or url.scheme not in ("http", "https") or not url.host:
        if "@" in text:
            raise ConfigurationError(
                f"{setting} must be an http(s) URL such as {DEFAULT_BASE_URL}, with no "
                "credentials (user:password@); the value is not shown, as it may hold a "
                "password"
            )
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise ConfigurationError(
            f"{setting} must be an http(s) URL such as {DEFAULT_BASE_URL}, got {shown!r}"
        )
    return text


def default_base_url(environ: Mapping[str, str] | None = None) -> str:
    """``SCALING_API_BASE_URL`` when it is set and not blank (checked with
    :func:`check_base_url`), else :data:`DEFAULT_BASE_URL`."""
    value = (os.environ if environ is None else environ).get(BASE_URL_VARIABLE, "").strip()
    return check_base_url(value, setting=BASE_URL_VARIABLE) if value else DEFAULT_BASE_URL


# Loopback hosts the ready-made clients reach without any proxy: a plain-http request
# carrying the key must never travel through one.
_DIRECT_HOSTS = ("localhost", "127.0.0.1", "::1")


def _direct_mounts(base_url: str, mounts: Any) -> tuple[dict[str, Any], set[str]]:
    """httpx mounts sending loopback hosts (the base URL's, if loopback) to no proxy,
    with the caller's own ``mounts`` on top; and the hosts left so."""
    from ._authcore import is_loopback

    hosts = set(_DIRECT_HOSTS)
    try:
        host = httpx.URL(base_url).host
    except (httpx.InvalidURL, TypeError):
        host = ""
    if host and is_loopback(host):
        hosts.add(host)
    ours = {f"all://[{h}]" if ":" in h else f"all://{h}": h for h in hosts}
    given = dict(mounts or {})
    direct = {h for pattern, h in ours.items() if given.get(pattern) is None}
    return {**dict.fromkeys(ours), **given}, direct


def _client_options(
    source: object, base_url: str | None, options: dict[str, Any]
) -> dict[str, Any]:
    from ._auth import ScalingAuth

    if base_url is None:
        base_url = default_base_url()

    auth = options.pop("auth", None)
    ttl = options.pop("ttl", None)
    allowed_hosts = options.pop("allowed_hosts", None)
    options["mounts"], direct = _direct_mounts(base_url, options.get("mounts"))
    if auth is None:
        auth = ScalingAuth(source, ttl=ttl, allowed_hosts=allowed_hosts)  # type: ignore[arg-type]
        auth._reached_directly(direct)
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
    source: object = None, *, base_url: str | None = None, **httpx_options: Any
) -> httpx.Client:
    """An :class:`httpx.Client` for the Scaling API with :class:`ScalingAuth`, JSON content
    type, a project User-Agent and timeouts (5 s connect, 30 s otherwise).

    ``source`` is what :class:`ScalingAuth` takes (a provider, a cache, a source URI, or
    ``None`` for the environment); ``ttl`` and ``allowed_hosts`` are passed to it; every
    other keyword goes to :class:`httpx.Client`. ``base_url`` defaults to
    ``SCALING_API_BASE_URL`` when that is set, else ``https://api.scaling.cloud/v1``; a
    malformed ``SCALING_API_BASE_URL`` raises :class:`ConfigurationError`. Loopback hosts
    (``localhost``, ``127.0.0.1``, ``::1`` and a loopback base URL's host) are reached
    directly, never through a proxy set in the environment (``mounts`` given here take
    precedence).
    """
    return httpx.Client(**_client_options(source, base_url, httpx_options))


def async_scaling_client(
    source: object = None, *, base_url: str | None = None, **httpx_options: Any
) -> httpx.AsyncClient:
    """Like :func:`scaling_client`, returning an :class:`httpx.AsyncClient`."""
    return httpx.AsyncClient(**_client_options(source, base_url, httpx_options))
