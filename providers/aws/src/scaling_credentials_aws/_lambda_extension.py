"""LambdaExtensionProvider: the key from the AWS Parameters and Secrets Lambda Extension.

The extension (a Lambda layer) serves ``GET /secretsmanager/get?secretId=...`` on
``localhost:2773`` (``PARAMETERS_SECRETS_EXTENSION_HTTP_PORT``), checks the
``X-Aws-Parameters-Secrets-Token`` header against the execution environment's
``AWS_SESSION_TOKEN``, and answers with GetSecretValue's JSON. It caches each secret for
its own TTL (``SECRETS_MANAGER_TTL``, 300 s by default) and has no invalidation, so after
the API rejects a key this provider asks again with ``refreshNow=true`` (honoured by the
AWS Secrets Manager Agent, which runs as the same kind of extension) and, when the
answer is still the rejected key, reads Secrets Manager directly through boto3 if it is
installed. Plain fetches never import boto3.
"""

from __future__ import annotations

import base64
import binascii
import importlib.util
import json
import os
import ssl
import time
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx

from scaling_credentials import (
    ApiKey,
    InvalidKeyFormatError,
    Provider,
    ProviderError,
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

from ._aws_errors import error_for_code, short
from ._values import key_from_secret

__all__ = ["DEFAULT_PORT", "PORT_ENV", "TOKEN_HEADER", "LambdaExtensionProvider"]

logger = get_logger("scaling_credentials.aws")

DEFAULT_PORT = 2773
PORT_ENV = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
# AWS_SESSION_TOKEN in Lambda; AWS_CONTAINER_AUTHORIZATION_TOKEN with SnapStart.
TOKEN_ENVS = ("AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
MAX_ANSWER = 256 * 1024  # a GetSecretValue answer is at most ~90 KiB (64 KiB, base64)


def _resolve_port(port: int | str | None, environ: Mapping[str, str]) -> int:
    if port is not None:
        return port_number(port, "port")
    return port_number(environ.get(PORT_ENV, "").strip() or DEFAULT_PORT, PORT_ENV)


class _NotReady(Exception):
    """The extension answered, or refused the connection, before it was ready."""


class _RefreshNowRefused(Exception):
    """A 400 without an AWS error type to a request carrying refreshNow."""


class _Answer(NamedTuple):
    status: int
    body: bytes


class LambdaExtensionProvider(Provider):
    """Reads the key through the AWS Parameters and Secrets Lambda Extension.

    * ``secret_id``: the secret's name or ARN; ``field``: a field of a JSON secret.
    * ``version_stage`` / ``version_id``: which version (the extension's default is
      ``AWSCURRENT``); the key's ``version`` is the ``VersionId`` in the answer.
    * ``port``: the extension's port; default ``PARAMETERS_SECRETS_EXTENSION_HTTP_PORT``,
      else 2773.
    * ``timeout``: seconds for one HTTP exchange with the extension (it may call Secrets
      Manager on a cache miss).
    * ``ready_timeout``: right after a cold start the extension may answer "not ready"
      (or not listen yet); such answers are retried with a short backoff for up to this
      many seconds.

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
    ) -> None:
        self.secret_id: str = text_option(secret_id, "secret_id") or ""
        self.field = text_option(field, "field", optional=True)
        self.version_stage = text_option(version_stage, "version_stage", optional=True)
        self.version_id = text_option(version_id, "version_id", optional=True)
        self.port = _resolve_port(port, os.environ)
        self.timeout = seconds(timeout, "timeout", allow_zero=False)
        self.ready_timeout = seconds(ready_timeout, "ready_timeout")
        # No proxies from the environment: this is a loopback call.
        self._client = PerProcess(
            lambda: httpx.Client(timeout=self.timeout, trust_env=False, verify=_no_tls_context())
        )
        self._direct: PerProcess[Provider | None] = PerProcess(self._make_direct)

    @classmethod
    def from_uri(cls, uri: SourceURI) -> LambdaExtensionProvider:
        """``aws-lambda-extension:SECRET_ID[?field=F&stage=S&version_id=V&port=P]``."""
        uri.check_params(("field", "stage", "version_id", "port"))
        port = uri.param("port")
        return cls(
            uri.require_path("a secret name or ARN"),
            field=uri.param("field"),
            version_stage=uri.param("stage"),
            version_id=uri.param("version_id"),
            port=port_number(port, "port= in an aws-lambda-extension: source URI")
            if port is not None
            else None,
        )

    @property
    def url(self) -> str:
        """The extension's base URL."""
        return f"http://localhost:{self.port}"

    def describe(self) -> str:
        query = format_query(
            [
                ("field", self.field),
                ("stage", self.version_stage),
                ("version_id", self.version_id),
                ("port", str(self.port) if self.port != DEFAULT_PORT else None),
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

    def _path(self, refresh_now: bool) -> str:
        query = [("secretId", self.secret_id)]
        if self.version_id:
            query.append(("versionId", self.version_id))
        if self.version_stage:
            query.append(("versionStage", self.version_stage))
        if refresh_now:
            query.append(("refreshNow", "true"))
        return "/secretsmanager/get?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query)

    def _headers(self) -> dict[str, str]:
        for name in TOKEN_ENVS:
            token = os.environ.get(name)
            if token:
                return {TOKEN_HEADER: token}
        raise ProviderError(
            f"{self.describe()}: AWS_SESSION_TOKEN is not set, so the extension's "
            f"{TOKEN_HEADER} header cannot be sent; this process does not look like a "
            "Lambda function (outside Lambda use the aws-sm: source instead)",
            provider=self.describe(),
        )

    def _interpret(self, answer: _Answer, refresh_now: bool) -> dict[str, Any]:
        desc = self.describe()
        status, body = answer.status, answer.body
        text = body[:2000].decode("utf-8", "replace")
        if status == 200:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if not isinstance(document, dict):
                raise ProviderError(
                    f"{desc}: the extension answered 200 with something other than a JSON "
                    "object; is another program listening on this port?",
                    provider=desc,
                )
            return document
        if status == 503 or (status == 400 and "not ready" in text.lower()):
            raise _NotReady(f"{status}: {short(text, 120)}")
        code, message = _aws_error(body)
        if code:
            raise error_for_code(code, message, provider=desc, secret_id=self.secret_id)
        if status == 400 and refresh_now:
            raise _RefreshNowRefused(short(text, 120))
        if status in (400, 401, 403):
            raise ProviderError(
                f"{desc}: the extension refused the request ({status}: {short(text, 120)}); "
                f"it expects the {TOKEN_HEADER} header to equal this execution environment's "
                "AWS_SESSION_TOKEN (is something rewriting the environment?)",
                provider=desc,
            )
        if status == 404:
            raise SecretNotFoundError(
                f"{desc}: the extension answered 404 ({short(text, 120)}); the secret does "
                "not exist, or the program on this port is not the Parameters and Secrets "
                "extension",
                provider=desc,
            )
        raise ProviderError(
            f"{desc}: the extension answered {status} ({short(text, 120)})", provider=desc
        )

    def _to_key(self, document: dict[str, Any]) -> ApiKey:
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
            source=self.describe(),
            version=version if isinstance(version, str) else None,
        )

    def _unreachable(self, exc: Exception) -> ProviderError:
        desc = self.describe()
        in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
        where = (
            "the AWS Parameters and Secrets Lambda Extension layer is not attached to this "
            f"function, or it listens on another port ({PORT_ENV})"
            if in_lambda
            else "this process is not running in AWS Lambda (use the aws-sm: source there), "
            "or the extension layer is missing"
        )
        error = ProviderError(
            f"{desc}: nothing answers on {self.url} ({type(exc).__name__}); {where}",
            provider=desc,
        )
        error.__cause__ = exc
        return error

    def _ready_error(self, last: str) -> ProviderError:
        desc = self.describe()
        return ProviderError(
            f"{desc}: the extension was still not ready after {self.ready_timeout:g} s "
            f"({last}); it serves requests once the function's init phase is over, so fetch "
            "the key in the handler, not at import time",
            provider=desc,
        )

    # ------------------------------------------------------------------ sync driver

    def _exchange(self, refresh_now: bool) -> dict[str, Any]:
        headers = self._headers()
        url = self.url + self._path(refresh_now)
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.02
        while True:
            try:
                response = self._client.get().get(url, headers=headers)
                answer = _Answer(response.status_code, response.content[:MAX_ANSWER])
                return self._interpret(answer, refresh_now)
            except (_NotReady, httpx.ConnectError) as exc:
                if isinstance(exc, httpx.ConnectError) and not _may_be_starting():
                    raise self._unreachable(exc) from exc
                if time.monotonic() + delay > deadline:
                    if isinstance(exc, httpx.ConnectError):
                        raise self._unreachable(exc) from exc
                    raise self._ready_error(str(exc)) from None
                logger.info("%s: extension not ready (%s), retrying", self.describe(), exc)
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except httpx.TimeoutException as exc:
                raise self._timeout(exc) from exc
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from exc

    def fetch(self) -> ApiKey:
        return self._to_key(self._exchange(refresh_now=False))

    def refetch(self, rejected: ApiKey) -> ApiKey:
        """Ask the extension with ``refreshNow=true`` (honoured by the AWS Secrets Manager
        Agent), so that its own cache is bypassed. If it still answers with the rejected
        key (it ignored the parameter, or the secret really was not rotated yet) and boto3
        is installed, read Secrets Manager directly."""
        try:
            document = self._exchange(refresh_now=True)
        except _RefreshNowRefused:
            document = self._exchange(refresh_now=False)
        key = self._to_key(document)
        direct = self._after_fresh_read(key, rejected)
        return direct.fetch() if direct is not None else key

    # ------------------------------------------------------------------ async driver

    async def _aexchange(self, refresh_now: bool) -> dict[str, Any]:
        headers = self._headers()
        url = self.url + self._path(refresh_now)
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.02
        # A client per fetch: an AsyncClient's connections belong to one event loop, and
        # fetches are rare (once per TTL).
        async with httpx.AsyncClient(
            timeout=self.timeout, trust_env=False, verify=_no_tls_context()
        ) as client:
            while True:
                try:
                    response = await client.get(url, headers=headers)
                    answer = _Answer(response.status_code, response.content[:MAX_ANSWER])
                    return self._interpret(answer, refresh_now)
                except (_NotReady, httpx.ConnectError) as exc:
                    if isinstance(exc, httpx.ConnectError) and not _may_be_starting():
                        raise self._unreachable(exc) from exc
                    if time.monotonic() + delay > deadline:
                        if isinstance(exc, httpx.ConnectError):
                            raise self._unreachable(exc) from exc
                        raise self._ready_error(str(exc)) from None
                    logger.info("%s: extension not ready (%s), retrying", self.describe(), exc)
                    import asyncio  # lazily: ~25 ms at cold start, needed only here

                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 0.5)
                except httpx.TimeoutException as exc:
                    raise self._timeout(exc) from exc
                except httpx.HTTPError as exc:
                    raise self._unreachable(exc) from exc

    async def afetch(self) -> ApiKey:
        return self._to_key(await self._aexchange(refresh_now=False))

    async def arefetch(self, rejected: ApiKey) -> ApiKey:
        try:
            document = await self._aexchange(refresh_now=True)
        except _RefreshNowRefused:
            document = await self._aexchange(refresh_now=False)
        key = self._to_key(document)
        direct = self._after_fresh_read(key, rejected)
        return await direct.afetch() if direct is not None else key

    def _timeout(self, exc: Exception) -> ProviderError:
        desc = self.describe()
        return ProviderError(
            f"{desc}: the extension did not answer within {self.timeout:g} s "
            f"({type(exc).__name__}); on a cache miss it calls Secrets Manager, so check the "
            "function's network access to it (VPC endpoint or NAT)",
            provider=desc,
        )


def _no_tls_context() -> ssl.SSLContext:
    # The extension speaks plain http:// on localhost, so no TLS ever happens. An empty
    # trust store instead of the CA bundle saves ~0.2 s of cold start, and would fail
    # closed (trusting nothing) if TLS ever did happen.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _may_be_starting() -> bool:
    # In Lambda a refused connection right after a cold start can be the extension still
    # starting: worth a few retries. Anywhere else nothing will ever listen: fail fast.
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def _aws_error(body: bytes) -> tuple[str, str]:
    """The AWS error type and message of an extension's error body, if it has one."""
    try:
        document = json.loads(body)
    except ValueError:
        return "", ""
    if not isinstance(document, dict):
        return "", ""
    code = document.get("__type") or document.get("Code") or document.get("code") or ""
    message = document.get("message") or document.get("Message") or ""
    if not isinstance(code, str) or not isinstance(message, str):
        return "", ""
    return code, message
