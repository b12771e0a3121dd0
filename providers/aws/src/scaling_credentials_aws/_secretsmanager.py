"""SecretsManagerProvider: the key from AWS Secrets Manager's GetSecretValue (boto3).

The client (built on first use, once per process) and the error mapping are shared with
ParameterStoreProvider (``_boto``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scaling_credentials import ApiKey, ConfigurationError, SourceURI
from scaling_credentials.toolkit import decode_text, format_query, json_with_field, text_option

from ._aws_errors import SECRETS_MANAGER
from ._boto import BotoProvider
from ._pending import (
    CURRENT_STAGE,
    PENDING_STAGE,
    pending_fallback_option,
    pending_or_none,
    prefer_pending,
)
from ._values import key_from_secret

if TYPE_CHECKING:
    import boto3

__all__ = ["DEFAULT_STAGE", "SecretsManagerProvider"]

DEFAULT_STAGE = CURRENT_STAGE


class SecretsManagerProvider(BotoProvider):
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

    service = SECRETS_MANAGER

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
        super().__init__(
            self.secret_id,
            region_name=region_name,
            client=client,
            session=session,
            endpoint_url=endpoint_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
        )
        self.pending_fallback = pending_fallback_option(
            pending_fallback, version_stage=self.version_stage, version_id=self.version_id
        )

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
        response = self.call("GetSecretValue", **params)
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

    # ------------------------------------------------------------------ store

    def _write(self, key: ApiKey) -> str:
        """``PutSecretValue``: a new version, which Secrets Manager labels ``AWSCURRENT``
        (the previous one becomes ``AWSPREVIOUS``). With ``field``, the current JSON
        value's other fields are kept (and a ``SecretBinary`` secret stays binary).
        Returns the new ``VersionId``."""
        if self.version_id or self.version_stage not in (None, DEFAULT_STAGE):
            raise ConfigurationError(
                f"{self.describe()}: store writes a new AWSCURRENT version, which this source "
                "does not read (it names a stage or a version id); store through a source "
                "without stage= or version_id="
            )
        params: dict[str, Any] = {"SecretId": self.secret_id}
        if self.field is None:
            params["SecretString"] = key.reveal()
        else:
            current = self.call(
                "GetSecretValue", SecretId=self.secret_id, VersionStage=DEFAULT_STAGE
            )
            source = self.describe()
            if current.get("SecretString") is not None:
                text = json_with_field(
                    current["SecretString"], self.field, key.reveal(), name=source
                )
                params["SecretString"] = text
            else:
                binary = decode_text(
                    current.get("SecretBinary") or b"", name=f"{source}: SecretBinary"
                )
                text = json_with_field(binary, self.field, key.reveal(), name=source)
                params["SecretBinary"] = text.encode()
        answer = self.call("PutSecretValue", **params)
        return str(answer["VersionId"])
