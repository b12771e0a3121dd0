"""Fixtures shared by every test directory of the workspace (tests/, providers/*/tests/)."""

from __future__ import annotations

import io
import os
import sys
import tracemalloc
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import httpx
import pytest

from scaling_credentials.testing import FakeScalingAPI, RotationRun, run_rotation_threads


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


# ---------------------------------------------------------------------- scaling-credentials rotate


class RotateRun(NamedTuple):
    """What ``scaling-credentials rotate`` returned and printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_rotate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., RotateRun]:
    """``run_rotate(*args, stdin=..., env=...)``: ``main(["rotate", *args])`` in this
    process, with ``stdin`` as its standard input (not a terminal), no key source from the
    developer's environment (``SCALING_*`` removed) and ``env`` set."""
    from scaling_credentials.cli import main

    def run(*args: str, stdin: str, env: Mapping[str, str] | None = None) -> RotateRun:
        for name in list(os.environ):
            if name.upper().startswith("SCALING_"):
                monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = main(["rotate", *args])
        out, err = capsys.readouterr()
        return RotateRun(code, out, err)

    return run


@pytest.fixture
def rotate_under_load(
    run_rotate: Callable[..., RotateRun],
) -> Callable[..., tuple[RotationRun, list[RotateRun]]]:
    """``rotate_under_load(api, auth, source, current_key)``: threads send requests to
    ``api`` through ``auth`` (reading ``source``) while ``scaling-credentials rotate
    --source SOURCE`` runs three times in this process, each time with a key just issued,
    and the old key is revoked as soon as it returns (the delay it prints not waited for).
    Returns the requests' run and rotate's outputs."""

    def run(
        api: FakeScalingAPI, auth: httpx.Auth, source: str, current: str
    ) -> tuple[RotationRun, list[RotateRun]]:
        keys, outputs = [current], []

        def rotation(number: int) -> None:
            old, new = keys[-1], api.rotate()
            ran = run_rotate("--source", source, "--base-url", api.url, stdin=new + "\n")
            outputs.append(ran)
            assert ran.returncode == 0, ran.stderr
            api.revoke(old)
            keys.append(new)

        return run_rotation_threads(api, auth, rotation, threads=4, rotations=3), outputs

    return run


# ---------------------------------------------------------------------- hostile answers


def _traced(action: Callable[[], Any]) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = action()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return result, peak - before


@pytest.fixture
def traced() -> Callable[[Callable[[], Any]], tuple[Any, int]]:
    """``traced(action)``: ``action()`` and the peak of memory it allocated
    (tracemalloc), in bytes; for what a hostile answer may cost a client."""
    return _traced
