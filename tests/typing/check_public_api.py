"""Type-checked by mypy --strict, never run: the public API as a user writes it."""

from __future__ import annotations

import httpx

from scaling_credentials import ApiKey, EnvProvider, KeyCache, ScalingAuth, scaling_client


def sync_usage() -> str:
    cache = KeyCache(EnvProvider(), ttl=60.0, jitter=0.1)
    key: ApiKey = cache.get()
    with httpx.Client(auth=ScalingAuth(cache)) as client:
        client.get("https://api.scaling.cloud/v1/oncall/schedules")
    with scaling_client("env:SCALING_API_KEY") as client2:
        client2.get("/oncall/schedules")
    return key.masked


async def async_usage() -> ApiKey:
    cache = KeyCache(EnvProvider("OTHER"))
    return await cache.arefresh(rejected=await cache.aget())
