"""Pieces of the demo: the Kubernetes-style key volume, option checks, the summary."""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from scaling_credentials import ConfigurationError, FileProvider
from scaling_credentials.testing import DemoOptions, DemoReport, SecretVolume
from scaling_credentials.testing._demo import RunResult, format_summary, validate
from scaling_credentials.testing.provider_suite import assert_key_is, good_value


def test_secret_volume_has_the_kubelet_layout(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    volume.write(good_value("one"))
    assert volume.path.is_symlink()
    assert os.readlink(volume.path) == os.path.join("..data", "api-key")
    data = tmp_path / "..data"
    assert data.is_symlink()
    assert (tmp_path / os.readlink(data)).is_dir()
    assert volume.path.stat().st_mode & 0o777 == 0o400


def test_secret_volume_swaps_atomically_and_keeps_one_old_generation(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    provider = FileProvider(volume.path)
    for tag in ("a", "b", "c", "d"):
        volume.write(good_value(tag))
        assert_key_is(provider.fetch(), good_value(tag))
    generations = [p for p in tmp_path.iterdir() if p.name.startswith("..") and p.is_dir()]
    # ..data itself (a symlink to a directory) plus the current and the previous one.
    real_dirs = [p for p in generations if not p.is_symlink()]
    assert len(real_dirs) == 2


def test_secret_volume_readers_never_see_a_missing_or_partial_key(tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    volume.write(good_value("start"))
    provider = FileProvider(volume.path)
    valid = {good_value("start"), *(good_value(f"k{n}") for n in range(50))}
    stop = threading.Event()
    seen: list[str] = []
    errors: list[BaseException] = []

    def reader() -> None:
        for _ in range(100_000):  # bounded
            if stop.is_set():
                return
            try:
                seen.append(provider.fetch().reveal())
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for n in range(50):
            volume.write(good_value(f"k{n}"))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert not errors, [type(e).__name__ for e in errors]
    assert seen
    assert set(seen) <= valid


def test_secret_volume_falls_back_to_replace_without_symlinks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_symlinks(*args: object, **kwargs: object) -> None:
        raise OSError("symlinks are not supported here")

    monkeypatch.setattr(Path, "symlink_to", no_symlinks)
    volume = SecretVolume(tmp_path)
    volume.write(good_value("x"))
    volume.write(good_value("y"))
    assert not volume.path.is_symlink()
    assert_key_is(FileProvider(volume.path).fetch(), good_value("y"))


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (DemoOptions(duration=0), "--duration"),
        (DemoOptions(threads=0, tasks=0), "not both 0"),
        (DemoOptions(threads=-1), "--threads"),
        (DemoOptions(rotations=-1), "--rotations"),
        (DemoOptions(threads=1000), "at most"),
        (DemoOptions(duration=1, rotations=10), "between them"),
    ],
)
def test_validate_rejects_options_the_demo_cannot_run(options: DemoOptions, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        validate(options)


def test_validate_accepts_the_defaults_and_source_without_rotation_limit() -> None:
    validate(DemoOptions())
    validate(DemoOptions(duration=1, rotations=10, source="env:X"))


def test_percentile_is_nearest_rank() -> None:
    result = RunResult("r", 1.0, latencies=[i / 1000 for i in range(1, 101)])
    assert result.percentile(0.50) == pytest.approx(50.0)
    assert result.percentile(0.99) == pytest.approx(99.0)
    assert RunResult("empty", 1.0).percentile(0.5) is None


def _report(failures: int, static: bool = True) -> DemoReport:
    library = RunResult(
        "with scaling-credentials",
        2.0,
        requests=1200,
        failures=failures,
        retries=9,
        provider_fetches=3,
        rotations=2,
        thread_requests=700,
        task_requests=500,
        failure_reasons={"HTTP 401 invalid_api_key": failures} if failures else {},
        latencies=[0.002, 0.003, 0.004],
    )
    contrast = RunResult(
        "static key (read once)",
        2.0,
        requests=1000,
        failures=640,
        provider_fetches=1,
        rotations=2,
        latencies=[0.002],
    )
    return DemoReport(DemoOptions(), "file:/tmp/x", library, contrast if static else None)


def test_summary_shows_both_runs_and_the_verdict() -> None:
    report = _report(failures=0)
    text = format_summary(report)
    assert report.ok
    assert "with scaling-credentials" in text
    assert "static key (read once)" in text
    assert "1,200" in text and "640" in text
    assert text.splitlines()[0].startswith("Key rotation under load: 4 threads + 8 asyncio tasks")
    assert text.splitlines()[-1].startswith("OK: none of 1,200 requests failed across 2 rotations")
    assert "failed 640 of 1,000 (64%)" in text
    document = report.as_json()
    assert document["library"]["failures"] == 0
    assert document["static"]["failures"] == 640
    assert "latencies" not in document["library"]


def test_summary_names_failures() -> None:
    report = _report(failures=3, static=False)
    assert not report.ok
    last = format_summary(report).splitlines()[-1]
    assert last.startswith("FAILED: 3 of 1,200 requests failed (HTTP 401 invalid_api_key x3)")
    assert report.as_json()["static"] is None
    with_contrast = format_summary(_report(failures=3)).splitlines()
    assert with_contrast[-2].startswith("FAILED: 3 of 1,200")
    assert (
        "held up across two rotations (1.00 s apart here; the slowest took 4 ms)"
        in (with_contrast[-1])
    )


def test_progress_goes_plain_when_piped() -> None:
    from scaling_credentials.testing._demo import _Progress

    stream = io.StringIO()
    progress = _Progress(stream)
    progress.update("first", final=True)
    progress.update("second", final=True)
    assert stream.getvalue() == "first\nsecond\n"


def test_progress_is_one_live_line_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from scaling_credentials.testing._demo import _Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("TERM", "xterm")
    stream = Terminal()
    progress = _Progress(stream)
    progress.update("a long first line")
    progress.update("short", final=True)
    assert stream.getvalue() == "\ra long first line\rshort            \n"
