"""``redact`` (and so ``redact_logging()``'s filter and every error of the library) masks
the other credentials that travel near the key: AWS access key IDs, secret access keys
and session tokens, Vault and OpenBao tokens, AppRole secret IDs and JWTs. botocore's own
DEBUG logs against moto: providers/aws/tests/test_redact_botocore.py."""

from __future__ import annotations

import logging

import pytest

from scaling_credentials import ProviderError
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
