"""Reliability and secret hygiene with Vault (a real OpenBao dev server): the server
stopped mid-run and started again at the same address, a hung server bounded by the
provider's timeout and the cache's fetch_timeout, every logger at DEBUG with no key and
no Vault token in the output, and the pre-fork server pattern with a rotation in KV.

Servers are started here on 127.0.0.1 and stopped by the pid they were started with.
Time is a FakeClock wherever a TTL or a backoff step is involved.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import hvac
import pytest

from scaling_credentials import ApiKey, KeyCache, ProviderError, ProviderTimeoutError, ScalingAuth
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    FaultyProvider,
    free_port,
    run_prefork_rotation,
)
from scaling_credentials.testing.provider_suite import assert_no_secret
from scaling_credentials_vault import TokenAuth, VaultProvider

PATH = "/oncall/schedules"
STEP = 0.5


def token(key: str) -> str:
    return key.removeprefix("scl_live_")


class Restartable:
    """A ``bao server -dev`` on a fixed port and root token, so that it can be stopped
    and started again at the same address (dev mode keeps its data in memory: a restart
    is empty, like a Vault restored from nothing)."""

    def __init__(self, run_bao: Callable[..., Any], poll: Callable[..., None]) -> None:
        self.run_bao = run_bao
        self.poll = poll
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.root_token = "root-reliability-" + os.urandom(6).hex()
        self.current: Any = None

    def start(self) -> None:
        self.current = self.run_bao(
            "server",
            "-dev",
            "-dev-no-store-token",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address=127.0.0.1:{self.port}",
        )

        def healthy() -> bool:
            if self.current.process.poll() is not None:
                pytest.fail(f"bao exited:\n{self.current.log_tail()}")
            try:
                return httpx.get(f"{self.url}/v1/sys/health", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        self.poll(healthy, timeout=30, what="the OpenBao dev server to become healthy")

    def stop(self) -> None:
        process = self.current.process
        if process.poll() is None:
            process.terminate()  # by the pid we started
            process.wait(timeout=10)

    def write(self, value: str) -> None:
        client = hvac.Client(url=self.url, token=self.root_token, timeout=10)
        try:
            client.secrets.kv.v2.create_or_update_secret(
                path="scaling/app", secret={"api_key": value}
            )
        finally:
            client.adapter.close()


@pytest.fixture
def restartable(
    run_bao: Callable[..., Any], poll: Callable[..., None], vault_env: pytest.MonkeyPatch
) -> Restartable:
    server = Restartable(run_bao, poll)
    server.start()
    return server  # run_bao stops whatever is still running at the end


# ---------------------------------------------------------------------------- outage and restart


def test_openbao_stopped_mid_run_then_restarted(
    api: FakeScalingAPI, restartable: Restartable
) -> None:
    key = api.issue_key()
    restartable.write(key)
    clock = FakeClock()
    counting = FaultyProvider(  # injects nothing: counts backend attempts on the clock
        VaultProvider(
            "scaling/app",
            url=restartable.url,
            auth=TokenAuth(restartable.root_token),
            timeout=5,
        ),
        clock=clock,
    )
    cache = KeyCache(
        counting,
        ttl=60,
        jitter=0,
        refresh_ahead=0,
        max_stale=600,
        min_refresh_interval=0,
        backoff_initial=1,
        backoff_max=8,
        clock=clock,
        rng=random.Random(4),
    )
    with httpx.Client(base_url=api.url, auth=ScalingAuth(cache), timeout=30) as client:
        assert client.get(PATH).status_code == 200
        restartable.stop()  # Vault goes away
        clock.advance(60)
        statuses = []
        for _ in range(round(60 / STEP)):
            clock.advance(STEP)
            statuses.append(client.get(PATH).status_code)
        assert set(statuses) == {200}, "a request failed during the outage"
        assert cache.stats.stale_serves == len(statuses)  # each one served the cached key
        failures = counting.attempts[1:]
        gaps = [b - a for a, b in itertools.pairwise(failures)]
        assert all(0.5 <= gap <= 8 + STEP for gap in gaps), gaps
        assert len(failures) <= 1 + 60 / 4 + 2

        # Vault comes back at the same address, with a rotated key written anew.
        restartable.start()
        new = api.rotate()
        restartable.write(new)
        back_at, calls = clock(), counting.calls
        for _ in range(round(8 / STEP) + 1):  # within one capped backoff step
            clock.advance(STEP)
            assert client.get(PATH).status_code == 200
            if cache.stats.consecutive_failures == 0:
                break
        assert cache.stats.consecutive_failures == 0, "no recovery within one backoff step"
        assert clock() - back_at <= 8 + STEP
        assert counting.calls == calls + 1
        assert cache.peek() == ApiKey(new)
        api.revoke(key)
        assert client.get(PATH).status_code == 200


# ---------------------------------------------------------------------------- hung server


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A Vault address that accepts connections (through the listen backlog) and never
    answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def _capture(call: Callable[[], object], into: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:
        into.append(exc)


def test_a_hung_vault_is_bounded_by_the_provider_timeout(
    black_hole: str, vault_env: pytest.MonkeyPatch
) -> None:
    provider = VaultProvider(
        "scaling/app", url=black_hole, auth=TokenAuth("s.hungvault"), timeout=1
    )
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(provider.fetch, outcome), daemon=True)
    thread.start()
    thread.join(timeout=1 + 30)
    assert not thread.is_alive(), "the fetch was not bounded by the provider's timeout"
    error = outcome[0]
    assert isinstance(error, ProviderError)
    assert "did not answer within 1 s" in str(error)
    assert_no_secret("s.hungvault", str(error), repr(error))


def test_a_hung_vault_is_bounded_by_fetch_timeout(
    api: FakeScalingAPI, black_hole: str, vault_env: pytest.MonkeyPatch
) -> None:
    provider = VaultProvider(
        "scaling/app", url=black_hole, auth=TokenAuth("s.hungvault"), timeout=5
    )
    cache = KeyCache(provider, fetch_timeout=0.5)
    outcome: list[BaseException] = []
    with httpx.Client(base_url=api.url, auth=ScalingAuth(cache)) as client:
        thread = threading.Thread(
            target=lambda: _capture(lambda: client.get(PATH), outcome), daemon=True
        )
        thread.start()
        thread.join(timeout=0.5 + 30)
        assert not thread.is_alive(), "the request outlived fetch_timeout"
    error = outcome[0]
    assert isinstance(error, ProviderTimeoutError)
    assert "fetch_timeout" in str(error)
    assert api.requests == []


# ---------------------------------------------------------------------------- DEBUG logs


def test_debug_logs_hold_no_key_and_no_vault_token(
    api: FakeScalingAPI,
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    vault_env: pytest.MonkeyPatch,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    names = ("", "hvac", "urllib3", "requests", "httpx", "httpcore", "scaling_credentials")
    saved = {n: logging.getLogger(n).level for n in names}
    root = logging.getLogger()
    root.addHandler(handler)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        key = api.issue_key()
        bao_root.secrets.kv.v2.create_or_update_secret(path=secret_path, secret={"api_key": key})
        provider = VaultProvider(secret_path, url=bao.url, auth=TokenAuth(bao.root_token))
        cache = KeyCache(provider, min_refresh_interval=0)
        with httpx.Client(base_url=api.url, auth=ScalingAuth(cache)) as client:
            assert client.get(PATH).status_code == 200
            new = api.rotate()
            bao_root.secrets.kv.v2.create_or_update_secret(
                path=secret_path, secret={"api_key": new}
            )
            api.revoke(key)
            assert client.get(PATH).status_code == 200  # a 401, a forced fetch, a retry
        missing = VaultProvider("scaling/nothing-here", url=bao.url, auth=TokenAuth(bao.root_token))
        with pytest.raises(ProviderError) as info:
            missing.fetch()
        texts = [stream.getvalue(), str(info.value), repr(info.value), repr(provider), repr(cache)]
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
    assert "GET /v1/" in texts[0] or "/v1/" in texts[0]  # the capture saw urllib3's lines
    for secret in (key, new):
        assert_no_secret(token(secret), *texts)
    assert_no_secret(bao.root_token, *texts)


# ---------------------------------------------------------------------------- pre-fork pattern


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pre_fork_workers_each_open_their_own_session_and_follow_a_rotation(
    api: FakeScalingAPI,
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    vault_env: pytest.MonkeyPatch,
) -> None:
    key = api.issue_key()
    bao_root.secrets.kv.v2.create_or_update_secret(path=secret_path, secret={"api_key": key})
    provider = VaultProvider(secret_path, url=bao.url, auth=TokenAuth(bao.root_token))
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)
    auth = ScalingAuth(cache)
    cache.get()  # warm: logged in, a pooled session exists in the parent
    parent_session = provider._current.client.get().session

    def own_session() -> bool:
        current = provider._current
        return current is not None and current.client.get().session is not parent_session

    def rotate(_: int) -> None:
        new = api.rotate()
        bao_root.secrets.kv.v2.create_or_update_secret(path=secret_path, secret={"api_key": new})
        api.revoke(key)

    run = run_prefork_rotation(api, auth, rotate, workers=3, probe=own_session)
    slots = run.workers
    assert run.codes == [0] * 3, slots
    assert all(w.failed == 0 for w in slots), slots
    assert all(w.fetches == 1 for w in slots), slots
    assert all(w.probe == 1 for w in slots), "a child reused the parent's session"
    assert provider._current.client.get().session is parent_session
