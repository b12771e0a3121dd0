"""Provider: the base class of every key source, first-party or third-party."""

from __future__ import annotations

import abc

from ._key import ApiKey

__all__ = ["Provider"]


class Provider(abc.ABC):
    """Where an API key comes from.

    Subclasses implement :meth:`fetch`. Override :meth:`afetch` when the backend has a
    native async client; the default runs :meth:`fetch` in a worker thread so that the
    event loop is never blocked.

    A provider raises :class:`SecretNotFoundError` when the secret does not exist,
    :class:`ProviderError` for other backend failures (with the cause chained) and
    :class:`InvalidKeyFormatError` for a value that is not a key. No message may contain
    the secret value.
    """

    @abc.abstractmethod
    def fetch(self) -> ApiKey:
        """Fetch the current key from the backend, bypassing any cache of the library."""

    async def afetch(self) -> ApiKey:
        """Fetch the key without blocking the event loop."""
        import asyncio  # lazily: importing asyncio costs ~15 ms at cold start

        return await asyncio.to_thread(self.fetch)

    def describe(self) -> str:
        """A short description of where the key comes from, safe to log (no secret)."""
        return type(self).__name__

    def on_rejected(self, key: ApiKey) -> None:  # noqa: B027 - optional hook, no-op by default
        """Called before the forced refetch that follows a key the API rejected.

        Providers that read through a cache of their own (an extension, an agent) use it
        to bypass that cache on the next fetch.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
