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
import logging
import os
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    InvalidKeyFormatError,
    Provider,
    ProviderError,
    SecretNotFoundError,
    SourceURI,
)

from ._aws_errors import error_for_code, short
from ._values import key_from_secret

__all__ = ["DEFAULT_PORT", "PORT_ENV", "TOKEN_HEADER", "LambdaExtensionProvider"]

logger = logging.getLogger("scaling_credentials.aws")

DEFAULT_PORT = 2773
PORT_ENV = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
# AWS_SESSION_TOKEN in Lambda; AWS_CONTAINER_AUTHORIZATION_TOKEN with SnapStart.
TOKEN_ENVS = ("AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
MAX_ANSWER = 256 * 1024  # a GetSecretValue answer is at most ~90 KiB (64 KiB, base64)


def _resolve_port(port: int | str | None, environ: Mapping[str, str]) -> int:
    raw: object = port
    where = "port"
    if raw is None:
        raw = environ.get(PORT_ENV, "").strip() or DEFAULT_PORT
        where = PORT_ENV
    try:
        number = int(str(raw).strip())
    except ValueError:
        raise ConfigurationError(f"{where} must be a TCP port number, got {raw!r}") from None
    if isinstance(raw, bool) or not 1 <= number <= 65535:
        raise ConfigurationError(f"{where} must be a TCP port number (1-65535), got {raw!r}")
    return number


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
        if not isinstance(secret_id, str) or not secret_id.strip():
            raise ConfigurationError(f"secret_id must be a non-empty str, got {secret_id!r}")
        if "scl_live_" in secret_id:
            raise ConfigurationError(
                "secret_id looks like an API key; pass the secret's name or ARN, never the key"
            )
        if field is not None and (not isinstance(field, str) or not field):
            raise ConfigurationError(f"field must be a non-empty str, got {field!r}")
        for name, seconds, low in (("timeout", timeout, 1e-9), ("ready_timeout", ready_timeout, 0)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < low:
                raise ConfigurationError(f"{name} must be a number of seconds, got {seconds!r}")
        self.secret_id = secret_id.strip()
        self.field = field
        self.version_stage = version_stage or None
        self.version_id = version_id or None
        self.port = _resolve_port(port, os.environ)
        self.timeout = float(timeout)
        self.ready_timeout = float(ready_timeout)
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._client_pid: int | None = None
        self._direct: Provider | None = None
        _providers.add(self)

    @classmethod
    def from_uri(cls, uri: SourceURI) -> LambdaExtensionProvider:
        """``aws-lambda-extension:SECRET_ID[?field=F&stage=S&version_id=V&port=P]``."""
        uri.check_params(("field", "stage", "version_id", "port"))
        params = uri.params
        port = params.get("port") or None
        return cls(
            uri.require_path("a secret name or ARN"),
            field=params.get("field") or None,
            version_stage=params.get("stage") or None,
            version_id=params.get("version_id") or None,
            port=_resolve_port(port, {}) if port is not None else None,
        )

    @property
    def url(self) -> str:
        """The extension's base URL."""
        return f"http://localhost:{self.port}"

    def describe(self) -> str:
        params = [
            (name, value)
            for name, value in (
                ("field", self.field),
                ("stage", self.version_stage),
                ("version_id", self.version_id),
            )
            if value
        ]
        if self.port != DEFAULT_PORT:
            params.append(("port", str(self.port)))
        query = "&".join(f"{k}={quote(v, safe='/:')}" for k, v in params)
        return f"aws-lambda-extension:{self.secret_id}" + (f"?{query}" if query else "")

    # ------------------------------------------------------------------ rotation

    def _direct_provider(self) -> Provider | None:
        with self._lock:
            if self._direct is not None:
                return self._direct
            if importlib.util.find_spec("boto3") is None:
                return None
            from ._secretsmanager import DEFAULT_STAGE, SecretsManagerProvider

            self._direct = SecretsManagerProvider(
                self.secret_id,
                field=self.field,
                version_stage=self.version_stage or DEFAULT_STAGE,
                version_id=self.version_id,
            )
            return self._direct

    def _after_fresh_read(self, key: ApiKey, rejected: ApiKey) -> Provider | None:
        if key != rejected:
            return None
        direct = self._direct_provider()
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

    def _http(self) -> httpx.Client:
        pid = os.getpid()
        client = self._client
        if client is not None and self._client_pid == pid:
            return client
        with self._lock:
            if self._client is None or self._client_pid != pid:
                # No proxies from the environment: this is a loopback call.
                self._client = httpx.Client(
                    timeout=self.timeout, trust_env=False, verify=_no_tls_context()
                )
                self._client_pid = pid
            return self._client

    def _exchange(self, refresh_now: bool) -> dict[str, Any]:
        headers = self._headers()
        url = self.url + self._path(refresh_now)
        deadline = time.monotonic() + self.ready_timeout
        delay = 0.02
        while True:
            try:
                response = self._http().get(url, headers=headers)
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


_providers: weakref.WeakSet[LambdaExtensionProvider] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # A lock held by a parent thread at fork time would stay held in the child; the
    # parent's connections are left alone (the pid check builds a new client).
    for provider in list(_providers):
        provider._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
