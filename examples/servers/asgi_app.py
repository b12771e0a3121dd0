"""A FastAPI app for uvicorn, or for gunicorn with a uvicorn worker class, that calls the
Scaling API.

    SCALING_API_KEY_FILE=/var/run/secrets/scaling/api-key uvicorn asgi_app:app --workers 2
    SCALING_API_KEY_FILE=/var/run/secrets/scaling/api-key \
        gunicorn --preload --workers 2 --worker-class uvicorn_worker.UvicornWorker asgi_app:app

GET /schedules answers as wsgi_app's does: the upstream status, whether the request was
retried with a rotated key, and the process id and key fetch count of the worker.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response

from scaling_credentials import KeyCache, async_scaling_client, provider_from_env

# Module level, warmed at import: under gunicorn --preload that is in the master, and the
# forked workers inherit the key. One cache serves every event loop of the process.
KEYS = KeyCache(provider_from_env())
KEYS.get()
BASE_URL = os.environ.get("SCALING_API_BASE_URL", "https://api.scaling.cloud/v1")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    # One AsyncClient per process and event loop, built in the worker once its loop runs,
    # closed when the worker stops.
    async with async_scaling_client(KEYS, base_url=BASE_URL) as client:
        yield {"scaling": client}


app = FastAPI(lifespan=lifespan)


@app.get("/schedules")
async def schedules(request: Request, response: Response) -> dict[str, int]:
    client: httpx.AsyncClient = request.state.scaling
    upstream = await client.get("/oncall/schedules")
    if not upstream.is_success:
        response.status_code = 502
    return {
        "upstream": upstream.status_code,
        "retried": len(upstream.history),
        "pid": os.getpid(),
        "fetches": KEYS.stats.fetches,
    }
