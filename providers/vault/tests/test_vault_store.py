"""VaultProvider.store against a real OpenBao: a new KV v2 version that keeps the
secret's other fields (check-and-set against a concurrent writer), KV v1 overwrites with
a warning, permission errors name the capabilities, and concurrent stores and fetches
from threads see the old key or the new one, never anything else."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import hvac
import pytest

from scaling_credentials import ApiKey, ConfigurationError, ProviderError
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret, good_value
from scaling_credentials_vault import TokenAuth, VaultProvider

from .conftest import READ_POLICY

JOIN_TIMEOUT = 60.0

pytestmark = pytest.mark.usefixtures("vault_env")  # no Vault settings of the developer's


def provider_for(bao: Any, path: str, **options: Any) -> VaultProvider:
    options.setdefault("auth", TokenAuth(bao.root_token))
    return VaultProvider(path, url=bao.url, **options)


def read_kv2(root: hvac.Client, path: str, version: int | None = None) -> dict[str, Any]:
    answer = root.secrets.kv.v2.read_secret_version(
        path=path, version=version, raise_on_deleted_version=True
    )
    return dict(answer["data"])


def test_vault_provider_can_store() -> None:
    assert VaultProvider.can_store is True


def test_kv2_store_writes_a_new_version_keeping_the_other_fields(
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    write_kv2: Callable[..., int],
) -> None:
    old, new = good_value("old"), good_value("new")
    first = write_kv2(secret_path, {"api_key": old, "note": "ops", "limit": 5})
    provider = provider_for(bao, secret_path)

    version = provider.store(ApiKey(new))

    assert version == str(first + 1)
    data = read_kv2(bao_root, secret_path)
    assert data["data"] == {"api_key": new, "note": "ops", "limit": 5}
    assert data["metadata"]["version"] == first + 1
    previous = read_kv2(bao_root, secret_path, version=first)
    assert previous["data"]["api_key"] == old  # the old version is kept
    key = provider.fetch()
    assert_key_is(key, new)
    assert key.version == version


def test_kv2_store_creates_the_secret_and_writes_after_a_deleted_version(
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
) -> None:
    provider = provider_for(bao, secret_path, field="token")
    first, second = good_value("first"), good_value("second")
    assert provider.store(ApiKey(first)) == "1"
    bao_root.secrets.kv.v2.delete_latest_version_of_secret(path=secret_path)
    assert provider.store(ApiKey(second)) == "2"
    assert_key_is(provider.fetch(), second)


def test_kv1_store_overwrites_keeping_the_other_fields_and_warns(
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="scaling_credentials")
    old, new = good_value("old1"), good_value("new1")
    bao_root.secrets.kv.v1.create_or_update_secret(
        path=secret_path, secret={"api_key": old, "note": "ops"}, mount_point="kv1"
    )
    provider = provider_for(bao, secret_path, mount_point="kv1", kv_version=1)

    assert provider.store(ApiKey(new)) is None

    data = bao_root.secrets.kv.v1.read_secret(path=secret_path, mount_point="kv1")["data"]
    assert data == {"api_key": new, "note": "ops"}
    assert_key_is(provider.fetch(), new)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("KV version 1 keeps no previous version" in r.getMessage() for r in warnings)
    for value in (old, new, bao.root_token):
        assert_no_secret(value, caplog.text)


def test_kv2_store_detects_a_concurrent_writer(
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    write_kv2: Callable[..., int],
) -> None:
    mine, theirs = good_value("mine"), good_value("theirs")
    first = write_kv2(secret_path, {"api_key": good_value("orig"), "note": "ops"})
    # A real second writer, between the store's read and its write: a response hook on
    # the caller's session writes a version as soon as the store's read is answered.
    client = hvac.Client(url=bao.url, token=bao.root_token)
    armed = threading.Event()
    armed.set()

    def other_writer(response: Any, **_: Any) -> None:
        if armed.is_set() and response.request.method == "GET" and "/data/" in response.url:
            armed.clear()
            write_kv2(secret_path, {"api_key": theirs, "note": "ops"})

    client.session.hooks["response"].append(other_writer)
    provider = VaultProvider(secret_path, client=client)

    with pytest.raises(ProviderError) as info:
        provider.store(ApiKey(mine))

    message = str(info.value)
    assert "another writer changed" in message and f"version {first}" in message
    assert_no_secret(mine, message, repr(info.value.__cause__))
    assert_no_secret(bao.root_token, message, repr(info.value.__cause__))
    current = read_kv2(bao_root, secret_path)
    assert current["metadata"]["version"] == first + 1  # theirs only: nothing of ours
    assert current["data"]["api_key"] == theirs


def test_store_without_write_policy_names_the_capabilities(
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    write_kv2: Callable[..., int],
) -> None:
    write_kv2(secret_path, {"api_key": good_value("readable")})
    token = bao_root.auth.token.create(policies=[READ_POLICY], ttl="10m")["auth"]["client_token"]
    provider = provider_for(bao, secret_path, auth=TokenAuth(token))
    provider.fetch()  # reading is allowed
    new = good_value("denied")

    with pytest.raises(ProviderError) as info:
        provider.store(ApiKey(new))

    message = str(info.value)
    assert f"permission denied writing secret/data/{secret_path}" in message
    assert "`create` and `update`" in message
    assert f'path "secret/data/{secret_path}"' in message
    assert READ_POLICY in message  # the token's policies, from lookup-self
    assert_no_secret(new, message, repr(info.value.__cause__))
    assert_no_secret(token, message, repr(info.value.__cause__))


def test_store_takes_an_api_key(bao: Any, secret_path: str) -> None:
    provider = provider_for(bao, secret_path)
    with pytest.raises(ConfigurationError, match="takes an ApiKey, got str"):
        provider.store(good_value("plain"))  # type: ignore[arg-type]


@pytest.mark.parametrize("kv_version", [2, 1])
def test_concurrent_stores_and_fetches_see_old_or_new_keys_only(
    kv_version: int,
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
) -> None:
    mount = "secret" if kv_version == 2 else "kv1"
    start = good_value("start")
    if kv_version == 2:
        bao_root.secrets.kv.v2.create_or_update_secret(
            path=secret_path, secret={"api_key": start, "note": "ops"}
        )
    else:
        bao_root.secrets.kv.v1.create_or_update_secret(
            path=secret_path, secret={"api_key": start, "note": "ops"}, mount_point=mount
        )
    provider = provider_for(bao, secret_path, mount_point=mount, kv_version=kv_version)
    writers, per_writer, readers = 4, 5, 4
    new_keys = [good_value(f"w{w}n{n}") for w in range(writers) for n in range(per_writer)]
    allowed = {start, *new_keys}
    versions: list[str | None] = []
    outsiders: list[int] = []  # fetch counts that returned a key never stored
    errors: list[str] = []
    fetched = [0] * readers
    done = threading.Event()
    lock = threading.Lock()

    def write(index: int) -> None:
        try:
            for n in range(per_writer):
                version = provider.store(ApiKey(new_keys[index * per_writer + n]))
                with lock:
                    versions.append(version)
        except Exception as exc:  # reported below by type only
            with lock:
                errors.append(type(exc).__name__)

    def read(index: int) -> None:
        try:
            while not done.is_set() or fetched[index] == 0:
                key = provider.fetch()
                fetched[index] += 1
                if key.reveal() not in allowed:
                    with lock:
                        outsiders.append(fetched[index])
        except Exception as exc:
            with lock:
                errors.append(type(exc).__name__)

    reader_threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    writer_threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in reader_threads + writer_threads:
        thread.start()
    for thread in writer_threads:
        thread.join(timeout=JOIN_TIMEOUT)
    done.set()
    for thread in reader_threads:
        thread.join(timeout=JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in reader_threads + writer_threads), "threads hung"

    assert errors == []
    assert outsiders == []
    assert all(count > 0 for count in fetched)
    assert len(versions) == writers * per_writer
    if kv_version == 2:
        # Serialized read-modify-writes: no check-and-set conflict, one version each.
        assert sorted(int(str(v)) for v in versions) == list(range(2, 2 + len(versions)))
        data = read_kv2(bao_root, secret_path)["data"]
    else:
        assert versions == [None] * len(versions)
        data = bao_root.secrets.kv.v1.read_secret(path=secret_path, mount_point=mount)["data"]
    assert data["note"] == "ops" and data["api_key"] in new_keys
