"""The Vault provider's configuration: its settings checked once, at construction, and
what a ``vault:`` source URI asks for (including the auth method and where its
credentials come from).

Everything the provider later needs to reach Vault (address, namespace, TLS, proxies,
timeout) is kept here in :class:`VaultSettings`; the hvac clients are built from it
(:mod:`._http`), never from another client's private state.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

from scaling_credentials import ConfigurationError, SourceURI
from scaling_credentials.toolkit import (
    format_query,
    get_logger,
    is_loopback,
    seconds,
    text_option,
)

from ._auth import (
    DEFAULT_KUBERNETES_JWT_PATH,
    AppRoleAuth,
    JWTAuth,
    KubernetesAuth,
    TokenAuth,
    VaultAuth,
    vault_env,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "VaultSettings",
    "auth_from_params",
    "configure",
    "options_from_uri",
    "safe_url",
]

logger = get_logger("scaling_credentials.vault")

DEFAULT_TIMEOUT: Final = 10.0
_URI_PARAMS: Final = ("auth", "auth_mount", "field", "kv", "mount", "namespace", "role")
_CREDENTIAL_PARAMS: Final = ("token", "secret_id", "role_id", "jwt", "password")
_AUTH_METHODS: Final = ("token", "approle", "kubernetes", "jwt")


@dataclass(frozen=True)
class VaultSettings:
    """Where the key is and how to reach Vault, checked.

    ``session`` is the ``requests.Session`` of an hvac client the caller passed in (used
    as it is in the process that created the provider), else ``None``.

    The ``repr`` shows the address and proxies without their ``user:password@``, and
    only the type of the session.
    """

    path: str
    field: str
    mount_point: str
    kv_version: int
    url: str
    namespace: str | None
    verify: bool | str
    cert: str | tuple[str, str] | None  # a client certificate (and key) for mutual TLS
    proxies: Mapping[str, str] | None
    timeout: float
    session: Any = None

    def __repr__(self) -> str:
        proxies = (
            None
            if self.proxies is None
            else {name: safe_url(str(address)) for name, address in self.proxies.items()}
        )
        session = None if self.session is None else f"<{type(self.session).__name__}>"
        return (
            f"VaultSettings(path={self.path!r}, field={self.field!r}, "
            f"mount_point={self.mount_point!r}, kv_version={self.kv_version!r}, "
            f"url={self.safe_url!r}, namespace={self.namespace!r}, verify={self.verify!r}, "
            f"cert={self.cert!r}, proxies={proxies!r}, timeout={self.timeout!r}, "
            f"session={session})"
        )

    def describe(self) -> str:
        """``vault:<path>?mount=<mount>&field=<field>`` (``&kv=1`` for KV v1): no secret."""
        kv = "1" if self.kv_version == 1 else None
        query = format_query([("mount", self.mount_point), ("field", self.field), ("kv", kv)])
        return f"vault:{self.path}{query}"

    @property
    def secret_path(self) -> str:
        """``<mount>/<path>``, as the ``bao kv`` / ``vault kv`` commands name the secret."""
        return f"{self.mount_point}/{self.path}"

    @property
    def policy_path(self) -> str:
        """The path a policy grants capabilities on (``<mount>/data/<path>`` for KV v2)."""
        if self.kv_version == 2:
            return f"{self.mount_point}/data/{self.path}"
        return self.secret_path

    @property
    def safe_url(self) -> str:
        """Vault's address without any ``user:password@``, for messages."""
        return safe_url(self.url)


def safe_url(url: str) -> str:
    """``url`` without its ``user:password@`` part: safe for a log line.

    The host and port are kept as written (an IPv6 address in its brackets); an
    unusable port or bracket does not raise, so an address can be shown in the error
    that refuses it.
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        return url
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    _, at, host_port = rest[:end].rpartition("@")
    if not at:
        return url
    return f"{scheme}://{host_port}{rest[end:]}"


def _name(value: object, what: str, needs: str) -> str:
    if not isinstance(value, str) or not value.strip("/ "):
        raise ConfigurationError(f"VaultProvider needs {needs}")
    checked = text_option(value, f"VaultProvider: {what}")
    assert checked is not None  # not optional
    return checked.strip("/")


def configure(
    path: object,
    *,
    field: object,
    mount_point: object,
    kv_version: object,
    url: object,
    namespace: object,
    auth: object,
    client: Any,
    verify: object,
    timeout: object,
) -> tuple[VaultSettings, VaultAuth]:
    """Check :class:`VaultProvider`'s arguments and complete them from the environment
    (``VAULT_ADDR``, ``VAULT_NAMESPACE``, ``VAULT_CACERT``, ...) or from ``client``."""
    secret = _name(path, "path", "the secret's path within the mount, e.g. 'scaling/api'")
    checked_field = text_option(field, "VaultProvider: field")
    mount = _name(mount_point, "mount_point", "a non-empty mount_point")
    if isinstance(kv_version, bool) or kv_version not in (1, 2):
        raise ConfigurationError(f"VaultProvider: kv_version must be 1 or 2, got {kv_version!r}")
    checked_timeout = seconds(timeout, "VaultProvider: timeout", allow_zero=False)
    if auth is not None and not isinstance(auth, VaultAuth):
        raise ConfigurationError(
            f"VaultProvider: auth must be a VaultAuth (TokenAuth, AppRoleAuth, "
            f"KubernetesAuth, JWTAuth), got {type(auth).__name__}"
        )
    if client is not None:
        if url is not None or namespace is not None or verify is not True:
            raise ConfigurationError(
                "VaultProvider: pass url, namespace and verify to the hvac client, or "
                "pass no client; not both"
            )
        connection = _from_client(client)
        token = getattr(client, "token", None)
        if auth is None and isinstance(token, str) and token:
            auth = TokenAuth(token)
    else:
        connection = _from_arguments(url, namespace, verify)
    settings = VaultSettings(
        path=secret,
        field=str(checked_field),
        mount_point=mount,
        kv_version=1 if kv_version == 1 else 2,
        timeout=checked_timeout,
        **connection,
    )
    return settings, auth if isinstance(auth, VaultAuth) else TokenAuth()


def _from_arguments(url: object, namespace: object, verify: object) -> dict[str, Any]:
    address, variable = (url, "") if url is not None else vault_env("ADDR")
    if not isinstance(address, str) or not address:
        raise ConfigurationError(
            "VaultProvider needs Vault's address: set VAULT_ADDR (or BAO_ADDR) "
            "(e.g. https://vault.example.com:8200) or pass url="
        )
    parts = _split_address(address, variable or "url=")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"Vault's address must be an http(s) URL such as "
            f"https://vault.example.com:8200, got {safe_url(address)!r}"
        )
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        logger.warning(
            "Vault address %s uses plain http to a non-loopback host: the Vault token "
            "and the key travel unencrypted; use https",
            safe_url(address),
        )
    if namespace is not None and not isinstance(namespace, str):
        raise ConfigurationError(
            f"VaultProvider: namespace must be a str, got {type(namespace).__name__}"
        )
    checked_verify: bool | str
    if verify is True:
        checked_verify = vault_env("CACERT")[0] or vault_env("CAPATH")[0] or True
    elif isinstance(verify, bool) or (isinstance(verify, str) and verify.strip()):
        # An empty string would quietly turn verification off in requests.
        checked_verify = verify
    else:
        raise ConfigurationError(
            "VaultProvider: verify must be True, False or the path of a CA bundle"
        )
    client_cert, client_key = vault_env("CLIENT_CERT")[0], vault_env("CLIENT_KEY")[0]
    return {
        "url": address.rstrip("/"),
        "namespace": namespace if namespace is not None else (vault_env("NAMESPACE")[0] or None),
        "verify": checked_verify,
        "cert": (client_cert, client_key) if client_cert and client_key else client_cert or None,
        "proxies": None,
    }


def _split_address(address: str, setting: str) -> SplitResult:
    """``address`` split, with a port Vault can listen on if it has one; ``setting``
    (``VAULT_ADDR``, ``BAO_ADDR`` or ``url=``) is named in the error."""
    problem = "the port must be a number from 1 to 65535"
    try:
        parts = urlsplit(address)
    except ValueError:  # an unbalanced "[" or "]"
        problem = "an IPv6 address needs both brackets, as in https://[::1]:8200"
    else:
        try:
            port = parts.port
        except ValueError:  # not a number, or above 65535
            port = 0
        if port != 0:
            return parts
    raise ConfigurationError(
        f"Vault's address ({setting}) is not a usable URL: {problem}; got {safe_url(address)!r}"
    )


def _from_client(client: Any) -> dict[str, Any]:
    # Only public attributes of hvac.Client and requests.Session: hvac puts a client's
    # verify, cert and proxies on its session (or takes them from the session given).
    client_url = getattr(client, "url", None)
    session = getattr(client, "session", None)
    if not isinstance(client_url, str) or session is None:
        raise ConfigurationError(
            f"VaultProvider: client must be an hvac.Client, got {type(client).__name__}"
        )
    verify = getattr(session, "verify", True)
    return {
        "url": client_url.rstrip("/"),
        "namespace": getattr(getattr(client, "adapter", None), "namespace", None) or None,
        "verify": verify if isinstance(verify, (bool, str)) else True,
        "cert": getattr(session, "cert", None),
        "proxies": getattr(session, "proxies", None) or None,
        "session": session,
    }


def options_from_uri(uri: SourceURI) -> dict[str, Any]:
    """:class:`VaultProvider`'s arguments for a ``vault:`` source URI (the parameters are
    those of :meth:`VaultProvider.from_uri`).

    Credentials are refused in the URI (a URI ends up in logs and process listings); the
    auth method reads them from the environment (:func:`auth_from_params`).
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
    kv = uri.param("kv") or "2"
    if kv not in ("1", "2"):
        raise ConfigurationError(f"kv= in a vault: source URI must be 1 or 2, got {kv!r}")
    auth = auth_from_params(
        (uri.param("auth") or "token").lower(),
        role=uri.param("role"),
        mount_point=uri.param("auth_mount"),
    )
    return {
        "path": path,
        "field": uri.param("field") or "api_key",
        "mount_point": uri.param("mount") or "secret",
        "kv_version": int(kv),
        "namespace": uri.param("namespace"),
        "auth": auth,
    }


def auth_from_params(
    method: str,
    *,
    role: str | None,
    mount_point: str | None,
    environ: Mapping[str, str] | None = None,
) -> VaultAuth:
    """The auth method a ``vault:`` URI asks for, with credentials from the environment."""
    env = os.environ if environ is None else environ
    if method not in _AUTH_METHODS:
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
        return _approle_from_env(env, mount_point)
    if role is None:
        raise ConfigurationError(
            f"auth={method} needs the Vault role: add role=NAME to the vault: source URI"
        )
    jwt_path = env.get("VAULT_JWT_PATH", "").strip() or DEFAULT_KUBERNETES_JWT_PATH
    if method == "kubernetes":
        return KubernetesAuth(role, jwt_path, mount_point or "kubernetes")
    return JWTAuth(role, jwt_path, mount_point or "jwt")


def _approle_from_env(env: Mapping[str, str], mount_point: str | None) -> AppRoleAuth:
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
