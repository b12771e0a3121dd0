"""Vault auth methods: how :class:`VaultProvider` gets its Vault token.

Every method reads its credentials (a token, an AppRole secret ID, a JWT) at each login,
from a value or a file, so that a rotated file (a projected service-account token, an
agent's token sink) is picked up at the next login. Credentials never appear in a repr,
a log line or an error message.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scaling_credentials import ConfigurationError, ProviderError, SecretNotFoundError
from scaling_credentials.toolkit import decode_text, read_capped_file, text_option

from ._errors import VaultCallError, call

__all__ = [
    "DEFAULT_KUBERNETES_JWT_PATH",
    "AppRoleAuth",
    "JWTAuth",
    "KubernetesAuth",
    "TokenAuth",
    "VaultAuth",
    "VaultToken",
]

DEFAULT_KUBERNETES_JWT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclass(frozen=True, repr=False)
class VaultToken:
    """A Vault token and what Vault said about it at login.

    ``ttl`` is the lifetime in seconds Vault granted (``0``: the token never expires;
    ``None``: unknown); ``renewable`` says whether ``auth/token/renew-self`` may extend
    it. The token itself is masked in ``repr``.
    """

    token: str
    ttl: float | None = None
    renewable: bool = False
    accessor: str | None = None
    policies: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"VaultToken(token='****', ttl={self.ttl!r}, renewable={self.renewable!r}, "
            f"policies={self.policies!r})"
        )

    @classmethod
    def from_auth(cls, response: object, *, what: str) -> VaultToken:
        """Build from a login or renew answer (``{"auth": {"client_token": ...}}``)."""
        auth = response.get("auth") if isinstance(response, dict) else None
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if not isinstance(auth, dict) or not isinstance(token, str) or not token:
            raise ProviderError(f"{what}: Vault's answer holds no client token")
        return cls(
            token=token,
            ttl=_seconds(auth.get("lease_duration")),
            renewable=bool(auth.get("renewable", False)),
            accessor=_str_or_none(auth.get("accessor")),
            policies=_policies(auth.get("token_policies") or auth.get("policies")),
        )


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _policies(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(sorted(str(p) for p in value if isinstance(p, str)))


def read_credential_file(path: str, what: str, hint: str = "") -> str:
    """Read a small credential file (a token, a secret ID, a JWT), stripped.

    Errors are :class:`ProviderError` naming the path and what was expected, never the
    content (a missing file too: it is a login credential, not the secret the provider
    looks for).
    """
    name = f"the {what} file {path}"
    extra = f"; {hint}" if hint else ""
    missing = False
    try:
        data = read_capped_file(path, name=name, hint=hint)
    except SecretNotFoundError:
        missing = True
    if missing:
        raise ProviderError(f"{name} does not exist{extra}")
    text = decode_text(data, name=name, error=ProviderError).strip()
    if not text:
        raise ProviderError(f"{name} is empty{extra}")
    return text


def vault_env(suffix: str, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``VAULT_<suffix>``, else OpenBao's ``BAO_<suffix>``: ``(value, variable)``, or
    ``("", "")`` when neither is set."""
    env = os.environ if environ is None else environ
    for name in (f"VAULT_{suffix}", f"BAO_{suffix}"):
        value = env.get(name, "").strip()
        if value:
            return value, name
    return "", ""


def _check_mount(mount_point: object, cls: str) -> str:
    mount = text_option(mount_point, f"{cls}: mount_point")
    if mount is None or not mount.strip("/"):
        raise ConfigurationError(f"{cls} needs a non-empty mount_point")
    return mount.strip("/")


def _check_value(value: object, name: str, cls: str) -> str:
    checked = text_option(value, f"{cls}: {name}")
    assert checked is not None  # not optional
    return checked


def _check_path(value: object, name: str, cls: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(f"{cls}: {name} must be a path, got {type(value).__name__}")
    return _check_value(os.fspath(value), name, cls)


class VaultAuth(abc.ABC):
    """Base class of the Vault auth methods.

    :meth:`login` is called lazily, at the first fetch and again whenever the token
    expired, was revoked or could not be renewed. Subclasses read their credentials at
    each login, and never put them in ``repr`` or error messages.
    """

    @abc.abstractmethod
    def login(self, client: Any) -> VaultToken:
        """Log in with ``client`` (an ``hvac.Client`` that carries no token) and return
        the Vault token."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the credentials come from, safe to log."""

    def secrets(self) -> tuple[str, ...]:
        """Credential values held in memory, scrubbed from any error text (best effort)."""
        return ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


class TokenAuth(VaultAuth):
    """A Vault token: given, read from ``token_file``, or (with neither) from the
    environment at each login: ``VAULT_TOKEN`` (or OpenBao's ``BAO_TOKEN``), else the file
    named by
    ``VAULT_TOKEN_FILE``, else ``~/.vault-token`` (what ``vault login`` / ``bao login``
    write).

    A file is re-read at each login, so an agent's token sink that rotates the token is
    followed. The login looks the token up (``auth/token/lookup-self``) to learn its TTL
    and whether it is renewable.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        token_file: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if token is not None and token_file is not None:
            raise ConfigurationError("TokenAuth takes token or token_file, not both")
        self._token = None if token is None else _check_value(token, "token", "TokenAuth")
        self.token_file = (
            None if token_file is None else _check_path(token_file, "token_file", "TokenAuth")
        )
        self._environ = environ

    def describe(self) -> str:
        if self._token is not None:
            return "token='****'"
        if self.token_file is not None:
            return f"token_file={self.token_file!r}"
        return "token from VAULT_TOKEN, VAULT_TOKEN_FILE or ~/.vault-token"

    def secrets(self) -> tuple[str, ...]:
        return () if self._token is None else (self._token,)

    def source(self) -> str:
        """Where the token comes from, for messages (never the token)."""
        if self._token is not None:
            return "passed to TokenAuth"
        if self.token_file is not None:
            return f"read from {self.token_file}"
        env = os.environ if self._environ is None else self._environ
        value, name = vault_env("TOKEN", env)
        if value:
            return name
        if env.get("VAULT_TOKEN_FILE", "").strip():
            return f"read from {env['VAULT_TOKEN_FILE'].strip()} (VAULT_TOKEN_FILE)"
        return "read from ~/.vault-token"

    def read_token(self) -> str:
        """The token, read now from its source."""
        if self._token is not None:
            return self._token
        if self.token_file is not None:
            return read_credential_file(self.token_file, "Vault token")
        env = os.environ if self._environ is None else self._environ
        value, _ = vault_env("TOKEN", env)
        if value:
            return value
        path = env.get("VAULT_TOKEN_FILE", "").strip()
        if path:
            return read_credential_file(path, "Vault token (VAULT_TOKEN_FILE)")
        home = os.path.expanduser("~/.vault-token")
        if os.path.exists(home):
            return read_credential_file(home, "Vault token", "run bao login / vault login")
        raise ConfigurationError(
            "no Vault token: set VAULT_TOKEN (or VAULT_TOKEN_FILE to a file holding it), "
            "run `bao login` / `vault login` to write ~/.vault-token, or use another auth "
            "method (auth=approle, auth=kubernetes or auth=jwt in the source URI)"
        )

    def login(self, client: Any) -> VaultToken:
        token = self.read_token()
        try:
            # The login client carries no token, so this header is the one sent.
            info = call(
                lambda: client.adapter.get(
                    "/v1/auth/token/lookup-self", headers={"X-Vault-Token": token}
                ),
                secrets=(token,),
            )
        except VaultCallError as exc:
            if exc.status in (401, 403):
                raise ProviderError(
                    f"the Vault token ({self.source()}) is invalid, expired or revoked "
                    "(auth/token/lookup-self answered 403 permission denied); log in again "
                    "(bao login / vault login) or fix the token source"
                ) from exc
            raise
        data = info.get("data") if isinstance(info, dict) else None
        if not isinstance(data, dict):
            return VaultToken(token=token)
        return VaultToken(
            token=token,
            ttl=_seconds(data.get("ttl")),
            renewable=bool(data.get("renewable", False)),
            accessor=_str_or_none(data.get("accessor")),
            policies=_policies(data.get("policies")),
        )


class AppRoleAuth(VaultAuth):
    """AppRole login (``auth/<mount_point>/login``) with a role ID and a secret ID.

    Either may be given as a value or as a file (``role_id_file``, ``secret_id_file``),
    read at each login. ``secret_id=None`` with no file logs in without one (a role with
    ``bind_secret_id=false``).
    """

    def __init__(
        self,
        role_id: str | None = None,
        secret_id: str | None = None,
        mount_point: str = "approle",
        *,
        role_id_file: str | os.PathLike[str] | None = None,
        secret_id_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if (role_id is None) == (role_id_file is None):
            raise ConfigurationError("AppRoleAuth needs exactly one of role_id or role_id_file")
        if secret_id is not None and secret_id_file is not None:
            raise ConfigurationError("AppRoleAuth takes secret_id or secret_id_file, not both")
        self._role_id = None if role_id is None else _check_value(role_id, "role_id", "AppRoleAuth")
        self._secret_id = (
            None if secret_id is None else _check_value(secret_id, "secret_id", "AppRoleAuth")
        )
        self.role_id_file = (
            None if role_id_file is None else _check_path(role_id_file, "role_id_file", "AppRole")
        )
        self.secret_id_file = (
            None
            if secret_id_file is None
            else _check_path(secret_id_file, "secret_id_file", "AppRoleAuth")
        )
        self.mount_point = _check_mount(mount_point, "AppRoleAuth")
        self._last: tuple[str, ...] = ()

    def describe(self) -> str:
        role = (
            "role_id='****'" if self.role_id_file is None else f"role_id_file={self.role_id_file!r}"
        )
        if self.secret_id_file is not None:
            secret = f"secret_id_file={self.secret_id_file!r}"
        elif self._secret_id is not None:
            secret = "secret_id='****'"
        else:
            secret = "secret_id=None"
        return f"{role}, {secret}, mount_point={self.mount_point!r}"

    def secrets(self) -> tuple[str, ...]:
        values = (self._role_id, self._secret_id, *self._last)
        return tuple(v for v in values if v)

    def login(self, client: Any) -> VaultToken:
        role_id = (
            self._role_id
            if self._role_id is not None
            else read_credential_file(str(self.role_id_file), "AppRole role ID")
        )
        secret_id = self._secret_id
        if self.secret_id_file is not None:
            secret_id = read_credential_file(self.secret_id_file, "AppRole secret ID")
        self._last = tuple(v for v in (role_id, secret_id) if v)
        where = f"auth/{self.mount_point}"
        try:
            answer = call(
                lambda: client.auth.approle.login(
                    role_id, secret_id, use_token=False, mount_point=self.mount_point
                ),
                secrets=self.secrets(),
            )
        except VaultCallError as exc:
            if not exc.is_client_error():
                raise  # unreachable, sealed, overloaded: the provider reports those
            raise login_error(exc, f"AppRole login at {where}", _APPROLE_HINT) from exc
        return VaultToken.from_auth(answer, what=f"AppRole login at {where}")


_APPROLE_HINT = (
    "check the role ID and secret ID (VAULT_ROLE_ID / VAULT_SECRET_ID or their _FILE "
    "variants); secret IDs can expire, be limited in uses, or be bound to CIDRs"
)


class _JWTFileAuth(VaultAuth):
    kind = "JWT"

    def __init__(self, role: str, jwt_path: str | os.PathLike[str], mount_point: str) -> None:
        cls = type(self).__name__
        self.role = _check_value(role, "role", cls)
        self.jwt_path = _check_path(jwt_path, "jwt_path", cls)
        self.mount_point = _check_mount(mount_point, cls)
        self._last: str | None = None

    def describe(self) -> str:
        return f"role={self.role!r}, jwt_path={self.jwt_path!r}, mount_point={self.mount_point!r}"

    def secrets(self) -> tuple[str, ...]:
        if self._last is None:
            return ()
        # A JWT's signature is the part that must not leak; its claims are readable by
        # anyone holding it, but scrub all three parts anyway.
        return (self._last, *(part for part in self._last.split(".") if len(part) >= 8))

    def read_jwt(self) -> str:
        jwt = read_credential_file(self.jwt_path, f"{self.kind} token", self._file_hint())
        self._last = jwt
        return jwt

    def _file_hint(self) -> str:
        return "mount the token where jwt_path points (VAULT_JWT_PATH in a source URI)"

    @abc.abstractmethod
    def _login(self, client: Any, jwt: str) -> object: ...

    def login(self, client: Any) -> VaultToken:
        jwt = self.read_jwt()
        what = f"{self.kind} login with role {self.role!r} at auth/{self.mount_point}"
        try:
            answer = call(lambda: self._login(client, jwt), secrets=self.secrets())
        except VaultCallError as exc:
            if not exc.is_client_error():
                raise  # unreachable, sealed, overloaded: the provider reports those
            raise login_error(exc, what, self._login_hint()) from exc
        return VaultToken.from_auth(answer, what=what)

    def _login_hint(self) -> str:
        return (
            f"check that role {self.role!r} exists at auth/{self.mount_point} and that its "
            "bound audiences, subject and claims match the token"
        )


class KubernetesAuth(_JWTFileAuth):
    """Kubernetes login (``auth/<mount_point>/login``) with the pod's service-account
    token, re-read from ``jwt_path`` at each login (kubelet rotates projected tokens)."""

    kind = "Kubernetes service-account"

    def __init__(
        self,
        role: str,
        jwt_path: str | os.PathLike[str] = DEFAULT_KUBERNETES_JWT_PATH,
        mount_point: str = "kubernetes",
    ) -> None:
        super().__init__(role, jwt_path, mount_point)

    def _file_hint(self) -> str:
        return (
            "is automountServiceAccountToken disabled for the pod, or is the projected "
            "token volume missing?"
        )

    def _login(self, client: Any, jwt: str) -> object:
        return client.auth.kubernetes.login(
            self.role, jwt, use_token=False, mount_point=self.mount_point
        )

    def _login_hint(self) -> str:
        return (
            f"check that role {self.role!r} at auth/{self.mount_point} binds this pod's "
            "service account name and namespace, and that Vault can reach the Kubernetes "
            "TokenReview API"
        )


class JWTAuth(_JWTFileAuth):
    """JWT login (``auth/<mount_point>/login``) with a token read from ``jwt_path`` at
    each login: a projected Kubernetes service-account token with a Vault audience, a
    CI job's OIDC token, a workload identity token."""

    def __init__(
        self, role: str, jwt_path: str | os.PathLike[str], mount_point: str = "jwt"
    ) -> None:
        super().__init__(role, jwt_path, mount_point)

    def _login(self, client: Any, jwt: str) -> object:
        return client.auth.jwt.jwt_login(self.role, jwt, use_token=False, path=self.mount_point)


def login_error(exc: VaultCallError, what: str, hint: str) -> ProviderError:
    """A typed error for a failed login (a 4xx answer), with Vault's reason and a hint."""
    mount = what.rsplit(" at ", 1)[-1]
    if exc.is_missing_route() or exc.status == 403:
        # Vault answers an unauthenticated request to a path under no auth method with a
        # 403 (or a 404 "no handler for route"), never with "no such auth method".
        return ProviderError(
            f"{what} failed ({exc.describe()}): is an auth method enabled at {mount}? "
            "Enable it, or set the mount point it is enabled at (auth_mount= in a source URI)"
        )
    return ProviderError(f"{what} failed: {exc.describe()}; {hint}")
