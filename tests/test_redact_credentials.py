"""``redact_logging()`` and ``redact`` mask the other credentials that travel near the key:
AWS access key IDs, secret access keys and session tokens (as botocore logs them at
DEBUG, checked against moto's server over real sockets), Vault and OpenBao tokens,
AppRole secret IDs and JWTs. Every exit of the library (errors, its loggers, the CLI)
goes through the same ``redact``."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from scaling_credentials import ProviderError, redact_logging
from scaling_credentials._redact import KeyRedactingFilter
from scaling_credentials.testing.provider_suite import assert_no_secret
from scaling_credentials.toolkit import redact

ACCESS_KEY_ID = "AKIAHOSTILETEST0X9ZQ"
SECRET_ACCESS_KEY = "hostileSecretAccessKey/0123456789+ABCDEFG"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJrHOSTILEsessionTOKEN/0123456789+abcdefABCDEF=="
VAULT_TOKENS = (
    "hvs.CAESIHOSTILEservice0123456789abcdefGHIJ",
    "hvb.AAAAAQHOSTILEbatch0123456789abcdefGHIJ",
    "s.HOSTILElegacy0123456789ab",
)
JWT = (
    "eyJhbGciOiJSUzI1NiIsImtpZCI6IkhPU1RJTEUifQ"
    ".eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJlSE9TVElMRQ"
)
SECRET_ID = "9f0c3b1e-HOSTILE-secret-id-0123"


@pytest.fixture
def moto_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[str]:
    """A moto server on 127.0.0.1 at a free port, with an AWS environment that cannot
    reach anything else."""
    from moto.server import ThreadedMotoServer

    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """botocore at DEBUG into a handler on the root logger; every redacting filter the
    test installs is removed afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    botocore = logging.getLogger("botocore")
    saved = botocore.level
    botocore.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        botocore.setLevel(saved)
        filterers: list[Any] = [root, *root.handlers, logging.lastResort]
        for name in ("boto3", "botocore", "hvac", "httpcore", "httpx", "requests", "urllib3"):
            filterers += [logging.getLogger(name), *logging.getLogger(name).handlers]
        for filterer in filterers:
            for existing in list(getattr(filterer, "filters", [])):
                if isinstance(existing, KeyRedactingFilter):
                    filterer.removeFilter(existing)


def aws_calls(moto_url: str) -> dict[str, str]:
    """STS GetSessionToken and Secrets Manager calls with our credentials; what STS
    answered (credentials of its own, which botocore logs in the response body)."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        aws_session_token=SESSION_TOKEN,
        region_name="us-east-1",
    )
    answered = session.client("sts", endpoint_url=moto_url).get_session_token()["Credentials"]
    secrets = session.client("secretsmanager", endpoint_url=moto_url)
    name = f"scaling/{uuid.uuid4().hex}"
    secrets.create_secret(Name=name, SecretString="scl_live_redactAWS0123456789abcd")
    secrets.get_secret_value(SecretId=name)
    return {k: str(answered[k]) for k in ("AccessKeyId", "SecretAccessKey", "SessionToken")}


def test_botocore_debug_logs_aws_credentials_unless_redact_logging_is_on(
    moto_url: str, debug_log: io.StringIO
) -> None:
    answered = aws_calls(moto_url)
    text = debug_log.getvalue()
    # The premise: botocore logs the session token, the access key ID and what STS sent.
    for secret in (SESSION_TOKEN, ACCESS_KEY_ID, *answered.values()):
        assert secret in text, "botocore no longer logs this: the premise of the test changed"

    debug_log.seek(0)
    debug_log.truncate()
    redact_logging()
    answered = aws_calls(moto_url)
    text = debug_log.getvalue()
    for secret in (SESSION_TOKEN, ACCESS_KEY_ID, SECRET_ACCESS_KEY, *answered.values()):
        assert_no_secret(secret, text)
    assert "x-amz-security-token:****" in text  # the canonical request, still logged
    assert "AKIA****" in text  # the kind of access key stays visible
    assert "scl_live_****abcd" in text


@pytest.mark.parametrize(
    "line",
    [
        # botocore: request headers, canonical request, query strings, STS answers.
        f"headers={{'X-Amz-Security-Token': b'{SESSION_TOKEN}', 'X-Amz-Date': b'20260101'}}",
        f"x-amz-security-token:{SESSION_TOKEN}",
        f"https://s3.amazonaws.com/b/k?X-Amz-Security-Token={SESSION_TOKEN.replace('/', '%2F')}",
        f"<SessionToken>{SESSION_TOKEN}</SessionToken>"
        f"<SecretAccessKey>{SECRET_ACCESS_KEY}</SecretAccessKey>",
        f'{{"AccessKeyId": "{ACCESS_KEY_ID}", "SecretAccessKey": "{SECRET_ACCESS_KEY}"}}',
        f"aws_secret_access_key = {SECRET_ACCESS_KEY}\naws_session_token = {SESSION_TOKEN}",
        f"Authorization: AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20260101/us-east-1/sm",
        # The Lambda extension's header carries the session token.
        f"X-Aws-Parameters-Secrets-Token: {SESSION_TOKEN}",
        # Vault and OpenBao: tokens in any position, login answers, AppRole, JWT.
        *(f"X-Vault-Token: {token}" for token in VAULT_TOKENS),
        *(f"token {token} expired" for token in VAULT_TOKENS),
        f'{{"auth": {{"client_token": "{VAULT_TOKENS[0]}", "accessor": "a"}}}}',
        f'{{"role_id": "r", "secret_id": "{SECRET_ID}"}}',
        f"jwt={JWT}",
    ],
)
def test_other_credentials_are_masked_wherever_they_are(line: str) -> None:
    secrets = (ACCESS_KEY_ID, SECRET_ACCESS_KEY, SESSION_TOKEN, *VAULT_TOKENS, JWT, SECRET_ID)
    secrets += (SESSION_TOKEN.replace("/", "%2F"),)
    masked = redact(line)
    for secret in secrets:
        assert_no_secret(secret, masked)
    assert redact(masked) == masked  # idempotent
    record = logging.LogRecord("botocore.endpoint", logging.DEBUG, __file__, 1, "%s", (line,), None)
    KeyRedactingFilter().filter(record)
    assert record.getMessage() == masked
    error = ProviderError(line, provider=line)  # the library's own errors mask as built
    assert str(error) == masked and error.provider == masked


@pytest.mark.parametrize(
    "line",
    [
        "fetching the key from vault:secret/scaling failed (ProviderError), attempt 2",
        "AWS_SESSION_TOKEN is not set: the extension needs it",
        "X-Aws-Parameters-Secrets-Token header missing",
        "process.stdout is a pipe; requests.Session keeps connections",
        "signature: bad",
        "region us-east-1 ASIA-Pacific",
    ],
)
def test_ordinary_text_is_left_alone(line: str) -> None:
    assert redact(line) == line
