"""VaultProvider: the key from a HashiCorp Vault or OpenBao KV secret, through hvac.

How a fetch goes::

    no token yet ──> login (auth method) ──┐
    token near expiry ──> renew-self, or login again when not renewable or capped
                                           v
                        read KV (v2: <mount>/data/<path>, v1: <mount>/<path>)
                           │ 403 with a token that was not fresh
                           └──> login again once, read again ──> 403 again: diagnose

Design notes:

* hvac is imported and the client created at the first fetch, never at import.
* The provider's hvac client never carries a token: each login gets its own client that
  shares the connection pool, so a re-login never mutates a client another thread is
  reading with, and a client passed in by the caller is never changed.
* Nothing from hvac or requests is chained as is: their exceptions hold response bodies
  and the request with the ``X-Vault-Token`` header (see :mod:`._errors`).
* After ``os.fork()`` the child builds a new HTTP session: a pooled connection shared
  with the parent would interleave both processes' bytes.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    InvalidKeyFormatError,
    Provider,
    ProviderError,
    SecretNotFoundError,
    SourceURI,
)

from ._auth import (
    DEFAULT_KUBERNETES_JWT_PATH,
    AppRoleAuth,
    JWTAuth,
    KubernetesAuth,
    TokenAuth,
    VaultAuth,
    VaultToken,
    vault_env,
)
from ._errors import VaultCallError, call

__all__ = ["DEFAULT_TIMEOUT", "VaultProvider"]

logger = logging.getLogger("scaling_credentials.vault")

DEFAULT_TIMEOUT: Final = 10.0
# Renew (or log in again) once this fraction of the token's lifetime has passed, as
# Vault Agent does: early enough to survive a slow Vault, late enough to renew rarely.
RENEW_AFTER_FRACTION: Final = 2 / 3

_URI_PARAMS = ("auth", "auth_mount", "field", "kv", "mount", "namespace", "role")
_CREDENTIAL_PARAMS = ("token", "secret_id", "role_id", "jwt", "password")


@dataclass(frozen=True)
class _Session:
    """The current login: the token, what Vault said about it, and a client bearing it."""

    token: VaultToken
    obtained_at: float  # provider clock
    client: Any  # hvac.Client with the token, or None until (re)built after a fork


def _safe_url(url: str) -> str:
    # A URL with user:password@ must not reach a log line.
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _field_names(document: Mapping[str, object]) -> str:
    names = []
    for name in sorted(str(k) for k in document)[:20]:
        # A key pasted as a field name must not be echoed back.
        names.append("<a name that looks like an API key>" if "scl_live_" in name else repr(name))
    return ", ".join(names) or "none"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


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
    * ``client``: an ``hvac.Client`` to take the address, TLS and session settings from
      (it is never modified; then ``url``, ``namespace`` and ``verify`` must not be given).
    * ``verify``: TLS verification, ``True``, ``False`` or the path of a CA bundle;
      ``True`` uses ``VAULT_CACERT`` (or ``VAULT_CAPATH``) when set.
    * ``timeout``: seconds per HTTP request to Vault (default 10).
    * ``clock``: a monotonic clock in seconds, for the token's lifetime (tests inject one).

    The provider logs in lazily at the first fetch, keeps the Vault token, renews it once
    two thirds of its TTL have passed (or logs in again when it is not renewable or has
    reached its max TTL), and when Vault answers 403 to a read with a token that may have
    expired or been revoked, logs in again once and retries. The Vault token is never
    shown in a repr, a log line or an error.
    """

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
        if not isinstance(path, str) or not path.strip("/ "):
            raise ConfigurationError(
                "VaultProvider needs the secret's path within the mount, e.g. 'scaling/api'"
            )
        self.path = path.strip().strip("/")
        if not isinstance(field, str) or not field:
            raise ConfigurationError("VaultProvider: field must be a non-empty str")
        self.field = field
        if not isinstance(mount_point, str) or not mount_point.strip("/ "):
            raise ConfigurationError("VaultProvider: mount_point must be a non-empty str")
        self.mount_point = mount_point.strip().strip("/")
        if isinstance(kv_version, bool) or kv_version not in (1, 2):
            raise ConfigurationError(
                f"VaultProvider: kv_version must be 1 or 2, got {kv_version!r}"
            )
        self.kv_version = int(kv_version)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigurationError(f"VaultProvider: timeout must be > 0 seconds, got {timeout!r}")
        self.timeout = float(timeout)
        if auth is not None and not isinstance(auth, VaultAuth):
            raise ConfigurationError(
                f"VaultProvider: auth must be a VaultAuth (TokenAuth, AppRoleAuth, "
                f"KubernetesAuth, JWTAuth), got {type(auth).__name__}"
            )
        if not callable(clock):
            raise ConfigurationError("VaultProvider: clock must be a callable returning seconds")
        self._clock = clock

        self._user_client = client
        if client is not None:
            if url is not None or namespace is not None or verify is not True:
                raise ConfigurationError(
                    "VaultProvider: pass url, namespace and verify to the hvac client, or "
                    "pass no client; not both"
                )
            client_url = getattr(client, "url", None)
            if not isinstance(client_url, str):
                raise ConfigurationError(
                    f"VaultProvider: client must be an hvac.Client, got {type(client).__name__}"
                )
            self.url = client_url
            adapter = getattr(client, "adapter", None)
            self.namespace = getattr(adapter, "namespace", None)
            self.verify: bool | str = True
            token = getattr(client, "token", None)
            if auth is None and isinstance(token, str) and token:
                auth = TokenAuth(token)
        else:
            address = url if url is not None else vault_env("ADDR")[0]
            if not isinstance(address, str) or not address:
                raise ConfigurationError(
                    "VaultProvider needs Vault's address: set VAULT_ADDR (or BAO_ADDR) "
                    "(e.g. https://vault.example.com:8200) or pass url="
                )
            parts = urlsplit(address)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(
                    f"Vault's address must be an http(s) URL such as "
                    f"https://vault.example.com:8200, got {_safe_url(address)!r}"
                )
            self.url = address.rstrip("/")
            if parts.scheme == "http" and not _is_loopback(parts.hostname):
                logger.warning(
                    "Vault address %s uses plain http to a non-loopback host: the Vault token "
                    "and the key travel unencrypted; use https",
                    _safe_url(self.url),
                )
            self.namespace = (
                namespace if namespace is not None else (vault_env("NAMESPACE")[0] or None)
            )
            if verify is True:
                ca = vault_env("CACERT")[0] or vault_env("CAPATH")[0]
                self.verify = ca or True
            elif isinstance(verify, bool) or (isinstance(verify, str) and verify.strip()):
                # An empty string would quietly turn verification off in requests.
                self.verify = verify
            else:
                raise ConfigurationError(
                    "VaultProvider: verify must be True, False or the path of a CA bundle"
                )
        self.auth: VaultAuth = auth if auth is not None else TokenAuth()

        self._lock = threading.Lock()
        self._base: Any = None  # our own token-less hvac.Client, built at first use
        self._session_override: Any = None  # a fresh requests.Session after a fork
        self._session: _Session | None = None
        _providers.add(self)

    # ------------------------------------------------------------------ construction

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
        given = [name for name in _CREDENTIAL_PARAMS if name in uri.params]
        if given:
            raise ConfigurationError(
                f"the vault: source URI must not carry credentials ({', '.join(given)}=...): "
                "a URI ends up in logs and process listings; set VAULT_TOKEN, "
                "VAULT_ROLE_ID / VAULT_SECRET_ID (or their _FILE variants) or VAULT_JWT_PATH"
            )
        uri.check_params(_URI_PARAMS)
        path = uri.require_path("the secret's path within the mount (vault:scaling/api)")
        kv = uri.params.get("kv", "2").strip() or "2"
        if kv not in ("1", "2"):
            raise ConfigurationError(f"kv= in a vault: source URI must be 1 or 2, got {kv!r}")
        auth = auth_from_params(
            uri.params.get("auth", "").strip().lower() or "token",
            role=uri.params.get("role", "").strip() or None,
            mount_point=uri.params.get("auth_mount", "").strip() or None,
        )
        return cls(
            path,
            field=uri.params.get("field") or "api_key",
            mount_point=uri.params.get("mount") or "secret",
            kv_version=int(kv),
            namespace=uri.params.get("namespace") or None,
            auth=auth,
        )

    # ------------------------------------------------------------------ description

    def describe(self) -> str:
        text = f"vault:{self.path}?mount={self.mount_point}&field={self.field}"
        return text + ("&kv=1" if self.kv_version == 1 else "")

    def __repr__(self) -> str:
        return f"<VaultProvider {self.describe()} url={_safe_url(self.url)!r} auth={self.auth!r}>"

    @property
    def policy_path(self) -> str:
        """The path a policy must grant ``read`` on (``<mount>/data/<path>`` for KV v2)."""
        if self.kv_version == 2:
            return f"{self.mount_point}/data/{self.path}"
        return f"{self.mount_point}/{self.path}"

    # ------------------------------------------------------------------ fetch

    def fetch(self) -> ApiKey:
        session, fresh = self._current_session()
        try:
            return self._read(session)
        except VaultCallError as exc:
            if exc.status != 403:
                raise self._read_error(exc, session) from exc
            if fresh:
                raise self._forbidden_error(session) from exc
        # 403 with a token that worked before: it expired or was revoked. Log in once more.
        logger.info(
            "Vault denied %s with the current token (expired or revoked?); logging in again",
            self.describe(),
        )
        session = self._relogin(session)
        try:
            return self._read(session)
        except VaultCallError as exc:
            if exc.status == 403:
                raise self._forbidden_error(session) from exc
            raise self._read_error(exc, session) from exc

    def _read(self, session: _Session) -> ApiKey:
        client = session.client
        secrets = self._secrets(session)
        if self.kv_version == 2:
            answer = call(
                lambda: client.secrets.kv.v2.read_secret_version(
                    path=self.path, mount_point=self.mount_point, raise_on_deleted_version=True
                ),
                secrets=secrets,
            )
            data = answer.get("data") if isinstance(answer, dict) else None
            if not isinstance(data, dict):
                raise ProviderError(
                    f"{self.describe()}: Vault's answer for {self.policy_path} holds no data",
                    provider=self.describe(),
                )
            raw_metadata = data.get("metadata")
            metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
            version = metadata.get("version")
            document = data.get("data")
            if document is None:
                raise self._deleted_error(metadata)
        else:
            answer = call(
                lambda: client.secrets.kv.v1.read_secret(
                    path=self.path, mount_point=self.mount_point
                ),
                secrets=secrets,
            )
            document = answer.get("data") if isinstance(answer, dict) else None
            version = None
        return self._key(document, None if version is None else str(version))

    def _key(self, document: object, version: str | None) -> ApiKey:
        desc = self.describe()
        if not isinstance(document, dict):
            raise InvalidKeyFormatError(
                f"{desc}: expected the secret's data to be an object with field "
                f"{self.field!r}, got a JSON {_json_type(document)}"
            )
        if self.field not in document:
            raise InvalidKeyFormatError(
                f"{desc}: the secret at {self.policy_path} has no field {self.field!r} "
                f"(fields present: {_field_names(document)}); set field= to the field "
                "that holds the key"
            )
        value = document[self.field]
        if not isinstance(value, str):
            raise InvalidKeyFormatError(
                f"{desc}: field {self.field!r} is a JSON {_json_type(value)}, expected a string"
            )
        try:
            return ApiKey(value, source=desc, version=version)
        except InvalidKeyFormatError as exc:
            raise InvalidKeyFormatError(f"{desc}: {exc}") from None

    def _secrets(self, session: _Session | None) -> tuple[str, ...]:
        values = self.auth.secrets()
        return values if session is None else (session.token.token, *values)

    # ------------------------------------------------------------------ the Vault token

    def _current_session(self) -> tuple[_Session, bool]:
        """The session to read with, logging in or renewing first when due, and whether
        its token was obtained just now (so a 403 is not an expired token)."""
        with self._lock:
            now = self._clock()
            session = self._session
            if session is None:
                return self._login_locked(now), True
            ttl = session.token.ttl
            if (
                ttl is not None
                and ttl > 0
                and now - session.obtained_at >= ttl * RENEW_AFTER_FRACTION
            ):
                return self._refresh_locked(session, now)
            if session.client is None:  # rebuilt lazily after a fork
                session = replace(session, client=self._client_with(session.token.token))
                self._session = session
            return session, False

    def _relogin(self, stale: _Session) -> _Session:
        with self._lock:
            current = self._session
            if current is not None and current is not stale:
                return current  # another thread logged in already
            return self._login_locked(self._clock())

    def _refresh_locked(self, session: _Session, now: float) -> tuple[_Session, bool]:
        token = session.token
        remaining = (token.ttl or 0.0) - (now - session.obtained_at)
        if token.renewable and remaining > 0:
            client = session.client or self._client_with(token.token)
            try:
                answer = call(
                    lambda: client.auth.token.renew_self(), secrets=self._secrets(session)
                )
            except VaultCallError as exc:
                if not exc.is_client_error():
                    raise self._read_error(exc, session) from exc
                logger.info(
                    "renewing the Vault token for %s failed (%s); logging in again",
                    self.describe(),
                    exc.describe(),
                )
            else:
                renewed = VaultToken.from_auth(answer, what="token renewal")
                if renewed.ttl is not None and (renewed.ttl == 0 or renewed.ttl > remaining + 1):
                    logger.debug(
                        "renewed the Vault token for %s: ttl %.0f s", self.describe(), renewed.ttl
                    )
                    updated = replace(token, ttl=renewed.ttl, renewable=renewed.renewable)
                    session = _Session(token=updated, obtained_at=now, client=client)
                    self._session = session
                    return session, False
                logger.info(
                    "the Vault token for %s reached its max TTL; logging in again",
                    self.describe(),
                )
        else:
            logger.debug(
                "the Vault token for %s is near expiry and not renewable; logging in again",
                self.describe(),
            )
        return self._login_locked(now), True

    def _login_locked(self, now: float) -> _Session:
        login_client = self._client_with("")
        try:
            token = self.auth.login(login_client)
        except VaultCallError as exc:
            raise self._read_error(exc, None, during="login") from exc
        except ProviderError as exc:
            if exc.provider is not None:
                raise
            error = type(exc)(f"{self.describe()}: {exc}", provider=self.describe())
            raise error from exc
        session = _Session(token=token, obtained_at=now, client=self._client_with(token.token))
        self._session = session
        logger.debug(
            "logged in to Vault at %s for %s with %r (ttl %s s, renewable %s)",
            _safe_url(self.url),
            self.describe(),
            self.auth,
            "unknown" if token.ttl is None else f"{token.ttl:.0f}",
            token.renewable,
        )
        return session

    # ------------------------------------------------------------------ hvac clients

    def _base_client(self) -> Any:
        if self._user_client is not None:
            return self._user_client
        if self._base is None:
            import hvac

            # token="" keeps hvac from reading VAULT_TOKEN itself: the auth method decides.
            self._base = hvac.Client(
                url=self.url,
                token="",
                verify=self.verify,
                timeout=self.timeout,
                namespace=self.namespace,
            )
        return self._base

    def _client_with(self, token: str) -> Any:
        """An hvac client bearing ``token`` with the base client's settings, sharing its
        connection pool."""
        import hvac

        base = self._base_client().adapter
        # hvac keeps the request settings in the adapter's _kwargs (its own
        # Adapter.from_adapter reads them the same way).
        settings = dict(getattr(base, "_kwargs", {}) or {})
        # A fresh client rather than a token swap: the sub-APIs hold on to the adapter
        # they were built with, and other threads may be reading with the old one.
        return hvac.Client(
            url=base.base_uri,
            token=token,
            cert=settings.get("cert"),
            verify=settings.get("verify", self.verify),
            timeout=settings.get("timeout", self.timeout),
            proxies=settings.get("proxies"),
            allow_redirects=base.allow_redirects,
            session=self._session_override or base.session,
            adapter=type(base),
            namespace=base.namespace,
        )

    def _after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        if self._user_client is not None:
            self._session_override = _copy_session(self._user_client.session)
        else:
            self._base = None
        if self._session is not None:
            self._session = replace(self._session, client=None)

    # ------------------------------------------------------------------ errors

    def _error(self, message: str, cls: type[ProviderError] = ProviderError) -> ProviderError:
        return cls(f"{self.describe()}: {message}", provider=self.describe())

    def _read_error(
        self, exc: VaultCallError, session: _Session | None, *, during: str = "read"
    ) -> ProviderError:
        url = _safe_url(self.url)
        if exc.kind == "connection":
            return self._error(
                f"cannot reach Vault at {url} ({exc.detail}) during {during}; check VAULT_ADDR "
                "and that the server is running and reachable from here"
            )
        if exc.kind == "timeout":
            return self._error(
                f"Vault at {url} did not answer within {self.timeout:g} s during {during}"
            )
        if exc.kind == "tls":
            return self._error(
                f"TLS verification of Vault at {url} failed ({exc.detail}); set VAULT_CACERT "
                "to the CA bundle that signed Vault's certificate, or pass verify='/path/ca.pem'"
            )
        if exc.kind != "http":
            return self._error(f"the call to Vault at {url} failed during {during}: {exc.detail}")
        if exc.is_sealed():
            return self._error(
                f"Vault at {url} is sealed; reads fail until it is unsealed "
                "(bao operator unseal / vault operator unseal, or auto-unseal)"
            )
        if exc.status == 501:
            return self._error(f"Vault at {url} is not initialized (bao/vault operator init)")
        if exc.status in (502, 503):
            return self._error(
                f"Vault at {url} is unavailable ({exc.describe()}); a standby node, an "
                "upgrade or a proxy in front of it may be the cause"
            )
        if exc.status == 429:
            return self._error(f"Vault at {url} is rate limiting requests ({exc.describe()})")
        if exc.status == 404 and during == "read":
            return self._not_found_error(exc, session)
        return self._error(f"Vault at {url} answered {exc.describe(with_request=True)}")

    def _deleted_error(self, metadata: Mapping[str, Any]) -> SecretNotFoundError:
        version = metadata.get("version")
        what = "destroyed" if metadata.get("destroyed") else "deleted"
        fix = (
            "write a new version (bao kv put / vault kv put)"
            if what == "destroyed"
            else f"undelete it (bao kv undelete -versions={version} {self.mount_point}/"
            f"{self.path}) or write a new version"
        )
        error = self._error(
            f"the current version ({version}) of {self.mount_point}/{self.path} was {what}; {fix}",
            SecretNotFoundError,
        )
        assert isinstance(error, SecretNotFoundError)
        return error

    def _not_found_error(self, exc: VaultCallError, session: _Session | None) -> ProviderError:
        url = _safe_url(self.url)
        if exc.metadata is not None and (
            exc.metadata.get("deletion_time") or exc.metadata.get("destroyed")
        ):
            return self._deleted_error(exc.metadata)
        if exc.is_missing_route():
            return self._error(
                f"no secrets engine is mounted at {self.mount_point}/ on Vault at {url}; "
                f"enable one (bao secrets enable -path={self.mount_point} kv-v2) or set "
                "mount_point (mount= in a source URI)"
            )
        if any("versioned k/v" in w.lower() for w in exc.warnings):
            return self._error(
                f"{self.mount_point}/ is a KV version 2 engine; use kv_version=2 "
                "(kv=2 in a source URI)"
            )
        hint = ""
        if self.kv_version == 2 and self._mount_version(session) == "1":
            hint = (
                f"; {self.mount_point}/ is a KV version 1 engine: use kv_version=1 "
                "(kv=1 in a source URI)"
            )
        elif self.path.startswith((f"{self.mount_point}/", "data/")):
            hint = (
                "; the path is relative to the mount: drop the mount and data/ prefix "
                f"(vault:{self.path.split('/', 2)[-1]}?mount={self.mount_point})"
            )
        return self._error(
            f"no secret at {self.mount_point}/{self.path} on Vault at {url}{hint}",
            SecretNotFoundError,
        )

    def _mount_version(self, session: _Session | None) -> str | None:
        """The KV version of the mount, when the token may read it (error path only)."""
        if session is None or session.client is None:
            return None
        client = session.client
        try:
            answer = call(
                lambda: client.adapter.get(
                    f"/v1/sys/internal/ui/mounts/{self.mount_point}/{self.path}"
                ),
                secrets=self._secrets(session),
            )
        except VaultCallError:
            return None
        data = answer.get("data") if isinstance(answer, dict) else None
        options = data.get("options") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("type") in ("kv", "generic"):
            version = options.get("version") if isinstance(options, dict) else None
            return str(version) if version else "1"
        return None

    def _forbidden_error(self, session: _Session) -> ProviderError:
        # Vault answers 403 both to a token without the policy and to a dead token: ask
        # Vault which one it is (error path only).
        client = session.client
        policies: tuple[str, ...] | None = None
        try:
            answer = call(lambda: client.auth.token.lookup_self(), secrets=self._secrets(session))
        except VaultCallError as exc:
            if exc.status == 403:
                return self._error(
                    f"Vault rejected the token obtained with {self.auth!r} as invalid, "
                    "expired or revoked, even right after logging in; check the auth "
                    "method's token TTL and the token source"
                )
        else:
            data = answer.get("data") if isinstance(answer, dict) else None
            raw = data.get("policies") if isinstance(data, dict) else None
            if isinstance(raw, list):
                policies = tuple(sorted(str(p) for p in raw))
        held = f" (its policies: {', '.join(policies)})" if policies else ""
        return self._error(
            f"permission denied reading {self.policy_path} on Vault at {_safe_url(self.url)}: "
            f"the token{held} needs a policy granting the `read` capability there, e.g. "
            f'path "{self.policy_path}" {{ capabilities = ["read"] }}; Vault also answers '
            f"403 when nothing is mounted at {self.mount_point}/"
        )


def auth_from_params(
    method: str,
    *,
    role: str | None,
    mount_point: str | None,
    environ: Mapping[str, str] | None = None,
) -> VaultAuth:
    """The auth method a ``vault:`` URI asks for, with credentials from the environment."""
    env = os.environ if environ is None else environ
    if method != "token" and method not in ("approle", "kubernetes", "jwt"):
        raise ConfigurationError(
            f"auth= in a vault: source URI must be token, approle, kubernetes or jwt, "
            f"got {method!r}"
        )
    if role is not None and method in ("token", "approle"):
        raise ConfigurationError(
            f"role= is for auth=kubernetes and auth=jwt; auth={method} "
            + (
                "reads VAULT_ROLE_ID / VAULT_SECRET_ID"
                if method == "approle"
                else "reads VAULT_TOKEN"
            )
        )
    if method == "token":
        if mount_point is not None:
            raise ConfigurationError("auth_mount= does not apply to auth=token")
        return TokenAuth()
    if method == "approle":
        role_id = env.get("VAULT_ROLE_ID", "").strip() or None
        role_id_file = env.get("VAULT_ROLE_ID_FILE", "").strip() or None
        secret_id = env.get("VAULT_SECRET_ID", "").strip() or None
        secret_id_file = env.get("VAULT_SECRET_ID_FILE", "").strip() or None
        if role_id is None and role_id_file is None:
            raise ConfigurationError(
                "auth=approle needs the role ID: set VAULT_ROLE_ID, or VAULT_ROLE_ID_FILE to "
                "a file holding it"
            )
        if secret_id is None and secret_id_file is None:
            raise ConfigurationError(
                "auth=approle needs a secret ID: set VAULT_SECRET_ID, or "
                "VAULT_SECRET_ID_FILE to a file holding it"
            )
        # A value in the environment wins over a file, for both.
        return AppRoleAuth(
            role_id,
            secret_id,
            mount_point or "approle",
            role_id_file=None if role_id is not None else role_id_file,
            secret_id_file=None if secret_id is not None else secret_id_file,
        )
    if role is None:
        raise ConfigurationError(
            f"auth={method} needs the Vault role: add role=NAME to the vault: source URI"
        )
    jwt_path = env.get("VAULT_JWT_PATH", "").strip() or DEFAULT_KUBERNETES_JWT_PATH
    if method == "kubernetes":
        return KubernetesAuth(role, jwt_path, mount_point or "kubernetes")
    return JWTAuth(role, jwt_path, mount_point or "jwt")


def _copy_session(session: Any) -> Any:
    import requests

    fresh = requests.Session()
    for name in ("verify", "cert", "proxies", "trust_env"):
        if hasattr(session, name):
            setattr(fresh, name, getattr(session, name))
    fresh.headers.update(getattr(session, "headers", {}))
    return fresh


_providers: weakref.WeakSet[VaultProvider] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for provider in list(_providers):
        provider._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
