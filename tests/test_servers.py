"""Real servers, real processes: gunicorn (``--preload``, 2 workers, with sync, gthread and
gevent workers, a uvicorn worker class and its own asgi worker) and uvicorn (2 workers)
serve the apps of ``examples/servers/``, which call a ``FakeScalingAPI`` in this process
through the library, with the key in a directory laid out like a Kubernetes secret volume
(the kubelet's ``..data`` symlink swap).

All the servers run at once, each with its own fake API and key volume. Client threads
here send requests to every server while the key is rotated three times (the new key
written to the volume, then the old one revoked at the API at once). Expected: no request
fails, every 401 the API sent was retried once with the new key, each worker process
fetches the key once per rotation at most and served its first requests with the key the
master warmed before the fork.

Rotations are spaced by the library's default ``min_refresh_interval`` (5 s) plus a
margin, counted from the moment every worker process seen so far has picked up the last
key: the apps run with the library's defaults, and a forced fetch is allowed once per
interval. The servers measure that interval in real time, hence the pause.

Servers are started on free ports of 127.0.0.1, checked ready by polling their port, and
stopped by the pid this module started (SIGTERM, then SIGKILL to its process group after a
timeout). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaling_credentials.testing import (
    FakeScalingAPI,
    SecretVolume,
    free_port,
    rotate_and_revoke,
    wait_for_port,
)
from scaling_credentials.testing.provider_suite import assert_no_secret

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not hasattr(os, "fork"), reason="pre-fork servers need os.fork"),
]

ROOT = Path(__file__).resolve().parents[1]
APPS = ROOT / "examples" / "servers"
DOCS = ROOT / "docs" / "servers.md"

ROTATIONS = 3
# The library's default min_refresh_interval is 5 s: a process makes at most one forced
# fetch per 5 s. Rotating faster than that is a separate concern; here each rotation comes
# this long after every worker process picked up the previous key.
ROTATION_GAP = 6.0
CLIENT_THREADS = 2  # per server
THINK_TIME = 0.01
PROGRESS = 5  # successful requests every server must answer between steps
START_TIMEOUT = 60.0
STEP_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
WORKERS = 2


@dataclass(frozen=True)
class Server:
    """How to start one kind of server on a port, and what it needs installed."""

    name: str
    argv: Callable[[int], list[str]]
    needs: tuple[str, ...]

    def missing(self) -> str | None:
        for module in self.needs:
            try:
                found = importlib.util.find_spec(module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                return f"{module} is not installed"
        return None


def _gunicorn(*args: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", *args]

    return argv


def _uvicorn(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "asgi_app:app",
    ]


WSGI = ("--config", "gunicorn.conf.py", "wsgi_app:app")  # --preload, 2 workers in the file
ASGI = ("--preload", "--workers", str(WORKERS), "asgi_app:app")
SERVERS = [
    Server("gunicorn-sync", _gunicorn("--worker-class", "sync", *WSGI), ("gunicorn",)),
    Server(
        "gunicorn-gthread",
        _gunicorn("--worker-class", "gthread", "--threads", "4", *WSGI),
        ("gunicorn",),
    ),
    Server("gunicorn-gevent", _gunicorn("--worker-class", "gevent", *WSGI), ("gunicorn", "gevent")),
    Server(
        "gunicorn-uvicorn-worker",
        _gunicorn("--worker-class", "uvicorn_worker.UvicornWorker", *ASGI),
        ("gunicorn", "uvicorn_worker", "fastapi"),
    ),
    Server(
        "gunicorn-asgi",
        _gunicorn("--worker-class", "asgi", *ASGI),
        ("gunicorn.workers.gasgi", "fastapi"),
    ),
    Server("uvicorn", _uvicorn, ("uvicorn", "fastapi")),
]


# ---------------------------------------------------------------------- processes


def start_server(
    server: Server, port: int, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            server.argv(port),
            cwd=APPS,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the fallback kill reaches workers
        )


def wait_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    try:
        wait_for_port(port, process=process, timeout=START_TIMEOUT)
    except RuntimeError as exc:
        raise AssertionError(f"{exc}:\n{tail(log)}") from None


def stop_server(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM to the pid we started; SIGKILL to its process group if it does not exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the group of the pid we started
            process.wait(timeout=STOP_TIMEOUT)
            return -9
    return process.returncode


def tail(log: Path, lines: int = 40) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------- load


@dataclass(frozen=True)
class Outcome:
    """One request of the test's clients to a server: monotonic start and end, the
    server's status (0: no answer), its JSON body, or the transport error."""

    started: float
    ended: float
    status: int
    body: dict[str, Any] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class Fleet:
    """One server under test: its process, fake API, key volume and what its clients saw."""

    server: Server
    port: int
    api: FakeScalingAPI
    volume: SecretVolume
    log: Path
    process: subprocess.Popen[bytes] | None = None
    keys: list[str] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    exit_code: int | None = None

    def record(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def snapshot(self) -> list[Outcome]:
        with self.lock:
            return list(self.outcomes)

    def answered_since(self, since: float) -> int:
        return sum(1 for o in self.snapshot() if o.ok and o.started > since)

    def picked_up(self, since: float) -> float | None:
        """When every worker process seen so far had answered a request sent after
        ``since`` (a rotation): by then each of them held the new key. ``None`` if one
        has not yet."""
        first: dict[int, float] = {}
        seen: set[int] = set()
        for outcome in self.snapshot():
            if outcome.body is None:
                continue
            pid = int(outcome.body["pid"])
            seen.add(pid)
            if outcome.ok and outcome.started > since:
                first[pid] = min(first.get(pid, outcome.ended), outcome.ended)
        if not seen or seen - first.keys():
            return None
        return max(first.values())


def client_thread(fleet: Fleet, stop: threading.Event) -> None:
    # Connection: close spreads the requests over the workers (each one is a new accept).
    headers = {"Connection": "close"}
    base = f"http://127.0.0.1:{fleet.port}"
    with httpx.Client(base_url=base, timeout=10, headers=headers) as client:
        for _ in range(1_000_000):  # bounded; stopped by the event
            if stop.is_set():
                return
            started = time.monotonic()
            try:
                response = client.get("/schedules")
            except httpx.HTTPError as exc:
                fleet.record(Outcome(started, time.monotonic(), 0, None, type(exc).__name__))
            else:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                fleet.record(Outcome(started, time.monotonic(), response.status_code, body))
            stop.wait(THINK_TIME)


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting until {what}")
        time.sleep(0.05)  # polling what the client threads recorded


def pause_after_rotation(fleets: list[Fleet], since: float, number: int) -> None:
    """Wait until every worker process seen so far picked up the key of the rotation done
    at ``since``, then until ROTATION_GAP has passed since the last of them did: its
    forced fetch for that rotation happened before it answered."""

    def latest() -> float | None:
        times = [fleet.picked_up(since) for fleet in fleets]
        return max(t for t in times if t is not None) if None not in times else None

    wait_until(
        lambda: latest() is not None,
        f"every worker process picked up the key of rotation {number}",
    )
    picked_up = latest() or since
    time.sleep(max(0.0, picked_up + ROTATION_GAP - time.monotonic()))  # the servers' clock


@dataclass
class Scenario:
    fleets: dict[str, Fleet]
    skipped: dict[str, str]
    began: list[float]  # when each rotation began (before the new key was written)
    rotated_at: list[float]  # when each rotation was done (the old key revoked)


def run_scenario(tmp: Path) -> Scenario:
    skipped = {s.name: reason for s in SERVERS if (reason := s.missing()) is not None}
    fleets: dict[str, Fleet] = {}
    began: list[float] = []
    rotated_at: list[float] = []
    with contextlib.ExitStack() as stack:
        for server in SERVERS:
            if server.name in skipped:
                continue
            directory = tmp / server.name
            (directory / "volume").mkdir(parents=True)
            (directory / "run").mkdir(mode=0o700)
            api = stack.enter_context(FakeScalingAPI())
            fleet = Fleet(
                server,
                free_port(),
                api,
                SecretVolume(directory / "volume"),
                directory / "server.log",
            )
            fleet.keys.append(api.issue_key())
            fleet.volume.write(fleet.keys[-1])
            env = {
                name: value
                for name, value in os.environ.items()
                if not name.startswith(("SCALING_API_", "GUNICORN_", "UVICORN_"))
            }
            env.update(
                SCALING_API_KEY_FILE=str(fleet.volume.path),
                SCALING_API_BASE_URL=api.url,
                PYTHONPATH=str(APPS),
                XDG_RUNTIME_DIR=str(directory / "run"),  # gunicorn's control socket
                PYTHONUNBUFFERED="1",
            )
            fleet.process = start_server(server, fleet.port, env, fleet.log)

            def stop(fleet: Fleet = fleet) -> None:
                assert fleet.process is not None
                fleet.exit_code = stop_server(fleet.process)

            stack.callback(stop)
            fleets[server.name] = fleet
        for fleet in fleets.values():
            assert fleet.process is not None
            wait_listening(fleet.process, fleet.port, fleet.log)

        halt = threading.Event()
        threads = [
            threading.Thread(target=client_thread, args=(fleet, halt), daemon=True)
            for fleet in fleets.values()
            for _ in range(CLIENT_THREADS)
        ]
        for thread in threads:
            thread.start()
        try:
            wait_until(
                lambda: all(f.answered_since(0.0) >= PROGRESS for f in fleets.values()),
                f"every server answered {PROGRESS} requests",
                START_TIMEOUT,
            )
            for number in range(ROTATIONS):
                if rotated_at:
                    pause_after_rotation(list(fleets.values()), rotated_at[-1], number)
                began.append(time.monotonic())
                for fleet in fleets.values():
                    fleet.keys.append(
                        rotate_and_revoke(fleet.api, fleet.volume.write, fleet.keys[-1])
                    )
                rotated_at.append(time.monotonic())
            last = rotated_at[-1]
            wait_until(
                lambda: all(
                    f.answered_since(last) >= PROGRESS and f.picked_up(last) is not None
                    for f in fleets.values()
                ),
                "every server answered requests after the last rotation",
            )
        finally:
            halt.set()
            for thread in threads:
                thread.join(timeout=STEP_TIMEOUT)
        assert not any(t.is_alive() for t in threads), "a client thread did not stop"
    return Scenario(fleets, skipped, began, rotated_at)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    return run_scenario(tmp_path_factory.mktemp("servers"))


def fleet_of(scenario: Scenario, name: str) -> Fleet:
    if name in scenario.skipped:
        pytest.skip(f"{name}: {scenario.skipped[name]}")
    return scenario.fleets[name]


def describe(outcome: Outcome, rotated_at: list[float]) -> str:
    after = sum(1 for t in rotated_at if t < outcome.started)
    return (
        f"status {outcome.status} body {outcome.body} error {outcome.error}, sent after "
        f"rotation {after} (+{outcome.started - (rotated_at[after - 1] if after else 0):.2f} s)"
    )


NAMES = [server.name for server in SERVERS]


# ---------------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", NAMES)
def test_no_request_fails_across_rotations(scenario: Scenario, name: str) -> None:
    fleet = fleet_of(scenario, name)
    outcomes = fleet.snapshot()
    failed = [o for o in outcomes if not o.ok]
    details = "\n".join(describe(o, scenario.rotated_at) for o in failed[:10])
    assert not failed, (
        f"{len(failed)} of {len(outcomes)} requests failed:\n{details}\n"
        f"server log:\n{tail(fleet.log)}"
    )
    assert len(fleet.keys) == ROTATIONS + 1
    assert fleet.exit_code == 0, f"stopped with {fleet.exit_code}:\n{tail(fleet.log)}"


@pytest.mark.parametrize("name", NAMES)
def test_every_401_is_retried_once_with_the_new_key(scenario: Scenario, name: str) -> None:
    fleet = fleet_of(scenario, name)
    outcomes = [o for o in fleet.snapshot() if o.ok]
    assert all(o.body is not None and o.body["upstream"] == 200 for o in outcomes)
    retried = [int(o.body["retried"]) for o in outcomes if o.body is not None]
    assert set(retried) <= {0, 1}  # never more than one retry per request
    at_api = Counter(r.status for r in fleet.api.requests)
    # Every answer the API gave is accounted for: one 200 per request served, one 401 per
    # request that was retried with the new key; nothing else.
    assert at_api == Counter({200: len(outcomes), 401: sum(retried)}) - Counter()
    # Each rotation revoked the key every process held: at least one 401 per rotation.
    assert sum(retried) >= ROTATIONS


@pytest.mark.parametrize("name", NAMES)
def test_workers_start_with_the_warmed_key_and_fetch_once_per_rotation(
    scenario: Scenario, name: str
) -> None:
    fleet = fleet_of(scenario, name)
    first_rotation = scenario.began[0]
    by_pid: dict[int, list[Outcome]] = {}
    for outcome in fleet.snapshot():
        if outcome.body is None:
            continue  # a failure: reported by test_no_request_fails_across_rotations
        by_pid.setdefault(int(outcome.body["pid"]), []).append(outcome)
    assert fleet.process is not None
    assert fleet.process.pid not in by_pid  # workers served, not the master
    assert 1 <= len(by_pid) <= WORKERS
    for pid, outcomes in by_pid.items():
        fetches = [int(o.body["fetches"]) for o in outcomes if o.body is not None]
        before = {f for f, o in zip(fetches, outcomes, strict=True) if o.ended < first_rotation}
        # Before any rotation: the one fetch made at import (in the master under --preload,
        # inherited through the fork), none in the worker.
        assert before <= {1}, f"worker {pid} reported {before} fetches before any rotation"
        if before:
            # A worker that served before the first rotation also served after each one
            # (the scenario waits for that): exactly one forced fetch per rotation.
            assert max(fetches) == 1 + ROTATIONS, f"worker {pid} fetched {max(fetches)} times"
        else:  # first seen later: it may have skipped a rotation, never fetched twice for one
            assert max(fetches) <= 1 + ROTATIONS, f"worker {pid} fetched {max(fetches)} times"


@pytest.mark.parametrize("name", NAMES)
def test_server_logs_hold_no_key(scenario: Scenario, name: str) -> None:
    fleet = fleet_of(scenario, name)
    text = fleet.log.read_text(errors="replace")
    for key in fleet.keys:
        assert_no_secret(key, text)
    assert "Traceback" not in text, tail(fleet.log)


def test_docs_show_the_example_apps_as_they_are() -> None:
    page = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)
    for path in sorted(APPS.glob("*.py")):
        assert path.read_text() in blocks, f"docs/servers.md does not show {path.name} as it is"
