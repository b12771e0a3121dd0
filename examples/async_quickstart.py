"""The quick start with httpx.AsyncClient and many concurrent tasks.

uv run python examples/async_quickstart.py
"""

from __future__ import annotations

import asyncio
import os

from scaling_credentials import async_scaling_client, raise_for_scaling_error
from scaling_credentials.testing import FakeScalingAPI


async def main() -> None:
    with FakeScalingAPI() as api:
        # In production the key comes from SCALING_API_KEY_SOURCE, SCALING_API_KEY or
        # SCALING_API_KEY_FILE; here we point the environment at the fake server's key.
        os.environ["SCALING_API_KEY"] = old_key = api.issue_key()
        async with async_scaling_client(base_url=api.url) as client:
            await client.get("/oncall/schedules")  # warm the cache
            os.environ["SCALING_API_KEY"] = api.rotate()
            api.revoke(old_key)
            responses = await asyncio.gather(*(client.get("/oncall/schedules") for _ in range(100)))
            for response in responses:
                raise_for_scaling_error(response)
        print(f"{len(responses)} concurrent requests succeeded across a key rotation")


if __name__ == "__main__":
    asyncio.run(main())
