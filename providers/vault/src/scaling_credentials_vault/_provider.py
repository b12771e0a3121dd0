"""VaultProvider: the key from a HashiCorp Vault or OpenBao KV secret, through hvac.

How a fetch goes::

    no token yet ──> login (auth method) ──┐
    token near expiry ──> renew-self, or login again when not renewable or capped
                                           v
                        read KV (v2: <mount>/data/<path>, v1: <mount>/<path>)
                           │ 403 with a token that was not fresh
                           └──> login again once, read again ──> 403 again: diagnose

This module orchestrates; the pieces live beside it: the settings and the source URI in
:mod:`._config`, the token's life as plain decisions in :mod:`._lifecycle`, the hvac
clients in :mod:`._http`, the error path in :mod:`._diagnosis`, and the translation of
hvac's failures into something safe to chain in :mod:`._errors`.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

from scaling_credentials import ApiKey, ConfigurationError, Provider, ProviderError, SourceURI
from scaling_credentials.toolkit import (
    PerProcess,
    after_fork,
    field_from_object,
    get_logger,
    make_key,
)

from ._auth import VaultAuth, VaultToken
from ._config import DEFAULT_TIMEOUT, configure, options_from_uri
from ._diagnosis import Probe, call_error, deleted_error, forbidden_error, provider_error
from ._errors import VaultCallError, call
from ._http import VaultClients
from ._lifecycle import TokenAction, renewal_extends, token_action

__all__ = ["DEFAULT_TIMEOUT", "VaultProvider"]

T = TypeVar("T")

logger = get_logger("scaling_credentials.vault")


@dataclass(frozen=True)
class _Login:
    """The current login: the token, what Vault said about it, when (provider clock), and
    the hvac client bearing it (one per process)."""

    token: VaultToken
    obtained_at: float
    client: PerProcess[Any]


class VaultProvider(Provider):
    """Reads the key from field ``field`` of the KV secret ``path`` on mount
    ``mount_point`` of a HashiCorp Vault or OpenBao server.

    * ``kv_version``: 2 (versioned KV, the default; the key's ``version`` is the KV
      version) or 1.
    * ``url``: the server's address; default ``VAULT_ADDR``. ``namespace``: default
      ``VAULT_NAMESPACE`` (Vault Enterprise / OpenBao namespaces). OpenBao's ``BAO_*``
      spellings of these variables are read when the ``VAULT_*`` ones are not set.
    * ``auth``: a :class:`VaultAuth`; default :class:`TokenAuth` reading ``VAULT_TOKEN``,
      ``VAULT_TOKEN_FILE`` or ``~/.vault-token`` (or the token of ``client``, if it has
      one).
    * ``client``: an ``hvac.Client`` to take the address, namespace, TLS, proxies and
      session from (it is never modified; then ``url``, ``namespace`` and ``verify`` must
      not be given).
    * ``verify``: TLS verification, ``True``, ``False`` or the path of a CA bundle;
      ``True`` uses ``VAULT_CACERT`` (or ``VAULT_CAPATH``) when set.
    * ``timeout``: seconds per HTTP request to Vault (default 10), also with ``client``.
    * ``clock``: a monotonic clock in seconds, for the token's lifetime (tests inject one).

    The provider logs in lazily at the first fetch, keeps the Vault token, renews it once
    two thirds of its TTL have passed (or logs in again when it is not renewable or has
    reached its max TTL), and when Vault answers 403 to a read with a token that may have
    expired or been revoked, logs in again once and retries. The Vault token is never
    shown in a repr, a log line or an error.

    :meth:`store` writes a new key (a new KV v2 version, keeping the secret's other
    fields), for ``scaling-credentials rotate``.
    """

    can_store: ClassVar[bool] = True

    def __init__(
        self,
        path: str,
        *,
        field: str = "api_key",
        mount_point: str = "secret",
        kv_version: int = 2,
        url: str | None = None,
        namespace: str | None = None,
        auth: VaultAuth | None = None,
        client: Any = None,
        verify: bool | str = True,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings, self.auth = configure(
            path,
            field=field,
            mount_point=mount_point,
            kv_version=kv_version,
            url=url,
            namespace=namespace,
            auth=auth,
            client=client,
            verify=verify,
            timeout=timeout,
        )
        if not callable(clock):
            raise ConfigurationError("VaultProvider: clock must be a callable returning seconds")
        self._clock = clock
        self._clients = VaultClients(self._settings)
        self._lock = threading.Lock()  # the login: held while logging in or renewing
        self._store_lock = threading.Lock()  # one read-modify-write at a time
        self._current: _Login | None = None
        after_fork(self, VaultProvider._after_fork_in_child)

    @classmethod
    def from_uri(cls, uri: SourceURI) -> VaultProvider:
        """``vault:PATH[?mount=M&field=F&kv=2&auth=...&role=R&auth_mount=A&namespace=N]``.

        ``auth`` is ``token``, ``approle``, ``kubernetes`` or ``jwt``; ``auth_mount`` is
        where the auth method is enabled. Vault's
        address comes from ``VAULT_ADDR``; credentials never come from the URI:

        * ``auth=token`` (default): ``VAULT_TOKEN``, ``VAULT_TOKEN_FILE`` or
          ``~/.vault-token``;
        * ``auth=approle``: ``VAULT_ROLE_ID`` or ``VAULT_ROLE_ID_FILE``, and
          ``VAULT_SECRET_ID`` or ``VAULT_SECRET_ID_FILE``;
        * ``auth=kubernetes`` and ``auth=jwt``: ``role=`` in the URI, the token from
          ``VAULT_JWT_PATH`` (default: the pod's service-account token).
        """
        return cls(**options_from_uri(uri))

    # ------------------------------------------------------------------ settings

    @property
    def path(self) -> str:
        """The secret's path within the mount."""
        return self._settings.path

    @property
    def field(self) -> str:
        """The field of the secret that holds the key."""
        return self._settings.field

    @property
    def mount_point(self) -> str:
        """Where the KV engine is mounted."""
        return self._settings.mount_point

    @property
    def kv_version(self) -> int:
        """1 or 2."""
        return self._settings.kv_version

    @property
    def url(self) -> str:
        """Vault's address."""
        return self._settings.url

    @property
    def namespace(self) -> str | None:
        """The Vault namespace, if any."""
        return self._settings.namespace

    @property
    def verify(self) -> bool | str:
        """TLS verification: ``True``, ``False`` or a CA bundle path."""
        return self._settings.verify

    @property
    def timeout(self) -> float:
        """Seconds per HTTP request to Vault."""
        return self._settings.timeout

    @property
    def policy_path(self) -> str:
        """The path a policy must grant ``read`` on (``<mount>/data/<path>`` for KV v2)."""
        return self._settings.policy_path

    def describe(self) -> str:
        return self._settings.describe()

    def __repr__(self) -> str:
        return (
            f"<VaultProvider {self.describe()} url={self._settings.safe_url!r} auth={self.auth!r}>"
        )

    # ------------------------------------------------------------------ fetch

    def fetch(self) -> ApiKey:
        return self._with_login(self._read, during="read")

    def _read(self, login: _Login) -> ApiKey:
        document, metadata = self._read_secret(login.client.get(), self._secrets(login))
        if document is None:
            if self._settings.kv_version == 1:  # no versions: nothing was "deleted"
                raise provider_error(
                    self._settings,
                    f"Vault's answer for {self._settings.secret_path} holds no data",
                )
            raise deleted_error(self._settings, metadata)
        desc = self.describe()
        value = field_from_object(document, self._settings.field, name=desc)
        version = metadata.get("version")
        return make_key(value, source=desc, version=None if version is None else str(version))

    def _read_secret(self, client: Any, secrets: tuple[str, ...]) -> tuple[object, dict[str, Any]]:
        """The secret's data (``None`` when its current KV v2 version was deleted, or when
        a KV v1 answer holds none) and its KV v2 metadata (``{}`` for KV v1)."""
        settings = self._settings
        if settings.kv_version == 1:
            answer = call(
                lambda: client.secrets.kv.v1.read_secret(
                    path=settings.path, mount_point=settings.mount_point
                ),
                secrets=secrets,
            )
            return (answer.get("data") if isinstance(answer, dict) else None), {}
        answer = call(
            lambda: client.secrets.kv.v2.read_secret_version(
                path=settings.path, mount_point=settings.mount_point, raise_on_deleted_version=True
            ),
            secrets=secrets,
        )
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            raise provider_error(
                settings, f"Vault's answer for {settings.policy_path} holds no data"
            )
        metadata = data.get("metadata")
        return data.get("data"), metadata if isinstance(metadata, dict) else {}

    def _with_login(self, operation: Callable[[_Login], T], *, during: str) -> T:
        """Run ``operation`` with the current login; on a 403 with a token that worked
        before (expired or revoked), log in again once and run it again."""
        login, fresh = self._login_for_call()
        try:
            return operation(login)
        except VaultCallError as exc:
            if exc.status != 403:
                raise call_error(self._settings, exc, self._probe(login), during=during) from exc
            if fresh:
                raise self._forbidden(login, during) from exc
        # 403 with a token that worked before: it expired or was revoked. Log in once more.
        logger.info(
            "Vault denied %s with the current token (expired or revoked?); logging in again",
            self.describe(),
        )
        login = self._relogin(login)
        try:
            return operation(login)
        except VaultCallError as exc:
            if exc.status == 403:
                raise self._forbidden(login, during) from exc
            raise call_error(self._settings, exc, self._probe(login), during=during) from exc

    def _forbidden(self, login: _Login, during: str) -> ProviderError:
        return forbidden_error(
            self._settings, self.auth, self._probe(login), writing=during == "write"
        )

    # ------------------------------------------------------------------ store

    def store(self, key: ApiKey) -> str | None:
        """Write ``key`` to the secret's field as its new current value, keeping the
        secret's other fields, and return the new KV v2 version (``None`` for KV v1).

        KV v2 writes a new version with check-and-set on the version read just before:
        when another writer changed the secret in between, nothing is written and a
        :class:`ProviderError` says so. KV v1 overwrites the secret in place (with a
        warning: no previous version is kept). Calls on one provider are serialized; a
        concurrent :meth:`fetch` returns the old key or the new one.

        The token needs ``read``, ``create`` and ``update`` on :attr:`policy_path`.
        """
        if not isinstance(key, ApiKey):
            raise ConfigurationError(
                f"VaultProvider.store takes an ApiKey, got {type(key).__name__}"
            )
        with self._store_lock:
            return self._with_login(lambda login: self._write(login, key), during="write")

    def _write(self, login: _Login, key: ApiKey) -> str | None:
        settings = self._settings
        client = login.client.get()
        secrets = (*self._secrets(login), key.reveal())
        try:
            document, metadata = self._read_secret(client, secrets)
        except VaultCallError as exc:
            if exc.status != 404 or exc.is_missing_route():
                raise
            # No secret yet, or its current version was deleted: write a first one.
            document, metadata = None, exc.metadata or {}
        data = dict(document) if isinstance(document, dict) else {}
        data[settings.field] = key.reveal()
        if settings.kv_version == 1:
            logger.warning(
                "%s: KV version 1 keeps no previous version: the key at %s is overwritten, "
                "with no way back (a KV version 2 mount keeps the old one)",
                self.describe(),
                settings.secret_path,
            )
            call(
                lambda: client.secrets.kv.v1.create_or_update_secret(
                    path=settings.path, secret=data, method="PUT", mount_point=settings.mount_point
                ),
                secrets=secrets,
            )
            return None
        current = metadata.get("version")
        cas = current if isinstance(current, int) and not isinstance(current, bool) else 0
        try:
            answer = call(
                lambda: client.secrets.kv.v2.create_or_update_secret(
                    path=settings.path, secret=data, cas=cas, mount_point=settings.mount_point
                ),
                secrets=secrets,
            )
        except VaultCallError as exc:
            if exc.status == 400 and exc.mentions("check-and-set"):
                raise provider_error(
                    settings,
                    f"another writer changed {settings.secret_path} while the new key was "
                    f"being stored (version {cas} is no longer the current one); nothing "
                    "was written: check the secret, then store the key again",
                ) from exc
            raise
        written = answer.get("data") if isinstance(answer, dict) else None
        version = written.get("version") if isinstance(written, dict) else None
        if version is None:
            raise provider_error(
                settings, f"Vault's answer to the write of {settings.policy_path} has no version"
            )
        logger.info("stored a new key in %s: version %s", self.describe(), version)
        return str(version)

    def _secrets(self, login: _Login | None) -> tuple[str, ...]:
        values = self.auth.secrets()
        return values if login is None else (login.token.token, *values)

    def _probe(self, login: _Login) -> Probe:
        return Probe(client=login.client.get(), secrets=self._secrets(login))

    # ------------------------------------------------------------------ the Vault token

    def _login_for_call(self) -> tuple[_Login, bool]:
        """The login to call Vault with, after logging in or renewing when due, and
        whether its token was obtained just now (so a 403 is not an expired token)."""
        with self._lock:
            now = self._clock()
            login = self._current
            if login is None:
                return self._login_locked(now), True
            token = login.token
            action = token_action(
                ttl=token.ttl, renewable=token.renewable, obtained_at=login.obtained_at, now=now
            )
            if action is TokenAction.USE:
                return login, False
            if action is TokenAction.RENEW:
                renewed = self._renew_locked(login, now)
                if renewed is not None:
                    return renewed, False
            else:
                logger.debug(
                    "the Vault token for %s is near expiry and not renewable; logging in again",
                    self.describe(),
                )
            return self._login_locked(now), True

    def _relogin(self, stale: _Login) -> _Login:
        with self._lock:
            current = self._current
            if current is not None and current is not stale:
                return current  # another thread logged in already
            return self._login_locked(self._clock())

    def _renew_locked(self, login: _Login, now: float) -> _Login | None:
        """Renew the token; ``None`` when a new login is needed instead."""
        client = login.client.get()
        try:
            answer = call(lambda: client.auth.token.renew_self(), secrets=self._secrets(login))
        except VaultCallError as exc:
            if not exc.is_client_error():
                raise call_error(self._settings, exc, None, during="renewal") from exc
            logger.info(
                "renewing the Vault token for %s failed (%s); logging in again",
                self.describe(),
                exc.describe(),
            )
            return None
        renewed = VaultToken.from_auth(answer, what="token renewal")
        token = login.token
        if not renewal_extends(
            renewed.ttl, ttl=token.ttl or 0.0, obtained_at=login.obtained_at, now=now
        ):
            logger.info(
                "the Vault token for %s reached its max TTL; logging in again", self.describe()
            )
            return None
        logger.debug("renewed the Vault token for %s: ttl %.0f s", self.describe(), renewed.ttl)
        updated = replace(token, ttl=renewed.ttl, renewable=renewed.renewable)
        self._current = _Login(token=updated, obtained_at=now, client=login.client)
        return self._current

    def _login_locked(self, now: float) -> _Login:
        try:
            token = self.auth.login(self._clients.client(""))
        except VaultCallError as exc:
            raise call_error(self._settings, exc, None, during="login") from exc
        except ProviderError as exc:
            if exc.provider is not None:
                raise
            error = provider_error(self._settings, str(exc), type(exc))
            raise error from exc
        client = PerProcess(functools.partial(self._clients.client, token.token))
        self._current = _Login(token=token, obtained_at=now, client=client)
        logger.debug(
            "logged in to Vault at %s for %s with %r (ttl %s s, renewable %s)",
            self._settings.safe_url,
            self.describe(),
            self.auth,
            "unknown" if token.ttl is None else f"{token.ttl:.0f}",
            token.renewable,
        )
        return self._current

    def _after_fork_in_child(self) -> None:
        # A thread of the parent may have held a lock at the fork. The login is kept;
        # its client and the session are built anew in the child (PerProcess).
        self._lock = threading.Lock()
        self._store_lock = threading.Lock()
