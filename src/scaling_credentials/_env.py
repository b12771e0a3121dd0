"""EnvProvider: the key from an environment variable."""

from __future__ import annotations

import os
from collections.abc import Mapping

from ._errors import ConfigurationError, SecretNotFoundError
from ._key import ApiKey
from ._provider import Provider
from ._redact import looks_like_key, redact
from ._registry import SourceURI
from ._values import make_key

__all__ = ["EnvProvider"]


class EnvProvider(Provider):
    """Reads the key from the environment variable ``name`` at every fetch.

    ``environ`` defaults to :data:`os.environ` (read live, so a variable changed by the
    process is seen at the next fetch).
    """

    def __init__(
        self, name: str = "SCALING_API_KEY", *, environ: Mapping[str, str] | None = None
    ) -> None:
        if not isinstance(name, str) or not name or "=" in name or "\0" in name:
            raise ConfigurationError(
                f"{redact(repr(name))} is not a valid environment variable name"
            )
        if looks_like_key(name):
            raise ConfigurationError(
                "the environment variable name looks like an API key (scl_live_...); pass "
                "the variable's name (SCALING_API_KEY), never the key"
            )
        self.name = name
        self._environ = environ

    @classmethod
    def from_uri(cls, uri: SourceURI) -> EnvProvider:
        """``env:NAME`` (``env:`` alone means ``SCALING_API_KEY``)."""
        uri.check_params(())
        return cls(uri.path or "SCALING_API_KEY")

    def fetch(self) -> ApiKey:
        environ = os.environ if self._environ is None else self._environ
        value = environ.get(self.name)
        if value is None:
            raise SecretNotFoundError(
                f"environment variable {self.name} is not set", provider=self.describe()
            )
        return make_key(value, source=self.describe())

    async def afetch(self) -> ApiKey:
        return self.fetch()  # a dictionary lookup: no need for a thread

    def describe(self) -> str:
        return f"env:{self.name}"

    def explain_stuck(self, rejected: ApiKey) -> str:
        return (
            f"{self.describe()} still holds it: a running process never sees a changed "
            "environment variable; restart the process with the new key, or keep the key "
            "in a file or a secrets manager (file:, aws-sm:, vault:) to rotate without "
            "restarts"
        )
