"""``ScalingMiddleware``: the Scaling API key for aiohttp (extra ``[aiohttp]``).

An aiohttp client middleware (aiohttp 3.12 or later) with
:class:`~scaling_credentials.ScalingAuth`'s semantics, shaped like the token-refresh
middleware of aiohttp's documentation: it sets the ``Authorization`` header, calls the
handler, and after a 401 that rejects the key, refreshes it through the shared
:class:`~scaling_credentials.KeyCache` and calls the handler once more. The decisions are
the ones every client shares (:mod:`scaling_credentials._authcore`).

aiohttp follows redirects outside the middlewares, calling them again for every hop with
a new request. The middleware notes each redirect it answers, in the calling task's
context, and recognises the next hop by its URL (``Location`` resolved as aiohttp
resolves it, ``//host/path`` included) and by the chain it belongs to: a hop to another
origin (scheme, host or port) gets no key, its answers are never a rejection, and
neither is anything after it, as with httpx and requests. A request of the caller's own
is never taken for a hop, even to the URL of a redirect it did not follow.
"""

from __future__ import annotations

import asyncio
import contextvars
import warnings
from typing import NamedTuple

try:
    import aiohttp
    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse, hdrs
    from aiohttp.payload import BytesPayload
    from yarl import URL
except ImportError as exc:  # pragma: no cover - exercised in a fresh interpreter
    from ._extras import missing

    raise missing("aiohttp", extra="aiohttp") from exc

from .._api import ErrorBodyReader, error_body_too_long
from .._authcore import KeyAuthBase, check_target, refuse_proxied, same_origin
from .._errors import ConfigurationError
from .._key import ApiKey

__all__ = ["ScalingMiddleware"]

_CHUNK = 16 * 1024
_REDIRECTS = frozenset((301, 302, 303, 307, 308))

Origin = tuple[str, str, "int | None"]


class _Hop(NamedTuple):
    """A redirect answered in this task: where aiohttp goes next, the origin that may
    receive the key on that hop (``None``: none may, the chain left it), and the chain
    itself (see :func:`_chain`)."""

    target: URL
    keyed: Origin | None
    chain: object


_next_hop: contextvars.ContextVar[_Hop | None] = contextvars.ContextVar(
    "scaling_credentials_next_hop", default=None
)


class ScalingMiddleware(KeyAuthBase):
    """An aiohttp client middleware that sends ``Authorization: Bearer <key>`` and, after
    a 401 ``invalid_api_key``, refreshes the key and sends the request once more::

        aiohttp.ClientSession(middlewares=(ScalingMiddleware(),))

    Its arguments and promises are :class:`~scaling_credentials.ScalingAuth`'s. Among
    them: what may not receive the key raises
    :class:`~scaling_credentials.ConfigurationError` before a byte is sent, which here
    includes plain http through any proxy (``proxy=``, or the environment's with
    ``trust_env=True``); no redirect hop to another origin gets the key, nor counts as a
    rejection; streaming and file bodies are not resent, though the key is refreshed. The
    401 answer that was retried is released (aiohttp keeps no history of it).
    """

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        url = request.url
        hop = _next_hop.get()
        if hop is not None:
            _next_hop.set(None)
            if _is_next_hop(hop, request) and (
                hop.keyed is None or not same_origin(hop.keyed, _origin(url))
            ):
                # A redirect hop to another origin: no key, nothing checked or read.
                response = await handler(request)
                _note_redirect(request, response, None)
                return response
        # The request line's target, which aiohttp builds (and caches on the URL) anyway.
        check_target(url.raw_path_qs)
        # The proxy is part of the route: the same URL through a proxy (proxy=, or a
        # session with trust_env=True sharing this middleware) is checked anew.
        marker = (url.scheme, url.raw_authority, request.proxy)
        if marker not in self._core.checked:
            self._check(request, url, marker)
        key = self._cache._fresh() or await self._cache.aget()
        request.headers[hdrs.AUTHORIZATION] = self._core.bearer(key)
        response = await handler(request)
        if response.status == 401:
            response = await self._after_401(request, handler, response, key)
        if response.status in _REDIRECTS:
            _note_redirect(request, response, _origin(url))
        return response

    def _check(self, request: ClientRequest, url: URL, marker: tuple[str, str, URL | None]) -> None:
        self._core.check(
            marker,
            url.scheme,
            url.host or "",
            (url.raw_path, url.raw_query_string, url.raw_authority),
            lambda: _proxied(request),
        )

    async def _after_401(
        self,
        request: ClientRequest,
        handler: ClientHandlerType,
        response: ClientResponse,
        sent: ApiKey,
    ) -> ClientResponse:
        fresh = await self._core.aafter_401(
            sent,
            await _read_error_body(request, response),
            request.method,
            request.url.path,
            replayable=isinstance(request.body, (bytes, BytesPayload)),
        )
        if fresh is None:
            return response
        response.release()
        request.headers[hdrs.AUTHORIZATION] = self._core.bearer(fresh)
        return await handler(request)


def _proxied(request: ClientRequest) -> ConfigurationError | None:
    """The refusal when aiohttp would send this plain-http request through a proxy
    (given with ``proxy=``, or read from the environment with ``trust_env=True``)."""
    if request.proxy is None:
        return None
    host = request.url.host or ""
    return refuse_proxied(
        request.url.scheme,
        host,
        proxy="a proxy (proxy=, or the environment's with trust_env=True)",
        fix=f"Reach {host.lower()} without a proxy (and add it to NO_PROXY) or use https://",
    )


def _note_redirect(request: ClientRequest, response: ClientResponse, keyed: Origin | None) -> None:
    """Remember where aiohttp goes next when ``response`` (to ``request``) is a redirect
    it may follow, resolving ``Location`` as aiohttp does."""
    if response.status not in _REDIRECTS:
        return
    location = response.headers.get(hdrs.LOCATION) or response.headers.get(hdrs.URI)
    if location is None:
        return
    try:
        # Always joined: a scheme-relative "//host/path" names another origin (yarl
        # calls it absolute, but aiohttp resolves it against the current URL), and
        # "http:path" is a path on this one.
        target = response.url.join(URL(location))
    except ValueError:
        return  # aiohttp refuses to follow it
    if keyed is not None and not same_origin(
        keyed, (target.scheme, target.host or "", target.port)
    ):
        keyed = None  # the chain leaves the origin that had the key: the key stays behind
    _next_hop.set(_Hop(target, keyed, _chain(request)))


def _chain(request: ClientRequest) -> object:
    """What every hop of one redirect chain shares and no other request does: aiohttp
    builds each hop's request with the trace list of the call that started the chain
    (``ClientRequest._traces``, one new list per call). ``None`` if a future aiohttp
    lacks it: then a hop is recognised by its URL alone."""
    return getattr(request, "_traces", None)


def _is_next_hop(hop: _Hop, request: ClientRequest) -> bool:
    """Whether ``request`` is the hop aiohttp follows after ``hop``'s redirect: the same
    chain (not a request of the caller's own after a redirect left unfollowed), to the
    same origin and path (the query and its encoding may be rewritten on the way)."""
    if hop.chain is not None and _chain(request) is not hop.chain:
        return False
    expected, url = hop.target, request.url
    same_path = (expected.path or "/") == (url.path or "/")
    return same_path and same_origin(_origin(expected), _origin(url))


def _origin(url: URL) -> Origin:
    return (url.scheme, url.host or "", url.port)


# ---------------------------------------------------------------------- the 401 body


async def _read_error_body(request: ClientRequest, response: ClientResponse) -> bytes | None:
    """A 401's body, decoded, when it may be the API's error JSON: at most 64 KiB, counted
    after decoding, for at most a few seconds (each read has the remaining time as its
    timeout). ``None`` when larger, slower or not decodable in bounds. What was read is
    put back in front of the unread rest, so ``response.read()`` still returns all of it.

    aiohttp decodes the body before the middleware sees it when ``auto_decompress`` is
    on (the session's, or the request's own ``auto_decompress=``) and the encoding is one
    it knows: it then bounds its own decoding (3.13.3 and later), and the bounded
    decoder every client shares only counts. Otherwise (``auto_decompress=False``, or
    ``gzip, gzip``, which aiohttp leaves as it came) that decoder undoes ``gzip`` and
    ``deflate`` itself. Which it was is read from this response (:func:`_decoded`)."""
    if error_body_too_long(response.headers.get(hdrs.CONTENT_LENGTH)):
        return None
    decoded = _decoded(request, response)
    reader = ErrorBodyReader(() if decoded else response.headers.getall(hdrs.CONTENT_ENCODING, ()))
    if reader.failed:
        return None
    content = response.content
    complete = False
    try:
        while True:
            chunk = await asyncio.wait_for(content.read(_CHUNK), max(0.0, reader.remaining()))
            if not chunk:
                complete = True
                break
            if not reader.feed(chunk):
                break
    except (aiohttp.ClientError, asyncio.TimeoutError):
        pass  # not read in bounds: the user's own read meets what is left
    finally:
        _put_back(content, b"".join(reader.raw))
    return reader.result() if complete else None


def _decoded(request: ClientRequest, response: ClientResponse) -> bool:
    """Whether aiohttp decodes this response's body before handing it over. It wraps the
    stream in a decoder only then, and the decoder sets the stream's
    ``total_compressed_bytes`` (the count behind the documented ``total_raw_bytes``),
    ``None`` otherwise. Read per response, since a request's ``auto_decompress=``
    overrides the session's; an aiohttp without that attribute: the session's setting."""
    try:
        return response.content.total_compressed_bytes is not None
    except AttributeError:  # pragma: no cover - a future aiohttp (3.13.3 to 3.14 have it)
        return request.session.auto_decompress


def _put_back(content: aiohttp.StreamReader, data: bytes) -> None:
    # StreamReader.unread_data is deprecated for general use (a reader's position is
    # otherwise lost); here it returns the bytes read to the front of the stream, as if
    # they had not been read. The warning says nothing to our users.
    if not data:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        content.unread_data(data)
