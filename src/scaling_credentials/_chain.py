"""ChainProvider: the first provider that yields a key wins."""

from __future__ import annotations

from collections.abc import Hashable

from ._errors import (
    ConfigurationError,
    InvalidKeyFormatError,
    ProviderError,
    ScalingCredentialsError,
    SecretNotFoundError,
)
from ._key import ApiKey
from ._provider import Provider

__all__ = ["ChainProvider"]


class ChainProvider(Provider):
    """Tries each provider in order; the first one that yields a key wins.

    When all fail, one error lists what each tried (descriptions and error types, never
    secrets): :class:`ConfigurationError` when no member is configured (each found no
    secret, or was misconfigured), :class:`ProviderError` when at least one failed for a
    backend reason (down, denied, timed out), so that an outage is not reported as a
    configuration mistake.

    A refetch after a rejected key goes through the chain in the same order, with the
    member that produced the key (the one whose description is the key's ``source``)
    asked through its own :meth:`~Provider.refetch`.
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

    def describe(self) -> str:
        return "chain(" + ", ".join(p.describe() for p in self.providers) + ")"

    def fetch(self) -> ApiKey:
        return self._walk(None)

    async def afetch(self) -> ApiKey:
        return await self._awalk(None)

    def refetch(self, rejected: ApiKey) -> ApiKey:
        return self._walk(rejected)

    async def arefetch(self, rejected: ApiKey) -> ApiKey:
        return await self._awalk(rejected)

    def stamp(self) -> Hashable | None:
        stamps = tuple(p.stamp() for p in self.providers)
        return None if all(s is None for s in stamps) else stamps

    def explain_stuck(self, rejected: ApiKey) -> str:
        producer = self._producer(rejected)
        if producer is not None:
            return producer.explain_stuck(rejected)
        return super().explain_stuck(rejected)

    def _producer(self, key: ApiKey | None) -> Provider | None:
        if key is None or key.source is None:
            return None
        for provider in self.providers:
            if provider.describe() == key.source:
                return provider
        return None

    def _walk(self, rejected: ApiKey | None) -> ApiKey:
        producer = self._producer(rejected)
        failures: list[tuple[Provider, ScalingCredentialsError]] = []
        for provider in self.providers:
            try:
                if rejected is not None and provider is producer:
                    return provider.refetch(rejected)
                return provider.fetch()
            except ScalingCredentialsError as exc:
                failures.append((provider, exc))
        raise self._all_failed(failures)

    async def _awalk(self, rejected: ApiKey | None) -> ApiKey:
        producer = self._producer(rejected)
        failures: list[tuple[Provider, ScalingCredentialsError]] = []
        for provider in self.providers:
            try:
                if rejected is not None and provider is producer:
                    return await provider.arefetch(rejected)
                return await provider.afetch()
            except ScalingCredentialsError as exc:
                failures.append((provider, exc))
        raise self._all_failed(failures)

    def _all_failed(
        self, failures: list[tuple[Provider, ScalingCredentialsError]]
    ) -> ScalingCredentialsError:
        lines = "; ".join(f"{p.describe()}: {type(e).__name__}: {e}" for p, e in failures)
        message = f"no provider in the chain yielded a key ({lines})"
        configuration = (ConfigurationError, InvalidKeyFormatError, SecretNotFoundError)
        error: ScalingCredentialsError
        if all(isinstance(e, configuration) for _, e in failures):
            error = ConfigurationError(message)
        else:
            error = ProviderError(message, provider=self.describe())
        error.__cause__ = failures[-1][1] if failures else None
        return error
