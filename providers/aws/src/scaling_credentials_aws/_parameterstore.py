"""ParameterStoreProvider: the key from AWS Systems Manager Parameter Store's GetParameter
(boto3), decrypted.

The client (built on first use, once per process) and the error mapping are shared with
SecretsManagerProvider (``_boto``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    SecretNotFoundError,
    SourceURI,
)
from scaling_credentials.toolkit import format_query, json_with_field, text_option

from ._aws_errors import PARAMETER_STORE
from ._boto import BotoProvider
from ._values import key_from_parameter

if TYPE_CHECKING:
    import boto3

__all__ = ["ParameterStoreProvider"]

# DescribeParameters may answer a page with no match and a token for the next one.
MAX_PAGES = 50


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
        return key_from_parameter(answer.get("Parameter"), field=self.field, source=source)

    # ------------------------------------------------------------------ store

    def _write(self, key: ApiKey) -> str:
        """``PutParameter`` with ``Overwrite=True``: a new version of the parameter, with
        its type, KMS key and tier kept (read with ``DescribeParameters``: left out, the
        KMS key would fall back to the account's default). With ``field``, the current
        JSON value's other fields are kept. Returns the new version number (a str)."""
        name = self._writable_name()
        source = self.describe()
        found = self._metadata(name)
        value = key.reveal()
        if self.field is not None:
            current = self.call("GetParameter", Name=name, WithDecryption=True)
            text = (current.get("Parameter") or {}).get("Value") or ""
            value = json_with_field(text, self.field, value, name=source)
        request: dict[str, Any] = {
            "Name": name,
            "Value": value,
            "Type": found.get("Type") or "SecureString",
            "Overwrite": True,
        }
        if request["Type"] == "SecureString" and found.get("KeyId"):
            request["KeyId"] = found["KeyId"]
        if found.get("Tier") in ("Standard", "Advanced"):
            request["Tier"] = found["Tier"]
        answer = self.call("PutParameter", **request)
        return str(answer["Version"])

    def _writable_name(self) -> str:
        """The name ``PutParameter`` takes: no ``:VERSION``/``:LABEL`` selector (the
        source would not read what is written), and a name rather than an ARN."""
        name = self.name
        if name.startswith("arn:"):
            resource = name.split(":", 5)[-1]  # parameter/prod/x[:3] or parameter/simple
            rest = resource.removeprefix("parameter/")
            name = "/" + rest if "/" in rest else rest
        if ":" in name:
            raise ConfigurationError(
                f"{self.describe()}: this source reads a pinned version or label "
                f"({name.rpartition(':')[2]!r}); store writes a new version, so store "
                "through a source that names the parameter without the selector"
            )
        return name

    def _metadata(self, name: str) -> dict[str, Any]:
        """The parameter's ``DescribeParameters`` entry (type, KMS key, tier)."""
        request: dict[str, Any] = {
            "ParameterFilters": [{"Key": "Name", "Option": "Equals", "Values": [name]}]
        }
        for _ in range(MAX_PAGES):
            answer = self.call("DescribeParameters", **request)
            for entry in answer.get("Parameters") or []:
                if entry.get("Name") == name:
                    return dict(entry)
            token = answer.get("NextToken")
            if not token:
                break
            request["NextToken"] = token
        raise SecretNotFoundError(
            f"{self.describe()}: Parameter Store has no parameter {name!r} in this account and "
            "region; storing adds a version to an existing parameter: create it first "
            f"(`{self.service.create}`)",
            provider=self.describe(),
        )
