"""The error tree: pickling for process pools, without secrets."""

from __future__ import annotations

import pickle

import httpx

from scaling_credentials import ScalingAPIError, raise_for_scaling_error

KEY = "scl_live_errorpicklekey0123456789"


def test_scaling_api_error_pickles_without_the_response() -> None:
    request = httpx.Request(
        "GET", "https://api.scaling.cloud/v1/x", headers={"Authorization": f"Bearer {KEY}"}
    )
    body = (
        b'{"statusCode":401,"type":"not_authorized_error","code":"invalid_api_key","requestId":"r"}'
    )
    response = httpx.Response(401, content=body, request=request)
    try:
        raise_for_scaling_error(response)
    except ScalingAPIError as exc:
        error = exc
    data = pickle.dumps(error)
    assert KEY.encode() not in data
    clone = pickle.loads(data)
    assert isinstance(clone, ScalingAPIError)
    assert (clone.status_code, clone.type, clone.code, clone.request_id) == (
        401,
        "not_authorized_error",
        "invalid_api_key",
        "r",
    )
    assert clone.response is None
    assert str(clone) == str(error)
