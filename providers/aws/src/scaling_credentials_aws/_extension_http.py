"""One GET to the AWS Parameters and Secrets Lambda Extension on localhost, from a sync or
an async caller: retried while the extension starts, read at most ``MAX_ANSWER`` bytes
deep and within the timeout, its errors mapped to the contract's types.

The two drivers, :meth:`ExtensionHTTP.get` and :meth:`ExtensionHTTP.aget`, differ only in
how they wait and read: both iterate the same retry schedule, computed once, and hand
each outcome to the same decision (:meth:`ExtensionHTTP._settle`), so they cannot drift.

The extension checks a header holding the execution environment's session token, which
is an AWS credential: no text built from an answer (an error message, a log line) quotes
it, whatever the program on the port sends back, and no exception that holds the request
(httpx's do) is chained.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from scaling_credentials import ProviderError, SecretNotFoundError
from scaling_credentials.toolkit import PerProcess, get_logger, redact

from ._aws_errors import short

__all__ = [
    "DEFAULT_PORT",
    "MAX_ANSWER",
    "PORT_ENV",
    "TOKEN_ENVS",
    "TOKEN_HEADER",
    "Exchange",
    "ExtensionHTTP",
    "RefreshNowRefused",
    "retry_waits",
]

logger = get_logger("scaling_credentials.aws")

DEFAULT_PORT = 2773
PORT_ENV = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
TOKEN_HEADER = "X-Aws-Parameters-Secrets-Token"
# AWS_SESSION_TOKEN in Lambda; AWS_CONTAINER_AUTHORIZATION_TOKEN with SnapStart.
TOKEN_ENVS = ("AWS_SESSION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN")
# A GetSecretValue answer is at most ~90 KiB (64 KiB of secret, base64); a parameter's
# at most 8 KiB of value.
MAX_ANSWER = 256 * 1024
FIRST_WAIT = 0.02
LONGEST_WAIT = 0.5


def retry_waits(ready_timeout: float) -> tuple[float, ...]:
    """The waits before each retry while the extension is starting: 20 ms, doubling up
    to 0.5 s, as many as fit in ``ready_timeout`` seconds in all."""
    waits: list[float] = []
    total, wait = 0.0, FIRST_WAIT
    while total + wait <= ready_timeout:
        waits.append(wait)
        total += wait
        wait = min(wait * 2, LONGEST_WAIT)
    return tuple(waits)


# The small records below are plain classes with slots, not NamedTuples: a NamedTuple
# class costs ~0.2 ms to create, paid by every Lambda cold start.


class Exchange:
    """What to ask the extension, and how to read its answer's errors."""

    __slots__ = ("aws_error", "path", "refresh_now", "what")

    def __init__(
        self,
        path: str,
        what: str,
        refresh_now: bool,
        aws_error: Callable[[str, str], Exception],
    ) -> None:
        #: Path and query, e.g. ``/secretsmanager/get?secretId=...``.
        self.path = path
        #: What is asked for, for messages: ``secret`` or ``parameter``.
        self.what = what
        #: Whether the query carries ``refreshNow=true`` (a plain 400 then means the
        #: extension refused that parameter: :class:`RefreshNowRefused`).
        self.refresh_now = refresh_now
        #: The error for an AWS error type and message in the answer's body.
        self.aws_error = aws_error


class RefreshNowRefused(Exception):
    """A 400 without an AWS error type to a request carrying ``refreshNow``."""


class _NotReady(Exception):
    """The extension answered that it is not ready yet."""


class _TooLarge(Exception):
    """The answer went past ``MAX_ANSWER``."""


class _TooSlow(Exception):
    """The answer did not arrive whole within the timeout."""


class _Encoded(Exception):
    """The answer came compressed, which the extension never does (and was not asked)."""


class _Answer:
    __slots__ = ("body", "status")

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body


class _Body:
    """Collects an answer's body as it arrives, undecoded; refuses a compressed one, and
    one past the cap or the deadline (so a decompression bomb is never inflated)."""

    def __init__(self, deadline: float, headers: httpx.Headers) -> None:
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _Encoded(encoding[:40])
        self.deadline = deadline
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.size > MAX_ANSWER:
            raise _TooLarge
        if time.monotonic() > self.deadline:
            raise _TooSlow

    def answer(self, status: int) -> _Answer:
        return _Answer(status, b"".join(self.chunks))


class _Request:
    __slots__ = ("headers", "secrets", "url")

    def __init__(self, url: str, headers: dict[str, str], secrets: tuple[str, ...]) -> None:
        self.url = url
        self.headers = headers
        #: The forms in which an answer could echo the token back: redacted from every text.
        self.secrets = secrets


class ExtensionHTTP:
    """GETs to the extension on ``localhost:port`` for the provider described as
    ``source`` (used in every message)."""

    def __init__(self, *, port: int, timeout: float, ready_timeout: float, source: str) -> None:
        self.port = port
        self.timeout = timeout
        self.ready_timeout = ready_timeout
        self.source = source
        self.waits = retry_waits(ready_timeout)
        # No proxies from the environment: this is a loopback call.
        self._client = PerProcess(
            lambda: httpx.Client(timeout=timeout, trust_env=False, verify=_no_tls_context())
        )

    @property
    def url(self) -> str:
        """The extension's base URL."""
        return f"http://localhost:{self.port}"

    def _schedule(self) -> list[tuple[float, bool]]:
        """Each attempt's wait before it, and whether it is the last."""
        waits = (0.0, *self.waits)
        return [(wait, number == len(waits) - 1) for number, wait in enumerate(waits)]

    # ------------------------------------------------------------------ the drivers

    def get(self, exchange: Exchange) -> dict[str, Any]:
        """The answer's JSON object (blocking)."""
        request = self._request(exchange)
        client = self._client.get()
        for wait, last in self._schedule():
            if wait:
                time.sleep(wait)
            outcome: _Answer | Exception
            try:
                with client.stream("GET", request.url, headers=request.headers) as response:
                    body = _Body(time.monotonic() + self.timeout, response.headers)
                    for chunk in response.iter_raw():
                        body.add(chunk)
                    outcome = body.answer(response.status_code)
            except (httpx.HTTPError, _TooLarge, _TooSlow, _Encoded) as exc:
                outcome = exc
            document = self._settle(outcome, exchange, request, last=last)
            if document is not None:
                return document
        raise AssertionError("unreachable: the last attempt always settles")  # pragma: no cover

    async def aget(self, exchange: Exchange) -> dict[str, Any]:
        """The answer's JSON object (without blocking the event loop)."""
        request = self._request(exchange)
        # A client per call: an AsyncClient's connections belong to one event loop, and
        # calls are rare (once per TTL).
        async with httpx.AsyncClient(
            timeout=self.timeout, trust_env=False, verify=_no_tls_context()
        ) as client:
            for wait, last in self._schedule():
                if wait:
                    import asyncio  # lazily: ~25 ms at cold start, needed only here

                    await asyncio.sleep(wait)
                outcome: _Answer | Exception
                try:
                    async with client.stream(
                        "GET", request.url, headers=request.headers
                    ) as response:
                        body = _Body(time.monotonic() + self.timeout, response.headers)
                        async for chunk in response.aiter_raw():
                            body.add(chunk)
                        outcome = body.answer(response.status_code)
                except (httpx.HTTPError, _TooLarge, _TooSlow, _Encoded) as exc:
                    outcome = exc
                document = self._settle(outcome, exchange, request, last=last)
                if document is not None:
                    return document
        raise AssertionError("unreachable: the last attempt always settles")  # pragma: no cover

    # ------------------------------------------------------------------ the decisions

    def _request(self, exchange: Exchange) -> _Request:
        for name in TOKEN_ENVS:
            token = os.environ.get(name, "").strip()
            if token:
                if not _visible_ascii(token):
                    # Refused here, by name only: httpx would refuse it with an error that
                    # quotes the header's value (or, past ASCII, holds it in .object).
                    raise ProviderError(
                        f"{self.source}: {name} holds characters other than visible ASCII, "
                        f"which the extension's {TOKEN_HEADER} header cannot carry; is "
                        "something rewriting the environment?",
                        provider=self.source,
                    )
                return _Request(
                    self.url + exchange.path,
                    # No compression: a compressed answer could inflate past any cap.
                    {TOKEN_HEADER: token, "Accept-Encoding": "identity"},
                    (token, quote(token, safe="")),
                )
        raise ProviderError(
            f"{self.source}: AWS_SESSION_TOKEN is not set, so the extension's "
            f"{TOKEN_HEADER} header cannot be sent; this process does not look like a "
            "Lambda function (outside Lambda use the aws-sm: or aws-ssm: source instead)",
            provider=self.source,
        )

    def _settle(
        self,
        outcome: _Answer | Exception,
        exchange: Exchange,
        request: _Request,
        *,
        last: bool,
    ) -> dict[str, Any] | None:
        """The answer's JSON object; ``None`` to try again after the next wait; or the
        error to raise. The one place where both drivers' outcomes are judged."""
        source = self.source
        if isinstance(outcome, _Answer):
            try:
                return self._interpret(outcome, exchange, request)
            except _NotReady as exc:
                problem = str(exc)
            if last:
                raise ProviderError(
                    f"{source}: the extension was still not ready after "
                    f"{self.ready_timeout:g} s ({problem}); it serves requests once the "
                    "function's init phase is over, so fetch the key in the handler, not at "
                    "import time",
                    provider=source,
                )
        elif isinstance(outcome, httpx.ConnectError) and _may_be_starting() and not last:
            said = short(str(outcome), 120, secrets=request.secrets)
            problem = f"{type(outcome).__name__}: {said}"
        elif isinstance(outcome, (httpx.TimeoutException, _TooSlow)):
            raise ProviderError(
                f"{source}: the extension did not answer within {self.timeout:g} s; on a "
                "cache miss it calls AWS, so check the function's network access to "
                "Secrets Manager or Systems Manager (VPC endpoint or NAT)",
                provider=source,
            )
        elif isinstance(outcome, _Encoded):
            raise ProviderError(
                f"{source}: the answer from {self.url} is compressed ({short(str(outcome), 40)}"
                "), which the extension never does and was not asked for; is another program "
                "listening on this port?",
                provider=source,
            )
        elif isinstance(outcome, _TooLarge):
            raise ProviderError(
                f"{source}: the answer from {self.url} is larger than {MAX_ANSWER // 1024} "
                "KiB, more than the extension ever sends; is another program listening on "
                "this port?",
                provider=source,
            )
        else:
            raise self._unreachable(outcome, request)
        logger.info("%s: the extension is not ready (%s), retrying", source, problem)
        return None

    def _interpret(self, answer: _Answer, exchange: Exchange, request: _Request) -> dict[str, Any]:
        source = self.source
        status, body = answer.status, answer.body
        if status == 200:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if not isinstance(document, dict):
                raise ProviderError(
                    f"{source}: the extension answered 200 with something other than a JSON "
                    "object; is another program listening on this port?",
                    provider=source,
                )
            return document
        # Built only for an error answer: a 200's body is the key, and needs no redaction.
        text = short(body[:2000].decode("utf-8", "replace"), 120, secrets=request.secrets)
        if status == 503 or (status == 400 and "not ready" in text.lower()):
            raise _NotReady(f"{status}: {text}")
        code, message = _aws_error(body, request.secrets)
        if code:
            raise exchange.aws_error(code, message)
        if status == 400 and exchange.refresh_now:
            raise RefreshNowRefused(text)
        if status in (400, 401, 403):
            raise ProviderError(
                f"{source}: the extension refused the request ({status}: {text}); it expects "
                f"the {TOKEN_HEADER} header to equal this execution environment's "
                "AWS_SESSION_TOKEN (is something rewriting the environment?)",
                provider=source,
            )
        if status == 404:
            raise SecretNotFoundError(
                f"{source}: the extension answered 404 ({text}); the {exchange.what} does not "
                "exist, or the program on this port is not the Parameters and Secrets "
                "extension",
                provider=source,
            )
        raise ProviderError(f"{source}: the extension answered {status} ({text})", provider=source)

    def _unreachable(self, exc: Exception, request: _Request) -> ProviderError:
        in_lambda = bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
        where = (
            "the AWS Parameters and Secrets Lambda Extension layer is not attached to this "
            f"function, or it listens on another port ({PORT_ENV})"
            if in_lambda
            else "this process is not running in AWS Lambda (use the aws-sm: or aws-ssm: "
            "source there), or the extension layer is missing"
        )
        # httpx's exception is not chained: it holds the request, token header included.
        return ProviderError(
            f"{self.source}: nothing answers on {self.url} ({type(exc).__name__}: "
            f"{short(str(exc), 120, secrets=request.secrets)}); {where}",
            provider=self.source,
        )


def _no_tls_context() -> ssl.SSLContext:
    # The extension speaks plain http:// on localhost, so no TLS ever happens. An empty
    # trust store instead of the CA bundle saves ~0.2 s of cold start, and would fail
    # closed (trusting nothing) if TLS ever did happen.
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def _visible_ascii(text: str) -> bool:
    """Whether ``text`` is all visible ASCII (``!`` to ``~``): what a header value can be."""
    return all("!" <= char <= "~" for char in text)


def _may_be_starting() -> bool:
    # In Lambda a refused connection right after a cold start can be the extension still
    # starting: worth a few retries. Anywhere else nothing will ever listen: fail fast.
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def _aws_error(body: bytes, secrets: tuple[str, ...]) -> tuple[str, str]:
    """The AWS error type and message of an extension's error body, if it has one
    (redacted: a hostile answer may put the token in either)."""
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
    return redact(code, secrets), redact(message, secrets)
