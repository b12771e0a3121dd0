"""The redirect policy: Vault credentials never leave the configured Vault origin.

hvac sends every request through requests, which follows redirects: a 307 keeps the
method, the body and every header but ``Authorization``, so a Vault address that answers
``307 Location: http://elsewhere/...`` would hand ``elsewhere`` the ``X-Vault-Token``
header, an AppRole ``role_id``/``secret_id`` or a JWT, even after an https -> http
downgrade.

:class:`SameOriginAdapter` (an hvac ``JSONAdapter``, hvac's public extension point)
checks each answer before requests acts on it: a redirect whose target has the scheme,
host and port of the configured address is followed (a standby pointing to the active
node behind the same address), any other is refused with :class:`RedirectRefused`
before a byte is sent there. The check is a requests response hook passed with each
request, so a session given by the caller is used but never changed.

This module imports hvac: import it only when a client is built.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urljoin, urlsplit

import hvac.adapters

from ._errors import RedirectRefused

__all__ = ["SameOriginAdapter", "origin_of"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an absolute http(s) URL, the port made explicit and
    the host lowercased; ``None`` for anything else (which no request may follow)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an unparseable port or IPv6 literal
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port if port is not None else _DEFAULT_PORTS[scheme]


def _shown(url: str) -> str:
    """The origin of ``url`` for a message: ``scheme://host:port``, never its path, query
    or user info (a hostile ``Location`` may echo what it received)."""
    origin = origin_of(url)
    if origin is None:
        scheme = urlsplit(url).scheme if "://" in url else ""
        return f"a non-http(s) location ({scheme or 'no scheme'})"[:100]
    scheme, host, port = origin
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}"[:300]


def _as_list(hooks: Any) -> list[Any]:
    if hooks is None:
        return []
    return [hooks] if callable(hooks) else list(hooks)


class SameOriginAdapter(hvac.adapters.JSONAdapter):  # type: ignore[misc]  # hvac is untyped
    """hvac's JSON adapter, refusing redirects away from its ``base_uri``'s origin."""

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        hooks = dict(kwargs.pop("hooks", None) or {})
        # requests lets a request's response hooks replace the session's: list the
        # session's too, so that a caller's session keeps its own hooks.
        chained = [
            self._refuse_cross_origin_redirect,
            *_as_list(getattr(self.session, "hooks", {}).get("response")),
            *_as_list(hooks.get("response")),
        ]
        hooks["response"] = chained
        return super().request(method, url, *args, hooks=hooks, **kwargs)

    def _refuse_cross_origin_redirect(self, response: Any, *args: Any, **kwargs: Any) -> Any:
        if not response.is_redirect:
            return response
        # requests' own reading of Location (decoding included), resolved as it would be.
        target = urljoin(response.url, self.session.get_redirect_target(response) or "")
        home = origin_of(self.base_uri)
        if home is not None and origin_of(target) == home:
            return response
        response.close()  # nothing more is read from it, nothing is sent to the target
        raise RedirectRefused(_shown(target))
