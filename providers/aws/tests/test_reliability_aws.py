"""Reliability and secret hygiene with AWS Secrets Manager: a moto server (its own
process) stopped mid-run and started again, a hung endpoint bounded by botocore's
timeouts and the cache's fetch_timeout, botocore's DEBUG body logging with and without
``redact_logging()``, and the pre-fork server pattern with a rotation in Secrets Manager.

Every server is started here on 127.0.0.1 and stopped by the pid it was started with.
Time is a FakeClock wherever a TTL or a backoff step is involved.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest

from scaling_credentials import (
    ApiKey,
    KeyCache,
    ProviderError,
    ProviderTimeoutError,
    ScalingAuth,
    redact_logging,
)
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    FaultyProvider,
    free_port,
    run_prefork_rotation,
)
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret
from scaling_credentials.toolkit import KEY_PREFIX
from scaling_credentials_aws import SecretsManagerProvider

PATH = "/oncall/schedules"
REGION = "us-east-1"
STEP = 0.5


def token(key: str) -> str:
    return key.removeprefix(KEY_PREFIX)


class Moto:
    """A ``moto.server`` process of our own on a fixed port, so that it can be stopped
    and started again at the same address (its state is in memory: a restart is empty)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"moto.server exited with {self.process.returncode}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)  # waiting for a process to listen, not for a TTL
        self.stop()
        pytest.fail("moto.server did not listen within 30 s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()  # by the pid we started
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def moto() -> Iterator[Moto]:
    server = Moto(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def admin(session: boto3.session.Session, endpoint: str) -> Any:
    return session.client("secretsmanager", endpoint_url=endpoint)


# ---------------------------------------------------------------------------- outage and restart


def test_moto_stopped_mid_run_then_restarted(
    api: FakeScalingAPI, moto: Moto, boto_session: boto3.session.Session
) -> None:
    key = api.issue_key()
    admin(boto_session, moto.endpoint).create_secret(Name="prod/scaling", SecretString=key)
    clock = FakeClock()
    counting = FaultyProvider(  # injects nothing: counts backend attempts on the clock
        SecretsManagerProvider(
            "prod/scaling",
            endpoint_url=moto.endpoint,
            session=boto_session,
            max_attempts=1,
            connect_timeout=2,
            read_timeout=5,
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
        rng=random.Random(2),
    )
    statuses: list[int] = []
    with httpx.Client(base_url=api.url, auth=ScalingAuth(cache), timeout=30) as client:
        assert client.get(PATH).status_code == 200
        moto.stop()  # Secrets Manager goes away
        clock.advance(60)  # the key expires with the backend down
        for _ in range(round(60 / STEP)):
            clock.advance(STEP)
            statuses.append(client.get(PATH).status_code)
        # Many threads at one instant during the outage: served, no extra attempts.
        attempts = counting.calls
        results: list[int] = []
        lock = threading.Lock()

        def burst() -> None:
            with httpx.Client(base_url=api.url, auth=ScalingAuth(cache), timeout=30) as own:
                for _ in range(10):
                    status = own.get(PATH).status_code
                    with lock:
                        results.append(status)

        threads = [threading.Thread(target=burst) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert results == [200] * 80
        assert counting.calls <= attempts + 1
        assert set(statuses) == {200}, "a request failed during the outage"
        failures = counting.attempts[1:]
        gaps = [b - a for a, b in itertools.pairwise(failures)]
        assert all(gap >= 0.5 for gap in gaps), gaps  # backoff between attempts
        assert all(gap <= 8 + STEP for gap in gaps), gaps  # ... capped
        assert len(failures) <= 1 + 60 / 4 + 2

        # Secrets Manager comes back (empty, like a new region) with a rotated key.
        moto.start()
        new = api.rotate()
        admin(boto_session, moto.endpoint).create_secret(Name="prod/scaling", SecretString=new)
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
        assert client.get(PATH).status_code == 200  # on the new key


# ---------------------------------------------------------------------------- hung endpoint


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An endpoint that accepts connections (through the listen backlog) and never
    answers: a hung Secrets Manager."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def test_a_hung_secrets_manager_is_bounded_by_botocore_timeouts(
    black_hole: str, boto_session: boto3.session.Session
) -> None:
    provider = SecretsManagerProvider(
        "prod/scaling",
        endpoint_url=black_hole,
        session=boto_session,
        connect_timeout=1,
        read_timeout=1,
        max_attempts=2,
    )
    outcome: list[BaseException] = []
    thread = threading.Thread(target=lambda: _capture(provider.fetch, outcome), daemon=True)
    thread.start()
    thread.join(timeout=2 * (1 + 1) + 30)  # max_attempts x (connect + read) + slack
    assert not thread.is_alive(), "the fetch was not bounded by botocore's timeouts"
    error = outcome[0]
    assert isinstance(error, ProviderError)
    assert "did not answer in time after 2 attempt(s)" in str(error)


def _capture(call: Callable[[], object], into: list[BaseException]) -> None:
    try:
        call()
    except BaseException as exc:
        into.append(exc)


def test_a_hung_secrets_manager_is_bounded_by_fetch_timeout(
    api: FakeScalingAPI, black_hole: str, boto_session: boto3.session.Session
) -> None:
    provider = SecretsManagerProvider(
        "prod/scaling", endpoint_url=black_hole, session=boto_session, read_timeout=5
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
    assert "fetch_timeout" in str(error) and "aws-sm:prod/scaling" in str(error)
    assert api.requests == []


# ---------------------------------------------------------------------------- botocore DEBUG logs


@pytest.fixture
def botocore_debug() -> Iterator[io.StringIO]:
    """botocore (and boto3, urllib3) at DEBUG, written to a root handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    names = ("botocore", "boto3", "urllib3")
    saved = {n: logging.getLogger(n).level for n in names}
    root.addHandler(handler)
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        filterers: list[logging.Filterer] = [root, *root.handlers, handler]
        for name in ("boto3", "botocore", "hvac", "httpcore", "httpx", "requests", "urllib3"):
            logger = logging.getLogger(name)
            filterers += [logger, *logger.handlers]
        if logging.lastResort is not None:
            filterers.append(logging.lastResort)
        installed = redact_logging()  # the one filter the test put on, wherever it went
        for filterer in filterers:
            filterer.removeFilter(installed)


def test_botocore_debug_logs_the_key_unless_redact_logging_is_on(
    botocore_debug: io.StringIO,
    moto_endpoint: str,
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    boto_session: boto3.session.Session,
) -> None:
    key = "scl_live_botocoredebuglog0123456789WXYZ"
    put(sm, secret_name, SecretString=key)
    provider = SecretsManagerProvider(secret_name, endpoint_url=moto_endpoint, session=boto_session)
    assert_key_is(provider.fetch(), key)
    # The risk: botocore logs the GetSecretValue response body, SecretString included.
    leaked = token(key) in botocore_debug.getvalue()
    assert leaked, "botocore did not log the response body: the premise of this test changed"

    botocore_debug.truncate(0)
    botocore_debug.seek(0)
    redact_logging()
    assert_key_is(provider.fetch(), key)
    put(sm, secret_name, SecretString=f'{{"api_key": "{key}"}}')  # a JSON secret too
    assert (
        SecretsManagerProvider(
            secret_name, field="api_key", endpoint_url=moto_endpoint, session=boto_session
        )
        .fetch()
        .reveal()
        == key
    )
    text = botocore_debug.getvalue()
    assert "Response body" in text  # still logged ...
    assert_no_secret(token(key), text)  # ... but masked
    assert "scl_live_****WXYZ" in text


TEMPORARY_CREDENTIALS = {
    "aws_access_key_id": "AKIAHOSTILETEST0X9ZQ",
    "aws_secret_access_key": "hostileSecretAccessKey/0123456789+ABCDEFG",
    "aws_session_token": "IQoJb3JpZ2luX2VjEJrHOSTILEsessionTOKEN/0123456789+abcdefABCDEF==",
}


def _calls_with_temporary_credentials(endpoint: str, secret_name: str) -> list[str]:
    """STS GetSessionToken and Secrets Manager calls signed with temporary credentials;
    the credentials STS answered (botocore logs them in the response body)."""
    session = boto3.session.Session(region_name=REGION, **TEMPORARY_CREDENTIALS)
    answered = session.client("sts", endpoint_url=endpoint).get_session_token()["Credentials"]
    secrets = session.client("secretsmanager", endpoint_url=endpoint)
    secrets.put_secret_value(SecretId=secret_name, SecretString="scl_live_redactAWS0123456789abcd")
    secrets.get_secret_value(SecretId=secret_name)
    return [str(answered[k]) for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")]


def test_botocore_debug_logs_aws_credentials_unless_redact_logging_is_on(
    botocore_debug: io.StringIO,
    moto_endpoint: str,
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
) -> None:
    put(sm, secret_name, SecretString="scl_live_first0123456789abcdefgh")
    ours = list(TEMPORARY_CREDENTIALS.values())
    answered = _calls_with_temporary_credentials(moto_endpoint, secret_name)
    text = botocore_debug.getvalue()
    # The premise: botocore logs the session token, the access key ID and what STS sent
    # (the secret access key itself only signs, and is never logged).
    for secret in (ours[0], ours[2], *answered):
        assert secret in text, "botocore no longer logs this: the premise of the test changed"

    botocore_debug.truncate(0)
    botocore_debug.seek(0)
    redact_logging()
    answered = _calls_with_temporary_credentials(moto_endpoint, secret_name)
    text = botocore_debug.getvalue()
    for secret in (*ours, *answered):
        assert_no_secret(secret, text)
    assert "x-amz-security-token:****" in text  # the canonical request, still logged
    assert "AKIA****" in text  # the kind of access key stays visible
    assert "scl_live_****abcd" in text


# ---------------------------------------------------------------------------- pre-fork pattern


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pre_fork_workers_each_build_a_boto3_client_and_follow_a_rotation(
    api: FakeScalingAPI, moto: Moto, boto_session: boto3.session.Session
) -> None:
    # A thread that created an SSLContext and is exiting at the moment of fork() can
    # leave one of OpenSSL's locks held in the child, whose first new thread
    # then hangs in its own SSLContext (seen 1 run in 5 when the cache's warm-up fetch
    # thread built the client just before the fork). So the parent builds its client in
    # this thread, and moto runs in a process of its own (fewer threads in the parent).
    key = api.issue_key()
    sm = admin(boto_session, moto.endpoint)
    secret_name = "prod/scaling"
    sm.create_secret(Name=secret_name, SecretString=key)
    provider = SecretsManagerProvider(secret_name, endpoint_url=moto.endpoint, session=boto_session)
    parent_client = provider._get_client()
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)
    auth = ScalingAuth(cache)
    cache.get()  # warm, with the parent's client

    def rotate(_: int) -> None:
        new = api.rotate()
        sm.put_secret_value(SecretId=secret_name, SecretString=new)  # a new AWSCURRENT ...
        api.revoke(key)  # ... then the old key is revoked

    run = run_prefork_rotation(
        api,
        auth,
        rotate,
        workers=3,
        probe=lambda: provider._client.peek() not in (None, parent_client),
    )
    slots = run.workers
    assert run.codes == [0] * 3, slots
    assert all(w.failed == 0 for w in slots), slots
    assert all(w.fetches == 1 for w in slots), slots  # one forced fetch each
    assert all(w.probe == 1 for w in slots), "a child reused the parent's client"
    assert provider._get_client() is parent_client  # the parent keeps its own
