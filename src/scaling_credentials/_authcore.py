"""What every client's auth decides, free of any HTTP library's types.

:class:`~scaling_credentials.ScalingAuth` (httpx), ``ScalingRequestsAuth`` (requests) and
``ScalingMiddleware`` (aiohttp) are drivers: each reads its library's request and
response and does the I/O its library allows. Everything they decide alike lives here,
in plain functions and one small class they all call, so that the three cannot drift:

* where the key may go (:func:`check_destination`, from a scheme and a host), whether a
  URL holds a key (:func:`check_url_parts`; :func:`check_target` for the path and query
  of every request), and the refusal of a plain-http request that a proxy would carry
  (:func:`refuse_proxied`);
* whether an answer is a rejection of the key (:func:`is_rejection`, from the status,
  the body's bytes and whether the request carried the key);
* what to do once the key was refreshed (:func:`retry_decision`);
* the refresh itself, through the shared :class:`KeyCache`, and its log lines
  (:meth:`KeyAuthCore.after_401`, :meth:`KeyAuthCore.aafter_401`).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Hashable, Iterable
from datetime import timedelta
from typing import Literal, NamedTuple

from ._api import parse_error_body
from ._cache import KeyCache, RefreshOutcome
from ._errors import ConfigurationError, ScalingCredentialsError
from ._key import KEY_PREFIX, ApiKey
from ._provider import Provider
from ._redact import get_logger, looks_like_key

__all__ = [
    "ENVIRONMENT_PROXY",
    "SCALING_HOST",
    "AllowedHosts",
    "Decision",
    "KeyAuthBase",
    "KeyAuthCore",
    "check_destination",
    "check_target",
    "check_url_parts",
    "is_loopback",
    "is_rejection",
    "normalize_hosts",
    "refuse_proxied",
    "retry_decision",
    "same_origin",
]

logger: logging.Logger = get_logger("scaling_credentials.auth")

SCALING_HOST = "api.scaling.cloud"
# Destinations remembered as checked, per auth: past this, each is checked every time.
MAX_CHECKED = 64


# ---------------------------------------------------------------------- destinations


def is_loopback(host: str) -> bool:
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


class AllowedHosts(NamedTuple):
    """``allowed_hosts`` as checked: exact names and ``.suffix`` patterns."""

    exact: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()


def normalize_hosts(hosts: Iterable[str] | None) -> AllowedHosts:
    """``allowed_hosts`` (``api.example.com``, ``*.example.com``) in checked form; a
    :class:`ConfigurationError` for anything that is not a bare host name."""
    if hosts is None:
        return AllowedHosts()
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
    return AllowedHosts(frozenset(exact), tuple(suffixes))


NO_HOSTS = AllowedHosts()


def check_destination(
    scheme: str, host: str, allowed: AllowedHosts = NO_HOSTS, *, owner: str = "ScalingAuth"
) -> None:
    """Raise :class:`ConfigurationError` unless the key may be sent to ``host`` over
    ``scheme``: https to ``api.scaling.cloud``, its subdomains or ``allowed``; any scheme
    to loopback. ``owner`` names the class whose ``allowed_hosts`` the message suggests."""
    loopback = is_loopback(host)
    name = host.lower().rstrip(".")
    known = (
        name == SCALING_HOST
        or name.endswith("." + SCALING_HOST)
        or name in allowed.exact
        or any(name.endswith(s) for s in allowed.suffixes)
    )
    if not (known or loopback):
        raise ConfigurationError(
            f"refusing to send the Scaling API key to {name!r}: it goes only to "
            f"{SCALING_HOST}, its subdomains, loopback hosts and allowed_hosts; if this host "
            f"is yours, pass {owner}(..., allowed_hosts=[...])"
        )
    if scheme.lower() != "https" and not loopback:
        raise ConfigurationError(
            f"refusing to send the Scaling API key over plain {scheme}:// to {name!r}; use https://"
        )


def check_url_parts(*parts: str) -> None:
    """Raise :class:`ConfigurationError` when a part of a URL (host, user info, path,
    query) holds an API key: the key would be written to the server's and every proxy's
    access logs, and to the HTTP library's errors."""
    for part in parts:
        if looks_like_key(part):
            raise ConfigurationError(
                "refusing to send a request whose URL holds an API key (scl_live_...): the "
                "key travels only in the Authorization header; check the base URL and the path"
            )


def check_target(path: str, query: str = "") -> None:
    """:func:`check_url_parts` for a request's path and query, as sent (apart, or joined
    in ``path``), which differ from one request to the next on a destination already
    checked: run on every request.
    Cheap where it finds nothing, the common case: without a ``%`` or the key's prefix
    in either, nothing can hold a key (a substring test on each, some 100 ns in all)."""
    if "%" in path or KEY_PREFIX in path or "%" in query or KEY_PREFIX in query:
        check_url_parts(path, query)


#: How a refusal names a proxy read from the environment.
ENVIRONMENT_PROXY = "the proxy the environment sets (HTTP_PROXY or ALL_PROXY)"


def refuse_proxied(scheme: str, host: str, *, proxy: str, fix: str) -> ConfigurationError:
    """The error for a plain-http request carrying the key that ``proxy`` (a description:
    "the proxy the environment sets (HTTP_PROXY or ALL_PROXY)") would carry: the proxy
    would read the key in cleartext. ``fix`` says how to reach the host directly."""
    name = host.lower()
    return ConfigurationError(
        f"refusing to send the Scaling API key over plain {scheme}:// to {name!r} "
        f"through {proxy}: the proxy would read the key in cleartext. {fix}"
    )


def same_origin(a: tuple[str, str, int | None], b: tuple[str, str, int | None]) -> bool:
    """Whether two ``(scheme, host, port)`` are one origin (default ports filled in)."""

    def norm(origin: tuple[str, str, int | None]) -> tuple[str, str, int | None]:
        scheme, host, port = origin
        scheme = scheme.lower()
        if port is None:
            port = {"http": 80, "https": 443}.get(scheme)
        return scheme, host.lower().rstrip(".").strip("[]"), port

    return norm(a) == norm(b)


# ---------------------------------------------------------------------- rejections


def is_rejection(status: int, body: bytes | None, *, carried: bool) -> bool:
    """Whether an answer rejects the key: a 401 whose JSON ``code`` is
    ``invalid_api_key``, answering a request that carried the key. ``body`` is the
    decoded body, ``None`` when it could not be read within bounds (then it is not)."""
    if status != 401 or not carried or body is None:
        return False
    return parse_error_body(body).code == "invalid_api_key"


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


# ---------------------------------------------------------------------- the shared state


class KeyAuthCore:
    """The state one auth keeps, whatever its HTTP library: the key cache, the allowed
    hosts, the destinations already checked, and the ``Bearer`` header of the current key.

    ``owner`` is the class name its messages use.
    """

    def __init__(
        self,
        source: Provider | KeyCache | str | None,
        *,
        ttl: float | timedelta | None,
        allowed_hosts: Iterable[str] | None,
        owner: str,
    ) -> None:
        self.owner = owner
        self.cache = as_cache(source, ttl, owner=owner)
        self.allowed = normalize_hosts(allowed_hosts)
        self.checked: set[Hashable] = set()
        self._header: tuple[ApiKey, str] | None = None

    def bearer(self, key: ApiKey) -> str:
        """``Bearer <key>``, built once per key."""
        header = self._header
        if header is None or header[0] is not key:
            header = (key, "Bearer " + key.reveal())
            self._header = header
        return header[1]

    def check(
        self,
        marker: Hashable,
        scheme: str,
        host: str,
        url_parts: Iterable[str],
        proxied: Callable[[], ConfigurationError | None],
    ) -> None:
        """Check a destination whole (the URL's ``url_parts`` for a key, the host and
        scheme, then ``proxied()``, the refusal for a proxy that would carry a plain-http
        request, if any) unless ``marker`` already passed; remember it when it passes.
        The marker holds no path or query: the drivers check those on every request
        (:func:`check_target`)."""
        if marker in self.checked:
            return
        # Until a request to this destination passed every check, each one is checked
        # whole: a base URL holding a key is refused on every request.
        check_url_parts(*url_parts)
        check_destination(scheme, host, self.allowed, owner=self.owner)
        if scheme.lower() != "https":
            refusal = proxied()
            if refusal is not None:
                raise refusal
        if len(self.checked) < MAX_CHECKED:
            self.checked.add(marker)

    # -- after a 401 from the origin that received the key

    def after_401(
        self, sent: ApiKey, body: bytes | None, method: str, path: str, *, replayable: bool
    ) -> ApiKey | None:
        """For a 401 (with its decoded ``body``) answering a request that carried
        ``sent``: when it rejects the key, refresh it through the cache (coalesced with
        every other caller) and return the key to resend the request with, or ``None``
        to return the 401. Logs what it did."""
        if not is_rejection(401, body, carried=True):
            return None
        assert body is not None
        try:
            fresh, outcome = self.cache._refresh(sent)
        except ScalingCredentialsError as exc:
            self._refresh_failed(body, sent, exc)
            return None
        return self._after_refresh(body, sent, fresh, outcome, method, path, replayable)

    async def aafter_401(
        self, sent: ApiKey, body: bytes | None, method: str, path: str, *, replayable: bool
    ) -> ApiKey | None:
        """The async twin of :meth:`after_401`."""
        if not is_rejection(401, body, carried=True):
            return None
        assert body is not None
        try:
            fresh, outcome = await self.cache._arefresh(sent)
        except ScalingCredentialsError as exc:
            self._refresh_failed(body, sent, exc)
            return None
        return self._after_refresh(body, sent, fresh, outcome, method, path, replayable)

    def _after_refresh(
        self,
        body: bytes,
        sent: ApiKey,
        fresh: ApiKey,
        outcome: RefreshOutcome,
        method: str,
        path: str,
        replayable: bool,
    ) -> ApiKey | None:
        decision = retry_decision(
            sent, fresh, replayable=replayable, known_rejected=outcome == "rejected"
        )
        if decision == "retry":
            logger.info(
                "Scaling API rejected key %s (requestId %s); retrying %s %s once with %s from %s",
                sent.masked,
                _request_id(body),
                method,
                path,
                fresh.masked,
                self.cache.describe(),
            )
            return fresh
        if decision == "same-key" and outcome == "rejected":
            # The cache warned (once a minute per key): the source holds only keys the
            # API rejected.
            logger.debug(
                "Scaling API rejected key %s (requestId %s); the source returned %s, a key "
                "the API rejected before: returning the 401, not resending",
                sent.masked,
                _request_id(body),
                fresh.masked,
            )
        elif decision == "same-key":
            # The cache warned (once a minute per key, naming the likely cause).
            logger.debug(
                "Scaling API rejected key %s (requestId %s); no other key to resend with "
                "(refresh: %s), returning the 401",
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
        return None

    def _refresh_failed(self, body: bytes, sent: ApiKey, exc: Exception) -> None:
        logger.warning(
            "Scaling API rejected key %s (requestId %s) and refreshing it from %s failed "
            "(%s); returning the 401",
            sent.masked,
            _request_id(body),
            self.cache.describe(),
            type(exc).__name__,
        )


class KeyAuthBase:
    """What every auth (httpx's, requests', aiohttp's) is built from: a source, a TTL and
    allowed hosts, read through one :class:`KeyAuthCore`; it names itself in messages."""

    def __init__(
        self,
        source: Provider | KeyCache | str | None = None,
        *,
        ttl: float | timedelta | None = None,
        allowed_hosts: Iterable[str] | None = None,
    ) -> None:
        self._core = KeyAuthCore(
            source, ttl=ttl, allowed_hosts=allowed_hosts, owner=type(self).__name__
        )
        self._cache = self._core.cache

    @property
    def cache(self) -> KeyCache:
        """The key cache this auth reads from (httpx, requests and aiohttp clients may
        share one)."""
        return self._cache

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._cache.describe()}>"


def as_cache(
    source: Provider | KeyCache | str | None,
    ttl: float | timedelta | None,
    *,
    owner: str = "ScalingAuth",
) -> KeyCache:
    """The :class:`KeyCache` an auth reads from: ``source`` itself when it is one, else
    one built around the provider that ``source`` names (``None``: the environment)."""
    if isinstance(source, KeyCache):
        if ttl is not None:
            raise ConfigurationError(
                f"ttl applies when {owner} builds the cache; pass ttl to KeyCache instead"
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
        f"{owner} takes a Provider, a KeyCache, a source URI or None, got {type(source).__name__}"
    )
