"""Unit tests of the failure translation: what is kept from hvac's and requests'
exceptions (status, Vault's strings, the path) and what is not (bodies, tokens, keys)."""

from __future__ import annotations

import hvac.exceptions
import pytest
import requests

from scaling_credentials.testing.provider_suite import assert_no_secret, good_value
from scaling_credentials_vault._diagnosis import Probe
from scaling_credentials_vault._errors import VaultCallError, call, clip

TOKEN = "hvs.CAESIJ3n0tArEalT0kenButL0ng"
KEY = good_value("scrub")


def test_clip_removes_known_secrets_and_token_and_key_shapes() -> None:
    text = f"bad {TOKEN} and {KEY} and s.AbCdEfGhIjKlMnOpQrSt and my-secret-id-123"
    cleaned = clip(text, ["my-secret-id-123"])
    for secret in (TOKEN, KEY, "s.AbCdEfGhIjKlMnOpQrSt", "my-secret-id-123"):
        assert_no_secret(secret, cleaned)
    assert cleaned.startswith("bad ****")


def test_clip_caps_length_and_joins_lines() -> None:
    cleaned = clip("1 error occurred:\n\t* permission denied\n\n" + "x" * 1000)
    assert "\n" not in cleaned
    assert len(cleaned) <= 300


def test_vault_error_keeps_status_errors_and_path_only() -> None:
    body = {"errors": [f"permission denied for {TOKEN}"], "data": {"data": {"api_key": KEY}}}

    def fail() -> None:
        raise hvac.exceptions.Forbidden(
            errors=body["errors"],
            method="get",
            url="http://127.0.0.1:8200/v1/secret/data/scaling/api?version=3",
            text=str(body),
            json=body,
        )

    with pytest.raises(VaultCallError) as info:
        call(fail)
    error = info.value
    assert error.status == 403
    assert error.path == "/v1/secret/data/scaling/api"
    assert error.__context__ is None and error.__cause__ is None
    assert_no_secret(TOKEN, str(error), repr(error))
    assert_no_secret(KEY, str(error), repr(error), repr(vars(error)))


def test_proxy_page_is_kept_short_and_scrubbed() -> None:
    page = f"<html><body>502 Bad Gateway {TOKEN}</body></html>" + " " * 5000

    def fail() -> None:
        raise hvac.exceptions.BadGateway(page, method="get", url="http://v/v1/x", text=page)

    with pytest.raises(VaultCallError) as info:
        call(fail)
    assert info.value.status == 502
    assert "502 Bad Gateway" in str(info.value)
    assert_no_secret(TOKEN, str(info.value))


def test_transport_errors_drop_the_request() -> None:
    request = requests.Request(
        "GET", "http://127.0.0.1:1/v1/x", headers={"X-Vault-Token": TOKEN}
    ).prepare()

    def refuse() -> None:
        raise requests.exceptions.ConnectionError(
            "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded "
            "(Caused by NewConnectionError('Failed to establish a new connection: "
            "[Errno 111] Connection refused'))",
            request=request,
        )

    with pytest.raises(VaultCallError) as info:
        call(refuse)
    assert info.value.kind == "connection"
    assert info.value.detail == "connection refused"
    assert_no_secret(TOKEN, str(info.value), repr(vars(info.value)))

    def slow() -> None:
        raise requests.exceptions.ReadTimeout("read timed out", request=request)

    with pytest.raises(VaultCallError) as info:
        call(slow)
    assert info.value.kind == "timeout"


def test_probe_repr_shows_no_credential() -> None:
    # pytest --showlocals, Sentry and debuggers render a Probe held in a local variable.
    secret_id = "5f1c0a2e-secret-id-9b7d"
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhcHAifQ.c2lnbmF0dXJl"
    probe = Probe(client=object(), secrets=(TOKEN, secret_id, jwt, *jwt.split(".")))
    text = repr(probe)
    for secret in (TOKEN, secret_id, jwt, *jwt.split(".")):
        assert_no_secret(secret, text, str(probe))
