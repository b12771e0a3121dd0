"""pytest plugin (entry point ``pytest11``): the ``scaling_api`` fixture."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._fake_api import FakeScalingAPI


@pytest.fixture
def scaling_api() -> Iterator[FakeScalingAPI]:
    """A started :class:`FakeScalingAPI`, stopped after the test."""
    with FakeScalingAPI() as api:
        yield api
