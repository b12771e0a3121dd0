"""The sidecar pattern without Kubernetes: `bao agent` (started here, AppRole auto-auth)
renders the key from KV v2 to a file with a template; the application reads the file with
FileProvider. A new KV version is written, the agent re-renders, the old key is revoked:
requests keep succeeding. The agent is an external process, so waiting for its re-render
is a real (bounded) wait."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import hvac

from scaling_credentials import FileProvider, KeyCache, ScalingAuth
from scaling_credentials.testing import FakeScalingAPI
from scaling_credentials.testing.provider_suite import assert_key_is

THREADS = 4
RENDER_INTERVAL = "1s"
RENDER_TIMEOUT = 20.0


def agent_config(server_url: str, workdir: Path, secret_path: str, destination: Path) -> str:
    # Go template braces: built by concatenation to keep Python's format braces out.
    template = (
        '{{ with secret "secret/data/' + secret_path + '" }}{{ .Data.data.api_key }}{{ end }}'
    )
    # HCL strings are JSON strings: json.dumps quotes them safely.
    return f"""
pid_file = {json.dumps(str(workdir / "agent.pid"))}
exit_after_auth = false

vault {{
  address = {json.dumps(server_url)}
}}

auto_auth {{
  method "approle" {{
    config = {{
      role_id_file_path = {json.dumps(str(workdir / "role_id"))}
      secret_id_file_path = {json.dumps(str(workdir / "secret_id"))}
      remove_secret_id_file_after_reading = false
    }}
  }}
}}

template_config {{
  # KV secrets carry no lease: the agent re-reads them on this interval (default 5m).
  static_secret_render_interval = {json.dumps(RENDER_INTERVAL)}
}}

template {{
  contents = {json.dumps(template)}
  destination = {json.dumps(str(destination))}
  perms = "0600"
}}
"""


class Progress:
    def __init__(self) -> None:
        self.done = 0
        self.statuses: list[int] = []
        self.retried = 0
        self.changed = threading.Condition()

    def record(self, response: httpx.Response) -> None:
        with self.changed:
            self.done += 1
            self.statuses.append(response.status_code)
            self.retried += len(response.history)
            self.changed.notify_all()

    def wait_for_more(self, count: int, timeout: float = 20.0) -> None:
        with self.changed:
            target = self.done + count
            assert self.changed.wait_for(lambda: self.done >= target, timeout), "no progress"


def test_agent_renders_the_key_and_file_provider_follows_rotation(
    bao: Any,
    bao_root: hvac.Client,
    secret_path: str,
    tmp_path: Path,
    run_bao: Callable[..., Any],
    poll: Callable[..., None],
) -> None:
    if "approle/" not in bao_root.sys.list_auth_methods()["data"]:
        bao_root.sys.enable_auth_method("approle")
    role = f"agent-{uuid.uuid4().hex[:8]}"
    bao_root.auth.approle.create_or_update_approle(
        role, token_policies=["scaling-read"], token_ttl="10m"
    )
    workdir = tmp_path / "agent"
    workdir.mkdir()
    (workdir / "role_id").write_text(bao_root.auth.approle.read_role_id(role)["data"]["role_id"])
    (workdir / "secret_id").write_text(
        bao_root.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    )
    rendered = tmp_path / "secrets" / "scaling-api-key"
    rendered.parent.mkdir()
    config = workdir / "agent.hcl"
    config.write_text(agent_config(bao.url, workdir, secret_path, rendered))

    with FakeScalingAPI() as api:
        old = api.issue_key()
        bao_root.secrets.kv.v2.create_or_update_secret(path=secret_path, secret={"api_key": old})
        agent = run_bao("agent", f"-config={config}")

        def shows(value: str) -> bool:
            if agent.process.poll() is not None:
                raise AssertionError(f"bao agent exited:\n{agent.log_tail()}")
            try:
                return rendered.read_text().strip() == value
            except FileNotFoundError:
                return False

        poll(lambda: shows(old), timeout=RENDER_TIMEOUT, what="the agent's first render")
        assert rendered.stat().st_mode & 0o777 == 0o600

        cache = KeyCache(FileProvider(rendered), ttl=3600, min_refresh_interval=0)
        auth = ScalingAuth(cache)
        progress = Progress()
        stop = threading.Event()

        def worker() -> None:
            with httpx.Client(base_url=api.url, auth=auth) as client:
                for _ in range(20000):  # bounded
                    if stop.is_set():
                        return
                    progress.record(client.get("/oncall/schedules"))

        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        try:
            progress.wait_for_more(10)
            new = api.rotate()
            bao_root.secrets.kv.v2.create_or_update_secret(
                path=secret_path, secret={"api_key": new}
            )
            poll(lambda: shows(new), timeout=RENDER_TIMEOUT, what="the agent's re-render")
            api.revoke(old)
            progress.wait_for_more(20)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)
        assert not any(t.is_alive() for t in threads)

    failed = [s for s in progress.statuses if s != 200]
    assert failed == [], f"{len(failed)} failed requests"
    # One fetch picked up the re-render: either the file's change check (at most a second
    # after the render, before the revocation: no 401 at all) or the forced fetch after
    # the revocation's first 401. Which one depends on real time; for the forced fetch,
    # how many requests carried the old key into it depends on where the threads were: at
    # least one, at most one per thread, since a thread's retry leaves the new key cached.
    assert cache.stats.fetches == 2
    if cache.stats.forced_fetches == 0:
        assert progress.retried == 0
    else:
        assert cache.stats.forced_fetches == 1
        assert 1 <= progress.retried <= THREADS
    current = cache.peek()
    assert current is not None
    assert_key_is(current, new)
    bao_root.auth.approle.delete_role(role)
