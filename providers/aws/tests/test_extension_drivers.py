"""Every branch of the Lambda extension exchange, through both drivers (fetch/refetch and
afetch/arefetch), against the local extension stand-in over real sockets: starting,
refused connections, timeouts, odd statuses, AWS error types, bodies too large or too
slow, and a hostile stand-in that echoes the session token back in its errors."""

from __future__ import annotations

import json
import logging
import re
import traceback
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from scaling_credentials import ProviderError, ScalingCredentialsError, SecretNotFoundError
from scaling_credentials.testing import HostileServer, free_port
from scaling_credentials.testing.provider_suite import (
    assert_key_is,
    assert_no_secret,
    error_texts,
    good_value,
)
from scaling_credentials.toolkit import redact
from scaling_credentials_aws import LambdaExtensionProvider, _aws_errors, _extension_http
from scaling_credentials_aws._extension_http import (
    MAX_ANSWER,
    Exchange,
    ExtensionHTTP,
    retry_waits,
)

KEY_A = good_value("alpha")
KEY_B = good_value("bravo")
LOGGER = "scaling_credentials.aws"
# The stand-in's token (conftest's SESSION_TOKEN, checked by a fixture below).
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEFakeSessionToken/for+the+extension=="
Driver = Any  # conftest.Driver: fetch(provider) and refetch(provider, rejected)


@pytest.fixture(autouse=True)
def _same_token(session_token: str) -> None:
    assert session_token == SESSION_TOKEN


def _token_absent(error: BaseException, logs: str, token: str = SESSION_TOKEN) -> None:
    """Neither the token nor its percent-encoded form in the error, its chain (texts and
    attributes), the rendered traceback or the logs."""
    links: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in links:
        links.append(current)
        current = current.__cause__ or current.__context__
    rendered = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    texts = [rendered, logs, *(repr(vars(link)) for link in links)]
    for form in (token, quote(token, safe="")):
        assert_no_secret(form, *texts)


# ---------------------------------------------------------------------- starting up


def test_not_ready_then_ready(
    drive: Driver,
    fake_extension: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
) -> None:
    extension = fake_extension(not_ready=2)
    put(sm, secret_name, SecretString=KEY_A)
    assert_key_is(drive.fetch(LambdaExtensionProvider(secret_name, port=extension.port)), KEY_A)
    assert [r.status for r in extension.requests] == [400, 400, 200]


def test_not_ready_for_too_long_stops_after_the_schedule(
    drive: Driver, fake_extension: Callable[..., Any]
) -> None:
    extension = fake_extension(not_ready=10_000)
    provider = LambdaExtensionProvider("x", port=extension.port, ready_timeout=0.1)
    with pytest.raises(ProviderError, match=r"still not ready after 0\.1 s") as info:
        drive.fetch(provider)
    assert "not at import time" in str(info.value)
    assert len(extension.requests) == 1 + len(retry_waits(0.1))


def test_the_schedule_is_bounded_by_ready_timeout() -> None:
    assert retry_waits(0) == ()
    assert retry_waits(0.1) == (0.02, 0.04)
    waits = retry_waits(3.0)
    assert waits[:5] == (0.02, 0.04, 0.08, 0.16, 0.32) and set(waits[5:]) == {0.5}
    assert sum(waits) <= 3.0 < sum(waits) + 0.5


class _StartOnFirstRetry(logging.Handler):
    """Starts the extension when the provider first logs that it is not ready: a
    connection refused while the extension is still starting, then an answer."""

    def __init__(self, start: Callable[[], Any]) -> None:
        super().__init__()
        self.start = start
        self.started: list[Any] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "not ready" in record.getMessage() and not self.started:
            self.started.append(self.start())


@pytest.fixture
def on_retry() -> Iterator[Callable[[Callable[[], Any]], _StartOnFirstRetry]]:
    logger = logging.getLogger(LOGGER)
    handlers: list[_StartOnFirstRetry] = []
    level = logger.level

    def install(start: Callable[[], Any]) -> _StartOnFirstRetry:
        handler = _StartOnFirstRetry(start)
        handlers.append(handler)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        return handler

    yield install
    for handler in handlers:
        logger.removeHandler(handler)
    logger.setLevel(level)


def test_connection_refused_while_starting_is_retried_in_lambda(
    drive: Driver,
    fake_extension: Callable[..., Any],
    on_retry: Callable[[Callable[[], Any]], _StartOnFirstRetry],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")
    put(sm, secret_name, SecretString=KEY_A)
    port = free_port()
    starter = on_retry(lambda: fake_extension(port_wanted=port))
    provider = LambdaExtensionProvider(secret_name, port=port, ready_timeout=30)
    assert_key_is(drive.fetch(provider), KEY_A)
    (extension,) = starter.started
    assert [r.status for r in extension.requests] == [200]


def test_nothing_listening_in_lambda_is_retried_then_names_the_layer(
    drive: Driver, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")
    provider = LambdaExtensionProvider("x", port=free_port(), ready_timeout=0.1)
    with (
        caplog.at_level(logging.INFO, logger=LOGGER),
        pytest.raises(ProviderError, match="layer is not attached") as info,
    ):
        drive.fetch(provider)
    assert caplog.text.count("retrying") == len(retry_waits(0.1))
    assert info.value.__cause__ is None  # httpx's exception holds the request's headers


def test_nothing_listening_outside_lambda_fails_at_once(
    drive: Driver, caplog: pytest.LogCaptureFixture
) -> None:
    provider = LambdaExtensionProvider("x", port=free_port(), ready_timeout=30)
    with (
        caplog.at_level(logging.INFO, logger=LOGGER),
        pytest.raises(ProviderError, match="not running in AWS Lambda"),
    ):
        drive.fetch(provider)
    assert "retrying" not in caplog.text


# ---------------------------------------------------------------------- answers


def test_no_answer_within_the_timeout(
    drive: Driver, fake_extension: Callable[..., Any], behaviours: Any
) -> None:
    extension = fake_extension(scripted=[behaviours.Hang()])
    provider = LambdaExtensionProvider("x", port=extension.port, timeout=0.2)
    with pytest.raises(ProviderError, match=r"did not answer within 0\.2 s"):
        drive.fetch(provider)


def test_a_body_that_trickles_in_is_abandoned_at_the_timeout(
    drive: Driver, fake_extension: Callable[..., Any], behaviours: Any
) -> None:
    trickle = behaviours.Trickle(size=1000, interval=0.02)  # each byte well within the read timeout
    extension = fake_extension(scripted=[trickle])
    provider = LambdaExtensionProvider("x", port=extension.port, timeout=0.2)
    with pytest.raises(ProviderError, match=r"did not answer within 0\.2 s"):
        drive.fetch(provider)
    assert trickle.sent < trickle.size


def test_a_body_over_the_cap_is_not_read_past_it(
    drive: Driver, fake_extension: Callable[..., Any], behaviours: Any
) -> None:
    endless = behaviours.Endless(limit=64 * 1024 * 1024)
    extension = fake_extension(scripted=[endless])
    with pytest.raises(ProviderError, match="larger than 256 KiB") as info:
        drive.fetch(LambdaExtensionProvider("x", port=extension.port))
    assert "another program" in str(info.value)
    # It stopped reading at the cap: what went out is the cap plus what the sockets'
    # buffers took, not the 64 MiB on offer.
    assert endless.sent < 16 * 1024 * 1024, endless.sent
    assert MAX_ANSWER == 256 * 1024


def _aws(code: str, message: str, status: int = 400) -> tuple[int, bytes]:
    return status, json.dumps({"__type": code, "message": message}).encode()


ODD_ANSWERS = [
    ((200, b"<html>hello</html>"), ProviderError, "answered 200 with something other"),
    ((200, b"[1, 2]"), ProviderError, "answered 200 with something other"),
    ((404, b"not found"), SecretNotFoundError, "answered 404"),
    ((401, b"unauthorized"), ProviderError, r"refused the request \(401"),
    ((403, b"Bad Token"), ProviderError, r"refused the request \(403"),
    ((400, b"bad request"), ProviderError, r"refused the request \(400"),
    ((502, b"bad gateway"), ProviderError, "answered 502"),
]
# AWS error bodies map as Secrets Manager's own errors do.
AWS_ERRORS = [
    (_aws("ResourceNotFoundException", "no such secret"), SecretNotFoundError, "no secret"),
    (
        _aws("InvalidRequestException", "secret is marked for deletion"),
        SecretNotFoundError,
        "restore-secret",
    ),
    (_aws("AccessDeniedException", "not authorized"), ProviderError, "kms:Decrypt"),
    (_aws("DecryptionFailure", "KMS said no"), ProviderError, "kms:Decrypt"),
    (_aws("ThrottlingException", "Rate exceeded"), ProviderError, "throttled"),
    (
        _aws("UnrecognizedClientException", "bad token", 403),
        ProviderError,
        "credentials were rejected",
    ),
    (_aws("InternalServiceError", "oops", 500), ProviderError, "failed internally"),
    (
        _aws("com.amazonaws.secretsmanager#ResourceNotFoundException", "gone"),
        SecretNotFoundError,
        "no secret",
    ),
]


@pytest.mark.parametrize("length", [True, False])
def test_a_compressed_answer_is_refused_without_inflating_it(
    drive: Driver, hostile_server: HostileServer, length: bool
) -> None:
    # A gzip bomb: about 1 KiB on the wire, 64 MiB once inflated.
    hostile_server.route(
        "/secretsmanager/get", HostileServer.gzip_bomb(200, size=64 << 20, length=length)
    )
    provider = LambdaExtensionProvider("x", port=hostile_server.port)
    with pytest.raises(ProviderError, match=r"is compressed \(gzip, gzip\)") as info:
        drive.fetch(provider)
    assert "another program" in str(info.value)
    (hit,) = hostile_server.hits
    assert hit.headers.get("accept-encoding") == "identity"


def test_an_unknown_aws_error_type_is_quoted_cut_short(
    drive: Driver, fake_extension: Callable[..., Any]
) -> None:
    code = "Odd" + "x" * 5000
    extension = fake_extension(scripted=[_aws(code, "odd")])
    with pytest.raises(ProviderError, match="failed with Oddxxx") as info:
        drive.fetch(LambdaExtensionProvider("x", port=extension.port))
    assert code[:80] not in str(info.value)  # at most 80 characters of it
    assert len(str(info.value)) < 400


def test_a_successful_answer_is_not_run_through_redaction(
    drive: Driver,
    fake_extension: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redaction is for texts built from error answers; a 200's body (the key) needs none.
    seen: list[str] = []

    def spy(text: str, secrets: Any = ()) -> str:
        seen.append(text)
        return redact(text, secrets)

    monkeypatch.setattr(_aws_errors, "redact", spy)
    monkeypatch.setattr(_extension_http, "redact", spy)
    put(sm, secret_name, SecretString=KEY_A)
    extension = fake_extension()
    assert_key_is(drive.fetch(LambdaExtensionProvider(secret_name, port=extension.port)), KEY_A)
    assert_no_secret(KEY_A, *seen)


@pytest.mark.parametrize(("answer", "error", "match"), ODD_ANSWERS + AWS_ERRORS)
def test_odd_statuses_and_aws_errors_give_typed_errors(
    drive: Driver,
    fake_extension: Callable[..., Any],
    answer: tuple[int, bytes],
    error: type[Exception],
    match: str,
) -> None:
    extension = fake_extension(scripted=[answer])
    with pytest.raises(error, match=match) as info:
        drive.fetch(LambdaExtensionProvider("x", port=extension.port))
    assert type(info.value) is error


def test_a_400_to_refresh_now_is_asked_again_without_it(
    drive: Driver,
    fake_extension: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    extension = fake_extension(scripted=[(400, b"unknown query parameter refreshNow")])
    provider = LambdaExtensionProvider(secret_name, port=extension.port)
    assert_key_is(drive.refetch(provider, good_value("old")), KEY_A)
    assert [r.params.get("refreshNow") for r in extension.requests] == ["true", None]


def test_refetch_sends_refresh_now_and_keeps_no_state(
    drive: Driver,
    fake_extension: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
) -> None:
    extension = fake_extension()
    put(sm, secret_name, SecretString=KEY_A)
    provider = LambdaExtensionProvider(secret_name, port=extension.port)
    old = drive.fetch(provider)
    put(sm, secret_name, SecretString=KEY_B)
    assert drive.fetch(provider) == old  # the extension's cache still holds it
    extension.scripted.append((502, b"bad gateway"))
    with pytest.raises(ProviderError, match="502"):
        drive.refetch(provider, old)
    assert_key_is(drive.refetch(provider, old), KEY_B)  # nothing to lose between calls
    assert_key_is(drive.fetch(provider), KEY_B)
    assert [r.params.get("refreshNow") for r in extension.requests] == [
        None,
        None,
        "true",
        "true",
        None,
    ]


# ---------------------------------------------------------------------- a hostile stand-in


HOSTILE_ANSWERS: dict[str, list[tuple[int, bytes]]] = {
    "not-ready": [(400, b"not ready to serve traffic")] * 50,
    "unavailable": [(503, b"Serving not enabled")] * 50,
    "400": [(400, b"bad request")],
    "401": [(401, b"unauthorized")],
    "403": [(403, b"Bad Token")],
    "404": [(404, b"not found")],
    "502": [(502, b"bad gateway")],
    "aws-error": [_aws("AccessDeniedException", "not authorized")],
    "aws-type": [_aws("SomethingElse", "odd")],
    "aws-not-found": [_aws("ResourceNotFoundException", "no such secret")],
    "refresh-refused-twice": [(400, b"unknown parameter"), (400, b"still no")],
    "echo-raw": [(500, b"header was {token}, encoded %s")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ANSWERS))
def test_no_message_quotes_the_session_token_a_hostile_answer_echoes(
    drive: Driver,
    fake_extension: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    answers = [
        (status, body.replace(b"%s", quote(SESSION_TOKEN, safe="").encode()))
        for status, body in HOSTILE_ANSWERS[case]
    ]
    extension = fake_extension(hostile=True, scripted=list(answers))
    provider = LambdaExtensionProvider("x", port=extension.port, ready_timeout=0.05)
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(ScalingCredentialsError) as info,
    ):
        drive.refetch(provider, good_value("old"))
    # Every request carried the token, and every answer echoed it: the message keeps
    # what the answer said, with the token masked.
    assert {r.token for r in extension.requests} == {SESSION_TOKEN}
    assert "****" in str(info.value)
    _token_absent(info.value, caplog.text)


def test_a_refused_token_is_never_quoted_even_when_echoed(
    drive: Driver,
    fake_extension: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    other = "IQoJb3JpZ2luAnotherToken/with+slashes=="
    monkeypatch.setenv("AWS_SESSION_TOKEN", other)
    extension = fake_extension(hostile=True)
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(ProviderError, match=r"refused the request \(403") as info,
    ):
        drive.fetch(LambdaExtensionProvider("x", port=extension.port))
    assert "AWS_SESSION_TOKEN" in str(info.value) and "****" in str(info.value)
    _token_absent(info.value, caplog.text, token=other)


# ---------------------------------------------------------------------- a malformed token


# Tokens no HTTP header can carry. Not shaped like an AWS session token, so that only the
# redaction of the token itself (not a generic credential pattern) would hide them.
MALFORMED_TOKENS = {
    "newline": "tok7Qx2LmPzR9vK4wNc/first+line==\nzU8bYe3HsJd6TfGq/second+line==",
    "non-ascii": "tok7Qx2LmPzR9vK4wNc/before+the+\u00e9zU8bYe3HsJd6TfGq/after+it==",
}


@pytest.mark.parametrize("variable", ["AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN"])
@pytest.mark.parametrize("case", sorted(MALFORMED_TOKENS))
def test_a_token_no_header_can_carry_is_refused_unsent_and_unquoted(
    drive: Driver,
    fake_extension: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    case: str,
) -> None:
    token = MALFORMED_TOKENS[case]
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv(variable, token)
    extension = fake_extension()
    provider = LambdaExtensionProvider("x", port=extension.port, ready_timeout=0.05)
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(ProviderError, match=variable) as info,
    ):
        drive.fetch(provider)
    assert "visible ASCII" in str(info.value)
    assert extension.requests == []  # refused before anything was sent
    assert info.value.__cause__ is None and info.value.__context__ is None
    texts = [*error_texts(info.value), caplog.text]
    # The token, and each run of it an escaped or truncated rendering could show.
    for part in (token, quote(token, safe=""), *re.split(r"[^\x21-\x7e]", token)):
        assert_no_secret(part, *texts)


def test_a_token_with_surrounding_whitespace_is_sent_stripped(
    drive: Driver,
    fake_extension: Callable[..., Any],
    sm: Any,
    secret_name: str,
    put: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    put(sm, secret_name, SecretString=KEY_A)
    monkeypatch.setenv("AWS_SESSION_TOKEN", f" {SESSION_TOKEN}\n")
    extension = fake_extension()
    assert_key_is(drive.fetch(LambdaExtensionProvider(secret_name, port=extension.port)), KEY_A)
    assert [r.token for r in extension.requests] == [SESSION_TOKEN]


def test_an_http_error_quoting_the_token_is_redacted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A token not shaped like any credential: only redacting the token itself hides it.
    token = "tok7Qx2LmPzR9vK4wNc/plain+visible+ascii=="
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "orders")  # a refused connection is retried
    http = ExtensionHTTP(port=free_port(), timeout=1.0, ready_timeout=1.0, source="ext:x")
    exchange = Exchange("/secretsmanager/get?secretId=x", "secret", False, ProviderError)
    request = http._request(exchange)
    said = f"header b'{token}' (%s)" % quote(token, safe="")
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert http._settle(httpx.ConnectError(said), exchange, request, last=False) is None
    assert "retrying" in caplog.text
    with pytest.raises(ProviderError, match="nothing answers") as info:
        http._settle(httpx.LocalProtocolError(said), exchange, request, last=True)
    for form in (token, quote(token, safe="")):
        assert_no_secret(form, caplog.text, *error_texts(info.value))
