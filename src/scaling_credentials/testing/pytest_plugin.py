"""pytest plugin (entry point ``pytest11``): the ``scaling_api`` and ``hostile_server``
fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._fake_api import FakeScalingAPI
from ._hostile import HostileServer


@pytest.fixture
def scaling_api() -> Iterator[FakeScalingAPI]:
    """A started :class:`FakeScalingAPI`, stopped after the test."""
    with FakeScalingAPI() as api:
        yield api


@pytest.fixture
def hostile_server() -> Iterator[HostileServer]:
    """A started :class:`HostileServer` (routes to be set by the test), stopped after
    the test."""
    with HostileServer() as server:
        yield server
