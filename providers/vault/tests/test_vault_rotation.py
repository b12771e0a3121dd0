"""Rotation end to end with Vault: FakeScalingAPI over sockets, the key in a KV v2 secret
on a real OpenBao server read through AppRole, a new KV version written and the old key
revoked while threads (httpx.Client) and asyncio tasks (httpx.AsyncClient) send requests.
Zero failed requests, one fetch per rotation; the Vault token is revoked mid-run too."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import hvac
import pytest

from scaling_credentials import KeyCache, ScalingAuth
from scaling_credentials.testing import FakeScalingAPI
from scaling_credentials_vault import AppRoleAuth, VaultAuth, VaultProvider, VaultToken

ROTATIONS = 3
THREADS = 8
TASKS = 100


class Counting(VaultAuth):
    def __init__(self, inner: VaultAuth) -> None:
        self.inner = inner
        self.tokens: list[VaultToken] = []

    def login(self, client: Any) -> VaultToken:
        token = self.inner.login(client)
        self.tokens.append(token)
        return token

    def describe(self) -> str:
        return self.inner.describe()


@pytest.fixture
def api() -> Iterator[FakeScalingAPI]:
    with FakeScalingAPI() as server:
        yield server


@pytest.fixture
def vault_source(
    bao: Any, bao_root: hvac.Client, secret_path: str, vault_env: pytest.MonkeyPatch
) -> Iterator[tuple[VaultProvider, Counting, Callable[[str], None]]]:
    if "approle/" not in bao_root.sys.list_auth_methods()["data"]:
        bao_root.sys.enable_auth_method("approle")
    name = f"rotation-{uuid.uuid4().hex[:8]}"
    bao_root.auth.approle.create_or_update_approle(
        name, token_policies=["scaling-read"], token_ttl="10m"
    )
    role_id = bao_root.auth.approle.read_role_id(name)["data"]["role_id"]
    secret_id = bao_root.auth.approle.generate_secret_id(name)["data"]["secret_id"]
    auth = Counting(AppRoleAuth(role_id, secret_id))
    provider = VaultProvider(secret_path, url=bao.url, auth=auth)

    def write(value: str) -> None:
        bao_root.secrets.kv.v2.create_or_update_secret(
            path=secret_path, secret={"api_key": value, "rotated_by": "test"}
        )

    yield provider, auth, write
    bao_root.auth.approle.delete_role(name)


def rotate(api: FakeScalingAPI, write: Callable[[str], None], old: str) -> str:
    new = api.rotate()
    write(new)  # a new KV version first...
    api.revoke(old)  # ...then the old key is deleted in the dashboard
    return new


class Progress:
    def __init__(self, workers: int) -> None:
        self.counts = [0] * workers
        self.statuses: list[int] = []
        self.retried = 0
        self.changed = threading.Condition()

    def record(self, worker: int, response: httpx.Response) -> None:
        with self.changed:
            self.counts[worker] += 1
            self.statuses.append(response.status_code)
            self.retried += len(response.history)
            self.changed.notify_all()

    def wait_all_advanced(self, by: int, timeout: float = 20.0) -> None:
        with self.changed:
            start = list(self.counts)
            ok = self.changed.wait_for(
                lambda: all(c >= s + by for c, s in zip(self.counts, start, strict=False)), timeout
            )
        assert ok, "workers stopped making progress"


def test_rotation_under_threads(
    api: FakeScalingAPI,
    bao_root: hvac.Client,
    vault_source: tuple[VaultProvider, Counting, Callable[[str], None]],
) -> None:
    provider, auth, write = vault_source
    key = api.issue_key()
    write(key)
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)
    scaling_auth = ScalingAuth(cache)
    progress = Progress(THREADS)
    stop = threading.Event()

    def worker(index: int) -> None:
        with httpx.Client(base_url=api.url, auth=scaling_auth) as client:
            for _ in range(5000):  # bounded
                if stop.is_set():
                    return
                progress.record(index, client.get("/oncall/schedules"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    try:
        progress.wait_all_advanced(3)
        for rotation in range(ROTATIONS):
            if rotation == 1:
                # The provider's own Vault token dies as well: the forced fetch logs in again.
                bao_root.auth.token.revoke_accessor(auth.tokens[-1].accessor)
            key = rotate(api, write, key)
            progress.wait_all_advanced(3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    failed = [s for s in progress.statuses if s != 200]
    assert failed == [], f"{len(failed)} failed requests"
    assert progress.retried >= ROTATIONS
    assert cache.stats.fetches == 1 + ROTATIONS
    assert cache.stats.forced_fetches == ROTATIONS
    current = cache.peek()
    assert current is not None
    assert current.version == str(1 + ROTATIONS)
    assert len(auth.tokens) == 2  # one login, one after the revocation


def test_rotation_under_asyncio_tasks(
    api: FakeScalingAPI, vault_source: tuple[VaultProvider, Counting, Callable[[str], None]]
) -> None:
    provider, auth, write = vault_source
    key = api.issue_key()
    write(key)
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)
    scaling_auth = ScalingAuth(cache)
    statuses: list[int] = []
    retried = 0

    async def wave(client: httpx.AsyncClient) -> None:
        nonlocal retried
        responses = await asyncio.gather(*(client.get("/oncall/schedules") for _ in range(TASKS)))
        statuses.extend(r.status_code for r in responses)
        retried += sum(len(r.history) for r in responses)

    async def scenario() -> None:
        nonlocal key
        async with httpx.AsyncClient(base_url=api.url, auth=scaling_auth) as client:
            await wave(client)
            for _ in range(ROTATIONS):
                running = asyncio.ensure_future(wave(client))
                await asyncio.sleep(0)
                # Blocking Vault writes in a thread: the event loop keeps serving the wave.
                key = await asyncio.to_thread(rotate, api, write, key)
                await running

    asyncio.run(asyncio.wait_for(scenario(), 120))
    failed = [s for s in statuses if s != 200]
    assert failed == [], f"{len(failed)} failed requests"
    assert retried >= ROTATIONS
    assert cache.stats.fetches == 1 + ROTATIONS
    assert cache.stats.forced_fetches == ROTATIONS
    assert len(auth.tokens) == 1
