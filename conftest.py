"""Fixtures shared by every test directory of the workspace (tests/, providers/*/tests/)."""

from __future__ import annotations

import pytest

from scaling_credentials.testing import FakeScalingAPI


@pytest.fixture
def api(scaling_api: FakeScalingAPI) -> FakeScalingAPI:
    """The ``scaling_api`` fixture of the project's own pytest plugin (a started
    FakeScalingAPI, stopped after the test), under the short name the tests use."""
    return scaling_api
