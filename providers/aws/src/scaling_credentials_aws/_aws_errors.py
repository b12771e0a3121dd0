"""AWS error codes -> the contract's error types, with hints, for Secrets Manager and
Parameter Store alike.

Shared by the boto3 providers (codes from botocore's ``ClientError``) and the Lambda
extension provider (codes from the extension's JSON error bodies). It never imports
botocore: the extension provider must not pay for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from scaling_credentials import ProviderError, SecretNotFoundError
from scaling_credentials.toolkit import redact

__all__ = [
    "PARAMETER_STORE",
    "SECRETS_MANAGER",
    "WRITES",
    "Service",
    "error_for_code",
    "short",
]


class Service:
    """What the messages need to know about an AWS service. (A plain class rather than
    a NamedTuple, which costs ~0.2 ms to create: a Lambda cold start pays for it.)"""

    __slots__ = ("client", "create", "kind", "kms", "not_found", "scheme", "title", "unscoped")

    def __init__(
        self,
        *,
        client: str,
        title: str,
        kind: str,
        scheme: str,
        not_found: frozenset[str],
        kms: dict[str, str],
        create: str,
        unscoped: frozenset[str] = frozenset(),
    ) -> None:
        #: boto3's client name, the ARN's service part and the IAM action prefix.
        self.client = client
        #: The service's name in messages.
        self.title = title
        #: What it holds: ``secret`` or ``parameter``.
        self.kind = kind
        #: The scheme of its source URI.
        self.scheme = scheme
        #: Error codes meaning "no such secret / parameter (or version)".
        self.not_found = not_found
        #: The KMS permissions each operation needs with a customer-managed key.
        self.kms = kms
        #: How to create one, for a store into a secret or parameter that does not exist.
        self.create = create
        #: Operations whose IAM action cannot be limited to one resource.
        self.unscoped = unscoped


SECRETS_MANAGER = Service(
    client="secretsmanager",
    title="Secrets Manager",
    kind="secret",
    scheme="aws-sm",
    not_found=frozenset({"ResourceNotFoundException"}),
    kms={
        "GetSecretValue": "kms:Decrypt",
        "PutSecretValue": "kms:GenerateDataKey and kms:Decrypt",
    },
    create="aws secretsmanager create-secret --name NAME --secret-string ...",
)
PARAMETER_STORE = Service(
    client="ssm",
    title="Parameter Store",
    kind="parameter",
    scheme="aws-ssm",
    not_found=frozenset({"ParameterNotFound", "ParameterVersionNotFound"}),
    kms={
        "GetParameter": "kms:Decrypt",
        "PutParameter": "kms:Encrypt (kms:GenerateDataKey for an advanced parameter)",
    },
    create="aws ssm put-parameter --name NAME --type SecureString --value ...",
    unscoped=frozenset({"DescribeParameters"}),
)

#: The operations through which ``store`` writes.
WRITES = frozenset({"PutSecretValue", "PutParameter"})

_THROTTLING = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ProvisionedThroughputExceededException",
        "TooManyUpdates",
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
_KMS_FAILURES = frozenset({"DecryptionFailure", "EncryptionFailure", "InvalidKeyId"})
_INTERNAL = frozenset(
    {"InternalServiceError", "InternalServerError", "InternalFailure", "ServiceUnavailable"}
)


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
    service: Service,
    operation: str,
    provider: str,
    name: str,
    attempts: int | None = None,
) -> ProviderError:
    """The error to raise for the AWS error ``code`` that ``operation`` (``GetSecretValue``,
    ``PutParameter``, ...) met on the secret or parameter ``name`` (``message`` is AWS's
    own text, which names ARNs and actions but never a secret value)."""
    code = code.rpartition("#")[2]  # "com.amazonaws...#ResourceNotFoundException"
    said = f" (AWS said: {short(message)})" if message else ""
    tries = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
    lowered = message.lower()
    what = f"{service.kind} {name!r}"
    action = f"{service.client}:{operation}"
    kms = service.kms.get(operation)
    if code in service.not_found:
        selector = (
            "the version stage or id" if service is SECRETS_MANAGER else "any :version or :label"
        )
        create = (
            f"; storing adds a version to an existing {service.kind}: create it first "
            f"(`{service.create}`)"
            if operation in WRITES
            else ""
        )
        return SecretNotFoundError(
            f"{provider}: {service.title} has no {what} (or no such version) in this account "
            f"and region{said}; check the name or ARN, the region, and {selector}{create}",
            provider=provider,
        )
    if code == "InvalidRequestException" and ("deleted" in lowered or "deletion" in lowered):
        return SecretNotFoundError(
            f"{provider}: {what} is marked for deletion{said}; restore it with "
            "`aws secretsmanager restore-secret` or point the source at the new secret",
            provider=provider,
        )
    if code in _ACCESS_DENIED:
        grant = f" and {kms} on its KMS key when that is a customer-managed key" if kms else ""
        policies = "the secret's resource policy, " if service is SECRETS_MANAGER else ""
        resource = (
            '"Resource": "*" (it cannot be limited to one resource; it reads names and types, '
            "never values)"
            if operation in service.unscoped
            else f"the {service.kind}'s ARN"
        )
        return ProviderError(
            f"{provider}: access denied: {operation} on {what}{said}; the role needs {action} "
            f"on {resource}{grant} (check also {policies}the key policy and any SCP or "
            "permission boundary)",
            provider=provider,
        )
    if code in _KMS_FAILURES:
        grant = kms or "kms:Decrypt"
        return ProviderError(
            f"{provider}: {service.title} could not use the KMS key of {what} ({code}){said}; "
            f"grant {grant} on that key to this role (in the key policy or IAM) and check "
            "that the key exists, is enabled and is not pending deletion",
            provider=provider,
        )
    if code in _THROTTLING:
        return ProviderError(
            f"{provider}: {service.title} throttled {operation} for {name!r}{tries}{said}; "
            "the cache retries with backoff, and a longer ttl or fewer processes fetching the "
            "key lower the request rate",
            provider=provider,
        )
    if code in _BAD_CREDENTIALS:
        return ProviderError(
            f"{provider}: the AWS credentials were rejected ({code}){said}; refresh them "
            "(expired session or SSO login?) or check which credentials the default chain "
            "picks up (AWS_PROFILE, environment, IRSA/Pod Identity, instance or Lambda role)",
            provider=provider,
        )
    if code in _INTERNAL:
        return ProviderError(
            f"{provider}: {service.title} failed internally ({code}){tries}{said}; the "
            "cache retries with backoff",
            provider=provider,
        )
    # An unknown code is quoted cut short: the extension's body (any program on its port)
    # may hold anything there.
    return ProviderError(
        f"{provider}: {operation} for {name!r} failed with {short(code, 80)}{tries}{said}",
        provider=provider,
    )
