"""Quick start that runs as written: no cloud account, no real key.

It starts the project's FakeScalingAPI on 127.0.0.1, puts a key in a file (as a Kubernetes
secret volume would), calls the API through ScalingAuth, then rotates the key and revokes
the old one: the next request still succeeds, because the auth refetches and retries once.

    uv run python examples/quickstart.py
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import httpx

from scaling_credentials import FileProvider, KeyCache, ScalingAuth
from scaling_credentials.testing import FakeScalingAPI


def write_key(path: Path, value: str) -> None:
    """Replace the file atomically, like the kubelet does."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(value)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with FakeScalingAPI() as api, tempfile.TemporaryDirectory() as tmp:
        key_file = Path(tmp) / "api-key"
        old_key = api.issue_key()
        write_key(key_file, old_key)

        auth = ScalingAuth(KeyCache(FileProvider(key_file), ttl=300))
        with httpx.Client(base_url=api.url, auth=auth) as client:
            schedules = client.get("/oncall/schedules").json()["data"]
            print(f"before rotation: {len(schedules)} schedules")

            write_key(key_file, api.rotate())  # the new key reaches the file...
            api.revoke(old_key)  # ...and the old one is deleted in the dashboard

            response = client.get("/oncall/schedules")
            print(
                f"after rotation: HTTP {response.status_code}, "
                f"{len(response.history)} retried request(s), "
                f"{auth.cache.stats.fetches} provider fetches"
            )
            response.raise_for_status()


if __name__ == "__main__":
    main()
