"""AWS Lambda handler that calls the Scaling API with a key kept in AWS Secrets Manager.

Everything is built at module level, once per execution environment (cold start), and
reused by every invocation: the provider, the key cache and the HTTP client with its
connection pool. Nothing is fetched at import time: the first request fetches the key
(the Parameters and Secrets extension serves requests only once the init phase is over),
and the cache then serves it for SCALING_API_KEY_TTL seconds. When the API answers
``401 invalid_api_key`` after a rotation, the auth fetches the new key and retries once.

Failures become a logged error and a structured answer, never a stack trace for the
caller: the API's error (502, with its requestId), no key (503: the source is missing,
unreadable or down, or holds no valid key), the API unreachable (502) or too slow (504).

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
from typing import Any

import httpx

from scaling_credentials import (
    KeyCache,
    ScalingAPIError,
    ScalingCredentialsError,
    provider_from_env,
    raise_for_scaling_error,
    scaling_client,
)

logging.getLogger().setLevel(logging.INFO)  # key changes and refetches are INFO lines
logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per request

# Module level: built once per execution environment, reused by every invocation.
# provider_from_env() reads SCALING_API_KEY_SOURCE (else SCALING_API_KEY, else
# SCALING_API_KEY_FILE); KeyCache reads SCALING_API_KEY_TTL; scaling_client() reads
# SCALING_API_BASE_URL.
CACHE = KeyCache(provider_from_env())
CLIENT = scaling_client(CACHE, timeout=10.0)


def _error(status: int, error: str, **details: Any) -> dict[str, Any]:
    return {"statusCode": status, "body": json.dumps({"error": error, **details})}


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """List the on-call schedules; the key is fetched at most once per TTL."""
    try:
        response = raise_for_scaling_error(CLIENT.get("/oncall/schedules"))
    except ScalingAPIError as error:
        # The requestId is what Scaling support asks for; the key is never logged.
        logging.error(
            "Scaling API error %s %s (requestId %s)",
            error.status_code,
            error.code,
            error.request_id,
        )
        return _error(502, "scaling_api_error", requestId=error.request_id)
    except ScalingCredentialsError as error:
        # ProviderError (the source is down or the secret is missing), a malformed key:
        # the message names the source and what to fix, never the key.
        logging.error("no Scaling API key from %s: %s", CACHE.describe(), error)
        return _error(503, "scaling_api_key_unavailable")
    except httpx.TimeoutException as error:
        logging.error("Scaling API did not answer in time: %s", type(error).__name__)
        return _error(504, "scaling_api_timeout")
    except httpx.TransportError as error:  # ConnectError and other network failures
        logging.error("Scaling API unreachable: %s: %s", type(error).__name__, error)
        return _error(502, "scaling_api_unreachable")
    schedules = response.json()["data"]
    return {
        "statusCode": 200,
        "body": json.dumps({"schedules": [s["name"] for s in schedules]}),
    }


if __name__ == "__main__":
    print(handler({}, None))
