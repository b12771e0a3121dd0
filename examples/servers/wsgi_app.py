"""A WSGI app for gunicorn (sync, gthread or gevent workers) that calls the Scaling API.

    SCALING_API_KEY_FILE=/var/run/secrets/scaling/api-key \
        gunicorn --config gunicorn.conf.py --worker-class gthread --threads 4 wsgi_app:app

GET /schedules fetches the on-call schedules through the library and answers which process
served the request, whether a rotated key was picked up on the way (retried) and how many
key fetches this process has made, counting the one it inherited from the master.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import httpx

from scaling_credentials import KeyCache, provider_from_env, scaling_client

# Once per process; with --preload, once in the master, before the fork. The workers
# inherit the warmed key (the cache is fork-safe: each child gets its own lock and fetch
# state) and fetch again only after a rotation.
KEYS = KeyCache(provider_from_env())
KEYS.get()  # a missing or malformed key fails here, at start-up, not at the first request
BASE_URL = os.environ.get("SCALING_API_BASE_URL", "https://api.scaling.cloud/v1")

_client: httpx.Client | None = None
_client_pid = 0
_client_lock = threading.Lock()


def client() -> httpx.Client:
    """This process's client, built on first use after the fork: pooled connections must
    never be shared between processes. Its threads (or greenlets) share it."""
    global _client, _client_pid
    with _client_lock:
        if _client is None or _client_pid != os.getpid():
            _client = scaling_client(KEYS, base_url=BASE_URL)
            _client_pid = os.getpid()
        return _client


def app(
    environ: dict[str, Any], start_response: Callable[[str, list[tuple[str, str]]], Any]
) -> Iterable[bytes]:
    if environ.get("PATH_INFO") != "/schedules":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    response = client().get("/oncall/schedules")
    body = json.dumps(
        {
            "upstream": response.status_code,
            "retried": len(response.history),
            "pid": os.getpid(),
            "fetches": KEYS.stats.fetches,
        }
    ).encode()
    status = "200 OK" if response.is_success else "502 Bad Gateway"
    start_response(status, [("Content-Type", "application/json")])
    return [body]
