"""Provider: the base class of every key source, first-party or third-party."""

from __future__ import annotations

import abc
from collections.abc import Hashable
from typing import ClassVar

from ._errors import ConfigurationError
from ._key import ApiKey

__all__ = ["Provider"]


class Provider(abc.ABC):
    """Where an API key comes from.

    Subclasses implement :meth:`fetch`. Override :meth:`afetch` when the backend has a
    native async client; the default runs :meth:`fetch` in a worker thread so that the
    event loop is never blocked.

    The cache calls :meth:`refetch` (or :meth:`arefetch`) instead of :meth:`fetch` for the
    forced fetch that follows a key the API rejected: a provider that reads through a
    cache of its own (an extension, an agent's proxy) overrides it to get past that cache
    in that one call. Providers keep no state between calls for this.

    A provider raises :class:`SecretNotFoundError` when the secret does not exist,
    :class:`ProviderError` for other backend failures (with the cause chained) and
    :class:`InvalidKeyFormatError` for a value that is not a key. No message may contain
    the secret value.
    """

    #: Whether :meth:`store` can write a new key to the source (``scaling-credentials
    #: rotate`` and ``providers`` read it).
    can_store: ClassVar[bool] = False

    @abc.abstractmethod
    def fetch(self) -> ApiKey:
        """Fetch the current key from the backend, bypassing any cache of the library."""

    async def afetch(self) -> ApiKey:
        """Fetch the key without blocking the event loop."""
        import asyncio  # lazily: importing asyncio costs ~15 ms at cold start

        return await asyncio.to_thread(self.fetch)

    def refetch(self, rejected: ApiKey) -> ApiKey:
        """Fetch the key after the API rejected ``rejected`` (a key this provider
        returned): like :meth:`fetch`, also past any cache between the provider and the
        backend. The default is :meth:`fetch`."""
        return self.fetch()

    async def arefetch(self, rejected: ApiKey) -> ApiKey:
        """:meth:`refetch` without blocking the event loop. The default runs
        :meth:`refetch` in a worker thread when it is overridden, else :meth:`afetch`."""
        if type(self).refetch is not Provider.refetch:
            import asyncio

            return await asyncio.to_thread(self.refetch, rejected)
        return await self.afetch()

    @classmethod
    def _native_async(cls, *, forced: bool) -> bool:
        """Whether the (forced) fetch has a native async implementation to run on the
        caller's event loop, rather than the sync one in a thread."""
        if forced and cls.arefetch is not Provider.arefetch:
            return True
        if forced and cls.refetch is not Provider.refetch:
            return False
        return cls.afetch is not Provider.afetch

    def stamp(self) -> Hashable | None:
        """A cheap, local marker of the source's current state, or ``None`` when the
        provider cannot tell (the default).

        A provider that can see a change without fetching (a file: its inode, size and
        modification time) returns a value that differs whenever the key may have changed.
        The cache calls it at most about once a second, from the thread that reads the
        key, and refetches at once when it differs from the marker taken before the last
        fetch. It must not block: no network call, no lock held by a fetch.
        """
        return None

    def explain_stuck(self, rejected: ApiKey) -> str:
        """Why the source may still hold ``rejected`` after the API rejected it and a
        forced fetch returned it again, and what to do: a sentence for the warning that
        says so (no secret in it)."""
        return (
            f"{self.describe()} still holds it; put the new key in the source "
            "(rotate it there) before revoking the old one"
        )

    def store(self, key: ApiKey) -> str | None:
        """Write ``key`` to the source as its new current value, keeping what else the
        source holds (the other fields of a JSON secret, the previous versions), and return
        the new version's identifier (``None`` when the backend keeps no versions).

        Only providers with :attr:`can_store` implement it; the default raises
        :class:`ConfigurationError`.
        """
        raise ConfigurationError(
            f"{self.describe()} cannot store a key: write the new key to the source with its "
            "own tools (sources that can: scaling-credentials providers)"
        )

    def describe(self) -> str:
        """A short description of where the key comes from, safe to log (no secret)."""
        return type(self).__name__

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
