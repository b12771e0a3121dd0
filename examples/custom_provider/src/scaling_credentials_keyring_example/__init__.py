"""An example third-party provider: keys held in a process-wide dictionary.

A real provider would call its backend in ``fetch``; everything else is the same:
subclass ``Provider``, validate with ``ApiKey``, raise the library's error types, and
register a ``from_uri`` factory in the ``scaling_credentials.providers`` entry-point group.
"""

from __future__ import annotations

from scaling_credentials import ApiKey, Provider, SecretNotFoundError, SourceURI

STORE: dict[str, str] = {}


class DictProvider(Provider):
    """Reads ``STORE[service]`` at every fetch."""

    def __init__(self, service: str) -> None:
        self.service = service

    @classmethod
    def from_uri(cls, uri: SourceURI) -> DictProvider:
        uri.check_params(())
        return cls(uri.require_path("a service name"))

    def describe(self) -> str:
        return f"keyring-example:{self.service}"

    def fetch(self) -> ApiKey:
        try:
            value = STORE[self.service]
        except KeyError:
            raise SecretNotFoundError(
                f"no key stored for {self.service!r}", provider=self.describe()
            ) from None
        return ApiKey(value, source=self.describe())
