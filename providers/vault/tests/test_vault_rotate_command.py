"""``scaling-credentials rotate`` against a real OpenBao: a new KV v2 version that keeps
the secret's other fields, read back through a new provider; no request lost by a fleet
reading the same path under load; a token that may only read is refused with nothing
written; neither key nor the Vault token in any output."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import hvac
import pytest

from scaling_credentials import ApiKey, ScalingAuth
from scaling_credentials.testing import FakeScalingAPI
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret
from scaling_credentials.toolkit import mask
from scaling_credentials_vault import TokenAuth, VaultProvider

from .conftest import READ_POLICY

RunRotate = Callable[..., Any]  # the run_rotate fixture (conftest.py at the root)


@pytest.fixture(autouse=True)
def operator_env(bao: Any, vault_env: pytest.MonkeyPatch) -> None:
    """VAULT_ADDR and VAULT_TOKEN (root) as an operator sets them; nothing else of Vault's."""
    vault_env.setenv("VAULT_ADDR", bao.url)
    vault_env.setenv("VAULT_TOKEN", bao.root_token)


def no_secret(ran: Any, *secrets: str) -> None:
    for secret in secrets:
        assert_no_secret(secret.removeprefix("scl_live_"), ran.stdout, ran.stderr)


def kv2(root: hvac.Client, path: str, version: int | None = None) -> dict[str, Any]:
    answer = root.secrets.kv.v2.read_secret_version(
        path=path, version=version, raise_on_deleted_version=True
    )
    return dict(answer["data"])


def test_rotate_writes_a_new_kv2_version_keeping_the_other_fields(
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    write_kv2: Callable[..., int],
    api: FakeScalingAPI,
    run_rotate: RunRotate,
) -> None:
    old, new = api.issue_key(), api.rotate()
    first = write_kv2(secret_path, {"api_key": old, "note": "ops"})

    ran = run_rotate("--source", f"vault:{secret_path}", "--base-url", api.url, stdin=new)

    assert ran.returncode == 0, ran.stderr
    assert f"old key    {mask(old)}  (version {first})" in ran.stdout
    assert f"stored     the new key as version {first + 1}" in ran.stdout
    assert f"read back  {mask(new)}  (version {first + 1}, through a new provider)" in ran.stdout
    current = kv2(bao_root, secret_path)
    assert current["metadata"]["version"] == first + 1
    assert_key_is(ApiKey(current["data"].pop("api_key")), new)
    assert current["data"] == {"note": "ops"}
    assert_key_is(ApiKey(kv2(bao_root, secret_path, version=first)["data"]["api_key"]), old)
    no_secret(ran, old, new, bao.root_token)


def test_rotate_json_names_the_versions(
    bao: Any,
    secret_path: str,
    write_kv2: Callable[..., int],
    api: FakeScalingAPI,
    run_rotate: RunRotate,
) -> None:
    old, new = api.issue_key(), api.rotate()
    first = write_kv2(secret_path, {"api_key": old})
    ran = run_rotate("--source", f"vault:{secret_path}", "--base-url", api.url, "--json", stdin=new)
    assert ran.returncode == 0, ran.stderr
    document = json.loads(ran.stdout)
    assert (document["old_version"], document["new_version"]) == (str(first), str(first + 1))
    assert document["read_back"]["version"] == str(first + 1)
    no_secret(ran, old, new, bao.root_token)


def test_a_token_that_may_only_read_is_refused_and_nothing_is_written(
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    write_kv2: Callable[..., int],
    api: FakeScalingAPI,
    run_rotate: RunRotate,
) -> None:
    old, new = api.issue_key(), api.rotate()
    first = write_kv2(secret_path, {"api_key": old})
    reader = bao_root.auth.token.create(policies=[READ_POLICY], ttl="10m")["auth"]["client_token"]

    ran = run_rotate(
        "--source",
        f"vault:{secret_path}",
        "--base-url",
        api.url,
        stdin=new,
        env={"VAULT_TOKEN": reader},
    )

    assert ran.returncode == 1
    assert f"storing the new key in vault:{secret_path}?mount=secret&field=api_key failed" in (
        ran.stderr
    )
    assert "permission denied writing" in ran.stderr
    assert "the old key is still the one in use, do not delete it" in ran.stderr
    assert kv2(bao_root, secret_path)["metadata"]["version"] == first
    no_secret(ran, old, new, reader, bao.root_token)


def test_kv1_is_overwritten_with_a_warning(
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    api: FakeScalingAPI,
    run_rotate: RunRotate,
) -> None:
    old, new = api.issue_key(), api.rotate()
    bao_root.secrets.kv.v1.create_or_update_secret(
        path=secret_path, secret={"api_key": old}, mount_point="kv1"
    )
    ran = run_rotate(
        "--source", f"vault:{secret_path}?mount=kv1&kv=1", "--base-url", api.url, stdin=new
    )
    assert ran.returncode == 0, ran.stderr
    assert "KV version 1 keeps no previous version" in ran.stderr
    assert "stored     the new key\n" in ran.stdout  # no version
    data = bao_root.secrets.kv.v1.read_secret(path=secret_path, mount_point="kv1")["data"]
    assert_key_is(ApiKey(data.pop("api_key")), new)
    assert data == {}
    no_secret(ran, old, new, bao.root_token)


@pytest.mark.slow
def test_no_request_fails_when_rotate_runs_under_load_and_the_old_key_is_revoked(
    bao: Any,
    secret_path: str,
    write_kv2: Callable[..., int],
    api: FakeScalingAPI,
    rotate_under_load: Callable[..., Any],
) -> None:
    """Threads send requests through ScalingAuth reading the same Vault path while rotate
    runs in this process; the old key is revoked at the API as soon as rotate returns."""
    first = api.issue_key()
    write_kv2(secret_path, {"api_key": first, "note": "ops"})
    auth = ScalingAuth(VaultProvider(secret_path, url=bao.url, auth=TokenAuth(bao.root_token)))

    run, outputs = rotate_under_load(api, auth, f"vault:{secret_path}", first)

    assert run.failed == 0, f"{run.failed} of {len(run.statuses)} requests failed"
    assert len(outputs) == 3
    for ran in outputs:
        no_secret(ran, first, api.current_key or "", bao.root_token)
