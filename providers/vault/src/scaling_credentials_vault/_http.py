"""The hvac clients the Vault provider talks to Vault with.

Each client is built from :class:`~._config.VaultSettings`, settings the provider keeps
itself, never copied out of another client's private state, and bears one token (or
none, for a login):

* a new login builds a new client rather than changing the token of a client another
  thread may be reading with, and a client passed in by the caller is never changed;
* every client refuses redirects to another origin (:mod:`._redirects`): the Vault
  token, a secret ID or a JWT is sent to the configured address only;
* the clients of one process share one ``requests.Session`` (one connection pool); after
  ``os.fork()`` the child builds its own, since a pooled connection shared with the parent
  would interleave both processes' bytes. A caller's session is used as it is in the
  process that created the provider; a child gets a copy of its settings and headers.

hvac is imported at the first client, never at import.
"""

from __future__ import annotations

import os
from typing import Any

from scaling_credentials.toolkit import PerProcess

from ._config import VaultSettings

__all__ = ["VaultClients"]


class VaultClients:
    """Builds hvac clients for one provider's settings, sharing a session per process."""

    def __init__(self, settings: VaultSettings) -> None:
        self._settings = settings
        self._home_pid = os.getpid()
        self._session: PerProcess[Any] = PerProcess(self._new_session)

    def session(self) -> Any:
        """This process's ``requests.Session`` for Vault."""
        return self._session.get()

    def client(self, token: str) -> Any:
        """An ``hvac.Client`` bearing ``token`` (``""``: none, for a login)."""
        import hvac

        from ._redirects import SameOriginAdapter

        settings = self._settings
        # token="" keeps hvac from reading VAULT_TOKEN itself: the auth method decides.
        return hvac.Client(
            url=settings.url,
            token=token,
            cert=settings.cert,
            verify=settings.verify,
            timeout=settings.timeout,
            proxies=dict(settings.proxies) if settings.proxies else None,
            session=self.session(),
            namespace=settings.namespace,
            adapter=SameOriginAdapter,
        )

    def _new_session(self) -> Any:
        import requests

        given = self._settings.session
        if given is not None and os.getpid() == self._home_pid:
            return given
        session = requests.Session()
        if given is not None:
            session.trust_env = getattr(given, "trust_env", True)
            session.headers.update(getattr(given, "headers", {}))
        # hvac takes verify, cert and proxies from a session it is given.
        settings = self._settings
        session.verify = settings.verify
        session.cert = settings.cert
        session.proxies = dict(settings.proxies or {})
        return session
