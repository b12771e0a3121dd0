"""ChainProvider: the first provider that yields a key wins."""

from __future__ import annotations

import threading

from ._errors import ConfigurationError, ScalingCredentialsError
from ._key import ApiKey
from ._provider import Provider

__all__ = ["ChainProvider"]


class ChainProvider(Provider):
    """Tries each provider in order; the first one that yields a key wins.

    When all fail, one :class:`ConfigurationError` lists what each tried (descriptions and
    error types, never secrets). ``on_rejected`` is passed to the provider that produced
    the rejected key.
    """

    def __init__(self, *providers: Provider) -> None:
        if not providers:
            raise ConfigurationError("ChainProvider needs at least one provider")
        for provider in providers:
            if not isinstance(provider, Provider):
                raise ConfigurationError(
                    f"ChainProvider takes Provider instances, got {type(provider).__name__}"
                )
        self.providers: tuple[Provider, ...] = providers
        self._lock = threading.Lock()
        self._last: Provider | None = None

    def describe(self) -> str:
        return "chain(" + ", ".join(p.describe() for p in self.providers) + ")"

    def fetch(self) -> ApiKey:
        failures: list[tuple[Provider, Exception]] = []
        for provider in self.providers:
            try:
                key = provider.fetch()
            except ScalingCredentialsError as exc:
                failures.append((provider, exc))
                continue
            self._remember(provider)
            return key
        raise self._all_failed(failures)

    async def afetch(self) -> ApiKey:
        failures: list[tuple[Provider, Exception]] = []
        for provider in self.providers:
            try:
                key = await provider.afetch()
            except ScalingCredentialsError as exc:
                failures.append((provider, exc))
                continue
            self._remember(provider)
            return key
        raise self._all_failed(failures)

    def on_rejected(self, key: ApiKey) -> None:
        with self._lock:
            last = self._last
        if last is not None:
            last.on_rejected(key)

    def _remember(self, provider: Provider) -> None:
        with self._lock:
            self._last = provider

    def _all_failed(self, failures: list[tuple[Provider, Exception]]) -> ConfigurationError:
        lines = "; ".join(f"{p.describe()}: {type(e).__name__}: {e}" for p, e in failures)
        error = ConfigurationError(f"no provider in the chain yielded a key ({lines})")
        error.__cause__ = failures[-1][1] if failures else None
        return error
