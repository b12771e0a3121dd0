"""LambdaExtensionProvider: the key from the AWS Parameters and Secrets Lambda Extension.

The extension (a Lambda layer) serves ``GET /secretsmanager/get?secretId=...`` on
``localhost:2773`` (``PARAMETERS_SECRETS_EXTENSION_HTTP_PORT``), checks the
``X-Aws-Parameters-Secrets-Token`` header against the execution environment's
``AWS_SESSION_TOKEN``, and answers with GetSecretValue's JSON. It caches each secret for
its own TTL (``SECRETS_MANAGER_TTL``, 300 s by default) and has no invalidation, so after
the API rejects a key this provider asks again with ``refreshNow=true`` (honoured by the
AWS Secrets Manager Agent, which runs as the same kind of extension) and, when the
answer is still the rejected key, reads Secrets Manager directly through boto3 if it is
installed. Plain fetches never import boto3. The HTTP exchange itself (retries while the
extension starts, the capped read, redaction of the token) is in ``_extension_http``.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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
    flag,
    format_query,
    get_logger,
    port_number,
    seconds,
    text_option,
)

from ._aws_errors import error_for_code
from ._extension_http import (
    DEFAULT_PORT,
    PORT_ENV,
    TOKEN_HEADER,
    Exchange,
    ExtensionHTTP,
    RefreshNowRefused,
)
from ._pending import CURRENT_STAGE, PENDING_STAGE, pending_or_none, prefer_pending
from ._values import key_from_secret

__all__ = ["DEFAULT_PORT", "PORT_ENV", "TOKEN_HEADER", "LambdaExtensionProvider"]

logger = get_logger("scaling_credentials.aws")


def _resolve_port(port: int | str | None, environ: Mapping[str, str]) -> int:
    if port is not None:
        return port_number(port, "port")
    return port_number(environ.get(PORT_ENV, "").strip() or DEFAULT_PORT, PORT_ENV)


class LambdaExtensionProvider(Provider):
    """Reads the key through the AWS Parameters and Secrets Lambda Extension.

    * ``secret_id``: the secret's name or ARN; ``field``: a field of a JSON secret.
    * ``version_stage`` / ``version_id``: which version (the extension's default is
      ``AWSCURRENT``); the key's ``version`` is the ``VersionId`` in the answer.
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
        self.field = text_option(field, "field", optional=True)
        self.version_stage = text_option(version_stage, "version_stage", optional=True)
        self.version_id = text_option(version_id, "version_id", optional=True)
        self.port = _resolve_port(port, os.environ)
        self.timeout = seconds(timeout, "timeout", allow_zero=False)
        self.ready_timeout = seconds(ready_timeout, "ready_timeout")
        self.pending_fallback = flag(pending_fallback, "pending_fallback")
        if self.pending_fallback and (
            self.version_id or self.version_stage not in (None, CURRENT_STAGE)
        ):
            raise ConfigurationError(
                "pending_fallback applies to a source that reads AWSCURRENT; drop it, or "
                "drop version_stage/version_id"
            )
        self._http = ExtensionHTTP(
            port=self.port,
            timeout=self.timeout,
            ready_timeout=self.ready_timeout,
            source=self.describe(),
        )
        self._direct: PerProcess[Provider | None] = PerProcess(self._make_direct)

    @classmethod
    def from_uri(cls, uri: SourceURI) -> LambdaExtensionProvider:
        """``aws-lambda-extension:SECRET_ID[?field=F&stage=S&version_id=V&port=P&pending_fallback=true]``."""
        uri.check_params(("field", "stage", "version_id", "port", "pending_fallback"))
        port = uri.param("port")
        return cls(
            uri.require_path("a secret name or ARN"),
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

    # ------------------------------------------------------------------ rotation

    def _make_direct(self) -> Provider | None:
        """The boto3 provider for a direct read, or ``None`` without boto3."""
        if importlib.util.find_spec("boto3") is None:
            return None
        from ._secretsmanager import DEFAULT_STAGE, SecretsManagerProvider

        return SecretsManagerProvider(
            self.secret_id,
            field=self.field,
            version_stage=self.version_stage or DEFAULT_STAGE,
            version_id=self.version_id,
            pending_fallback=self.pending_fallback,
        )

    def _after_fresh_read(self, key: ApiKey, rejected: ApiKey) -> Provider | None:
        if key != rejected:
            return None
        direct = self._direct.get()
        if direct is None:
            logger.warning(
                "%s still serves the rejected key %s after refreshNow and boto3 is not "
                "installed for a direct read; the extension's cache refreshes after its TTL "
                "(SECRETS_MANAGER_TTL)",
                self.describe(),
                key.masked,
            )
            return None
        logger.info(
            "%s still serves the rejected key %s after refreshNow; reading Secrets Manager "
            "directly",
            self.describe(),
            key.masked,
        )
        return direct

    # ------------------------------------------------------------------ the exchange

    def _exchange(self, refresh_now: bool, stage: str | None = None) -> Exchange:
        query = [("secretId", self.secret_id)]
        if self.version_id:
            query.append(("versionId", self.version_id))
        if stage or self.version_stage:
            query.append(("versionStage", stage or self.version_stage or ""))
        if refresh_now:
            query.append(("refreshNow", "true"))
        path = "/secretsmanager/get?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query)
        return Exchange(path, "secret", refresh_now, self._aws_error)

    def _aws_error(self, code: str, message: str) -> Exception:
        return error_for_code(code, message, provider=self.describe(), secret_id=self.secret_id)

    def _to_key(self, document: dict[str, Any], stage: str | None = None) -> ApiKey:
        secret_string = document.get("SecretString")
        secret_binary: bytes | None = None
        raw_binary = document.get("SecretBinary")
        if secret_string is not None and not isinstance(secret_string, str):
            raise InvalidKeyFormatError(f"{self.describe()}: SecretString is not a string")
        if secret_string is None and raw_binary is not None:
            try:
                # The JSON form of GetSecretValue carries SecretBinary base64-encoded.
                secret_binary = base64.b64decode(str(raw_binary), validate=True)
            except (binascii.Error, ValueError):
                raise InvalidKeyFormatError(
                    f"{self.describe()}: SecretBinary in the extension's answer is not base64"
                ) from None
        version = document.get("VersionId")
        return key_from_secret(
            secret_string,
            secret_binary,
            field=self.field,
            source=self._describe(stage) if stage else self.describe(),
            version=version if isinstance(version, str) else None,
        )

    # ------------------------------------------------------------------ fetching

    def fetch(self) -> ApiKey:
        return self._to_key(self._http.get(self._exchange(refresh_now=False)))

    async def afetch(self) -> ApiKey:
        return self._to_key(await self._http.aget(self._exchange(refresh_now=False)))

    def refetch(self, rejected: ApiKey) -> ApiKey:
        """Ask the extension with ``refreshNow=true`` (honoured by the AWS Secrets Manager
        Agent), so that its own cache is bypassed. If it still answers with the rejected
        key (it ignored the parameter, or the secret really was not rotated yet): with
        ``pending_fallback``, the ``AWSPENDING`` key if there is another one; else, when
        boto3 is installed, a direct read of Secrets Manager. Keeps no state between
        calls."""
        key = self._to_key(self._fresh())
        if key != rejected:
            return key
        if self.pending_fallback:
            pending = pending_or_none(
                lambda: self._to_key(self._fresh(PENDING_STAGE), PENDING_STAGE)
            )
            if prefer_pending(key, rejected, pending) is pending:
                return pending
        direct = self._after_fresh_read(key, rejected)
        return direct.refetch(rejected) if direct is not None else key

    async def arefetch(self, rejected: ApiKey) -> ApiKey:
        key = self._to_key(await self._afresh())
        if key != rejected:
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
        direct = self._after_fresh_read(key, rejected)
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
