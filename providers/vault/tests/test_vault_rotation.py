"""Rotation end to end with Vault: FakeScalingAPI over sockets, the key in a KV v2 secret
on a real OpenBao server read through AppRole, a new KV version written and the old key
revoked while threads (httpx.Client) and asyncio tasks (httpx.AsyncClient) send requests.
Zero failed requests, one fetch per rotation; the Vault token is revoked mid-run too."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import hvac
import pytest

from scaling_credentials import KeyCache, ScalingAuth
from scaling_credentials.testing import (
    FakeScalingAPI,
    rotate_and_revoke,
    run_rotation_tasks,
    run_rotation_threads,
)
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


def test_rotation_under_threads(
    api: FakeScalingAPI,
    bao_root: hvac.Client,
    vault_source: tuple[VaultProvider, Counting, Callable[[str], None]],
) -> None:
    provider, auth, write = vault_source
    keys = [api.issue_key()]
    write(keys[0])
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)

    def rotate(number: int) -> None:
        if number == 1:
            # The provider's own Vault token dies as well: the forced fetch logs in again.
            bao_root.auth.token.revoke_accessor(auth.tokens[-1].accessor)
        keys.append(rotate_and_revoke(api, write, keys[-1]))  # new KV version, then revoke

    run = run_rotation_threads(
        api, ScalingAuth(cache), rotate, threads=THREADS, rotations=ROTATIONS
    )
    assert run.failed == 0, f"{run.failed} failed requests"
    assert run.retried >= ROTATIONS
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
    keys = [api.issue_key()]
    write(keys[0])
    cache = KeyCache(provider, ttl=3600, min_refresh_interval=0)
    run = run_rotation_tasks(
        api,
        ScalingAuth(cache),
        lambda _: keys.append(rotate_and_revoke(api, write, keys[-1])),
        tasks=TASKS,
        rotations=ROTATIONS,
    )
    assert run.failed == 0, f"{run.failed} failed requests"
    assert run.retried >= ROTATIONS
    assert cache.stats.fetches == 1 + ROTATIONS
    assert cache.stats.forced_fetches == ROTATIONS
    assert len(auth.tokens) == 1
