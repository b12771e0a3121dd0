"""SecretsManagerProvider: the key from AWS Secrets Manager's GetSecretValue (boto3).

boto3 is imported, and the client created, on the first fetch: importing this module
costs nothing more than scaling_credentials itself. The client is created once per
process (under a lock) and shared by every thread; after ``os.fork()`` the child builds
its own, so no connection is ever shared with the parent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    Provider,
    ProviderError,
    SourceURI,
)
from scaling_credentials.toolkit import (
    PerProcess,
    flag,
    format_query,
    seconds,
    text_option,
    whole_number,
)

from ._aws_errors import error_for_code, short
from ._pending import CURRENT_STAGE, PENDING_STAGE, pending_or_none, prefer_pending
from ._values import key_from_secret

if TYPE_CHECKING:
    import boto3

__all__ = ["DEFAULT_STAGE", "SecretsManagerProvider"]

DEFAULT_STAGE = CURRENT_STAGE
USER_AGENT_EXTRA = "scaling-credentials-aws/0.1.0"


def _region_from_arn(secret_id: str) -> str | None:
    # arn:<partition>:secretsmanager:<region>:<account>:secret:<name>
    parts = secret_id.split(":", 6)
    if len(parts) == 7 and parts[0] == "arn" and parts[2] == "secretsmanager" and parts[3]:
        return parts[3]
    return None


class SecretsManagerProvider(Provider):
    """Reads the key with ``GetSecretValue`` from AWS Secrets Manager at every fetch.

    * ``secret_id``: the secret's name or ARN (an ARN also gives the region).
    * ``field``: read this field of a JSON ``SecretString`` (``{"api_key": "scl_live_..."}``).
    * ``version_stage`` (default ``AWSCURRENT``) or ``version_id``: which version. Each
      fetch asks for the stage afresh, so after a rotation the next fetch gets the new
      ``AWSCURRENT``; the key's ``version`` is the ``VersionId`` read.
    * ``region_name``, ``endpoint_url``, ``session`` (a ``boto3.session.Session``): how to
      build the client; by default boto3's credential chain and region (environment,
      shared config, ECS/EKS container credentials, IRSA, Pod Identity, Lambda role).
    * ``client``: a ready ``secretsmanager`` client to use instead (it is never rebuilt,
      not even after ``fork``).
    * ``pending_fallback``: when the refetch that follows a rejected key finds that same
      key still at ``AWSCURRENT`` and another one at ``AWSPENDING``, return the
      ``AWSPENDING`` one (a rotation whose ``setSecret`` step revoked the old key before
      ``finishSecret`` moved ``AWSCURRENT``). Plain fetches never read ``AWSPENDING``.
    * ``connect_timeout`` / ``read_timeout`` (seconds) and ``max_attempts`` (botocore's
      "standard" retry mode, counting the first try) bound one fetch to roughly
      ``max_attempts * (connect_timeout + read_timeout)`` plus backoff (at most 1 s, then
      2 s, after throttling; tens of milliseconds otherwise): about 27 s by default.

    ``SecretString`` is used as is, ``SecretBinary`` is decoded as UTF-8. Errors:
    :class:`SecretNotFoundError` for a missing or deleted secret (or version);
    :class:`ProviderError` with a hint for access, KMS, credential, region, throttling
    and network problems; :class:`InvalidKeyFormatError` for a value that is no key.
    """

    def __init__(
        self,
        secret_id: str,
        *,
        field: str | None = None,
        version_stage: str | None = DEFAULT_STAGE,
        version_id: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        session: boto3.session.Session | None = None,
        endpoint_url: str | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
        pending_fallback: bool = False,
    ) -> None:
        self.secret_id: str = text_option(secret_id, "secret_id") or ""
        self.field = text_option(field, "field", optional=True)
        self.version_stage = text_option(version_stage, "version_stage", optional=True)
        self.version_id = text_option(version_id, "version_id", optional=True)
        self.region_name = text_option(region_name, "region_name", optional=True)
        self.endpoint_url = text_option(endpoint_url, "endpoint_url", optional=True)
        if client is not None and (session is not None or region_name or endpoint_url):
            raise ConfigurationError(
                "pass either client, or session/region_name/endpoint_url to build one, not both"
            )
        self.connect_timeout = seconds(connect_timeout, "connect_timeout", allow_zero=False)
        self.read_timeout = seconds(read_timeout, "read_timeout", allow_zero=False)
        self.max_attempts = whole_number(max_attempts, "max_attempts", minimum=1)
        self.pending_fallback = flag(pending_fallback, "pending_fallback")
        if self.pending_fallback and (
            self.version_id or self.version_stage not in (None, DEFAULT_STAGE)
        ):
            raise ConfigurationError(
                "pending_fallback applies to a source that reads AWSCURRENT; drop it, or "
                "drop version_stage/version_id"
            )
        self._session = session
        self._given_client = client
        self._client: PerProcess[Any] = PerProcess(self._make_client)

    @classmethod
    def from_uri(cls, uri: SourceURI) -> SecretsManagerProvider:
        """``aws-sm:SECRET_ID[?field=F&region=R&stage=S&version_id=V&pending_fallback=true]``."""
        uri.check_params(("field", "region", "stage", "version_id", "pending_fallback"))
        return cls(
            uri.require_path("a secret name or ARN"),
            field=uri.param("field"),
            version_stage=uri.param("stage") or DEFAULT_STAGE,
            version_id=uri.param("version_id"),
            region_name=uri.param("region"),
            pending_fallback=uri.flag("pending_fallback"),
        )

    def describe(self) -> str:
        return self._describe(self.version_stage, pending_fallback=self.pending_fallback)

    def _describe(self, stage: str | None, *, pending_fallback: bool = False) -> str:
        query = format_query(
            [
                ("field", self.field),
                ("region", self.region_name),
                ("stage", stage if stage != DEFAULT_STAGE else None),
                ("version_id", self.version_id),
                ("pending_fallback", "true" if pending_fallback else None),
            ]
        )
        return f"aws-sm:{self.secret_id}{query}"

    # ------------------------------------------------------------------ fetching

    def request_params(self) -> dict[str, str]:
        """The GetSecretValue parameters this provider sends."""
        params = {"SecretId": self.secret_id}
        if self.version_id:
            params["VersionId"] = self.version_id
            # The default stage is implied; an explicit other stage must match the id.
            if self.version_stage and self.version_stage != DEFAULT_STAGE:
                params["VersionStage"] = self.version_stage
        elif self.version_stage:
            params["VersionStage"] = self.version_stage
        return params

    def fetch(self) -> ApiKey:
        return self._read(self.request_params(), source=self.describe())

    def _read(self, params: dict[str, str], *, source: str) -> ApiKey:
        client = self._get_client()
        try:
            response = client.get_secret_value(**params)
        except Exception as exc:
            raise self._error(exc) from exc
        return key_from_secret(
            response.get("SecretString"),
            response.get("SecretBinary"),
            field=self.field,
            source=source,
            version=response.get("VersionId"),
        )

    def refetch(self, rejected: ApiKey) -> ApiKey:
        """:meth:`fetch`; with ``pending_fallback``, the ``AWSPENDING`` key when
        ``AWSCURRENT`` still holds ``rejected`` and ``AWSPENDING`` holds another key. That
        key's ``version`` is the pending ``VersionId`` and its ``source`` ends in
        ``stage=AWSPENDING``. Keeps no state between calls."""
        key = self.fetch()
        if not self.pending_fallback or key != rejected:
            return key
        pending = pending_or_none(
            lambda: self._read(
                {"SecretId": self.secret_id, "VersionStage": PENDING_STAGE},
                source=self._describe(PENDING_STAGE),
            )
        )
        return prefer_pending(key, rejected, pending)

    def _get_client(self) -> Any:
        if self._given_client is not None:
            return self._given_client
        return self._client.get()

    def _make_client(self) -> Any:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise ConfigurationError(
                "SecretsManagerProvider needs boto3: pip install 'scaling-credentials[aws]'"
            ) from exc
        config = Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            user_agent_extra=USER_AGENT_EXTRA,
        )
        try:
            # A session of our own: boto3's default session is not safe to set up from
            # several threads at once.
            session = self._session if self._session is not None else boto3.session.Session()
            return session.client(
                "secretsmanager",
                region_name=self.region_name or _region_from_arn(self.secret_id),
                endpoint_url=self.endpoint_url,
                config=config,
            )
        except Exception as exc:
            raise self._error(exc) from exc

    # ------------------------------------------------------------------ errors

    def _error(self, exc: BaseException) -> Exception:
        desc = self.describe()
        try:
            from botocore import exceptions as bce
        except ImportError:  # pragma: no cover - a given client without botocore
            bce = None
        if bce is None or not isinstance(exc, (bce.BotoCoreError, bce.ClientError)):
            return ProviderError(
                f"{desc}: GetSecretValue failed with {type(exc).__name__}", provider=desc
            )
        if isinstance(exc, bce.ClientError):
            error = exc.response.get("Error", {})
            retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
            return error_for_code(
                str(error.get("Code") or "UnknownError"),
                str(error.get("Message") or ""),
                provider=desc,
                secret_id=self.secret_id,
                attempts=retries + 1 if isinstance(retries, int) else None,
            )
        if isinstance(exc, bce.NoRegionError):
            return ProviderError(
                f"{desc}: no AWS region is configured; pass region_name=..., add ?region=... "
                "to the aws-sm: URI, set AWS_REGION (or AWS_DEFAULT_REGION), or use the "
                "secret's full ARN",
                provider=desc,
            )
        if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
            return ProviderError(
                f"{desc}: no AWS credentials found; boto3 looks in the environment "
                "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), AWS_PROFILE and ~/.aws, container "
                "credentials (ECS, EKS Pod Identity), web identity (EKS IRSA: "
                "AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE) and the instance or Lambda role",
                provider=desc,
            )
        if isinstance(exc, bce.CredentialRetrievalError):
            return ProviderError(
                f"{desc}: AWS credentials could not be obtained ({short(str(exc))}); check the "
                "role, the web identity token file or the credential process",
                provider=desc,
            )
        if isinstance(exc, bce.ParamValidationError):
            return ConfigurationError(f"{desc}: invalid GetSecretValue parameters: {exc}")
        if isinstance(exc, (bce.ConnectTimeoutError, bce.ReadTimeoutError)):
            return ProviderError(
                f"{desc}: Secrets Manager did not answer in time after {self.max_attempts} "
                f"attempt(s) ({short(str(exc))}); check network access to the endpoint (VPC "
                "endpoint or NAT for private subnets)",
                provider=desc,
            )
        if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionError)):
            return ProviderError(
                f"{desc}: cannot reach Secrets Manager after {self.max_attempts} attempt(s) "
                f"({short(str(exc))}); check the region, endpoint_url and network access "
                "(VPC endpoint com.amazonaws.<region>.secretsmanager or a NAT gateway)",
                provider=desc,
            )
        return ProviderError(f"{desc}: GetSecretValue failed: {short(str(exc))}", provider=desc)
