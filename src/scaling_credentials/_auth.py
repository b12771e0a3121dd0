"""ScalingAuth: an httpx.Auth that sends the key and picks up a rotated one.

The decisions (may the key go to this URL? is this 401 a rejected key? retry with which
key?) live in :mod:`._authcore`, which the sync and the async driver here, and the
requests and aiohttp integrations, all call, so that no two paths can drift apart. What
is left here reads httpx's types.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator, Iterable

import httpx

from ._api import aread_error_body, read_error_body
from ._authcore import ENVIRONMENT_PROXY, KeyAuthBase, check_target, refuse_proxied
from ._errors import ConfigurationError
from ._key import ApiKey

__all__ = ["ScalingAuth"]


# ---------------------------------------------------------------------- httpx's types
# What the shared core decides, read from httpx's requests and responses.


def _environment_proxy_applies(url: httpx.URL) -> bool:
    """Whether httpx, trusting the environment (its default), sends a request for ``url``
    through a proxy: ``HTTP_PROXY`` / ``ALL_PROXY`` (any case) that ``NO_PROXY`` does not
    lift for this host, matched by httpx's own rules."""
    try:
        from httpx._utils import URLPattern, get_environment_proxies
    except ImportError:  # a future httpx: the standard library's reading, more cautious
        import urllib.request

        proxies = urllib.request.getproxies()
        if not (proxies.get(url.scheme) or proxies.get("all")):
            return False
        return not urllib.request.proxy_bypass(url.host)
    mounts = sorted((URLPattern(k), v) for k, v in get_environment_proxies().items())
    for pattern, proxy in mounts:
        if pattern.matches(url):
            return proxy is not None
    return False


def _proxy_refusal(url: httpx.URL) -> ConfigurationError:
    host = url.host.lower()
    return refuse_proxied(
        url.scheme,
        url.host,
        proxy=ENVIRONMENT_PROXY,
        fix=f"Add {host} to NO_PROXY, use https://, or build the client with "
        "scaling_client(), which reaches loopback hosts directly",
    )


def _url_parts(url: httpx.URL) -> tuple[str, str, str]:
    return tuple(  # type: ignore[return-value]
        part.decode("ascii", "replace") for part in (url.raw_path, url.userinfo, url.raw_host)
    )


def _carried_the_key(request: httpx.Request, response: httpx.Response) -> bool:
    """Whether ``response`` answers a request that carried the key the auth put on
    ``request`` (its final hop, after any redirects). With
    ``follow_redirects``, httpx drops ``Authorization`` on the way to another origin, so
    a 401 from there (or from anywhere after it) says nothing about the key: only a 401
    from a server that received the key is a rejection."""
    try:
        final = response.request
    except RuntimeError:  # a response built by hand, with no request: as sent
        return True
    if final is request:
        return True
    sent = request.headers.get("Authorization")
    return sent is not None and final.headers.get("Authorization") == sent


def _is_replayable(request: httpx.Request) -> bool:
    # bytes, str, JSON and form bodies (and any body already read) are a ByteStream, which
    # can be sent again byte for byte; generators and files are one-shot.
    return isinstance(request.stream, httpx.ByteStream)


# ---------------------------------------------------------------------- the auth


class ScalingAuth(httpx.Auth, KeyAuthBase):
    """An :class:`httpx.Auth` for :class:`httpx.Client` and :class:`httpx.AsyncClient` that
    sends ``Authorization: Bearer <key>`` and, after a 401 ``invalid_api_key``, refreshes the
    key and sends the request once more.

    ``source`` is a :class:`Provider` (cached for ``ttl`` seconds), a :class:`KeyCache`, a
    source URI string, or ``None`` to configure from the environment
    (:func:`provider_from_env`). ``allowed_hosts`` adds hosts (``api.example.com`` or
    ``*.example.com``) that may receive the key over https, besides ``api.scaling.cloud``,
    its subdomains and loopback hosts.

    A plain-http request (to a loopback host) that the environment's proxy settings
    (``HTTP_PROXY``, ``ALL_PROXY``, not lifted by ``NO_PROXY``) would send through a
    proxy is refused with :class:`ConfigurationError` before anything is sent; https
    through a proxy (a ``CONNECT`` tunnel) is fine. Destinations are checked once per
    scheme, host and port; the path and query, for a key pasted into them, on every
    request.
    """

    requires_request_body = False
    requires_response_body = False

    # Hosts scaling_client() reaches with no proxy (see _reached_directly).
    _direct: frozenset[str] = frozenset()

    # -- shared steps

    def _reached_directly(self, hosts: Iterable[str]) -> None:
        # scaling_client() mounts these hosts with no proxy: the environment's proxy
        # settings do not apply to them.
        self._direct = frozenset(hosts)

    def _check(self, request: httpx.Request) -> None:
        url = request.url
        try:
            # httpx's parsed URL, read whole (it runs on every request): its properties
            # would each read it and encode their part again.
            ref = url._uri_reference
        except AttributeError:  # a future httpx: its public properties
            check_target(url.raw_path.decode("ascii", "replace"), "")
            marker: tuple[object, ...] = (url.scheme, url.raw_host, url.port, url.userinfo)
        else:
            check_target(ref.path, ref.query or "")
            marker = (ref.scheme, ref.host, ref.port, ref.userinfo)
        if marker in self._core.checked:
            return
        self._core.check(marker, url.scheme, url.host, _url_parts(url), lambda: self._proxied(url))

    def _proxied(self, url: httpx.URL) -> ConfigurationError | None:
        if url.host in self._direct or not _environment_proxy_applies(url):
            return None
        return _proxy_refusal(url)

    def _apply(self, request: httpx.Request, key: ApiKey) -> None:
        request.headers["Authorization"] = self._core.bearer(key)

    # -- the drivers

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        self._check(request)
        key = self._cache.get()
        self._apply(request, key)
        response = yield request
        if response.status_code != 401 or not _carried_the_key(request, response):
            return
        fresh = self._core.after_401(
            key,
            read_error_body(response),
            request.method,
            request.url.path,
            replayable=_is_replayable(request),
        )
        if fresh is not None:
            self._apply(request, fresh)
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        self._check(request)
        key = self._cache._fresh() or await self._cache.aget()
        self._apply(request, key)
        response = yield request
        if response.status_code != 401 or not _carried_the_key(request, response):
            return
        fresh = await self._core.aafter_401(
            key,
            await aread_error_body(response),
            request.method,
            request.url.path,
            replayable=_is_replayable(request),
        )
        if fresh is not None:
            self._apply(request, fresh)
            yield request
