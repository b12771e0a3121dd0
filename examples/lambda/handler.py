"""AWS Lambda handler that calls the Scaling API with a key kept in AWS Secrets Manager.

Everything is built at module level, once per execution environment (cold start), and
reused by every invocation: the provider, the key cache and the HTTP client with its
connection pool. Nothing is fetched at import time: the first request fetches the key
(the Parameters and Secrets extension serves requests only once the init phase is over),
and the cache then serves it for SCALING_API_KEY_TTL seconds. When the API answers
``401 invalid_api_key`` after a rotation, the auth fetches the new key and retries once.

Environment (see README.md):

    SCALING_API_KEY_SOURCE   aws-lambda-extension:prod/scaling-api-key   (no boto3 import)
                             or aws-sm:prod/scaling-api-key              (boto3)
    SCALING_API_KEY_TTL      seconds the key is cached (default 300)
    SCALING_API_BASE_URL     default https://api.scaling.cloud/v1

Locally, with any source (``SCALING_API_KEY_SOURCE=env:SCALING_API_KEY`` and a key in
``SCALING_API_KEY``), ``python examples/lambda/handler.py`` runs one invocation; without
a cloud account at all, ``python examples/lambda/run_locally.py`` runs this handler
against a local Secrets Manager (moto) and a fake Scaling API, through a key rotation.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from scaling_credentials import (
    KeyCache,
    ScalingAPIError,
    provider_from_env,
    raise_for_scaling_error,
    scaling_client,
)

logging.getLogger().setLevel(logging.INFO)  # key changes and refetches are INFO lines
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

BASE_URL = os.environ.get("SCALING_API_BASE_URL", "https://api.scaling.cloud/v1")

# Module level: built once per execution environment, reused by every invocation.
# provider_from_env() reads SCALING_API_KEY_SOURCE (else SCALING_API_KEY, else
# SCALING_API_KEY_FILE); KeyCache reads SCALING_API_KEY_TTL.
CACHE = KeyCache(provider_from_env())
CLIENT = scaling_client(CACHE, base_url=BASE_URL, timeout=10.0)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """List the on-call schedules; the key is fetched at most once per TTL."""
    response = CLIENT.get("/oncall/schedules")
    try:
        raise_for_scaling_error(response)
    except ScalingAPIError as error:
        # The requestId is what Scaling support asks for; the key is never logged.
        logging.error(
            "Scaling API error %s %s (requestId %s)",
            error.status_code,
            error.code,
            error.request_id,
        )
        return {"statusCode": 502, "body": json.dumps({"requestId": error.request_id})}
    schedules = response.json()["data"]
    return {
        "statusCode": 200,
        "body": json.dumps({"schedules": [s["name"] for s in schedules]}),
    }


if __name__ == "__main__":
    print(handler({}, None))
