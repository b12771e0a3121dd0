"""Secrets Manager error codes -> the contract's error types, with hints.

Shared by the boto3 provider (codes from botocore's ``ClientError``) and the Lambda
extension provider (codes from the extension's JSON error bodies). It never imports
botocore: the extension provider must not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from scaling_credentials import ProviderError, SecretNotFoundError
from scaling_credentials.toolkit import redact

__all__ = ["error_for_code", "short"]

_THROTTLING = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
    }
)
_BAD_CREDENTIALS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidSignatureException",
        "IncompleteSignature",
        "SignatureDoesNotMatch",
        "MissingAuthenticationToken",
    }
)
_ACCESS_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "KMSAccessDeniedException"})


def short(text: str, limit: int = 300, *, secrets: Iterable[str] = ()) -> str:
    """``text`` as one line of at most ``limit`` characters, redacted: keys masked and
    each of ``secrets`` (a credential the text may echo) replaced, before it is cut.

    AWS error messages hold no key, but a proxy's page or a hostile local server might.
    """
    line = redact(" ".join(text.split()), secrets)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def error_for_code(
    code: str,
    message: str,
    *,
    provider: str,
    secret_id: str,
    attempts: int | None = None,
) -> ProviderError:
    """The error to raise for a Secrets Manager error ``code`` (``message`` is AWS's own
    text, which names ARNs and actions but never a secret value)."""
    code = code.rpartition("#")[2]  # "com.amazonaws...#ResourceNotFoundException"
    said = f" (AWS said: {short(message)})" if message else ""
    tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
    lowered = message.lower()
    if code == "ResourceNotFoundException":
        return SecretNotFoundError(
            f"{provider}: Secrets Manager has no secret {secret_id!r} (or no version with the "
            f"requested stage or id) in this account and region{said}; check the name or ARN, "
            "the region, and the version stage or id",
            provider=provider,
        )
    if code == "InvalidRequestException" and ("deleted" in lowered or "deletion" in lowered):
        return SecretNotFoundError(
            f"{provider}: secret {secret_id!r} is marked for deletion{said}; restore it with "
            "`aws secretsmanager restore-secret` or point the source at the new secret",
            provider=provider,
        )
    if code in _ACCESS_DENIED:
        return ProviderError(
            f"{provider}: access denied reading secret {secret_id!r}{said}; the role needs "
            "secretsmanager:GetSecretValue on the secret's ARN, and kms:Decrypt on its KMS key "
            "when the secret is encrypted with a customer-managed key (check also the secret's "
            "resource policy, the key policy and any SCP or permission boundary)",
            provider=provider,
        )
    if code == "DecryptionFailure":
        return ProviderError(
            f"{provider}: Secrets Manager could not decrypt secret {secret_id!r} with its KMS "
            f"key{said}; grant kms:Decrypt on that key to this role (in the key policy or IAM) "
            "and check that the key is enabled and not pending deletion",
            provider=provider,
        )
    if code in _THROTTLING:
        return ProviderError(
            f"{provider}: Secrets Manager throttled GetSecretValue for {secret_id!r}{tries}"
            f"{said}; the cache retries with backoff, and a longer ttl or fewer processes "
            "fetching the key lower the request rate",
            provider=provider,
        )
    if code in _BAD_CREDENTIALS:
        return ProviderError(
            f"{provider}: the AWS credentials were rejected ({code}){said}; refresh them "
            "(expired session or SSO login?) or check which credentials the default chain "
            "picks up (AWS_PROFILE, environment, IRSA/Pod Identity, instance or Lambda role)",
            provider=provider,
        )
    if code in ("InternalServiceError", "InternalFailure", "ServiceUnavailable"):
        return ProviderError(
            f"{provider}: Secrets Manager failed internally ({code}){tries}{said}; the "
            "cache retries with backoff",
            provider=provider,
        )
    return ProviderError(
        f"{provider}: GetSecretValue for {secret_id!r} failed with {code}{tries}{said}",
        provider=provider,
    )
