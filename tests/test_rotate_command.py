"""``scaling-credentials rotate`` as an operator runs it: in process (``main([...])`` with
standard input patched) and in subprocesses (a real terminal for the hidden prompt, a real
SIGINT while waiting), against a FakeScalingAPI over real sockets and real key files.

Every run asserts that neither key crosses stdout, stderr or the JSON document; every
refusal that nothing was written to the source."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scaling_credentials import ApiKey, ScalingAuth
from scaling_credentials import _rotate as rotate_module
from scaling_credentials._key import mask
from scaling_credentials.cli import build_parser
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    MemoryProvider,
    SecretVolume,
    wait_child,
)
from scaling_credentials.testing.provider_suite import (
    assert_equal_masked,
    assert_key_is,
    assert_no_secret,
    good_value,
)

from .test_cli import CLI_DOC, Ran, as_documented, clean_env, run_main, token

__all__ = ["run_main"]  # the fixture, imported for this module's tests

RunRotate = Callable[..., Ran]  # the run_rotate fixture (conftest.py): the same fields
JOIN_TIMEOUT = 60.0


def key_file(directory: Path, value: str, *, mode: int = 0o640, name: str = "api-key") -> Path:
    path = directory / name
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def assert_holds(path: Path, value: str) -> None:
    """Fail unless the key file holds ``value`` (keys shown masked)."""
    __tracebackhide__ = True
    assert_equal_masked(path.read_text(encoding="utf-8").strip(), value)


def no_key(ran: Ran | subprocess.CompletedProcess[str], *keys: str) -> None:
    for key in keys:
        assert_no_secret(token(key), ran.stdout, ran.stderr)


def snapshot(path: Path) -> tuple[bytes, int, int]:
    """The file's bytes, inode and mtime: equal before and after means untouched."""
    info = path.stat()
    return path.read_bytes(), info.st_ino, info.st_mtime_ns


# --------------------------------------------------------------------------- the rotation


def test_rotate_checks_stores_reads_back_and_says_when_to_delete(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path
) -> None:
    old = api.issue_key()
    new = api.rotate()
    path = key_file(tmp_path, old, mode=0o640)
    before = time.time()

    ran = run_rotate("--source", f"file:{path}", "--base-url", api.url, stdin=new + "\n")

    assert ran.returncode == 0, ran.stderr
    assert_holds(path, new)
    assert path.stat().st_mode & 0o777 == 0o640  # the file's mode is kept
    out = ran.stdout
    assert f"old key    {mask(old)}" in out
    assert f"new key    {mask(new)}  (from standard input)" in out
    assert f"answered 200 to the new key (requestId {api.requests[-1].request_id})" in out
    assert f"read back  {mask(new)}" in out
    match = re.search(r"after (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC, not before", out)
    assert match is not None, out
    after = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")) - time.timezone
    assert before + 300 + 60 <= after <= time.time() + 300 + 60 + 1  # now + TTL + slack
    assert "(in 6 min 0 s: fleet TTL 300 s + 60 s slack)" in out
    # The check went to the API with the new key, once; the old key was not sent.
    sent = [r.key for r in api.requests]
    assert sent == [mask(new)]
    assert ran.stderr == ""
    no_key(ran, old, new)


def test_rotate_json_document(api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path) -> None:
    old, new = api.issue_key(), api.rotate()
    path = key_file(tmp_path, old)

    ran = run_rotate(
        "--source", f"file:{path}", "--base-url", api.url, "--fleet-ttl", "90", "--json",
        stdin=new,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stderr
    document: dict[str, Any] = json.loads(ran.stdout)
    assert document["ok"] is True and document["exit_code"] == 0
    assert document["source"] == f"file:{path}"
    assert (document["old_key"], document["new_key"]) == (mask(old), mask(new))
    assert document["new_version"] is None  # a file keeps no versions
    assert document["status"] == 200
    assert document["request_id"] == api.requests[-1].request_id
    assert document["read_back"] == {"key": mask(new), "version": None, "reads": 1}
    assert (document["fleet_ttl_s"], document["slack_s"]) == (90.0, 60.0)
    stored = time.strptime(document["stored_at"], "%Y-%m-%dT%H:%M:%SZ")
    delete = time.strptime(document["delete_old_key_after"], "%Y-%m-%dT%H:%M:%SZ")
    assert 149 <= time.mktime(delete) - time.mktime(stored) <= 151
    assert document["waited"] is False
    no_key(ran, old, new)


def test_fleet_ttl_defaults_to_scaling_api_key_ttl(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path
) -> None:
    old, new = api.issue_key(), api.rotate()
    path = key_file(tmp_path, old)
    ran = run_rotate(
        "--source", f"file:{path}", "--base-url", api.url, "--json",
        stdin=new, env={"SCALING_API_KEY_TTL": "45"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["fleet_ttl_s"] == 45.0


def test_base_url_comes_from_the_environment_as_for_check(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path
) -> None:
    old, new = api.issue_key(), api.rotate()
    path = key_file(tmp_path, old)
    ran = run_rotate("--source", f"file:{path}", stdin=new, env={"SCALING_API_BASE_URL": api.url})
    assert ran.returncode == 0, ran.stderr
    assert [r.key for r in api.requests] == [mask(new)]


def test_a_json_field_keeps_the_other_fields(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path
) -> None:
    old, new = api.issue_key(), api.rotate()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"api_key": old, "region": "eu", "limit": 3}), encoding="utf-8")

    ran = run_rotate("--source", f"file:{path}?field=api_key", "--base-url", api.url, stdin=new)

    assert ran.returncode == 0, ran.stderr
    document = json.loads(path.read_text(encoding="utf-8"))
    assert_key_is(ApiKey(document.pop("api_key")), new)
    assert document == {"region": "eu", "limit": 3}
    no_key(ran, old, new)


# --------------------------------------------------------------------------- under load


@pytest.mark.slow
def test_no_request_fails_when_rotate_runs_under_load_and_the_old_key_is_revoked(
    api: FakeScalingAPI, rotate_under_load: Callable[..., Any], tmp_path: Path
) -> None:
    """Threads send requests through ScalingAuth on the same file while rotate runs in
    this process; right after rotate returns, the old key is revoked at the API (what the
    operator does after the printed delay, without waiting): zero failed requests."""
    first = api.issue_key()
    path = key_file(tmp_path, first, mode=0o600)

    run, outputs = rotate_under_load(api, ScalingAuth(f"file:{path}"), f"file:{path}", first)

    assert run.failed == 0, f"{run.failed} of {len(run.statuses)} requests failed"
    assert len(outputs) == 3
    assert_holds(path, api.current_key or "")
    for ran in outputs:
        no_key(ran, first, api.current_key or "")


# --------------------------------------------------------------------------- refusals


def test_refuses_the_key_the_source_already_holds(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path
) -> None:
    key = api.issue_key()
    path = key_file(tmp_path, key)
    before = snapshot(path)
    ran = run_rotate("--source", f"file:{path}", "--base-url", api.url, stdin=key)
    assert ran.returncode == 2
    assert f"the new key is the key file:{path} already holds ({mask(key)})" in ran.stderr
    assert "nothing was written" in ran.stderr
    assert snapshot(path) == before
    assert api.requests == []  # refused before the check
    no_key(ran, key)


@pytest.mark.parametrize(
    ("stdin", "says"),
    [
        ("sk_live_" + "a" * 30, "the value does not start with 'scl_live_'"),
        ("Bearer scl_live_" + "b" * 30, "starts with 'Bearer '"),
        ("scl_live_" + "c" * 12 + " " + "d" * 12, "the new key (standard input)"),
        ("scl_live_" + "e" * 5000, "far more than an API key"),
    ],
    ids=["wrong-prefix", "bearer", "embedded-space", "too-long"],
)
def test_refuses_a_malformed_key(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path, stdin: str, says: str
) -> None:
    old = api.issue_key()
    path = key_file(tmp_path, old)
    before = snapshot(path)
    ran = run_rotate("--source", f"file:{path}", "--base-url", api.url, stdin=stdin + "\n")
    assert ran.returncode == 2
    assert says in ran.stderr
    assert ran.stderr.startswith("scaling-credentials: error: the new key (standard input): ")
    assert snapshot(path) == before
    assert api.requests == []
    no_key(ran, old, stdin.removeprefix("Bearer "))
    assert_no_secret("c" * 12, ran.stdout, ran.stderr)


@pytest.mark.parametrize("stdin", ["", "\n", "   \n", "\n" + good_value("late")])
def test_refuses_empty_standard_input(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path, stdin: str
) -> None:
    old = api.issue_key()
    path = key_file(tmp_path, old)
    before = snapshot(path)
    ran = run_rotate("--source", f"file:{path}", "--base-url", api.url, stdin=stdin)
    assert ran.returncode == 2
    assert "no new key: standard input is empty" in ran.stderr
    assert "never taken from the command line or the environment" in ran.stderr
    assert snapshot(path) == before
    no_key(ran, old, good_value("late"))


def test_refuses_a_key_the_api_rejects(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path
) -> None:
    old = api.issue_key()
    unknown = "scl_live_" + "n0tissued" * 3
    path = key_file(tmp_path, old)
    before = snapshot(path)
    ran = run_rotate("--source", f"file:{path}", "--base-url", api.url, stdin=unknown)
    assert ran.returncode == 1
    request_id = api.requests[-1].request_id
    assert (
        f"the API rejected the new key (GET {api.url}/oncall/schedules answered 401 "
        f"not_authorized_error/invalid_api_key, requestId {request_id}); nothing was "
        f"written to file:{path}"
    ) in ran.stderr
    assert "warning" not in ran.stderr  # said once, by the command
    assert snapshot(path) == before
    no_key(ran, old, unknown)


def test_refuses_when_the_api_cannot_be_reached(run_rotate: RunRotate, tmp_path: Path) -> None:
    old, new = good_value("old"), good_value("new")
    path = key_file(tmp_path, old)
    before = snapshot(path)
    ran = run_rotate("--source", f"file:{path}", "--base-url", "http://127.0.0.1:9/v1", stdin=new)
    assert ran.returncode == 1
    assert (
        f"the new key could not be checked, so nothing was written to file:{path}: cannot "
        "reach http://127.0.0.1:9/v1/oncall/schedules"
    ) in ran.stderr
    assert snapshot(path) == before
    no_key(ran, old, new)


def test_refuses_when_the_api_does_not_answer_in_time(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path
) -> None:
    old, new = api.issue_key(), api.rotate()
    path = key_file(tmp_path, old)
    before = snapshot(path)
    api.latency = 5.0
    try:
        ran = run_rotate(
            "--source", f"file:{path}", "--base-url", api.url, "--timeout", "0.5", stdin=new
        )
    finally:
        api.latency = 0.0
    assert ran.returncode == 1
    assert "no answer from" in ran.stderr and "within 0.5 s" in ran.stderr
    assert snapshot(path) == before
    no_key(ran, old, new)


def test_refuses_a_source_that_cannot_store_naming_those_that_can(
    api: FakeScalingAPI, run_rotate: RunRotate
) -> None:
    old, new = api.issue_key(), api.rotate()
    ran = run_rotate(
        "--source", "env:SCALING_ROTATE_TEST", "--base-url", api.url, stdin=new,
        env={"SCALING_ROTATE_TEST": old},
    )  # fmt: skip
    assert ran.returncode == 2
    assert "env:SCALING_ROTATE_TEST cannot store a key" in ran.stderr
    assert re.search(r"sources that can: [^)]*file:", ran.stderr)
    assert "vault:" in ran.stderr  # the Vault distribution is installed in this workspace
    assert "env:" not in ran.stderr.split("sources that can:")[1]
    assert "rotation runbook (SECURITY.md)" in ran.stderr
    assert api.requests == []
    no_key(ran, old, new)


def test_refuses_a_file_in_a_kubelet_secret_volume(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path
) -> None:
    old, new = api.issue_key(), api.rotate()
    volume = SecretVolume(tmp_path)
    volume.write(old)
    before = snapshot(volume.path)
    ran = run_rotate("--source", f"file:{volume.path}", "--base-url", api.url, stdin=new)
    assert ran.returncode == 2
    assert "Kubernetes secret volume" in ran.stderr
    assert "update the Kubernetes Secret instead" in ran.stderr
    assert "the old key is still the one in use, do not delete it" in ran.stderr
    assert snapshot(volume.path) == before
    assert_holds(volume.path, old)
    no_key(ran, old, new)


def test_refuses_a_source_without_a_key(
    api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path
) -> None:
    """A rotation replaces a key: a source holding none is most likely a wrong URI (a
    typo would otherwise create a file the fleet never reads)."""
    new = api.issue_key()
    path = tmp_path / "typo"
    ran = run_rotate("--source", f"file:{path}", "--base-url", api.url, stdin=new)
    assert ran.returncode == 2
    assert "does not exist" in ran.stderr
    assert not path.exists()
    assert api.requests == []
    no_key(ran, new)


def test_refusal_as_json(api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path) -> None:
    key = api.issue_key()
    path = key_file(tmp_path, key)
    ran = run_rotate("--source", f"file:{path}", "--base-url", api.url, "--json", stdin=key)
    assert ran.returncode == 2
    document = json.loads(ran.stdout)
    assert document["ok"] is False and document["exit_code"] == 2
    assert "already holds" in document["error"]["message"]
    no_key(ran, key)


def test_the_source_is_required(run_rotate: RunRotate) -> None:
    ran = run_rotate(stdin=good_value("x"))
    assert ran.returncode == 2
    assert "--source" in ran.stderr


# --------------------------------------------------------------------------- the key stays off argv


def test_no_option_of_rotate_takes_a_value_that_could_be_the_key() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    rotate_parser = subparsers.choices["rotate"]  # type: ignore[attr-defined]
    valued = sorted(
        option
        for action in rotate_parser._actions
        if action.nargs != 0 and action.option_strings
        for option in action.option_strings
    )
    positional = [a.dest for a in rotate_parser._actions if not a.option_strings]
    assert valued == ["--allow-host", "--base-url", "--fleet-ttl", "--source", "--timeout"]
    assert positional == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--source", "file:/tmp/k", "{key}"],
        ["--source", "file:/tmp/k", "--key={key}"],
        ["--source", "{key}"],
        ["--source", "file:/tmp/k", "--base-url", "{key}"],
        ["--source", "file:/tmp/k", "--fleet-ttl", "{key}"],
        ["--source", "file:/tmp/k", "--timeout", "{key}"],
        ["--source", "file:/tmp/k", "--allow-host", "{key}"],
    ],
    ids=["positional", "unknown-option", "source", "base-url", "fleet-ttl", "timeout", "host"],
)
def test_a_key_on_the_command_line_is_refused_and_never_echoed(
    run_rotate: RunRotate, tmp_path: Path, argv: list[str]
) -> None:
    key = good_value("argv")
    path = key_file(tmp_path, good_value("old"))
    before = snapshot(path)
    args = [a.format(key=key).replace("/tmp/k", str(path)) for a in argv]
    ran = run_rotate(*args, stdin="")
    assert ran.returncode == 2
    assert ran.stderr.strip()
    assert snapshot(path) == before
    no_key(ran, key)


def test_a_key_among_the_arguments_is_called_exposed(run_rotate: RunRotate) -> None:
    key = good_value("typed")
    ran = run_rotate("--source", "file:/nonexistent", key, stdin="")
    assert ran.returncode == 2
    assert "a key never belongs on the command line" in ran.stderr
    assert "treat a key typed here as exposed" in ran.stderr
    assert mask(key) in ran.stderr
    no_key(ran, key)


# --------------------------------------------------------------------------- --wait


def test_wait_blocks_until_the_old_key_may_be_deleted(
    api: FakeScalingAPI,
    run_rotate: RunRotate,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    old, new = api.issue_key(), api.rotate()
    path = key_file(tmp_path, old)
    sleeps: list[float] = []
    real_wait = rotate_module.wait_until

    def wait_until(plan: rotate_module.DeletionPlan, *, stream: Any) -> None:
        clock = FakeClock(start=plan.stored_at)  # the store was a moment ago

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            clock.advance(seconds)

        real_wait(plan, stream=stream, clock=clock, sleep=sleep)

    monkeypatch.setattr(rotate_module, "wait_until", wait_until)
    ran = run_rotate(
        "--source", f"file:{path}", "--base-url", api.url, "--fleet-ttl", "120", "--wait",
        stdin=new,
    )  # fmt: skip

    assert ran.returncode == 0, ran.stderr
    assert sum(sleeps) == 180  # 120 s TTL + 60 s slack, from the store
    assert len(sleeps) == 180  # one sleep per second at most: bounded
    progress = ran.stderr.splitlines()
    assert len(progress) == 6  # not a terminal: a line every 30 s
    assert progress[0].startswith("waiting until ")
    assert "3 min 0 s left" in progress[0]
    assert "Ctrl-C stops waiting; the rotation is done" in progress[0]
    assert "Waited until " in ran.stdout and f"delete the old key {mask(old)} now." in ran.stdout
    no_key(ran, old, new)


def test_wait_live_line_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    clock = FakeClock(start=1_000_000.0)
    stream = Terminal()
    plan = rotate_module.DeletionPlan(stored_at=clock(), fleet_ttl=3.0, slack=1.0)
    rotate_module.wait_until(plan, stream=stream, clock=clock, sleep=clock.advance)
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n")
    assert "4 s left" in text and "1 s left" in text


def test_ctrl_c_while_waiting_exits_130_and_says_the_rotation_is_done(
    api: FakeScalingAPI, tmp_path: Path
) -> None:
    """A real SIGINT to a real process waiting with --wait."""
    old, new = api.issue_key(), api.rotate()
    path = key_file(tmp_path, old)
    process = subprocess.Popen(
        [sys.executable, "-m", "scaling_credentials", "rotate", "--source", f"file:{path}",
         "--base-url", api.url, "--fleet-ttl", "600", "--wait"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(),
        text=True,
    )  # fmt: skip
    try:
        assert process.stdin is not None and process.stderr is not None
        process.stdin.write(new + "\n")
        process.stdin.close()
        process.stdin = None  # closed: communicate() must not flush it
        # The first stderr line says the wait has begun. select() bounds the wait for it;
        # the command writes that line whole and flushes it, so readline() then returns.
        ready, _, _ = select.select([process.stderr], [], [], JOIN_TIMEOUT)
        assert ready, f"no line on stderr within {JOIN_TIMEOUT} s"
        first = process.stderr.readline()
        assert first.startswith("waiting until "), first
        process.send_signal(signal.SIGINT)
        stdout, rest = process.communicate(timeout=JOIN_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=JOIN_TIMEOUT)
    assert process.returncode == 130
    assert "interrupted while waiting; the rotation itself is done" in rest
    assert f"delete the old key {mask(old)} after " in rest
    assert_holds(path, new)
    assert_no_secret(token(new), stdout, first, rest)
    assert_no_secret(token(old), stdout, first, rest)


# --------------------------------------------------------------------------- a terminal


@pytest.mark.slow
def test_on_a_terminal_the_key_is_prompted_for_without_echo(
    api: FakeScalingAPI, tmp_path: Path
) -> None:
    """A real pseudo-terminal as the controlling terminal: the prompt appears, the typed
    key is not echoed, and the rotation completes."""
    old, new = api.issue_key(), api.rotate()
    path = key_file(tmp_path, old)
    argv = [
        sys.executable, "-m", "scaling_credentials", "rotate", "--source", f"file:{path}",
        "--base-url", api.url, "--fleet-ttl", "1",
    ]  # fmt: skip
    env = clean_env()
    pid, fd = pty.fork()
    if pid == 0:  # the child: the pty is its controlling terminal
        try:
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    seen = b""
    try:
        seen += _read_until(fd, rotate_module.PROMPT.encode())
        os.write(fd, new.encode() + b"\n")
        seen += _read_until(fd, b"not before", eof_ok=True)
        seen += _read_until(fd, None)  # the rest, until the child closes the terminal
    finally:
        os.close(fd)  # first: a child still blocked on the terminal gets a hang-up
        code = wait_child(pid, JOIN_TIMEOUT)
    text = seen.decode("utf-8", "replace")
    assert code == 0, text
    assert rotate_module.PROMPT in text
    assert "serves the new key" in text
    assert_holds(path, new)
    assert_no_secret(token(new), text)  # not echoed, not printed
    assert_no_secret(token(old), text)


def _read_until(fd: int, marker: bytes | None, *, eof_ok: bool = False) -> bytes:
    """What the terminal shows until ``marker`` (bounded by JOIN_TIMEOUT); with ``marker``
    None, until the child closes the terminal."""
    eof_ok = eof_ok or marker is None
    data = b""
    deadline = time.monotonic() + JOIN_TIMEOUT
    while marker is None or marker not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            wanted = "its end" if marker is None else repr(marker)
            raise AssertionError(f"no {wanted} from the terminal within {JOIN_TIMEOUT} s")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        if not chunk:
            if eof_ok:
                return data
            raise AssertionError(f"the terminal closed before {marker!r}")
        data += chunk
    return data


# --------------------------------------------------------------------------- read back


class _Lagging(MemoryProvider):
    """A backend whose reads lag its writes: serves ``old`` for the first ``lag`` reads."""

    def __init__(self, old: str, new: str, lag: int) -> None:
        super().__init__(old)
        self.new, self.lag = new, lag

    def fetch(self) -> Any:
        if self.fetches >= self.lag:
            self.value = self.new
        return super().fetch()


def test_read_back_waits_for_a_lagging_backend() -> None:
    from scaling_credentials import ApiKey

    old, new = good_value("old"), good_value("new")
    provider = _Lagging(old, new, lag=3)
    clock = FakeClock()
    back = rotate_module.read_back(
        provider, old=ApiKey(old), new=ApiKey(new), timeout=10, clock=clock, sleep=clock.advance
    )
    assert_key_is(back.key, new)
    assert back.reads == 4
    assert provider.rejected and all(k == ApiKey(old) for k in provider.rejected)


def test_read_back_gives_up_on_a_source_that_keeps_the_old_key() -> None:
    from scaling_credentials import ApiKey, ProviderError

    old, new = good_value("old"), good_value("new")
    clock = FakeClock()
    with pytest.raises(ProviderError) as info:
        rotate_module.read_back(
            MemoryProvider(old), old=ApiKey(old), new=ApiKey(new), timeout=5,
            clock=clock, sleep=clock.advance,
        )  # fmt: skip
    assert "still serves the old key" in str(info.value)
    assert "do not delete the old key" in str(info.value)
    assert 4 <= clock() - 1000.0 <= 5  # FakeClock starts at 1000
    assert_no_secret(token(old), str(info.value))


def test_read_back_reports_a_third_key() -> None:
    from scaling_credentials import ApiKey, ProviderError

    old, new, other = good_value("old"), good_value("new"), good_value("oth")
    clock = FakeClock()
    with pytest.raises(ProviderError) as info:
        rotate_module.read_back(
            MemoryProvider(other), old=ApiKey(old), new=ApiKey(new), timeout=5,
            clock=clock, sleep=clock.advance,
        )  # fmt: skip
    assert "another writer" in str(info.value)
    for value in (old, new, other):
        assert_no_secret(token(value), str(info.value))


# --------------------------------------------------------------------------- the plan


def test_deletion_plan_and_formats() -> None:
    plan = rotate_module.DeletionPlan(stored_at=1_700_000_000.2, fleet_ttl=300.0)
    assert plan.wait == 360.0
    assert plan.delete_after == pytest.approx(1_700_000_360.2)
    assert plan.explain() == "fleet TTL 300 s + 60 s slack"
    assert rotate_module.format_utc(plan.delete_after) == "2023-11-14 22:19:21 UTC"
    assert rotate_module.format_utc(plan.delete_after, iso=True) == "2023-11-14T22:19:21Z"
    assert rotate_module.format_duration(360) == "6 min 0 s"
    assert rotate_module.format_duration(44.2) == "45 s"
    assert rotate_module.format_duration(3900) == "1 h 5 min"
    assert rotate_module.format_duration(-3) == "0 s"


# --------------------------------------------------------------------------- providers


def test_providers_says_which_schemes_can_store(run_main: Callable[..., Ran]) -> None:
    ran = run_main("providers")
    assert ran.returncode == 0
    table = ran.stdout.split("\n\n", 1)[0].splitlines()[1:]
    rows = {line.split()[0]: line.split()[-1] for line in table}
    assert rows["file"] == "yes" and rows["vault"] == "yes" and rows["env"] == "no"
    assert rows["aws-lambda-extension"] == "no"
    document = json.loads(run_main("providers", "--json").stdout)
    by_scheme = {item["scheme"]: item for item in document["installed"]}
    assert by_scheme["file"]["can_store"] is True
    assert by_scheme["env"]["can_store"] is False
    assert by_scheme["vault"]["can_store"] is True
    assert all(item["load_error"] is None for item in document["installed"])


def test_a_provider_that_fails_to_import_breaks_only_its_own_row(
    run_main: Callable[..., Ran], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real installed distribution whose entry point names a module that is not there."""
    dist = tmp_path / "broken_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n", encoding="utf-8"
    )
    (dist / "entry_points.txt").write_text(
        "[scaling_credentials.providers]\nbroken = no_such_module_7f3a:Provider.from_uri\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    ran = run_main("providers")
    assert ran.returncode == 0, ran.stderr
    row = next(line for line in ran.stdout.splitlines() if line.startswith("broken "))
    assert row.split()[1:] == ["broken-plugin", "1.0", "?"]
    assert "broken: the provider for the broken: scheme" in ran.stdout
    assert re.search(r"^file .* yes$", ran.stdout, re.MULTILINE)
    document = json.loads(run_main("providers", "--json").stdout)
    broken = next(item for item in document["installed"] if item["scheme"] == "broken")
    assert broken["can_store"] is None
    assert "ModuleNotFoundError" in broken["load_error"]
    # rotate still names the schemes that can store, leaving the broken one out
    ran = run_main("rotate", "--source", "env:X")
    assert ran.returncode == 2
    can = ran.stderr.split("sources that can: ", 1)[1].split(")", 1)[0]
    assert "file:" in can and "broken" not in can


# --------------------------------------------------------------------------- docs/cli.md

_VARYING = (
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"), "<time> UTC"),
    (re.compile(r"file:/[^\s)]+/api-key"), "file:<path>"),
    # The schemes that can store depend on the distributions installed.
    (re.compile(r"\(sources that can: [^)]*\)"), "(sources that can: <schemes>)"),
)


def _normalized(text: str) -> str:
    text = as_documented(text)
    for pattern, placeholder in _VARYING:
        text = pattern.sub(placeholder, text)
    return text


def test_cli_doc_quotes_rotate(api: FakeScalingAPI, run_rotate: RunRotate, tmp_path: Path) -> None:
    old, new = api.issue_key(), api.rotate()
    path = key_file(tmp_path, old)
    done = run_rotate("--source", f"file:{path}", "--base-url", api.url, stdin=new)
    same = run_rotate("--source", f"file:{path}", "--base-url", api.url, stdin=new)
    rejected = run_rotate(
        "--source", f"file:{path}", "--base-url", api.url, stdin=good_value("unknown")
    )
    cannot = run_rotate(
        "--source", "env:SCALING_API_KEY", "--base-url", api.url, stdin=new,
        env={"SCALING_API_KEY": old},
    )  # fmt: skip
    volume = SecretVolume(tmp_path / "volume")
    (tmp_path / "volume").mkdir()
    volume.write(new)
    kubelet = run_rotate("--source", f"file:{volume.path}", "--base-url", api.url, stdin=old)
    assert [r.returncode for r in (done, same, rejected, cannot, kubelet)] == [0, 2, 1, 2, 2]
    doc = _normalized(CLI_DOC.read_text(encoding="utf-8"))
    missing = [
        line
        for ran in (done, same, rejected, cannot, kubelet)
        for line in _normalized(ran.stdout + ran.stderr).splitlines()
        if line.strip() and line not in doc
    ]
    assert not missing, "docs/cli.md must quote rotate's output as it is:\n" + "\n".join(missing)


def test_help_describes_rotate(run_main: Callable[..., Ran]) -> None:
    top = run_main("--help")
    assert "rotate" in top.stdout
    ran = run_main("rotate", "--help")
    assert ran.returncode == 0
    text = " ".join(ran.stdout.split())
    assert "Read the new key from standard input" in text
    assert "never from the command line or the environment" in text
    for option in ("--source", "--base-url", "--fleet-ttl", "--wait", "--timeout", "--json"):
        assert option in text
