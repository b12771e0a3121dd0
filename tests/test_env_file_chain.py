"""EnvProvider, FileProvider and ChainProvider beyond the shared provider suite
(tests/test_providers_suite.py): the kubelet ``..data`` swap, size caps, modes, JSON
fields, encodings, and the chain's order, errors and refetch routing."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import signal
import threading
import traceback
from pathlib import Path

import pytest

from scaling_credentials import (
    ApiKey,
    ChainProvider,
    ConfigurationError,
    EnvProvider,
    FileProvider,
    InvalidKeyFormatError,
    KeyCache,
    ProviderError,
    SecretNotFoundError,
)
from scaling_credentials._file import MAX_FILE_SIZE
from scaling_credentials.testing import MemoryProvider, SecretVolume, wait_child
from scaling_credentials.testing.provider_suite import (
    assert_equal_masked,
    assert_key_is,
    assert_no_secret,
)

MARKER = "LEAKMARKER3e4r"
KEY_A = f"scl_live_{MARKER}aaaaaaaaaaaa"
KEY_B = f"scl_live_{MARKER}bbbbbbbbbbbb"


def rendered(error: BaseException) -> str:
    return "\n".join(
        [
            str(error),
            repr(error),
            "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        ]
    )


def write(path: Path, content: str | bytes, mode: int = 0o600) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    os.chmod(path, mode)
    return path


# ====================================================================== EnvProvider


@pytest.mark.parametrize("name", ["", "A=B", "A\0B"])
def test_env_provider_refuses_invalid_names(name: str) -> None:
    with pytest.raises(ConfigurationError):
        EnvProvider(name)


def test_env_provider_defaults_and_describe() -> None:
    provider = EnvProvider()
    assert provider.name == "SCALING_API_KEY"
    assert provider.describe() == "env:SCALING_API_KEY"
    assert repr(provider) == "<EnvProvider env:SCALING_API_KEY>"


def test_env_provider_reads_a_given_mapping_live() -> None:
    environ = {"K": KEY_A}
    provider = EnvProvider("K", environ=environ)
    assert_key_is(provider.fetch(), KEY_A)
    environ["K"] = KEY_B
    assert_key_is(provider.fetch(), KEY_B)
    del environ["K"]
    with pytest.raises(SecretNotFoundError) as info:
        provider.fetch()
    assert info.value.provider == "env:K"
    assert "K is not set" in str(info.value)


def test_env_provider_key_carries_its_source() -> None:
    key = EnvProvider("K", environ={"K": KEY_A}).fetch()
    assert key.source == "env:K"
    assert key.version is None


def test_env_provider_afetch() -> None:
    provider = EnvProvider("K", environ={"K": KEY_A})
    assert_key_is(asyncio.run(provider.afetch()), KEY_A)


def test_env_provider_bad_value_has_no_secret() -> None:
    provider = EnvProvider("K", environ={"K": f"Bearer {KEY_A}"})
    with pytest.raises(InvalidKeyFormatError) as info:
        provider.fetch()
    assert_no_secret(MARKER, rendered(info.value))


def test_env_provider_bad_value_names_the_variable() -> None:
    provider = EnvProvider("MY_SERVICE_KEY", environ={"MY_SERVICE_KEY": "  "})
    with pytest.raises(InvalidKeyFormatError) as info:
        provider.fetch()
    assert "MY_SERVICE_KEY" in str(info.value)


# ====================================================================== FileProvider: basics


def test_file_provider_accepts_path_like_and_describes_itself(tmp_path: Path) -> None:
    path = write(tmp_path / "key", KEY_A)
    provider = FileProvider(path)
    assert provider.path == str(path)
    assert provider.describe() == f"file:{path}"
    assert FileProvider(path, field="api_key").describe() == f"file:{path}?field=api_key"
    key = provider.fetch()
    assert key.source == f"file:{path}"


def test_file_provider_needs_a_path() -> None:
    with pytest.raises(ConfigurationError):
        FileProvider("")


def test_missing_file_and_missing_directory_are_not_found(tmp_path: Path) -> None:
    for path in (tmp_path / "absent", tmp_path / "no" / "such" / "key"):
        with pytest.raises(SecretNotFoundError) as info:
            FileProvider(path).fetch()
        assert info.value.provider == f"file:{path}"
        assert "does not exist" in str(info.value)


def test_path_below_a_regular_file_is_not_found(tmp_path: Path) -> None:
    write(tmp_path / "plain", KEY_A)
    with pytest.raises(SecretNotFoundError) as info:
        FileProvider(tmp_path / "plain" / "key").fetch()
    assert_no_secret(MARKER, rendered(info.value))


def test_dangling_symlink_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "key").symlink_to(tmp_path / "gone")
    with pytest.raises(SecretNotFoundError):
        FileProvider(tmp_path / "key").fetch()


def test_directory_path_is_a_provider_error_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(ProviderError) as info:
        FileProvider(tmp_path).fetch()
    assert not isinstance(info.value, SecretNotFoundError)
    assert "is a directory" in str(info.value)
    assert info.value.provider == f"file:{tmp_path}"


# ====================================================================== kubelet ..data swap


def test_follows_the_kubelet_data_symlink_swap(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path, keep_previous=False)  # the kubelet's own behaviour
    volume.write(KEY_A)
    assert os.path.islink(volume.path)
    assert os.readlink(tmp_path / "..data").startswith("..")
    provider = FileProvider(volume.path)
    assert_key_is(provider.fetch(), KEY_A)
    volume.write(KEY_B + "\n")
    assert_key_is(provider.fetch(), KEY_B)
    volume.write(KEY_A)
    assert_key_is(provider.fetch(), KEY_A)
    # The old timestamped directories are gone: the provider never held them open.
    generations = [p for p in tmp_path.iterdir() if p.name.startswith("..") and not p.is_symlink()]
    assert len(generations) == 1


def test_readers_never_fail_during_repeated_swaps(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path, keep_previous=False)
    volume.write(KEY_A)
    provider = FileProvider(volume.path)
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[str] = []
    lock = threading.Lock()

    def reader() -> None:
        for _ in range(100_000):  # bounded; stops long before when the writer is done
            if stop.is_set():
                return
            try:
                value = provider.fetch().reveal()
            except Exception as exc:
                with lock:
                    errors.append(type(exc).__name__)
                return
            with lock:
                seen.add(value)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for index in range(60):
            volume.write(KEY_B if index % 2 == 0 else KEY_A)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert_equal_masked(seen - {KEY_A, KEY_B}, set())  # each seen was one of them
    assert_key_is(provider.fetch(), KEY_A)


# ====================================================================== size cap


def test_file_over_the_cap_is_refused_without_its_content(tmp_path: Path) -> None:
    path = write(tmp_path / "big", (KEY_A + "\n") * (MAX_FILE_SIZE // len(KEY_A) + 10))
    assert path.stat().st_size > MAX_FILE_SIZE
    with pytest.raises(ProviderError) as info:
        FileProvider(path).fetch()
    assert "cap" in str(info.value)
    assert str(MAX_FILE_SIZE) in str(info.value)
    assert_no_secret(MARKER, rendered(info.value))


def test_file_at_the_cap_is_read_then_judged_as_a_key(tmp_path: Path) -> None:
    content = KEY_A + " " * (MAX_FILE_SIZE - len(KEY_A))
    path = write(tmp_path / "padded", content)
    assert path.stat().st_size == MAX_FILE_SIZE
    with pytest.raises(InvalidKeyFormatError) as info:
        FileProvider(path).fetch()
    assert_no_secret(MARKER, rendered(info.value))


def test_custom_cap(tmp_path: Path) -> None:
    path = write(tmp_path / "key", KEY_A)
    with pytest.raises(ProviderError, match="16-byte cap"):
        FileProvider(path, max_size=16).fetch()
    assert_key_is(FileProvider(path, max_size=len(KEY_A)).fetch(), KEY_A)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_an_endless_device_is_refused_before_reading() -> None:
    # A character device reports size 0 and never ends: refused by its type, at once.
    with pytest.raises(ProviderError, match="is a character device, not a regular file"):
        FileProvider("/dev/zero").fetch()


def _fetch_bounded(provider: FileProvider) -> BaseException | None:
    """Fetch in a thread joined with a timeout: a fetch that blocks fails the test instead
    of hanging it. Returns the error raised, if any."""
    box: list[BaseException | None] = []

    def run() -> None:
        try:
            provider.fetch()
        except BaseException as exc:
            box.append(exc)
        else:
            box.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the fetch blocked"
    return box[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_at_once_and_leaves_no_thread(tmp_path: Path) -> None:
    fifo = tmp_path / "api-key"
    os.mkfifo(fifo, 0o600)  # nobody ever writes to it: open() used to block forever
    before = threading.active_count()
    error = _fetch_bounded(FileProvider(fifo))
    assert isinstance(error, ProviderError)
    assert not isinstance(error, SecretNotFoundError)
    assert "is a FIFO (named pipe), not a regular file" in str(error)
    # Through a cache, with retries after backoff: no fetch thread is left behind.
    cache = KeyCache(FileProvider(fifo), backoff_initial=0, fetch_timeout=10)
    for _ in range(3):
        with pytest.raises(ProviderError, match="FIFO"):
            cache.get()
    # At most the process's one fetch thread, which waits for the next fetch: no thread
    # stuck in open() per attempt.
    assert threading.active_count() <= before + 1


def test_a_unix_socket_is_refused(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "api-key"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        error = _fetch_bounded(FileProvider(path))
    assert isinstance(error, ProviderError)
    assert "is a socket, not a regular file" in str(error)


# ====================================================================== modes


def _fetch_as_nobody(path: Path) -> str:
    """Fetch in a forked child that dropped root, so the kernel really checks the mode.
    Returns the error's type and message, or 'SKIP ...'."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        status = 0
        try:
            os.close(read_end)
            try:
                os.setgid(65534)
                os.setuid(65534)
            except OSError as exc:
                answer = f"SKIP cannot drop privileges: {exc.strerror}"
            else:
                try:
                    FileProvider(path).fetch()
                    answer = "OK"
                except Exception as exc:
                    answer = f"{type(exc).__name__}: {exc}"
            os.write(write_end, answer.encode())
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    try:
        for _ in range(1000):  # bounded; the child writes one short answer and exits
            ready, _, _ = select.select([read_end], [], [], 30)
            if not ready:  # a child stuck on a lock inherited from another thread
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        code = wait_child(pid, 30)
    assert code == 0
    return b"".join(chunks).decode()


def test_permission_denied_is_a_provider_error_with_a_hint(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        path = write(tmp_path / "key", KEY_A, 0o000)
        with pytest.raises(ProviderError) as info:
            FileProvider(path).fetch()
        assert not isinstance(info.value, SecretNotFoundError)
        message = str(info.value)
    else:
        # Root bypasses file modes: check from a child process running as nobody, on a
        # root-owned 0600 file in a directory nobody may enter.
        directory = tmp_path / "shared"
        directory.mkdir()
        os.chmod(directory, 0o755)
        os.chmod(tmp_path, 0o755)
        path = write(directory / "key", KEY_A, 0o600)
        answer = _fetch_as_nobody(path)
        if answer.startswith("SKIP"):
            pytest.skip(answer)
        assert answer.startswith("ProviderError: "), answer
        message = answer
    assert "permission denied" in message
    assert "read access" in message
    assert_no_secret(MARKER, message)


def test_world_readable_file_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "key", KEY_A, 0o644)
    provider = FileProvider(path)
    with caplog.at_level(logging.WARNING, logger="scaling_credentials.file"):
        for _ in range(3):
            assert_key_is(provider.fetch(), KEY_A)
    warnings = [r for r in caplog.records if r.name == "scaling_credentials.file"]
    assert len(warnings) == 1
    record = warnings[0]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert str(path) in message
    assert "644" in message
    assert "chmod 0400" in message
    assert "defaultMode: 0440" in message and "fsGroup" in message
    assert_no_secret(MARKER, caplog.text)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640])
def test_private_file_is_not_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int
) -> None:
    path = write(tmp_path / "key", KEY_A, mode)
    with caplog.at_level(logging.DEBUG, logger="scaling_credentials.file"):
        FileProvider(path).fetch()
    assert [r for r in caplog.records if r.name == "scaling_credentials.file"] == []


def test_world_readable_warning_once_across_threads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "key", KEY_A, 0o644)
    provider = FileProvider(path)
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait(timeout=30)
        provider.fetch()

    with caplog.at_level(logging.WARNING, logger="scaling_credentials.file"):
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert len([r for r in caplog.records if r.name == "scaling_credentials.file"]) == 1


# ====================================================================== JSON fields


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f'{{"api_key": "{KEY_A}', "not valid JSON"),
        (f"api_key={KEY_A}", "not valid JSON"),
        ("", "not valid JSON"),
        (f'["{KEY_A}"]', "got a JSON array"),
        (f'"{KEY_A}"', "got a JSON string"),
        ("42", "got a JSON number"),
        ("null", "got a JSON null"),
        (f'{{"apiKey": "{KEY_A}", "note": "x"}}', "no field 'api_key'"),
        ('{"api_key": 12345}', "is a JSON number, expected a string"),
        ('{"api_key": null}', "is a JSON null"),
        ('{"api_key": true}', "is a JSON boolean"),
        (f'{{"api_key": ["{KEY_A}"]}}', "is a JSON array"),
        (f'{{"api_key": {{"value": "{KEY_A}"}}}}', "is a JSON object"),
        (f'{{"api_key": "Bearer {KEY_A}"}}', "Bearer"),
        (f'{{"api_key": "sk_{KEY_A}"}}', "does not start with"),
    ],
    ids=[
        "truncated",
        "dotenv",
        "empty",
        "array",
        "string",
        "number",
        "null",
        "missing-field",
        "field-number",
        "field-null",
        "field-bool",
        "field-array",
        "field-object",
        "field-bearer",
        "field-wrong-prefix",
    ],
)
def test_json_field_errors_never_leak_the_document(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = write(tmp_path / "secret.json", content)
    with pytest.raises(InvalidKeyFormatError) as info:
        FileProvider(path, field="api_key").fetch()
    message = str(info.value)
    assert expected in message
    assert f"file:{path}?field=api_key" in message  # says which file and field
    assert_no_secret(MARKER, rendered(info.value))


def test_missing_field_lists_the_field_names(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", json.dumps({"zeta": KEY_A, "apiKey": KEY_B, "note": "n"}))
    with pytest.raises(InvalidKeyFormatError) as info:
        FileProvider(path, field="api_key").fetch()
    assert "fields present: 'apiKey', 'note', 'zeta'" in str(info.value)
    assert_no_secret(MARKER, rendered(info.value))


def test_json_field_is_read_and_stripped(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", json.dumps({"api_key": f" {KEY_A}\n", "other": 1}))
    assert_key_is(FileProvider(path, field="api_key").fetch(), KEY_A)


def test_without_field_a_json_document_is_not_a_key(tmp_path: Path) -> None:
    path = write(tmp_path / "s.json", json.dumps({"api_key": KEY_A}))
    with pytest.raises(InvalidKeyFormatError) as info:
        FileProvider(path).fetch()
    assert_no_secret(MARKER, rendered(info.value))


# ====================================================================== encodings


def test_utf8_bom_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "key", "\ufeff" + KEY_A + "\r\n")
    assert_key_is(FileProvider(path).fetch(), KEY_A)


def test_utf8_bom_before_json(tmp_path: Path) -> None:
    path = write(tmp_path / "key.json", "\ufeff" + json.dumps({"api_key": KEY_A}))
    assert_key_is(FileProvider(path, field="api_key").fetch(), KEY_A)


@pytest.mark.parametrize(
    "content",
    [
        KEY_A.encode() + b"\xff\xfe",
        b"\xff\xfe" + KEY_A.encode("utf-16-le"),  # a UTF-16 file from a Windows editor
        KEY_A.encode("latin-1") + "\u00e9".encode("latin-1"),
    ],
    ids=["trailing-garbage", "utf-16", "latin-1"],
)
def test_invalid_utf8_is_refused_without_the_bytes(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path / "key", content)
    with pytest.raises(InvalidKeyFormatError) as info:
        FileProvider(path).fetch()
    assert "not UTF-8" in str(info.value)
    assert_no_secret(MARKER, rendered(info.value))


def test_bad_value_error_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "key", f"Bearer {KEY_A}")
    with pytest.raises(InvalidKeyFormatError) as info:
        FileProvider(path).fetch()
    assert str(info.value).startswith(f"file:{path}: ")
    assert "Bearer" in str(info.value)
    assert_no_secret(MARKER, rendered(info.value))


# ====================================================================== ChainProvider


def test_chain_needs_providers() -> None:
    with pytest.raises(ConfigurationError):
        ChainProvider()
    with pytest.raises(ConfigurationError, match="got str"):
        ChainProvider("env:X")  # type: ignore[arg-type]


def test_chain_first_provider_with_a_key_wins() -> None:
    first, second = MemoryProvider(KEY_A, name="a"), MemoryProvider(KEY_B, name="b")
    chain = ChainProvider(first, second)
    assert_key_is(chain.fetch(), KEY_A)
    assert (first.fetches, second.fetches) == (1, 0)
    assert chain.describe() == "chain(memory:a, memory:b)"
    assert repr(chain) == "<ChainProvider chain(memory:a, memory:b)>"


def test_chain_falls_through_missing_failing_and_bad_providers() -> None:
    missing = MemoryProvider(None, name="missing")
    failing = MemoryProvider(KEY_A, name="failing")
    failing.fail = True
    bad = MemoryProvider(f"Bearer {KEY_A}", name="bad")
    good = MemoryProvider(KEY_B, name="good")
    chain = ChainProvider(missing, failing, bad, good)
    key = chain.fetch()
    assert_key_is(key, KEY_B)
    assert key.source == "memory:good"
    assert [p.fetches for p in (missing, failing, bad, good)] == [1, 1, 1, 1]


def test_chain_of_real_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path / "key", KEY_B)
    chain = ChainProvider(EnvProvider("K", environ={}), FileProvider(path))
    assert_key_is(chain.fetch(), KEY_B)
    chain = ChainProvider(EnvProvider("K", environ={"K": KEY_A}), FileProvider(path))
    assert_key_is(chain.fetch(), KEY_A)


def _all_failing_chain() -> ChainProvider:
    missing = MemoryProvider(None, name="missing")
    failing = MemoryProvider(KEY_A, name="failing")
    failing.fail = True
    bad = MemoryProvider(f"Bearer {KEY_A}", name="bad")
    return ChainProvider(EnvProvider("NOPE", environ={}), missing, failing, bad)


def _check_all_failed(error: ProviderError) -> None:
    # One member failed for a backend reason: a ProviderError, not a configuration error.
    message = str(error)
    assert not isinstance(error, ConfigurationError)
    for part in (
        "env:NOPE: SecretNotFoundError",
        "memory:missing: SecretNotFoundError",
        "memory:failing: ProviderError",
        "memory:bad: InvalidKeyFormatError",
    ):
        assert part in message
    # In the order tried.
    assert message.index("env:NOPE") < message.index("memory:missing") < message.index("bad")
    assert isinstance(error.__cause__, InvalidKeyFormatError)
    assert_no_secret(MARKER, rendered(error))


def test_chain_all_failing_lists_each_attempt_without_secrets() -> None:
    with pytest.raises(ProviderError) as info:
        _all_failing_chain().fetch()
    _check_all_failed(info.value)


def test_chain_afetch_all_failing() -> None:
    with pytest.raises(ProviderError) as info:
        asyncio.run(_all_failing_chain().afetch())
    _check_all_failed(info.value)


def test_chain_afetch_order_and_fallthrough() -> None:
    missing = MemoryProvider(None, name="missing")
    good = MemoryProvider(KEY_B, name="good")
    other = MemoryProvider(KEY_A, name="other")
    chain = ChainProvider(missing, good, other)
    assert_key_is(asyncio.run(chain.afetch()), KEY_B)
    assert (missing.fetches, good.fetches, other.fetches) == (1, 1, 0)


def test_chain_does_not_swallow_programming_errors() -> None:
    broken = MemoryProvider(KEY_A, name="broken")
    broken.fail = RuntimeError("bug in a provider")
    with pytest.raises(RuntimeError):
        ChainProvider(broken, MemoryProvider(KEY_B)).fetch()


def test_chain_routes_a_refetch_to_the_provider_that_produced_the_key() -> None:
    first = MemoryProvider(None, name="first")
    second = MemoryProvider(KEY_B, name="second")
    chain = ChainProvider(first, second)
    key = chain.fetch()
    assert key.source == "memory:second"
    assert chain.refetch(key) == key
    assert first.rejected == [] and second.rejected == [key]
    assert (first.fetches, second.fetches) == (2, 2)  # in chain order, first one asked again

    first.value = KEY_A  # now the first one yields: chain order still wins
    assert_key_is(chain.refetch(key), KEY_A)
    assert len(second.rejected) == 1

    # A key from elsewhere (no producer in the chain): a plain walk.
    assert_key_is(chain.refetch(ApiKey(KEY_B, source="memory:unknown")), KEY_A)
    assert first.rejected == [] and len(second.rejected) == 1


def test_chain_routes_an_async_refetch_too() -> None:
    first = MemoryProvider(None, name="first")
    second = MemoryProvider(KEY_B, name="second")
    chain = ChainProvider(first, second)
    key = asyncio.run(chain.afetch())
    assert asyncio.run(chain.arefetch(key)) == key
    assert second.rejected == [key] and first.rejected == []


def test_chain_of_members_failing_for_backend_reasons_is_a_provider_error() -> None:
    down = MemoryProvider(KEY_A, name="down")
    down.fail = True
    chain = ChainProvider(EnvProvider("NOPE", environ={}), down)
    with pytest.raises(ProviderError) as info:
        chain.fetch()
    assert not isinstance(info.value, ConfigurationError)
    assert info.value.provider == chain.describe()
    assert "memory:down: ProviderError" in str(info.value)
    # Only "nothing configured anywhere" is a configuration error.
    with pytest.raises(ConfigurationError):
        ChainProvider(EnvProvider("NOPE", environ={}), MemoryProvider(None)).fetch()


def test_chain_stamp_and_explanation_come_from_its_members(tmp_path: Path) -> None:
    path = write(tmp_path / "key", KEY_A)
    file_provider = FileProvider(path)
    chain = ChainProvider(EnvProvider("NOPE", environ={}), file_provider)
    assert chain.stamp() == (None, file_provider.stamp())
    assert ChainProvider(EnvProvider("NOPE", environ={})).stamp() is None
    key = chain.fetch()
    assert chain.explain_stuck(key) == file_provider.explain_stuck(key)
