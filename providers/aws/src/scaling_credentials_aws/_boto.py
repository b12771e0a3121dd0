"""What the boto3 providers share: a client built on first use, once per process, with
bounded timeouts and retries; calls through it; botocore's exceptions as the contract's
errors with hints; ``store``, one write at a time per process.

boto3 is imported on the first call, never at import time: importing this module costs
nothing more than scaling_credentials itself. The client is shared by every thread of a
process; after ``os.fork()`` the child builds its own (:class:`PerProcess`), so no
connection is ever shared with the parent.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any, ClassVar

from scaling_credentials import ApiKey, ConfigurationError, Provider, ProviderError
from scaling_credentials.toolkit import (
    PerProcess,
    get_logger,
    seconds,
    text_option,
    whole_number,
)

from ._aws_errors import Service, error_for_code, short

if TYPE_CHECKING:
    import boto3

__all__ = ["USER_AGENT_EXTRA", "BotoProvider"]

USER_AGENT_EXTRA = "scaling-credentials-aws/0.1.0"

logger = get_logger("scaling_credentials.aws")


def _method(operation: str) -> str:
    """boto3's method name for an API operation: ``GetSecretValue`` -> ``get_secret_value``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


class BotoProvider(Provider):
    """A provider that reads (and writes) through one boto3 client of :attr:`service`.

    Subclasses set :attr:`service`, call ``super().__init__`` with the name of what they
    read (a secret ID, a parameter name) and the client options, call :meth:`call`, and
    implement :meth:`_write` for :meth:`store`.
    """

    service: ClassVar[Service]
    can_store: ClassVar[bool] = True

    def __init__(
        self,
        name: str,
        *,
        region_name: str | None,
        client: Any,
        session: boto3.session.Session | None,
        endpoint_url: str | None,
        connect_timeout: float,
        read_timeout: float,
        max_attempts: int,
    ) -> None:
        self.region_name = text_option(region_name, "region_name", optional=True)
        self.endpoint_url = text_option(endpoint_url, "endpoint_url", optional=True)
        if client is not None and (session is not None or region_name or endpoint_url):
            raise ConfigurationError(
                "pass either client, or session/region_name/endpoint_url to build one, not both"
            )
        self.connect_timeout = seconds(connect_timeout, "connect_timeout", allow_zero=False)
        self.read_timeout = seconds(read_timeout, "read_timeout", allow_zero=False)
        self.max_attempts = whole_number(max_attempts, "max_attempts", minimum=1)
        self._name = name
        self._session = session
        self._given_client = client
        self._client: PerProcess[Any] = PerProcess(self._make_client)
        # One store at a time in a process: a store into a JSON field reads, then writes.
        self._store_lock: PerProcess[threading.Lock] = PerProcess(threading.Lock)

    def store(self, key: ApiKey) -> str | None:
        """Write ``key`` as the new current value and return the new version's
        identifier; see the subclass for what is kept. Stores through one provider run
        one at a time in a process; a fetch meanwhile returns the old key or the new."""
        if not isinstance(key, ApiKey):
            raise ConfigurationError(
                f"{type(self).__name__}.store takes an ApiKey, got {type(key).__name__}"
            )
        with self._store_lock.get():
            version = self._write(key)
        logger.info("%s: stored %s as version %s", self.describe(), key.masked, version)
        return version

    def _write(self, key: ApiKey) -> str:
        raise NotImplementedError

    def call(self, operation: str, **params: Any) -> Any:
        """``operation`` (``GetSecretValue``, ``PutParameter``, ...) with ``params``; its
        answer, or the contract's error for what went wrong (botocore's chained)."""
        client = self._get_client()
        try:
            return getattr(client, _method(operation))(**params)
        except Exception as exc:
            raise self._error(exc, operation) from exc

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
                f"{type(self).__name__} needs boto3: pip install 'scaling-credentials[aws]'"
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
                self.service.client,
                region_name=self.region_name or self._region_from_arn(),
                endpoint_url=self.endpoint_url,
                config=config,
            )
        except Exception as exc:
            raise self._error(exc, "CreateClient") from exc

    def _region_from_arn(self) -> str | None:
        # arn:<partition>:<service>:<region>:<account>:<resource>
        parts = self._name.split(":", 5)
        if len(parts) == 6 and parts[0] == "arn" and parts[2] == self.service.client:
            return parts[3] or None
        return None

    def _error(self, exc: BaseException, operation: str) -> Exception:
        desc = self.describe()
        title = self.service.title
        try:
            from botocore import exceptions as bce
        except ImportError:  # pragma: no cover - a given client without botocore
            bce = None
        if bce is None or not isinstance(exc, (bce.BotoCoreError, bce.ClientError)):
            return ProviderError(
                f"{desc}: {operation} failed with {type(exc).__name__}", provider=desc
            )
        if isinstance(exc, bce.ClientError):
            error = exc.response.get("Error", {})
            retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts")
            return error_for_code(
                str(error.get("Code") or "UnknownError"),
                str(error.get("Message") or ""),
                service=self.service,
                operation=operation,
                provider=desc,
                name=self._name,
                attempts=retries + 1 if isinstance(retries, int) else None,
            )
        if isinstance(exc, bce.NoRegionError):
            return ProviderError(
                f"{desc}: no AWS region is configured; pass region_name=..., add ?region=... "
                f"to the {self.service.scheme}: URI, set AWS_REGION (or AWS_DEFAULT_REGION), "
                f"or use the {self.service.kind}'s full ARN",
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
            return ConfigurationError(f"{desc}: invalid {operation} parameters: {short(str(exc))}")
        if isinstance(exc, (bce.ConnectTimeoutError, bce.ReadTimeoutError)):
            what = f"{title} did not answer in time"
        elif isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionError)):
            what = f"cannot reach {title}"
        else:
            return ProviderError(f"{desc}: {operation} failed: {short(str(exc))}", provider=desc)
        return ProviderError(
            f"{desc}: {what} after {self.max_attempts} attempt(s) ({short(str(exc))}); check "
            "the region, endpoint_url "
            f"and network access (VPC endpoint com.amazonaws.<region>.{self.service.client} "
            "or a NAT gateway)",
            provider=desc,
        )
