"""Testing helpers: :class:`FakeScalingAPI`, the ``scaling_api`` pytest fixture (plugin
``scaling_credentials.testing.pytest_plugin``) and the shared provider test suite
(:mod:`scaling_credentials.testing.provider_suite`, which needs pytest)."""

from ._fake_api import FakeScalingAPI, RecordedRequest, ScriptedResponse, free_port
from ._helpers import FakeClock, FaultyProvider, MemoryProvider

__all__ = [
    "FakeClock",
    "FakeScalingAPI",
    "FaultyProvider",
    "MemoryProvider",
    "RecordedRequest",
    "ScriptedResponse",
    "free_port",
]
