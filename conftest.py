"""Fixtures shared by every test directory of the workspace (tests/, providers/*/tests/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scaling_credentials.testing import FakeScalingAPI


@pytest.fixture
def api(scaling_api: FakeScalingAPI) -> FakeScalingAPI:
    """The ``scaling_api`` fixture of the project's own pytest plugin (a started
    FakeScalingAPI, stopped after the test), under the short name the tests use."""
    return scaling_api


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the whole session, on 127.0.0.1 at a free port (the AWS
    provider's tests and the docs' AWS examples)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
