"""ParameterStoreProvider: the key from AWS Systems Manager Parameter Store's GetParameter
(boto3), decrypted.

The client (built on first use, once per process) and the error mapping are shared with
SecretsManagerProvider (``_boto``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scaling_credentials import ApiKey, InvalidKeyFormatError, SourceURI
from scaling_credentials.toolkit import format_query, text_option

from ._aws_errors import PARAMETER_STORE
from ._boto import BotoProvider
from ._values import key_from_text

if TYPE_CHECKING:
    import boto3

__all__ = ["ParameterStoreProvider"]


class ParameterStoreProvider(BotoProvider):
    """Reads the key with ``GetParameter`` (``WithDecryption=True``) from AWS Systems
    Manager Parameter Store at every fetch.

    * ``name``: the parameter's name (``/prod/scaling/api-key``) or ARN (which also gives
      the region); ``NAME:VERSION`` or ``NAME:LABEL`` pins a version.
    * ``field``: read this field of a JSON value (``{"api_key": "scl_live_..."}``).
    * ``region_name``, ``endpoint_url``, ``session``, ``client``, ``connect_timeout``,
      ``read_timeout``, ``max_attempts``: as for :class:`SecretsManagerProvider`.

    A ``SecureString`` is decrypted with its KMS key (the role needs ``kms:Decrypt`` on a
    customer-managed key); a ``String`` is read as it is. The key's ``version`` is the
    parameter's version number (a str). Errors: :class:`SecretNotFoundError` for a
    missing parameter or version; :class:`ProviderError` with a hint for access, KMS,
    credential, region, throttling and network problems; :class:`InvalidKeyFormatError`
    for a value that is no key.
    """

    service = PARAMETER_STORE

    def __init__(
        self,
        name: str,
        *,
        field: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        session: boto3.session.Session | None = None,
        endpoint_url: str | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 5.0,
        max_attempts: int = 3,
    ) -> None:
        self.name: str = text_option(name, "name") or ""
        self.field = text_option(field, "field", optional=True)
        super().__init__(
            self.name,
            region_name=region_name,
            client=client,
            session=session,
            endpoint_url=endpoint_url,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_attempts=max_attempts,
        )

    @classmethod
    def from_uri(cls, uri: SourceURI) -> ParameterStoreProvider:
        """``aws-ssm:NAME[?field=F&region=R]``."""
        uri.check_params(("field", "region"))
        return cls(
            uri.require_path("a parameter name or ARN"),
            field=uri.param("field"),
            region_name=uri.param("region"),
        )

    def describe(self) -> str:
        query = format_query([("field", self.field), ("region", self.region_name)])
        return f"aws-ssm:{self.name}{query}"

    def fetch(self) -> ApiKey:
        source = self.describe()
        answer = self.call("GetParameter", Name=self.name, WithDecryption=True)
        parameter = answer.get("Parameter") or {}
        value = parameter.get("Value")
        if not isinstance(value, str):
            raise InvalidKeyFormatError(f"{source}: the parameter has no value")
        version = parameter.get("Version")
        return key_from_text(
            value,
            field=self.field,
            source=source,
            version=str(version) if version is not None else None,
        )
