"""Source URIs and the entry-point registry of provider schemes.

Built-in providers register in the same entry-point group third parties use
(``scaling_credentials.providers``): the entry point's name is the URI scheme, its value
a callable taking a :class:`SourceURI` and returning a :class:`Provider`. Entry points
are listed without importing them; a scheme's module is imported only when a URI uses
it, and a plugin that fails to import breaks only its own scheme.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import parse_qsl, unquote

from ._errors import ConfigurationError
from ._redact import looks_like_key, redact

if TYPE_CHECKING:
    from ._provider import Provider

__all__ = [
    "ENTRY_POINT_GROUP",
    "ProviderScheme",
    "SourceURI",
    "installed_schemes",
    "provider_from_env",
    "provider_from_uri",
    "select_from_env",
]

ENTRY_POINT_GROUP = "scaling_credentials.providers"

# First-party schemes and what to install for them, for the hint when one is missing.
FIRST_PARTY_SCHEMES: dict[str, tuple[str, str]] = {
    "env": ("scaling-credentials", "scaling-credentials"),
    "file": ("scaling-credentials", "scaling-credentials"),
    "aws-sm": ("scaling-credentials-aws", "scaling-credentials[aws]"),
    "aws-ssm": ("scaling-credentials-aws", "scaling-credentials[aws]"),
    "aws-lambda-extension": ("scaling-credentials-aws", "scaling-credentials[aws]"),
    "vault": ("scaling-credentials-vault", "scaling-credentials[vault]"),
}


class SourceURI(NamedTuple):
    """A parsed source URI: ``scheme:path?param=value&...``.

    ``path`` is percent-decoded; ``params`` holds each query parameter once. Secrets
    never belong in a URI: providers read them from the environment or files.
    """

    scheme: str
    path: str
    params: Mapping[str, str] = MappingProxyType({})

    @classmethod
    def parse(cls, uri: str) -> SourceURI:
        """Parse ``uri``; raise :class:`ConfigurationError` when it is not ``scheme:path``."""
        if not isinstance(uri, str):
            raise ConfigurationError(f"a source URI must be a str, got {type(uri).__name__}")
        text = uri.strip()
        if looks_like_key(text):
            # A key pasted where its source belongs would be echoed by describe() and by
            # every error that names the source: refuse it here, without quoting it.
            raise ConfigurationError(
                "the source URI contains an API key (scl_live_...); a source URI says where "
                "the key is (env:NAME, file:/path, aws-sm:ID, vault:PATH), never the key itself"
            )
        scheme, sep, rest = text.partition(":")
        if not sep or not scheme or not _is_scheme(scheme):
            raise ConfigurationError(
                f"{_shorten(text)!r} is not a source URI; expected scheme:path such as "
                "env:SCALING_API_KEY, file:/run/secrets/scaling or aws-sm:prod/scaling"
            )
        path, _, query = rest.partition("?")
        # file:///abs/path and vault://path are common spellings: accept them.
        if path.startswith("//"):
            path = path[2:]
            if scheme.lower() == "file" and not path.startswith("/"):
                path = "/" + path
        params: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
            if name in params:
                raise ConfigurationError(f"source URI parameter {name!r} is given twice")
            params[name] = value
        return cls(scheme=scheme.lower(), path=unquote(path), params=MappingProxyType(params))

    def check_params(self, allowed: Iterable[str]) -> None:
        """Raise :class:`ConfigurationError` for any parameter not in ``allowed``."""
        allowed = set(allowed)
        unknown = sorted(set(self.params) - allowed)
        if unknown:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise ConfigurationError(
                f"unknown parameter(s) {', '.join(unknown)} in a {self.scheme}: source URI; "
                f"accepted: {accepted}"
            )

    def param(self, name: str) -> str | None:
        """Parameter ``name``, stripped; ``None`` when it is absent or empty."""
        value = self.params.get(name, "").strip()
        return value or None

    def flag(self, name: str, default: bool = False) -> bool:
        """Yes/no parameter ``name`` (``true``/``false``, ``1``/``0``, ``yes``/``no``,
        ``on``/``off``); ``default`` when absent; :class:`ConfigurationError` otherwise."""
        from ._options import flag

        if name not in self.params:
            return default
        return flag(self.params[name], f"{name}= in a {self.scheme}: source URI")

    def require_path(self, what: str) -> str:
        """Return the path, or raise :class:`ConfigurationError` naming ``what`` is missing."""
        if not self.path:
            raise ConfigurationError(f"a {self.scheme}: source URI needs {what} after the colon")
        return self.path

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.scheme}:{self.path}" + (f"?{query}" if query else "")


def _is_scheme(text: str) -> bool:
    return text[0].isalpha() and all(c.isalnum() or c in "+-." for c in text)


def _shorten(text: str) -> str:
    # A mistaken paste of a key into the source setting must not end up in the error.
    text = redact(text)
    return text if len(text) <= 80 else text[:77] + "..."


class ProviderScheme(NamedTuple):
    """An installed provider scheme, as listed by entry points (not imported)."""

    scheme: str
    value: str
    distribution: str | None
    version: str | None


def installed_schemes() -> list[ProviderScheme]:
    """The provider schemes installed in this environment, sorted, without importing them."""
    from importlib.metadata import entry_points

    found: dict[str, ProviderScheme] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        found.setdefault(
            ep.name,
            ProviderScheme(
                scheme=ep.name,
                value=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            ),
        )
    return [found[name] for name in sorted(found)]


def _load_factory(scheme: str) -> Callable[[SourceURI], Provider]:
    from importlib.metadata import entry_points

    candidates = list(entry_points(group=ENTRY_POINT_GROUP, name=scheme))
    if not candidates:
        known = ", ".join(s.scheme for s in installed_schemes()) or "none"
        if scheme in FIRST_PARTY_SCHEMES:
            _, extra = FIRST_PARTY_SCHEMES[scheme]
            raise ConfigurationError(
                f"the {scheme}: source needs an extra that is not installed: "
                f"pip install '{extra}' (installed schemes: {known})"
            )
        raise ConfigurationError(
            f"unknown source scheme {scheme!r} (installed schemes: {known}); a third-party "
            f"provider registers its scheme in the {ENTRY_POINT_GROUP!r} entry-point group"
        )
    ep = candidates[0]
    if scheme in FIRST_PARTY_SCHEMES and len(candidates) > 1:
        # A plugin must not shadow a first-party scheme by sys.path order.
        owner = FIRST_PARTY_SCHEMES[scheme][0]
        for candidate in candidates:
            dist = getattr(candidate, "dist", None)
            if dist is not None and dist.metadata["Name"] == owner:
                ep = candidate
                break
    try:
        factory = ep.load()
    except Exception as exc:  # one broken plugin must not break the others
        dist = getattr(ep, "dist", None)
        name = dist.metadata["Name"] if dist is not None else ep.value.partition(":")[0]
        hint = FIRST_PARTY_SCHEMES.get(scheme, (name, name))[1]
        raise ConfigurationError(
            f"the provider for the {scheme}: scheme ({ep.value}, from {name}) failed to load: "
            f"{type(exc).__name__}: {exc}; reinstall it with pip install --force-reinstall "
            f"'{hint}'"
        ) from exc
    if not callable(factory):
        raise ConfigurationError(f"the entry point for {scheme}: ({ep.value}) is not callable")
    return factory  # type: ignore[no-any-return]


def provider_from_uri(uri: str) -> Provider:
    """Build a provider from a source URI such as ``env:SCALING_API_KEY``,
    ``file:/run/secrets/scaling?field=api_key``, ``aws-sm:prod/scaling?region=eu-west-1``
    or ``vault:scaling/api`` (every scheme and parameter: docs/configuration.md).

    Raises :class:`ConfigurationError` for a malformed URI or an unknown scheme (naming
    the extra to install for a first-party one).
    """
    from ._provider import Provider

    parsed = SourceURI.parse(uri)
    factory = _load_factory(parsed.scheme)
    provider = factory(parsed)
    if not isinstance(provider, Provider):
        raise ConfigurationError(
            f"the {parsed.scheme}: provider factory returned {type(provider).__name__}, "
            "not a scaling_credentials.Provider"
        )
    return provider


def provider_from_env(environ: Mapping[str, str] | None = None) -> Provider:
    """Choose the key source from the environment.

    ``SCALING_API_KEY_SOURCE`` (a source URI) if set, else ``SCALING_API_KEY``
    (:class:`EnvProvider`), else ``SCALING_API_KEY_FILE`` (:class:`FileProvider`), else
    :class:`ConfigurationError`.
    """
    return select_from_env(environ)[0]


def select_from_env(environ: Mapping[str, str] | None = None) -> tuple[Provider, str]:
    """:func:`provider_from_env`, also naming the variable that chose the provider."""
    env = os.environ if environ is None else environ
    source = env.get("SCALING_API_KEY_SOURCE", "").strip()
    if source:
        return provider_from_uri(source), "SCALING_API_KEY_SOURCE"
    if env.get("SCALING_API_KEY") is not None:
        from ._env import EnvProvider

        return EnvProvider("SCALING_API_KEY", environ=environ), "SCALING_API_KEY"
    path = env.get("SCALING_API_KEY_FILE", "").strip()
    if path:
        from ._file import FileProvider

        return FileProvider(path), "SCALING_API_KEY_FILE"
    raise ConfigurationError(
        "no Scaling API key source is configured; set one of: "
        "SCALING_API_KEY_SOURCE (a source URI such as aws-sm:prod/scaling or "
        "vault:scaling?field=api_key), SCALING_API_KEY (the key itself), or "
        "SCALING_API_KEY_FILE (a path to a file holding the key)"
    )
