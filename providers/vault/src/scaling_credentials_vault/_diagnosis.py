"""Why a call to Vault failed, and what to do about it: the provider's error path.

A failed call arrives here as a :class:`VaultCallError` and leaves as a typed
:class:`ProviderError` (or :class:`SecretNotFoundError`) that starts with the provider's
description and says what to fix. Two answers are ambiguous, and only there does this
module ask Vault more, with the token the failed call used (a :class:`Probe`):

* a 404 for a KV v2 read may be a KV v1 mount: ``sys/internal/ui/mounts/<path>`` tells;
* a 403 is both "no policy" and "dead token": ``auth/token/lookup-self`` tells, and
  lists the token's policies for the message.

These calls are made on failures only, never on a successful fetch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scaling_credentials import ProviderError, SecretNotFoundError

from ._auth import VaultAuth
from ._config import VaultSettings
from ._errors import VaultCallError, call

__all__ = [
    "Probe",
    "call_error",
    "deleted_error",
    "forbidden_error",
    "provider_error",
]


@dataclass(frozen=True)
class Probe:
    """What the error path may ask Vault with: a client bearing the token the failed call
    used, and the credentials to redact from any answer (never in ``repr``: a Probe in a
    local variable is rendered by pytest --showlocals, Sentry and debuggers)."""

    client: Any
    secrets: tuple[str, ...] = field(repr=False)


def provider_error(
    settings: VaultSettings, message: str, cls: type[ProviderError] = ProviderError
) -> ProviderError:
    """``cls`` with ``message`` prefixed by the provider's description."""
    return cls(f"{settings.describe()}: {message}", provider=settings.describe())


def call_error(
    settings: VaultSettings, exc: VaultCallError, probe: Probe | None, *, during: str = "read"
) -> ProviderError:
    """The error for a failed call (``during`` a read, a login, a renewal, a write)."""
    url = settings.safe_url
    if exc.kind == "connection":
        return provider_error(
            settings,
            f"cannot reach Vault at {url} ({exc.detail}) during {during}; check VAULT_ADDR "
            "and that the server is running and reachable from here",
        )
    if exc.kind == "timeout":
        return provider_error(
            settings,
            f"Vault at {url} did not answer within {settings.timeout:g} s during {during}",
        )
    if exc.kind == "tls":
        return provider_error(
            settings,
            f"TLS verification of Vault at {url} failed ({exc.detail}); set VAULT_CACERT "
            "to the CA bundle that signed Vault's certificate, or pass verify='/path/ca.pem'",
        )
    if exc.kind == "redirect":
        return provider_error(
            settings,
            f"Vault at {url} redirected the {during} to {exc.detail}, another origin; the "
            "redirect was not followed, since the Vault token and login credentials are "
            f"sent only to {url} (same scheme, host and port). Set VAULT_ADDR to the "
            "address that answers (the active node, or the load balancer in front of it)",
        )
    if exc.kind != "http":
        return provider_error(
            settings, f"the call to Vault at {url} failed during {during}: {exc.detail}"
        )
    if exc.is_sealed():
        return provider_error(
            settings,
            f"Vault at {url} is sealed; reads fail until it is unsealed "
            "(bao operator unseal / vault operator unseal, or auto-unseal)",
        )
    if exc.status == 501:
        return provider_error(
            settings, f"Vault at {url} is not initialized (bao/vault operator init)"
        )
    if exc.status in (502, 503):
        return provider_error(
            settings,
            f"Vault at {url} is unavailable ({exc.describe()}); a standby node, an "
            "upgrade or a proxy in front of it may be the cause",
        )
    if exc.status == 429:
        return provider_error(
            settings, f"Vault at {url} is rate limiting requests ({exc.describe()})"
        )
    if exc.status == 404 and during in ("read", "write"):
        return _not_found_error(settings, exc, probe)
    return provider_error(settings, f"Vault at {url} answered {exc.describe(with_request=True)}")


def deleted_error(settings: VaultSettings, metadata: Mapping[str, Any]) -> SecretNotFoundError:
    """The error for a KV v2 secret whose current version was deleted or destroyed."""
    version = metadata.get("version")
    what = "destroyed" if metadata.get("destroyed") else "deleted"
    fix = (
        "write a new version (bao kv put / vault kv put)"
        if what == "destroyed"
        else f"undelete it (bao kv undelete -versions={version} {settings.secret_path}) "
        "or write a new version"
    )
    return SecretNotFoundError(
        f"{settings.describe()}: the current version ({version}) of {settings.secret_path} "
        f"was {what}; {fix}",
        provider=settings.describe(),
    )


def _not_found_error(
    settings: VaultSettings, exc: VaultCallError, probe: Probe | None
) -> ProviderError:
    url = settings.safe_url
    mount = settings.mount_point
    if exc.metadata is not None and (
        exc.metadata.get("deletion_time") or exc.metadata.get("destroyed")
    ):
        return deleted_error(settings, exc.metadata)
    if exc.is_missing_route():
        return provider_error(
            settings,
            f"no secrets engine is mounted at {mount}/ on Vault at {url}; enable one "
            f"(bao secrets enable -path={mount} kv-v2) or set mount_point (mount= in a "
            "source URI)",
        )
    if any("versioned k/v" in w.lower() for w in exc.warnings):
        return provider_error(
            settings,
            f"{mount}/ is a KV version 2 engine; use kv_version=2 (kv=2 in a source URI)",
        )
    hint = ""
    if settings.kv_version == 2 and _mount_version(settings, probe) == "1":
        hint = f"; {mount}/ is a KV version 1 engine: use kv_version=1 (kv=1 in a source URI)"
    elif settings.path.startswith((f"{mount}/", "data/")):
        hint = (
            "; the path is relative to the mount: drop the mount and data/ prefix "
            f"(vault:{settings.path.split('/', 2)[-1]}?mount={mount})"
        )
    return provider_error(
        settings,
        f"no secret at {settings.secret_path} on Vault at {url}{hint}",
        SecretNotFoundError,
    )


def _mount_version(settings: VaultSettings, probe: Probe | None) -> str | None:
    """The KV version of the mount, when the token may read it."""
    if probe is None:
        return None
    client = probe.client
    try:
        answer = call(
            lambda: client.adapter.get(f"/v1/sys/internal/ui/mounts/{settings.secret_path}"),
            secrets=probe.secrets,
        )
    except VaultCallError:
        return None
    data = answer.get("data") if isinstance(answer, dict) else None
    options = data.get("options") if isinstance(data, dict) else None
    if isinstance(data, dict) and data.get("type") in ("kv", "generic"):
        version = options.get("version") if isinstance(options, dict) else None
        return str(version) if version else "1"
    return None


def forbidden_error(
    settings: VaultSettings, auth: VaultAuth, probe: Probe, *, writing: bool = False
) -> ProviderError:
    """The error for a 403 with a token obtained just now: a missing policy (for a read,
    or for a write when ``writing``), or a token Vault does not accept at all."""
    client = probe.client
    policies: tuple[str, ...] | None = None
    try:
        answer = call(lambda: client.auth.token.lookup_self(), secrets=probe.secrets)
    except VaultCallError as exc:
        if exc.status == 403:
            return provider_error(
                settings,
                f"Vault rejected the token obtained with {auth!r} as invalid, expired or "
                "revoked, even right after logging in; check the auth method's token TTL "
                "and the token source",
            )
    else:
        data = answer.get("data") if isinstance(answer, dict) else None
        raw = data.get("policies") if isinstance(data, dict) else None
        if isinstance(raw, list):
            policies = tuple(sorted(str(p) for p in raw))
    held = f" (its policies: {', '.join(policies)})" if policies else ""
    path = settings.policy_path
    if writing:
        doing = "writing"
        needs = (
            "the `create` and `update` capabilities there (and `read`, to keep the secret's "
            "other fields)"
        )
        example = '["read", "create", "update"]'
    else:
        doing, needs, example = "reading", "the `read` capability there", '["read"]'
    return provider_error(
        settings,
        f"permission denied {doing} {path} on Vault at {settings.safe_url}: the token{held} "
        f'needs a policy granting {needs}, e.g. path "{path}" {{ capabilities = {example} }}; '
        f"Vault also answers 403 when nothing is mounted at {settings.mount_point}/",
    )
