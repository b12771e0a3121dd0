"""LambdaExtensionProvider: the key from the AWS Parameters and Secrets Lambda Extension.

The extension (a Lambda layer) serves ``GET /secretsmanager/get?secretId=...`` (answered
with GetSecretValue's JSON) and ``GET /systemsmanager/parameters/get?name=...`` (answered
with GetParameter's) on ``localhost:2773`` (``PARAMETERS_SECRETS_EXTENSION_HTTP_PORT``),
and checks the ``X-Aws-Parameters-Secrets-Token`` header against the execution
environment's ``AWS_SESSION_TOKEN``. It caches each value for its own TTL
(``SECRETS_MANAGER_TTL``, ``SSM_PARAMETER_STORE_TTL``: 300 s by default) and has no
invalidation. So after the API rejects a key this provider asks again, for a secret with
``refreshNow=true`` (honoured by the AWS Secrets Manager Agent, which runs as the same kind
of extension; parameters have no such option), and, when the answer is still the rejected
key, reads Secrets Manager or Parameter Store directly through boto3 if it is installed.
Plain fetches never import boto3. The HTTP exchange itself (retries while the extension
starts, the capped read, redaction of the token) is in ``_extension_http``.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    InvalidKeyFormatError,
    Provider,
    SecretNotFoundError,
    SourceURI,
)
from scaling_credentials.toolkit import (
    PerProcess,
    format_query,
    get_logger,
    port_number,
    seconds,
    text_option,
)

from ._aws_errors import PARAMETER_STORE, SECRETS_MANAGER, error_for_code
from ._extension_http import (
    DEFAULT_PORT,
    PORT_ENV,
    TOKEN_HEADER,
    Exchange,
    ExtensionHTTP,
    RefreshNowRefused,
)
from ._pending import (
    CURRENT_STAGE,
    PENDING_STAGE,
    pending_fallback_option,
    pending_or_none,
    prefer_pending,
)
from ._values import key_from_parameter, key_from_secret

__all__ = [
    "DEFAULT_PORT",
    "PARAMETER_PREFIX",
    "PORT_ENV",
    "TOKEN_HEADER",
    "LambdaExtensionProvider",
]

#: ``aws-lambda-extension:ssm:NAME`` reads the Parameter Store parameter NAME.
PARAMETER_PREFIX = "ssm"

logger = get_logger("scaling_credentials.aws")


def _resolve_port(port: int | str | None, environ: Mapping[str, str]) -> int:
    if port is not None:
        return port_number(port, "port")
    return port_number(environ.get(PORT_ENV, "").strip() or DEFAULT_PORT, PORT_ENV)


class LambdaExtensionProvider(Provider):
    """Reads the key through the AWS Parameters and Secrets Lambda Extension.

    * ``secret_id``: the secret's name or ARN, or ``ssm:`` and a Parameter Store
      parameter's name (``ssm:/prod/scaling/api-key``, read with decryption);
      ``field``: a field of a JSON value.
    * ``version_stage`` / ``version_id``: which version of a secret (the extension's
      default is ``AWSCURRENT``); the key's ``version`` is the ``VersionId`` in the answer
      (for a parameter: its ``Version``).
    * ``port``: the extension's port; default ``PARAMETERS_SECRETS_EXTENSION_HTTP_PORT``,
      else 2773.
    * ``pending_fallback``: as for :class:`SecretsManagerProvider`: after a rejected key
      that ``AWSCURRENT`` still holds, the ``AWSPENDING`` key when there is another one
      (asked of the extension with ``versionStage=AWSPENDING``).
    * ``timeout``: seconds for one answer to arrive whole (the extension may call Secrets
      Manager on a cache miss); an answer over 256 KiB is refused unread past that.
    * ``ready_timeout``: right after a cold start the extension may answer "not ready"
      (or not listen yet); such answers are retried with a backoff from 20 ms doubling
      to 0.5 s, waiting at most this many seconds in all.

    Never imports boto3, except for the direct read after a rejected key (see
    :meth:`refetch`).
    """

    def __init__(
        self,
        secret_id: str,
        *,
        field: str | None = None,
        version_stage: str | None = None,
        port: int | None = None,
        version_id: str | None = None,
        timeout: float = 10.0,
        ready_timeout: float = 3.0,
        pending_fallback: bool = False,
    ) -> None:
        self.secret_id: str = text_option(secret_id, "secret_id") or ""
        kind, colon, name = self.secret_id.partition(":")
        #: The parameter's name for an ``ssm:`` source, else ``None`` (a secret).
        self.parameter: str | None = None
        if kind == PARAMETER_PREFIX and colon:
            self.parameter = text_option(name, "the parameter name after ssm:")
        self.field = text_option(field, "field", optional=True)
        self.version_stage = text_option(version_stage, "version_stage", optional=True)
        self.version_id = text_option(version_id, "version_id", optional=True)
        # Parsed before the check below: "false" is off, though a non-empty string.
        self.pending_fallback = pending_fallback_option(
            pending_fallback, version_stage=self.version_stage, version_id=self.version_id
        )
        if self.parameter is not None and (
            self.version_stage or self.version_id or self.pending_fallback
        ):
            raise ConfigurationError(
                "version_stage, version_id and pending_fallback apply to secrets, not to an "
                "ssm: parameter (select a parameter's version as ssm:NAME:VERSION)"
            )
        self.port = _resolve_port(port, os.environ)
        self.timeout = seconds(timeout, "timeout", allow_zero=False)
        self.ready_timeout = seconds(ready_timeout, "ready_timeout")
        self._http = ExtensionHTTP(
            port=self.port,
            timeout=self.timeout,
            ready_timeout=self.ready_timeout,
            source=self.describe(),
        )
        self._direct: PerProcess[Provider | None] = PerProcess(self._make_direct)

    @classmethod
    def from_uri(cls, uri: SourceURI) -> LambdaExtensionProvider:
        """``aws-lambda-extension:SECRET_ID[?field=F&stage=S&version_id=V&port=P&pending_fallback=true]``
        or ``aws-lambda-extension:ssm:NAME[?field=F&port=P]``."""
        path = uri.require_path("a secret name or ARN, or ssm: and a parameter name")
        if path.startswith("ssm:"):  # PARAMETER_PREFIX: a parameter has no stage or version id
            uri.check_params(("field", "port"))
        else:
            uri.check_params(("field", "stage", "version_id", "port", "pending_fallback"))
        port = uri.param("port")
        return cls(
            path,
            field=uri.param("field"),
            version_stage=uri.param("stage"),
            version_id=uri.param("version_id"),
            pending_fallback=uri.flag("pending_fallback"),
            port=port_number(port, "port= in an aws-lambda-extension: source URI")
            if port is not None
            else None,
        )

    @property
    def url(self) -> str:
        """The extension's base URL."""
        return self._http.url

    def describe(self) -> str:
        return self._describe(self.version_stage, pending_fallback=self.pending_fallback)

    def _describe(self, stage: str | None, *, pending_fallback: bool = False) -> str:
        query = format_query(
            [
                ("field", self.field),
                ("stage", stage),
                ("version_id", self.version_id),
                ("port", str(self.port) if self.port != DEFAULT_PORT else None),
                ("pending_fallback", "true" if pending_fallback else None),
            ]
        )
        return f"aws-lambda-extension:{self.secret_id}{query}"

    # ------------------------------------------------------------------ the exchange

    def _exchange(self, refresh_now: bool, stage: str | None = None) -> Exchange:
        if self.parameter is not None:
            query = [("name", self.parameter), ("withDecryption", "true")]
            path = "/systemsmanager/parameters/get?" + urlencode(query, quote_via=quote)
            return Exchange(path, "parameter", False, self._aws_error)
        query = [("secretId", self.secret_id)]
        if self.version_id:
            query.append(("versionId", self.version_id))
        if stage or self.version_stage:
            query.append(("versionStage", stage or self.version_stage or ""))
        if refresh_now:
            query.append(("refreshNow", "true"))
        path = "/secretsmanager/get?" + urlencode(query, quote_via=quote)
        return Exchange(path, "secret", refresh_now, self._aws_error)

    def _aws_error(self, code: str, message: str) -> Exception:
        if self.parameter is not None:
            service, operation, name = PARAMETER_STORE, "GetParameter", self.parameter
        else:
            service, operation, name = SECRETS_MANAGER, "GetSecretValue", self.secret_id
        return error_for_code(
            code,
            message,
            service=service,
            operation=operation,
            provider=self.describe(),
            name=name,
        )

    def _to_key(self, document: dict[str, Any], stage: str | None = None) -> ApiKey:
        source = self._describe(stage) if stage else self.describe()
        if self.parameter is not None:
            return key_from_parameter(document.get("Parameter"), field=self.field, source=source)
        secret_string = document.get("SecretString")
        secret_binary: bytes | None = None
        raw_binary = document.get("SecretBinary")
        if secret_string is not None and not isinstance(secret_string, str):
            raise InvalidKeyFormatError(f"{source}: SecretString is not a string")
        if secret_string is None and raw_binary is not None:
            try:
                # The JSON form of GetSecretValue carries SecretBinary base64-encoded.
                secret_binary = base64.b64decode(str(raw_binary), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidKeyFormatError(
                    f"{source}: SecretBinary in the extension's answer is not base64"
                ) from None
        version = document.get("VersionId")
        return key_from_secret(
            secret_string,
            secret_binary,
            field=self.field,
            source=source,
            version=version if isinstance(version, str) else None,
        )

    # ------------------------------------------------------------------ past the cache

    def _stale(self, key: ApiKey, rejected: ApiKey) -> bool:
        """Whether the extension's ``key`` is no answer to ``rejected``: the same key, or
        an older version of a parameter (its cache outlived two rotations; a parameter's
        versions are increasing numbers, a secret's are not ordered)."""
        if key == rejected:
            return True
        if self.parameter is None or key.version is None or rejected.version is None:
            return False
        older, newer = key.version, rejected.version
        return older.isdigit() and newer.isdigit() and int(older) < int(newer)

    def _make_direct(self) -> Provider | None:
        """The boto3 provider for a direct read, or ``None`` without boto3."""
        import importlib.util  # here, not at import: it is a cold start's cost otherwise

        if importlib.util.find_spec("boto3") is None:
            return None
        if self.parameter is not None:
            from ._parameterstore import ParameterStoreProvider

            return ParameterStoreProvider(self.parameter, field=self.field)
        from ._secretsmanager import SecretsManagerProvider

        return SecretsManagerProvider(
            self.secret_id,
            field=self.field,
            version_stage=self.version_stage or CURRENT_STAGE,
            version_id=self.version_id,
            pending_fallback=self.pending_fallback,
        )

    def _direct_reader(self, key: ApiKey) -> Provider | None:
        """The boto3 provider to ask when the extension's answer ``key`` is stale, or
        ``None`` (and a warning) without boto3."""
        kind = "parameter" if self.parameter is not None else "secret"
        direct = self._direct.get()
        if direct is None:
            ttl = "SSM_PARAMETER_STORE_TTL" if self.parameter is not None else "SECRETS_MANAGER_TTL"
            logger.warning(
                "%s still serves the rejected key %s (or an older one), and boto3 is not "
                "installed for a direct read; the extension's cache refreshes the %s after its "
                "TTL (%s)",
                self.describe(),
                key.masked,
                kind,
                ttl,
            )
            return None
        logger.info(
            "%s still serves the rejected key %s (or an older one); reading the %s directly (%s)",
            self.describe(),
            key.masked,
            kind,
            direct.describe(),
        )
        return direct

    # ------------------------------------------------------------------ fetching

    def fetch(self) -> ApiKey:
        return self._to_key(self._http.get(self._exchange(refresh_now=False)))

    async def afetch(self) -> ApiKey:
        return self._to_key(await self._http.aget(self._exchange(refresh_now=False)))

    def refetch(self, rejected: ApiKey) -> ApiKey:
        """Ask the extension again past its cache: a secret with ``refreshNow=true``
        (honoured by the AWS Secrets Manager Agent), a parameter plainly (no such option
        is documented for parameters). If it still answers with the rejected key (or an
        older parameter version): with ``pending_fallback``, the ``AWSPENDING`` key if
        there is another one; else, when boto3 is installed, a direct read of Secrets
        Manager or Parameter Store. Keeps no state between calls."""
        key = self._to_key(self._fresh())
        if not self._stale(key, rejected):
            return key
        if self.pending_fallback:
            chosen = prefer_pending(
                key,
                rejected,
                pending_or_none(lambda: self._to_key(self._fresh(PENDING_STAGE), PENDING_STAGE)),
            )
            if chosen is not key:
                return chosen
        direct = self._direct_reader(key)
        return direct.refetch(rejected) if direct is not None else key

    async def arefetch(self, rejected: ApiKey) -> ApiKey:
        key = self._to_key(await self._afresh())
        if not self._stale(key, rejected):
            return key
        if self.pending_fallback:
            document: dict[str, Any] | None = None
            try:
                document = await self._afresh(PENDING_STAGE)
            except SecretNotFoundError:
                pass
            pending = (
                pending_or_none(lambda: self._to_key(document, PENDING_STAGE))
                if document is not None
                else None
            )
            chosen = prefer_pending(key, rejected, pending)
            if chosen is not key:
                return chosen
        direct = self._direct_reader(key)
        return await direct.arefetch(rejected) if direct is not None else key

    def _fresh(self, stage: str | None = None) -> dict[str, Any]:
        """The answer to a request with ``refreshNow=true``, or without it when the
        extension refuses that parameter."""
        try:
            return self._http.get(self._exchange(True, stage))
        except RefreshNowRefused:
            pass  # asked again below, outside this block: no exception chained to its errors
        return self._http.get(self._exchange(False, stage))

    async def _afresh(self, stage: str | None = None) -> dict[str, Any]:
        try:
            return await self._http.aget(self._exchange(True, stage))
        except RefreshNowRefused:
            pass
        return await self._http.aget(self._exchange(False, stage))
