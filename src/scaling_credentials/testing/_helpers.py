"""Small test doubles for code that uses scaling-credentials: a fake clock and an
in-memory provider with fault injection."""

from __future__ import annotations

import threading
import time

from .._errors import ProviderError
from .._key import ApiKey
from .._provider import Provider

__all__ = ["FakeClock", "MemoryProvider"]


class FakeClock:
    """A monotonic clock for :class:`KeyCache` that moves only when told to."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self._now += seconds


class MemoryProvider(Provider):
    """A provider that serves a value held in memory, for tests.

    ``value`` is what the next fetch returns (set it to rotate). ``fail`` makes fetches
    raise (an exception instance, or ``True`` for a :class:`ProviderError`). ``gate``, when
    set to a :class:`threading.Event`, makes each fetch wait for it (bounded by
    ``gate_timeout``) so that tests can hold a fetch in flight. ``delay`` adds a real
    delay. ``fetches`` counts backend calls; ``rejected`` records ``on_rejected`` calls.
    """

    def __init__(self, value: str | None = None, *, name: str = "memory") -> None:
        self.value = value
        self.name = name
        self.fail: BaseException | bool = False
        self.gate: threading.Event | None = None
        self.gate_timeout = 30.0
        self.delay = 0.0
        self.fetches = 0
        self.rejected: list[ApiKey] = []
        self.started = threading.Event()  # set when a fetch begins
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"memory:{self.name}"

    def fetch(self) -> ApiKey:
        with self._lock:
            self.fetches += 1
        self.started.set()
        if self.gate is not None:
            self.gate.wait(self.gate_timeout)
        if self.delay:
            time.sleep(self.delay)
        fail = self.fail
        if fail is True:
            raise ProviderError(
                f"{self.describe()} is failing (injected)", provider=self.describe()
            )
        if isinstance(fail, BaseException):
            raise fail
        if self.value is None:
            from .._errors import SecretNotFoundError

            raise SecretNotFoundError(f"{self.describe()} holds no key", provider=self.describe())
        return ApiKey(self.value, source=self.describe())

    def on_rejected(self, key: ApiKey) -> None:
        with self._lock:
            self.rejected.append(key)
