"""``ScalingRequestsAuth``: the Scaling API key for requests (extra ``[requests]``).

A :class:`requests.auth.AuthBase` with :class:`~scaling_credentials.ScalingAuth`'s
semantics, built on requests' own retrying auth (``HTTPDigestAuth.handle_401``): the
key goes in the ``Authorization`` header; a response hook reads a 401 (at most 64 KiB,
counted after decoding), and when the API rejected the key, refreshes it through the
shared :class:`~scaling_credentials.KeyCache` and resends the request once, through the
same session and adapter. The decisions are the ones every client shares
(:mod:`scaling_credentials._authcore`).
"""

from __future__ import annotations

import functools
import io
from http.cookiejar import CookieJar
from typing import Any, cast
from urllib.parse import urljoin, urlsplit

try:
    import requests
    import urllib3
    from requests.auth import AuthBase
    from requests.cookies import extract_cookies_to_jar
    from requests.utils import get_environ_proxies, select_proxy
except ImportError as exc:  # pragma: no cover - exercised in a fresh interpreter
    from ._extras import missing

    raise missing("requests", extra="requests") from exc

from .._api import ErrorBodyReader, error_body_too_long
from .._authcore import (
    ENVIRONMENT_PROXY,
    KeyAuthBase,
    check_target,
    refuse_proxied,
    same_origin,
)
from .._errors import ConfigurationError
from .._key import ApiKey

__all__ = ["ScalingRequestsAuth"]

_CHUNK = 16 * 1024


class ScalingRequestsAuth(AuthBase, KeyAuthBase):
    """Sends ``Authorization: Bearer <key>`` on requests made through a
    :class:`requests.Session` (``session.auth = ScalingRequestsAuth()``) or a single call
    (``requests.get(url, auth=...)``); after a 401 ``invalid_api_key``, refreshes the key
    and sends the request once more, returning the second answer (the first is in its
    ``history``).

    Built like :class:`~scaling_credentials.ScalingAuth` (a provider, a
    :class:`~scaling_credentials.KeyCache` that httpx, requests and aiohttp clients may
    share, a source URI or ``None`` for the environment; ``ttl``; ``allowed_hosts``), it
    keeps the same promises. Destinations are refused with
    :class:`~scaling_credentials.ConfigurationError` before anything is sent, and so is
    plain http that requests would send through the environment's proxy (``HTTP_PROXY``,
    ``ALL_PROXY``, not lifted by ``NO_PROXY``). The header never follows a redirect to
    another scheme, host or port (requests itself keeps it on a change of scheme or
    port), and a 401 from where the key did not go is no rejection. Generator and file
    bodies are never resent (the key is still refreshed).
    """

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        url = r.url or ""
        parts = urlsplit(url)
        check_target(parts.path, parts.query)
        marker = (parts.scheme, parts.netloc)
        if marker not in self._core.checked:
            self._core.check(
                marker,
                parts.scheme,
                parts.hostname or "",
                (parts.path, parts.query, parts.netloc),
                functools.partial(_proxied, url, parts.hostname or ""),
            )
        key = self._cache.get()
        r.headers["Authorization"] = self._core.bearer(key)
        r.register_hook("response", functools.partial(self._on_response, key))
        return r

    def _on_response(self, sent: ApiKey, r: requests.Response, **kwargs: Any) -> requests.Response:
        request = r.request
        if r.status_code != 401:
            if 300 <= r.status_code < 400:
                _withhold_across_origins(r, request)
            return r
        header = request.headers.get("Authorization")
        if header is None or header != self._core.bearer(sent):
            return r  # a redirect target that never got the key: not a rejection
        fresh = self._core.after_401(
            sent,
            _read_error_body(r),
            request.method or "",
            urlsplit(request.url or "").path,
            replayable=isinstance(request.body, (bytes, str, type(None))),
        )
        if fresh is None:
            return r
        r.content  # noqa: B018 - the 401 is small (it parsed): read it, free the connection
        r.close()
        prep = request.copy()
        jar = cast("CookieJar", prep._cookies)  # as requests' HTTPDigestAuth does
        extract_cookies_to_jar(jar, request, r.raw)
        prep.prepare_cookies(jar)
        prep.headers["Authorization"] = self._core.bearer(fresh)
        # A redirect after the retry is followed from the original request: it carries
        # the new key too, and never to another origin.
        request.headers["Authorization"] = prep.headers["Authorization"]
        assert r.connection is not None
        retried: requests.Response = r.connection.send(prep, **kwargs)
        retried.history.append(r)
        retried.request = prep
        if 300 <= retried.status_code < 400:
            _withhold_across_origins(retried, request)
        return retried


def _proxied(url: str, host: str) -> ConfigurationError | None:
    """The refusal when requests, trusting the environment (its default), would send a
    plain-http request for ``url`` through a proxy, by requests' own rules."""
    if select_proxy(url, get_environ_proxies(url)) is None:
        return None
    return refuse_proxied(
        urlsplit(url).scheme,
        host,
        proxy=ENVIRONMENT_PROXY,
        fix=f"Add {host.lower()} to NO_PROXY or use https://",
    )


def _withhold_across_origins(
    response: requests.Response, request: requests.PreparedRequest
) -> None:
    """Before requests follows a redirect (it copies ``request`` for the next hop), drop
    the key when the target is another origin: requests itself keeps the header across a
    change of scheme or port on the same host."""
    location = response.headers.get("location")
    if location is None or "Authorization" not in request.headers:
        return
    here = urlsplit(response.url)
    try:
        there = urlsplit(urljoin(response.url, location))
        keep = same_origin(
            (here.scheme, here.hostname or "", here.port),
            (there.scheme, there.hostname or "", there.port),
        )
    except ValueError:  # a malformed port: not the same origin
        keep = False
    if not keep:
        del request.headers["Authorization"]


# ---------------------------------------------------------------------- the 401 body


class _Replay(io.RawIOBase):
    """The raw (still encoded) bytes already read, then the rest of the original
    response's raw stream, unread: what the response hands its user."""

    def __init__(self, head: list[bytes], rest: urllib3.HTTPResponse | None) -> None:
        super().__init__()
        self._head = b"".join(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            size = min(len(view), len(self._head))
            view[:size] = self._head[:size]
            self._head = self._head[size:]
            return size
        if self._rest is None:
            return 0
        data = self._rest.read(len(view), decode_content=False)
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._rest is not None:  # as requests closes a response read in part
            self._rest.close()
            self._rest.release_conn()
        super().close()


def _read_error_body(r: requests.Response) -> bytes | None:
    """A 401's body, decoded, when it may be the API's error JSON: at most 64 KiB,
    counted after decoding, read from the raw stream with the bounded decoder every
    client shares (a decompression bomb stops at the cap), for at most a few seconds.
    ``None`` when larger, slower or not decodable in bounds. What was read is put back
    in front of the unread rest, so the response's user still gets all of it, decoded by
    urllib3 as usual."""
    raw = r.raw
    if not isinstance(raw, urllib3.HTTPResponse):
        return None  # an adapter of another kind: its body cannot be read in bounds
    if error_body_too_long(r.headers.get("content-length")):
        return None
    reader = ErrorBodyReader(r.headers.get("content-encoding", "").split(","))
    if reader.failed:  # an encoding with no bounded decoder here: nothing is read
        return None
    # read1 (urllib3 2) returns what has arrived, so that a dripping body meets the
    # deadline between bytes; read (urllib3 1.26) waits for a whole chunk.
    read = getattr(raw, "read1", None) or raw.read
    complete = False
    try:
        while True:
            chunk = read(_CHUNK, decode_content=False)
            if not chunk:
                complete = True
                break
            if not reader.feed(chunk):
                break
    except (urllib3.exceptions.HTTPError, OSError):
        pass  # not read: the user's own read of the body meets the error, as requests words it
    finally:
        r.raw = _replayed(raw, reader.raw, None if complete else raw)
    return reader.result() if complete else None


def _replayed(
    raw: urllib3.HTTPResponse, head: list[bytes], rest: urllib3.HTTPResponse | None
) -> urllib3.HTTPResponse:
    return urllib3.HTTPResponse(
        body=_Replay(head, rest),
        headers=raw.headers,
        status=raw.status,
        version=raw.version,
        reason=raw.reason,
        preload_content=False,
        decode_content=raw.decode_content,
        original_response=getattr(raw, "_original_response", None),
        enforce_content_length=False,
    )
