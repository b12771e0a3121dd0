"""ScalingAuth: an httpx.Auth that sends the key and picks up a rotated one.

The decisions (may the key go to this URL? is this 401 a rejected key? retry with which
key?) live in plain functions that both the sync and the async driver call, so the two
paths cannot drift apart.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncGenerator, Generator, Iterable
from datetime import timedelta
from typing import Literal

import httpx

from ._api import aread_error_body, parse_error_body, read_error_body
from ._cache import KeyCache, RefreshOutcome
from ._errors import ConfigurationError, ScalingCredentialsError
from ._key import ApiKey
from ._provider import Provider
from ._redact import get_logger, looks_like_key

__all__ = ["ScalingAuth", "is_key_rejection", "retry_decision"]

logger: logging.Logger = get_logger("scaling_credentials.auth")

SCALING_HOST = "api.scaling.cloud"


# ---------------------------------------------------------------------- plain decisions


def _is_loopback(host: str) -> bool:
    """Whether ``host`` surely names this machine: ``localhost`` (any case) or a loopback
    IP literal (``127.0.0.0/8``, ``::1`` in any spelling, IPv4-mapped ``::ffff:127.x``).
    ``localhost.`` and other names are not: a fully qualified name is resolved through
    DNS, which may answer with any address."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def _normalize_hosts(hosts: Iterable[str] | None) -> tuple[frozenset[str], tuple[str, ...]]:
    if hosts is None:
        return frozenset(), ()
    if isinstance(hosts, str):
        hosts = [hosts]
    exact: set[str] = set()
    suffixes: list[str] = []
    for raw in hosts:
        if not isinstance(raw, str) or not raw.strip():
            raise ConfigurationError(f"allowed_hosts entries must be host names, got {raw!r}")
        host = raw.strip().lower().rstrip(".")
        bare_ipv6 = host.count(":") >= 2  # an IPv6 literal has several colons
        if "/" in host or "@" in host or (":" in host and not bare_ipv6):
            raise ConfigurationError(
                f"allowed_hosts takes bare host names (api.example.com, *.example.com), "
                f"not URLs or host:port, got {raw!r}"
            )
        if host.startswith("*."):
            suffixes.append(host[1:])
        elif host.startswith("."):
            suffixes.append(host)
        else:
            exact.add(host.strip("[]"))
    return frozenset(exact), tuple(suffixes)


def check_destination(
    url: httpx.URL, exact: frozenset[str] = frozenset(), suffixes: tuple[str, ...] = ()
) -> None:
    """Raise :class:`ConfigurationError` unless the key may be sent to ``url``: https to
    ``api.scaling.cloud``, its subdomains or ``allowed_hosts``; any scheme to loopback."""
    loopback = _is_loopback(url.host)
    host = url.host.lower().rstrip(".")
    known = (
        host == SCALING_HOST
        or host.endswith("." + SCALING_HOST)
        or host in exact
        or any(host.endswith(s) for s in suffixes)
    )
    if not (known or loopback):
        raise ConfigurationError(
            f"refusing to send the Scaling API key to {host!r}: it goes only to "
            f"{SCALING_HOST}, its subdomains, loopback hosts and allowed_hosts; if this host "
            "is yours, pass ScalingAuth(..., allowed_hosts=[...])"
        )
    if url.scheme != "https" and not loopback:
        raise ConfigurationError(
            f"refusing to send the Scaling API key over plain {url.scheme}:// to {host!r}; "
            "use https://"
        )


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


def check_not_proxied(url: httpx.URL) -> None:
    """Raise :class:`ConfigurationError` when a plain-http request for ``url`` would go
    through a proxy set in the environment: the proxy would read the key in cleartext."""
    if url.scheme == "https" or not _environment_proxy_applies(url):
        return
    host = url.host.lower()
    raise ConfigurationError(
        f"refusing to send the Scaling API key over plain {url.scheme}:// to {host!r} "
        "through the proxy the environment sets (HTTP_PROXY or ALL_PROXY): the proxy "
        f"would read the key in cleartext. Add {host} to NO_PROXY, use https://, or build "
        "the client with scaling_client(), which reaches loopback hosts directly"
    )


def check_url(url: httpx.URL) -> None:
    """Raise :class:`ConfigurationError` when ``url`` holds an API key (in its host, user
    info, path or query): the key would be written to the server's and every proxy's
    access logs, and to httpx's errors."""
    for part in (url.raw_path, url.userinfo, url.raw_host):
        if looks_like_key(part.decode("ascii", "replace")):
            raise ConfigurationError(
                "refusing to send a request whose URL holds an API key (scl_live_...): the "
                "key travels only in the Authorization header; check the base URL and the path"
            )


def is_key_rejection(response: httpx.Response) -> bool:
    """True for a 401 whose JSON ``code`` is ``invalid_api_key`` (the body must be read)."""
    if response.status_code != 401:
        return False
    return parse_error_body(response.content).code == "invalid_api_key"


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


Decision = Literal["retry", "same-key", "not-replayable"]


def retry_decision(
    sent: ApiKey, fresh: ApiKey, *, replayable: bool, known_rejected: bool = False
) -> Decision:
    """What to do after a rejected key was refreshed: retry with ``fresh``, or return the
    401 because the source still holds the rejected key (or only keys the API rejected
    before: ``known_rejected``) or the body cannot be resent."""
    if fresh == sent or known_rejected:
        return "same-key"
    if not replayable:
        return "not-replayable"
    return "retry"


def _request_id(body: bytes) -> str:
    return parse_error_body(body).request_id or "none"


# ---------------------------------------------------------------------- the auth


class ScalingAuth(httpx.Auth):
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
    scheme, host and port.
    """

    requires_request_body = False
    requires_response_body = False

    def __init__(
        self,
        source: Provider | KeyCache | str | None = None,
        *,
        ttl: float | timedelta | None = None,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        self._cache = _as_cache(source, ttl)
        self._exact, self._suffixes = _normalize_hosts(allowed_hosts)
        self._checked: set[tuple[str, bytes, int | None, bytes]] = set()
        self._direct: frozenset[str] = frozenset()
        self._header: tuple[ApiKey, str] | None = None

    @property
    def cache(self) -> KeyCache:
        """The key cache this auth reads from."""
        return self._cache

    def __repr__(self) -> str:
        return f"<ScalingAuth {self._cache.describe()}>"

    # -- shared steps

    def _reached_directly(self, hosts: Iterable[str]) -> None:
        # scaling_client() mounts these hosts with no proxy: the environment's proxy
        # settings do not apply to them.
        self._direct = frozenset(hosts)

    def _check(self, request: httpx.Request) -> None:
        url = request.url
        marker = (url.scheme, url.raw_host, url.port, url.userinfo)
        if marker in self._checked:
            return
        # Until a request to this destination passed every check, each one is checked
        # whole: a base URL holding a key is refused on every request.
        check_url(url)
        check_destination(url, self._exact, self._suffixes)
        if url.host not in self._direct:
            check_not_proxied(url)
        if len(self._checked) < 64:
            self._checked.add(marker)

    def _apply(self, request: httpx.Request, key: ApiKey) -> None:
        header = self._header
        if header is None or header[0] is not key:
            header = (key, "Bearer " + key.reveal())
            self._header = header
        request.headers["Authorization"] = header[1]

    def _after_refresh(
        self,
        request: httpx.Request,
        body: bytes,
        sent: ApiKey,
        fresh: ApiKey,
        outcome: RefreshOutcome,
    ) -> bool:
        decision = retry_decision(
            sent, fresh, replayable=_is_replayable(request), known_rejected=outcome == "rejected"
        )
        if decision == "retry":
            logger.info(
                "Scaling API rejected key %s (requestId %s); retrying %s %s once with %s from %s",
                sent.masked,
                _request_id(body),
                request.method,
                request.url.path,
                fresh.masked,
                self._cache.describe(),
            )
            self._apply(request, fresh)
            return True
        if decision == "same-key":
            # The cache warned (once a minute per key, naming the likely cause).
            logger.debug(
                "Scaling API rejected key %s (requestId %s); the source has no other key "
                "(%s), returning the 401",
                sent.masked,
                _request_id(body),
                outcome,
            )
        else:
            logger.warning(
                "Scaling API rejected key %s (requestId %s); the key was refreshed to %s but "
                "the request body is a one-shot stream that cannot be resent, so the 401 is "
                "returned; the next request uses the new key",
                sent.masked,
                _request_id(body),
                fresh.masked,
            )
        return False

    def _refresh_failed(self, body: bytes, sent: ApiKey, exc: Exception) -> None:
        logger.warning(
            "Scaling API rejected key %s (requestId %s) and refreshing it from %s failed "
            "(%s); returning the 401",
            sent.masked,
            _request_id(body),
            self._cache.describe(),
            type(exc).__name__,
        )

    # -- the drivers

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        self._check(request)
        key = self._cache.get()
        self._apply(request, key)
        response = yield request
        if response.status_code != 401:
            return
        if not _carried_the_key(request, response):
            return
        body = read_error_body(response)
        if body is None or parse_error_body(body).code != "invalid_api_key":
            return
        try:
            fresh, outcome = self._cache._refresh(key)
        except ScalingCredentialsError as exc:
            self._refresh_failed(body, key, exc)
            return
        if self._after_refresh(request, body, key, fresh, outcome):
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        self._check(request)
        key = self._cache._fresh() or await self._cache.aget()
        self._apply(request, key)
        response = yield request
        if response.status_code != 401:
            return
        if not _carried_the_key(request, response):
            return
        body = await aread_error_body(response)
        if body is None or parse_error_body(body).code != "invalid_api_key":
            return
        try:
            fresh, outcome = await self._cache._arefresh(key)
        except ScalingCredentialsError as exc:
            self._refresh_failed(body, key, exc)
            return
        if self._after_refresh(request, body, key, fresh, outcome):
            yield request


def _as_cache(source: Provider | KeyCache | str | None, ttl: float | timedelta | None) -> KeyCache:
    if isinstance(source, KeyCache):
        if ttl is not None:
            raise ConfigurationError(
                "ttl applies when ScalingAuth builds the cache; pass ttl to KeyCache instead"
            )
        return source
    if source is None:
        from ._registry import provider_from_env

        return KeyCache(provider_from_env(), ttl=ttl)
    if isinstance(source, str):
        from ._registry import provider_from_uri

        return KeyCache(provider_from_uri(source), ttl=ttl)
    if isinstance(source, Provider):
        return KeyCache(source, ttl=ttl)
    raise ConfigurationError(
        f"ScalingAuth takes a Provider, a KeyCache, a source URI or None, got "
        f"{type(source).__name__}"
    )
