"""FileProvider.store on real files: an atomic replace in the same directory that keeps
the file's mode, owner and other JSON fields, follows a symlink, refuses a kubelet secret
volume, leaves nothing behind when it fails, and never shows a reader a partial file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    FileProvider,
    ProviderError,
    provider_from_uri,
)
from scaling_credentials.testing import SecretVolume, wait_child
from scaling_credentials.testing.provider_suite import (
    assert_equal_masked,
    assert_key_is,
    assert_no_secret,
    good_value,
)

JOIN_TIMEOUT = 60.0
needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="changes file owners (needs root)"
)


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def assert_holds(path: Path, text: str) -> None:
    """Fail unless the file's text is exactly ``text`` (keys shown masked)."""
    __tracebackhide__ = True
    assert_equal_masked(path.read_text(encoding="utf-8"), text)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_file_provider_can_store() -> None:
    assert FileProvider.can_store is True
    assert provider_from_uri("file:/x").can_store is True


def test_store_replaces_the_file_keeping_its_mode(tmp_path: Path) -> None:
    old, new = good_value("old"), good_value("new")
    path = write(tmp_path / "api-key", old + "\n", mode=0o440)
    inode = path.stat().st_ino
    provider = FileProvider(path)

    assert provider.store(ApiKey(new)) is None  # a file keeps no versions

    assert_holds(path, new + "\n")
    assert path.stat().st_mode & 0o777 == 0o440
    assert path.stat().st_ino != inode  # a new file renamed into place, not a rewrite
    assert_key_is(provider.fetch(), new)
    assert leftovers(tmp_path) == []


def test_store_keeps_a_file_without_a_trailing_newline_so(tmp_path: Path) -> None:
    path = write(tmp_path / "api-key", good_value("old"))
    FileProvider(path).store(ApiKey(good_value("new")))
    assert_holds(path, good_value("new"))


def test_store_creates_a_missing_file_private(tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    FileProvider(path).store(ApiKey(good_value("first")))
    assert_holds(path, good_value("first") + "\n")
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ('{"api_key": "%s", "region": "eu"}', '{"api_key": "%s", "region": "eu"}'),
        (
            '{\n  "region": "eu",\n  "api_key": "%s"\n}\n',
            '{\n  "region": "eu",\n  "api_key": "%s"\n}\n',
        ),
    ],
    ids=["compact", "indented"],
)  # fmt: skip
def test_store_in_a_json_field_keeps_the_other_fields(
    tmp_path: Path, before: str, after: str
) -> None:
    old, new = good_value("old"), good_value("new")
    path = write(tmp_path / "config.json", before % old)
    provider = FileProvider(path, field="api_key")
    provider.store(ApiKey(new))
    assert_holds(path, after % new)
    assert_key_is(provider.fetch(), new)


def test_store_in_a_json_field_of_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    FileProvider(path, field="api_key").store(ApiKey(good_value("first")))
    assert_equal_masked(
        json.loads(path.read_text(encoding="utf-8")), {"api_key": good_value("first")}
    )


@pytest.mark.parametrize(
    ("content", "says"),
    [("[1, 2]", "a JSON array, not an object"), ("%s", "not valid JSON")],
    ids=["array", "not-json"],
)
def test_store_refuses_a_field_in_a_file_that_is_not_a_json_object(
    tmp_path: Path, content: str, says: str
) -> None:
    old = good_value("old")
    path = write(tmp_path / "config.json", content.replace("%s", old))
    before = path.read_bytes()
    with pytest.raises(ProviderError) as info:
        FileProvider(path, field="api_key").store(ApiKey(good_value("new")))
    message = str(info.value)
    assert says in message and "nothing was written" in message
    assert_equal_masked(path.read_bytes(), before)
    assert leftovers(tmp_path) == []
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert_no_secret(old, message)
    assert_no_secret(good_value("new"), message)


def test_store_follows_a_symlink(tmp_path: Path) -> None:
    real = write(tmp_path / "real-key", good_value("old") + "\n")
    link = tmp_path / "api-key"
    link.symlink_to(real.name)
    FileProvider(link).store(ApiKey(good_value("new")))
    assert link.is_symlink()  # the layout is kept: the file it points to is replaced
    assert_holds(real, good_value("new") + "\n")


def test_store_refuses_a_kubelet_secret_volume(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path / "volume")
    (tmp_path / "volume").mkdir()
    volume.write(good_value("old"))
    elsewhere = tmp_path / "link-to-volume"
    elsewhere.symlink_to(volume.path)
    through_data = volume.directory / "..data" / volume.name
    for path in (volume.path, elsewhere, through_data):
        with pytest.raises(ConfigurationError) as info:
            FileProvider(path).store(ApiKey(good_value("new")))
        assert "Kubernetes secret volume" in str(info.value)
        assert "update the Kubernetes Secret instead" in str(info.value)
    assert_holds(volume.path, good_value("old") + "\n")


def test_store_takes_an_api_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="takes an ApiKey, got str"):
        FileProvider(tmp_path / "k").store(good_value("plain"))  # type: ignore[arg-type]


def test_store_into_a_missing_directory_says_so(tmp_path: Path) -> None:
    path = tmp_path / "no-such-dir" / "api-key"
    with pytest.raises(ProviderError) as info:
        FileProvider(path).store(ApiKey(good_value("new")))
    assert "does not exist" in str(info.value) and "nothing was written" in str(info.value)


@needs_root
def test_store_keeps_the_owner_when_run_as_root(tmp_path: Path) -> None:
    path = write(tmp_path / "api-key", good_value("old") + "\n", mode=0o400)
    os.chown(path, 65534, 65534)
    FileProvider(path).store(ApiKey(good_value("new")))
    info = path.stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (65534, 65534, 0o400)


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is private to its user)."""
    directory = Path(tempfile.mkdtemp(prefix="scaling-store-"))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def store_as_nobody(path: Path, value: str) -> tuple[int, str]:
    """``FileProvider(path).store(value)`` in a forked child running as uid/gid 65534
    (a real unprivileged process); its exit code and the error's message."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, store, report, exit without cleanup
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            FileProvider(path).store(ApiKey(value))
        except ProviderError as exc:
            os.write(write_end, str(exc).encode())
            code = 1
        except BaseException as exc:
            os.write(write_end, type(exc).__name__.encode())
            code = 2
        finally:
            os._exit(code)
    os.close(write_end)
    code = wait_child(pid, JOIN_TIMEOUT)  # its short message waits in the pipe
    with os.fdopen(read_end, "rb") as pipe:
        message = pipe.read().decode()
    return code, message


@needs_root
@pytest.mark.parametrize("case", ["owner", "directory"])
def test_store_as_a_user_who_cannot_keep_the_owner_or_write_the_directory(
    reachable_dir: Path, case: str
) -> None:
    """Nothing is written, nothing is left behind, and the error says what to do."""
    directory = reachable_dir
    # owner: a root-owned file in a directory anyone may write in; directory: read-only.
    directory.chmod(0o777 if case == "owner" else 0o755)
    path = write(directory / "api-key", good_value("old") + "\n", mode=0o644)
    new = good_value("new")

    code, message = store_as_nobody(path, new)

    assert code == 1, message
    if case == "owner":
        assert "cannot be given the old one's owner (uid 0, gid 0)" in message
    else:
        assert "not writable by this process (permission denied)" in message
    assert "nothing was written" in message
    assert_holds(path, good_value("old") + "\n")
    assert leftovers(directory) == []
    assert_no_secret(new, message)


def test_readers_see_the_old_key_or_a_new_one_never_a_partial_file(tmp_path: Path) -> None:
    """Threads fetch from the same file, with providers of their own, while another
    thread stores twenty keys one after the other."""
    start = good_value("start")
    path = write(tmp_path / "config.json", json.dumps({"api_key": start, "note": "ops"}))
    stored = [good_value(f"k{n:02d}") for n in range(20)]
    allowed = {start, *stored}
    errors: list[str] = []
    strangers = 0
    reads = [0, 0, 0]
    done = threading.Event()
    lock = threading.Lock()

    def read(index: int) -> None:
        nonlocal strangers
        provider = FileProvider(path, field="api_key")
        try:
            while not done.is_set() or reads[index] == 0:
                key = provider.fetch()
                reads[index] += 1
                if key.reveal() not in allowed:
                    with lock:
                        strangers += 1
        except Exception as exc:  # reported by type only
            with lock:
                errors.append(type(exc).__name__)

    readers = [threading.Thread(target=read, args=(i,)) for i in range(3)]
    for thread in readers:
        thread.start()
    writer = FileProvider(path, field="api_key")
    try:
        for value in stored:
            writer.store(ApiKey(value))
    finally:
        done.set()
        for thread in readers:
            thread.join(timeout=JOIN_TIMEOUT)
    assert not any(t.is_alive() for t in readers)
    assert errors == []
    assert strangers == 0
    assert all(count > 0 for count in reads)
    assert json.loads(path.read_text(encoding="utf-8"))["note"] == "ops"
    assert_key_is(writer.fetch(), stored[-1])
    assert leftovers(tmp_path) == []
