"""The ``scaling-credentials`` command: which key does this workload use, and does it work?

Subcommands::

    resolve    [--source URI] [--json] [--reveal] [--timeout S]
    check      [--source URI] [--base-url URL] [--timeout S] [--quiet] [--json]
               (--base-url defaults to SCALING_API_BASE_URL, else the public API)
    providers  [--json]
    rotate     --source URI [--base-url URL] [--fleet-ttl S] [--wait] [--timeout S] [--json]
               (the new key is read from standard input, never from the command line)
    demo       [--duration S] [--threads N] [--tasks N] [--rotations N] [--source URI] [--json]

Exit codes: 0 success; 1 the key does not work or the backend failed (401, unreachable,
timeout); 2 configuration error (bad source URI, nothing configured, no key or a malformed
key in the source, bad option). Keys are always printed masked, except by
``resolve --reveal``. Errors are one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import httpx

from ._cache import KeyCache
from ._errors import (
    ConfigurationError,
    InvalidKeyFormatError,
    ProviderTimeoutError,
    ScalingCredentialsError,
    SecretNotFoundError,
)
from ._key import ApiKey
from ._provider import Provider
from ._redact import redact
from ._version import __version__

if TYPE_CHECKING:
    from ._rotate import DeletionPlan

__all__ = [
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_OK",
    "CheckAnswer",
    "Verdict",
    "build_parser",
    "check_verdict",
    "main",
]

PROG = "scaling-credentials"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
DEFAULT_TIMEOUT = 10.0
CHECK_PATH = "/oncall/schedules"


class CLIError(Exception):
    """An error the command reports as one line and an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_CONFIG) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def exit_code_for(error: BaseException) -> int:
    """2 for configuration problems (bad URI, nothing configured, no key or a malformed
    key in the source), 1 for everything else (a backend that failed or timed out)."""
    if isinstance(error, CLIError):
        return error.exit_code
    if isinstance(error, (ConfigurationError, InvalidKeyFormatError, SecretNotFoundError)):
        return EXIT_CONFIG
    return EXIT_FAILED


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# --------------------------------------------------------------------------- output


class _Out:
    """Where the command writes: stdout for results, stderr for errors and logs.

    Every text goes through :func:`redact` on its way out, whatever produced it (an
    error message quoting a setting, a server's answer): the one exception is the key
    that ``resolve --reveal`` was asked to print.
    """

    def __init__(self, json_mode: bool = False, quiet: bool = False) -> None:
        self.json_mode = json_mode
        self.quiet = quiet

    def line(self, text: str = "", *, reveal: bool = False) -> None:
        if not self.quiet and not self.json_mode:
            print(text if reveal else redact(text), file=sys.stdout, flush=True)

    def document(self, data: dict[str, Any], *, reveal: bool = False) -> None:
        if self.json_mode:
            text = json.dumps(data, indent=2)
            print(text if reveal else redact(text), file=sys.stdout, flush=True)

    @staticmethod
    def error(text: str) -> None:
        print(f"{PROG}: error: {redact(_one_line(text))}", file=sys.stderr, flush=True)


class _LogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def _quiet_probe_cache(record: logging.LogRecord) -> bool:
    # The command's probe cache reports a failed fetch through the command's own error
    # line: the cache's warning would say the same thing twice.
    return getattr(record, "scaling_credentials_event", None) != "fetch_failed"


def _configure_logging(level: int) -> Callable[[], None]:
    """Send the library's log records (masked keys only) to stderr; returns an undo."""
    logger = logging.getLogger("scaling_credentials")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LogFormatter())
    if level > logging.INFO:
        handler.addFilter(_quiet_probe_cache)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

    return undo


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class _Resolved:
    provider: Provider
    chosen_by: str
    key: ApiKey
    fetch_seconds: float
    cache: KeyCache


def _select_provider(source: str | None) -> tuple[Provider, str]:
    """The provider and what chose it: ``--source`` or the environment variable."""
    from ._registry import provider_from_uri, select_from_env

    if source is not None:
        return provider_from_uri(source), "--source"
    try:
        return select_from_env()
    except ConfigurationError as exc:
        if not os.environ.get("SCALING_API_KEY_SOURCE", "").strip():  # nothing configured
            raise ConfigurationError(f"{exc}; or pass --source URI") from exc
        raise


def _hint(error: BaseException) -> str:
    """The error's message, with what to do on the command line where that helps."""
    message = _one_line(str(error)) or type(error).__name__
    if isinstance(error, ProviderTimeoutError):
        message = (
            f"fetching the key from {error.provider} did not finish within the --timeout; "
            "the backend may be slow or unreachable"
        )
    elif isinstance(error, SecretNotFoundError):
        message += (
            "; put the key there, or point at another source with --source URI "
            "(or SCALING_API_KEY_SOURCE)"
        )
    elif isinstance(error, ConfigurationError) and "allowed_hosts" in message:
        message += " (on the command line: --allow-host HOST)"
    return message


def _resolve(source: str | None, timeout: float) -> _Resolved:
    """Choose the provider and fetch the key once (see :func:`_probe`)."""
    provider, chosen = _select_provider(source)
    return _probe(provider, chosen, timeout)


def _probe(provider: Provider, chosen: str, timeout: float) -> _Resolved:
    """Fetch the key once, through a :class:`KeyCache` that bounds the fetch by
    ``timeout`` and serves nothing stale: this is a probe."""
    cache = KeyCache(
        provider, ttl=300.0, max_stale=0.0, fetch_timeout=timeout, min_refresh_interval=0.0
    )
    key = cache.get()
    duration = cache.stats.last_fetch_duration or 0.0
    return _Resolved(provider, chosen, key, duration, cache)


def _resolved_json(resolved: _Resolved) -> dict[str, Any]:
    return {
        "source": resolved.provider.describe(),
        "chosen_by": resolved.chosen_by,
        "key": resolved.key.masked,
        "version": resolved.key.version,
        "fetch_ms": round(resolved.fetch_seconds * 1000, 3),
    }


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.2f} ms" if ms < 1 else f"{ms:.1f} ms"


# --------------------------------------------------------------------------- resolve


def _cmd_resolve(args: argparse.Namespace, out: _Out) -> int:
    resolved = _resolve(args.source, args.timeout)
    key = resolved.key
    if args.reveal:
        print(
            f"{PROG}: warning: --reveal prints the full key to stdout; do not paste it "
            "into tickets, logs or chats",
            file=sys.stderr,
            flush=True,
        )
    document = {"ok": True, **_resolved_json(resolved)}
    if args.reveal:
        document["value"] = key.reveal()
    out.document(document, reveal=args.reveal)
    out.line(f"source    {resolved.provider.describe()}  (chosen by {resolved.chosen_by})")
    out.line(f"key       {key.reveal() if args.reveal else key.masked}", reveal=args.reveal)
    out.line(f"version   {key.version or '-'}")
    out.line(f"fetched   in {_ms(resolved.fetch_seconds)}")
    return EXIT_OK


# --------------------------------------------------------------------------- check


def _base_url(option: str | None) -> httpx.URL:
    """``--base-url`` when given, else ``SCALING_API_BASE_URL``, else the default; a
    malformed value is a configuration error naming where it came from."""
    from ._api import check_base_url, default_base_url

    text = default_base_url() if option is None else check_base_url(option, setting="--base-url")
    return httpx.URL(text)


@dataclass(frozen=True)
class CheckAnswer:
    """What the check's request came to: the response, or the transport error, or
    neither when it did not finish within the deadline. ``body`` is the error body as
    read (at most 64 KiB, decoded); ``None`` means the response's own content, if read."""

    response: httpx.Response | None
    error: BaseException | None
    seconds: float
    body: bytes | None = None


@dataclass(frozen=True)
class Verdict:
    """The check's outcome: exit code, the line to print, and the JSON fields."""

    code: int
    text: str
    fields: dict[str, Any]


def check_verdict(answer: CheckAnswer, *, url: str, timeout: float) -> Verdict:
    """The verdict on a check (a pure function of what the request came to)."""
    from ._api import parse_error_body

    fields: dict[str, Any] = {
        "status": None,
        "type": None,
        "code": None,
        "request_id": None,
        "retried": False,
    }
    response = answer.response
    if response is None:
        exc = answer.error
        if exc is None or isinstance(exc, httpx.TimeoutException):
            problem = f"no answer from {url} within {timeout:g} s (--timeout)"
            what = "timeout"
        else:
            detail = _one_line(str(exc))
            problem = f"cannot reach {url}: {type(exc).__name__}" + (
                f" ({detail})" if detail else ""
            )
            what = "unreachable"
        fields.update(ok=False, error=what)
        return Verdict(
            EXIT_FAILED, f"FAILED: {problem}; check the network path and --base-url", fields
        )
    body = parse_error_body(_error_content(answer, response))
    request_id = body.request_id or response.headers.get("x-request-id")
    fields.update(
        status=response.status_code,
        type=body.type,
        code=body.code,
        request_id=request_id,
        retried=bool(response.history),
    )
    rid = f"requestId {request_id or 'none'}"
    if response.is_success:
        extra = ", after refreshing a rejected key" if response.history else ""
        fields.update(ok=True, error=None)
        return Verdict(
            EXIT_OK,
            f"OK: the key works (GET {url} answered {response.status_code}, {rid}{extra})",
            fields,
        )
    reason = "/".join(p for p in (body.type, body.code) if p) or "no error code"
    text = f"FAILED: GET {url} answered {response.status_code} {reason} ({rid})"
    if response.status_code == 401:
        text += (
            ": the key is invalid, expired or revoked; put a valid key in the source"
            if body.code == "invalid_api_key"
            else ": the API did not accept the Authorization header"
        )
        code = EXIT_FAILED
    elif response.is_redirect:
        where = _one_line(response.headers.get("location", ""))[:120] or "elsewhere"
        text += f": redirected to {where}; check --base-url"
        code = EXIT_CONFIG
    elif response.status_code == 404:
        text += ": the path does not exist; check --base-url (it ends in /v1)"
        code = EXIT_CONFIG
    elif response.status_code >= 500:
        text += ": the API could not answer; the key may be fine, try again later"
        code = EXIT_FAILED
    else:
        text += ": an unexpected answer; check --base-url and any proxy in between"
        code = EXIT_FAILED
    fields.update(ok=False, error=body.code or f"http_{response.status_code}")
    return Verdict(code, text, fields)


def _error_content(answer: CheckAnswer, response: httpx.Response) -> bytes:
    if answer.body is not None:
        return answer.body
    try:
        return response.content
    except httpx.ResponseNotRead:
        return b""


def _send_check(
    args: argparse.Namespace, base_url: httpx.URL, cache: KeyCache, timeout: float
) -> CheckAnswer:
    """``GET /oncall/schedules`` through the cache's auth, bounded by ``timeout`` in all
    (httpx's timeouts bound each read, not a slow drip): the request runs in a daemon
    thread that is abandoned when the deadline passes. The answer is streamed: a success
    body is never read, an error body at most 64 KiB deep after decoding."""
    from ._api import read_error_body, scaling_client

    box: list[CheckAnswer] = []
    started = time.perf_counter()

    def send() -> None:
        with scaling_client(
            cache,
            base_url=str(base_url),
            allowed_hosts=args.allow_host or None,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
        ) as client:
            try:
                with client.stream("GET", CHECK_PATH) as response:
                    body = None if response.is_success else read_error_body(response) or b""
            except httpx.HTTPError as exc:
                box.append(CheckAnswer(None, exc, time.perf_counter() - started))
            else:
                box.append(CheckAnswer(response, None, time.perf_counter() - started, body))

    errors: list[BaseException] = []

    def target() -> None:
        try:
            send()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target, name="scaling-credentials-check", daemon=True)
    thread.start()
    thread.join(timeout)
    if errors:
        raise errors[0]
    if box:
        return box[0]
    return CheckAnswer(None, None, time.perf_counter() - started)


def _cmd_check(args: argparse.Namespace, out: _Out) -> int:
    base_url = _base_url(args.base_url)
    url = str(base_url).rstrip("/") + CHECK_PATH
    timeout: float = args.timeout
    deadline = time.monotonic() + timeout
    resolved = _resolve(args.source, timeout)
    answer = _send_check(args, base_url, resolved.cache, max(0.1, deadline - time.monotonic()))
    verdict = check_verdict(answer, url=url, timeout=timeout)
    document: dict[str, Any] = {
        **_resolved_json(resolved),
        "url": url,
        **verdict.fields,
        "request_ms": round(answer.seconds * 1000, 3),
        "exit_code": verdict.code,
    }
    out.document({"ok": document.pop("ok"), **document})
    if out.quiet:
        if verdict.code != EXIT_OK:
            print(f"{PROG}: {redact(verdict.text)}", file=sys.stderr, flush=True)
        return verdict.code
    out.line(verdict.text)
    out.line(f"  source   {resolved.provider.describe()}  (chosen by {resolved.chosen_by})")
    out.line(f"  key      {resolved.key.masked}  (version {resolved.key.version or '-'})")
    out.line(f"  timing   key {_ms(resolved.fetch_seconds)}, request {_ms(answer.seconds)}")
    return verdict.code


# --------------------------------------------------------------------------- providers


def _cmd_providers(args: argparse.Namespace, out: _Out) -> int:
    from ._registry import FIRST_PARTY_SCHEMES, installed_schemes
    from ._rotate import scheme_can_store

    installed = installed_schemes()
    names = {scheme.scheme for scheme in installed}
    missing = [
        {"scheme": scheme, "distribution": dist, "install": f"pip install '{extra}'"}
        for scheme, (dist, extra) in sorted(FIRST_PARTY_SCHEMES.items())
        if scheme not in names
    ]
    # Whether each can store: its provider class is imported to read can_store; a scheme
    # whose module fails to import shows "?" and the error, the others are unaffected.
    can_store: dict[str, bool | None] = {}
    load_errors: dict[str, str] = {}
    for s in installed:
        try:
            can_store[s.scheme] = scheme_can_store(s.scheme)
        except ConfigurationError as exc:
            can_store[s.scheme] = None
            load_errors[s.scheme] = _one_line(str(exc))
    out.document(
        {
            "installed": [
                {
                    "scheme": s.scheme,
                    "distribution": s.distribution,
                    "version": s.version,
                    "entry_point": s.value,
                    "can_store": can_store[s.scheme],
                    "load_error": load_errors.get(s.scheme),
                }
                for s in installed
            ],
            "missing": missing,
        }
    )
    yes_no = {True: "yes", False: "no", None: "?"}
    rows = [("scheme", "distribution", "version", "can store")] + [
        (s.scheme, s.distribution or "?", s.version or "?", yes_no[can_store[s.scheme]])
        for s in installed
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        out.line("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    out.line()
    out.line("can store: scaling-credentials rotate can write a new key to such a source.")
    for scheme, error in sorted(load_errors.items()):
        out.line(f"{scheme}: {error}")
    if missing:
        out.line("Not installed (first-party):")
        for item in missing:
            out.line(f"  {item['scheme']:<22}{item['install']}")
    else:
        out.line("All first-party schemes are installed.")
    return EXIT_OK


# --------------------------------------------------------------------------- rotate


def _cmd_rotate(args: argparse.Namespace, out: _Out) -> int:
    """Check the new key, store it, read it back, say when the old key may be deleted.
    Nothing is written unless the new key is well formed, differs from the source's key
    and the API accepts it."""
    from . import _rotate
    from ._cache import default_ttl
    from ._registry import provider_from_uri

    base_url = _base_url(args.base_url)
    url = str(base_url).rstrip("/") + CHECK_PATH
    fleet_ttl: float = default_ttl() if args.fleet_ttl is None else args.fleet_ttl
    timeout: float = args.timeout
    provider, chosen = _select_provider(args.source)
    if not provider.can_store:
        can = ", ".join(f"{scheme}:" for scheme in _rotate.storing_schemes()) or "none installed"
        raise CLIError(
            f"{provider.describe()} cannot store a key, so rotate cannot write the new key "
            f"there (sources that can: {can}); put the new key in the source with its own "
            "tools and follow the manual steps of the rotation runbook (SECURITY.md)"
        )
    new = _rotate.read_new_key(sys.stdin, sys.stderr)
    resolved = _probe(provider, chosen, timeout)
    old, source = resolved.key, resolved.provider.describe()
    if new == old:
        raise CLIError(
            f"the new key is the key {source} already holds ({old.masked}); nothing was "
            "written: issue a new key in the dashboard (Settings > API Access) and pass that"
        )
    out.line(f"source     {source}")
    out.line(f"old key    {old.masked}  (version {old.version or '-'})")
    out.line(f"new key    {new.masked}  (from standard input)")
    verdict = _check_new_key(args, base_url, url, new, source)
    rid = verdict.fields["request_id"] or "none"
    out.line(
        f"checked    GET {url} answered {verdict.fields['status']} to the new key (requestId {rid})"
    )
    try:
        version = resolved.provider.store(new)
    except ScalingCredentialsError as exc:
        detail = _hint(exc).removeprefix(f"{source}: ")
        raise CLIError(
            f"storing the new key in {source} failed: {detail}; the old key is still the one "
            "in use, do not delete it",
            exit_code_for(exc),
        ) from None
    plan = _rotate.DeletionPlan(time.time(), fleet_ttl)
    out.line("stored     the new key" + (f" as version {version}" if version else ""))
    try:
        back = _rotate.read_back(provider_from_uri(args.source), old=old, new=new, timeout=timeout)
    except ScalingCredentialsError as exc:
        raise CLIError(
            f"the new key was stored in {source}, but reading it back failed: {_hint(exc)}",
            EXIT_FAILED,
        ) from None
    out.line(
        f"read back  {back.key.masked}  (version {back.key.version or '-'}, through a new provider)"
    )
    delete_after = _rotate.format_utc(plan.delete_after)
    out.line()
    out.line(
        f"OK: {source} serves the new key. Delete the old key {old.masked} in the dashboard "
        f"after {delete_after}, not before (in {_rotate.format_duration(plan.wait)}: "
        f"{plan.explain()})."
    )
    document: dict[str, Any] = {
        "ok": True,
        "source": source,
        "old_key": old.masked,
        "old_version": old.version,
        "new_key": new.masked,
        "new_version": back.key.version if version is None else version,
        "url": url,
        "status": verdict.fields["status"],
        "request_id": verdict.fields["request_id"],
        "read_back": {"key": back.key.masked, "version": back.key.version, "reads": back.reads},
        "stored_at": _rotate.format_utc(plan.stored_at, iso=True),
        "fleet_ttl_s": plan.fleet_ttl,
        "slack_s": plan.slack,
        "delete_old_key_after": _rotate.format_utc(plan.delete_after, iso=True),
    }
    code = _wait_for_fleet(plan, old, out) if args.wait else EXIT_OK
    document.update(ok=code == EXIT_OK, exit_code=code, waited=args.wait and code == EXIT_OK)
    out.document(document)
    return code


def _check_new_key(
    args: argparse.Namespace, base_url: httpx.URL, url: str, new: ApiKey, source: str
) -> Verdict:
    """The check's verdict on the new key; :class:`CLIError` (nothing written) unless the
    API accepted it."""
    from . import _rotate

    probe = KeyCache(
        _rotate.NewKey(new),
        ttl=300.0,
        max_stale=0.0,
        fetch_timeout=args.timeout,
        min_refresh_interval=0.0,
    )
    with _rotate.quiet_rejection():
        answer = _send_check(args, base_url, probe, args.timeout)
    verdict = check_verdict(answer, url=url, timeout=args.timeout)
    if verdict.code != EXIT_OK:
        raise CLIError(_rotate_refusal(verdict, url, source), verdict.code)
    return verdict


def _wait_for_fleet(plan: DeletionPlan, old: ApiKey, out: _Out) -> int:
    """``--wait``: block until the old key may be deleted; 130 on Ctrl-C, with a note
    that the rotation itself is done."""
    from . import _rotate

    delete_after = _rotate.format_utc(plan.delete_after)
    try:
        _rotate.wait_until(plan, stream=sys.stderr)
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted while waiting; the rotation itself is done: delete the old "
            f"key {old.masked} after {delete_after}, not before",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_INTERRUPTED
    out.line(f"Waited until {delete_after}: delete the old key {old.masked} now.")
    return EXIT_OK


def _rotate_refusal(verdict: Verdict, url: str, source: str) -> str:
    """Why the new key was not stored, from the check's verdict."""
    fields = verdict.fields
    if fields["status"] == 401:
        reason = "/".join(p for p in (fields["type"], fields["code"]) if p) or "no error code"
        return (
            f"the API rejected the new key (GET {url} answered 401 {reason}, requestId "
            f"{fields['request_id'] or 'none'}); nothing was written to {source}: copy the "
            "new key again from the dashboard (Settings > API Access)"
        )
    detail = verdict.text.removeprefix("FAILED: ")
    return f"the new key could not be checked, so nothing was written to {source}: {detail}"


# --------------------------------------------------------------------------- demo


def _cmd_demo(args: argparse.Namespace, out: _Out) -> int:
    from .testing._demo import DemoOptions, format_summary, run_demo

    options = DemoOptions(
        duration=args.duration,
        threads=args.threads,
        tasks=args.tasks,
        rotations=args.rotations,
        source=args.source,
    )
    if args.source is not None and args.rotations_given:
        print(
            f"{PROG}: note: --rotations is ignored with --source (the demo cannot rotate a "
            "real backend)",
            file=sys.stderr,
            flush=True,
        )
    report = run_demo(options, progress_stream=None if args.no_progress else sys.stderr)
    out.document(report.as_json())
    out.line()
    out.line(format_summary(report))
    return EXIT_OK if report.ok else EXIT_FAILED


# --------------------------------------------------------------------------- parser


def _positive_seconds(text: str) -> float:
    value: float | None = None
    try:
        value = float(text)
    except ValueError:
        pass  # raised below, outside this block: float()'s error quotes the text
    if value is None:
        raise argparse.ArgumentTypeError(f"expected seconds, got {redact(repr(text))}")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {redact(repr(text))}")
    return value


def _count(text: str) -> int:
    value: int | None = None
    try:
        value = int(text)
    except ValueError:
        pass  # raised below, outside this block: int()'s error quotes the text
    if value is None:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {redact(repr(text))}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {redact(repr(text))}")
    return value


class _RotationsAction(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        namespace.rotations_given = True


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse quotes what it could not parse: a key given to the wrong flag too.
        from ._redact import looks_like_key

        if looks_like_key(message):
            # A key typed on the command line: never echo it, and say where it belongs.
            # Masked before the hint is appended: the key's run would take in the ';'.
            message = (
                f"{redact(message)}; a key never belongs on the command line (shell history, "
                "the process list): rotate reads it from standard input; treat a key typed "
                "here as exposed"
            )
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {redact(message)}\n")


# The grammar as docs/configuration.md spells it (tests/test_docs_uri_grammar.py checks).
SOURCE_HELP = (
    "where the key comes from, as a source URI: env:NAME, file:/path[?field=F], "
    "aws-sm:SECRET_ID[?field=F&region=R&stage=S&version_id=V&pending_fallback=true], "
    "aws-ssm:NAME[?field=F&region=R], "
    "aws-lambda-extension:SECRET_ID[?field=F&stage=S&version_id=V&port=P&"
    "pending_fallback=true], aws-lambda-extension:ssm:NAME[?field=F&port=P], "
    "vault:PATH[?mount=M&field=F&kv=2&auth=...&role=R&auth_mount=A&namespace=N]; default: "
    "SCALING_API_KEY_SOURCE, else SCALING_API_KEY, else SCALING_API_KEY_FILE"
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scaling-credentials`` command."""

    def common(top: bool) -> _Parser:
        # Options accepted before and after the subcommand. The subcommand's copy defaults
        # to SUPPRESS so that it does not reset a value given before the subcommand.
        options = _Parser(add_help=False)
        default: Any = False if top else argparse.SUPPRESS
        options.add_argument(
            "--debug",
            action="store_true",
            default=default,
            help="print tracebacks with errors, and the library's info logs",
        )
        options.add_argument(
            "-v",
            "--verbose",
            action="store_true",
            default=default,
            help="print the library's info logs (masked keys only) to stderr",
        )
        return options

    parser = _Parser(
        prog=PROG,
        description="Which Scaling API key does this workload use, and does it work?",
        epilog=(
            "exit codes: 0 ok; 1 the key does not work or the backend failed; "
            "2 configuration error. Keys are printed masked (resolve --reveal excepted)."
        ),
        parents=[common(top=True)],
    )
    parser.set_defaults(json=False, quiet=False)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    resolve = sub.add_parser(
        "resolve",
        parents=[common(top=False)],
        help="fetch the key: its source, masked form, version and fetch time",
        description=(
            "Fetch the key from its source and show where it came from, its masked form, "
            "its version and how long the fetch took. The full key is never printed, "
            "unless --reveal is given."
        ),
    )
    resolve.add_argument("--source", metavar="URI", help=SOURCE_HELP)
    resolve.add_argument("--json", action="store_true", help="print one JSON document")
    resolve.add_argument(
        "--reveal",
        action="store_true",
        help="print the full key to stdout (and as 'value' with --json); never the default",
    )
    resolve.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"give up after this many seconds (default {DEFAULT_TIMEOUT:g})",
    )
    resolve.set_defaults(handler=_cmd_resolve)

    check = sub.add_parser(
        "check",
        parents=[common(top=False)],
        help="resolve the key, then GET /oncall/schedules with it",
        description=(
            "Resolve the key, then send GET /oncall/schedules with it through ScalingAuth "
            "and print OK or the API's error code and requestId. Exit 0 when the key works, "
            "1 when it does not (401, unreachable, timeout), 2 on a configuration error. "
            "Fit for a Kubernetes readiness probe or init container."
        ),
    )
    check.add_argument("--source", metavar="URI", help=SOURCE_HELP)
    check.add_argument(
        "--base-url",
        metavar="URL",
        help=(
            "the API's base URL (default: SCALING_API_BASE_URL, else https://api.scaling.cloud/v1)"
        ),
    )
    check.add_argument(
        "--allow-host",
        action="append",
        metavar="HOST",
        help="another host that may receive the key over https (repeatable)",
    )
    check.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"the whole check takes at most this many seconds (default {DEFAULT_TIMEOUT:g})",
    )
    check.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print nothing on success; one line on stderr on failure",
    )
    check.add_argument("--json", action="store_true", help="print one JSON document")
    check.set_defaults(handler=_cmd_check)

    providers = sub.add_parser(
        "providers",
        parents=[common(top=False)],
        help="list the installed key source schemes",
        description=(
            "List the installed provider schemes, their distributions and versions, whether "
            "rotate can store a key in each (the provider class is imported to tell; one "
            "that fails to import shows '?' and why), and what to install for missing "
            "first-party ones."
        ),
    )
    providers.add_argument("--json", action="store_true", help="print one JSON document")
    providers.set_defaults(handler=_cmd_providers)

    rotate = sub.add_parser(
        "rotate",
        parents=[common(top=False)],
        help="store a new key in its source, safely, and say when the old one may go",
        description=(
            "Read the new key from standard input (a hidden prompt on a terminal; never "
            "from the command line or the environment), check it against the API "
            "(GET /oncall/schedules), store it in the source as a new version, read it back "
            "through a new provider, and print when the old key may be deleted in the "
            "dashboard: now + the fleet's TTL + 60 s. Nothing is written when the key is "
            "malformed, equals the source's key, or the API rejects it or cannot be reached. "
            "Exit 0 done, 1 the API or the backend failed, 2 configuration (bad source, a "
            "source that cannot store, a bad key), 130 interrupted."
        ),
    )
    rotate.add_argument(
        "--source",
        metavar="URI",
        required=True,
        help="the source the fleet reads, as a source URI (required: file:, vault:, aws-sm:, "
        "aws-ssm: or another scheme that can store; see scaling-credentials providers)",
    )
    rotate.add_argument(
        "--base-url",
        metavar="URL",
        help=(
            "the API's base URL for the check of the new key (default: SCALING_API_BASE_URL, "
            "else https://api.scaling.cloud/v1)"
        ),
    )
    rotate.add_argument(
        "--allow-host",
        action="append",
        metavar="HOST",
        help="another host that may receive the key over https (repeatable)",
    )
    rotate.add_argument(
        "--fleet-ttl",
        type=_positive_seconds,
        default=None,
        metavar="S",
        help="the longest key TTL in the fleet, in seconds (default: SCALING_API_KEY_TTL, "
        "else 300); add any delay between the source and the processes (an agent's render "
        "interval)",
    )
    rotate.add_argument(
        "--wait",
        action="store_true",
        help="wait until the old key may be deleted, with a progress line on stderr",
    )
    rotate.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="bound on reading the source, on the check and on the read-back, each "
        f"(default {DEFAULT_TIMEOUT:g})",
    )
    rotate.add_argument("--json", action="store_true", help="print one JSON document")
    rotate.set_defaults(handler=_cmd_rotate)

    demo = sub.add_parser(
        "demo",
        parents=[common(top=False)],
        help="a key rotation under load against a local fake API (no cloud account)",
        description=(
            "Start a fake Scaling API and a key file laid out like a Kubernetes secret "
            "volume, send requests from threads and asyncio tasks through ScalingAuth while "
            "the key is rotated and the old one revoked, then run the same load with a key "
            "read once, for contrast. Exit 0 only when no request failed with the library. "
            "With --source, the fake API accepts the key that source holds and the load "
            "runs once, without rotation."
        ),
    )
    demo.add_argument(
        "--duration",
        type=_positive_seconds,
        default=4.0,
        metavar="S",
        help="seconds of load per run (two runs; default 4)",
    )
    demo.add_argument(
        "--threads", type=_count, default=4, metavar="N", help="threads (httpx.Client), default 4"
    )
    demo.add_argument(
        "--tasks",
        type=_count,
        default=8,
        metavar="N",
        help="asyncio tasks (one httpx.AsyncClient), default 8",
    )
    demo.add_argument(
        "--rotations",
        type=_count,
        default=3,
        metavar="N",
        action=_RotationsAction,
        help="key rotations per run, evenly spread (default 3)",
    )
    demo.add_argument(
        "--source",
        metavar="URI",
        help="use this real key source instead of the demo's key file (no rotation)",
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON")
    demo.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    demo.set_defaults(handler=_cmd_demo, rotations_given=False)
    return parser


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        status = exc.code
        return status if isinstance(status, int) else (EXIT_OK if status is None else EXIT_CONFIG)
    if getattr(args, "handler", None) is None:
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    out = _Out(json_mode=args.json, quiet=args.quiet)
    level = logging.WARNING
    if args.debug or args.verbose:
        level = logging.INFO
    elif args.quiet:
        level = logging.ERROR
    undo_logging = _configure_logging(level)
    try:
        code: int = args.handler(args, out)
        return code
    except KeyboardInterrupt:
        _Out.error("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (| head): nothing left to tell it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except (CLIError, ScalingCredentialsError) as exc:
        return _report(exc, args, out, exit_code_for(exc), _hint(exc))
    except Exception as exc:
        message = (
            f"unexpected {type(exc).__name__}; run again with --debug for the traceback "
            "and report it"
        )
        return _report(exc, args, out, EXIT_FAILED, message)
    finally:
        undo_logging()


def _report(exc: BaseException, args: argparse.Namespace, out: _Out, code: int, text: str) -> int:
    if args.debug:
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        print(redact(trace), end="", file=sys.stderr, flush=True)
    _Out.error(text)
    out.document(
        {
            "ok": False,
            "exit_code": code,
            "error": {"type": type(exc).__name__, "message": _one_line(text)},
        }
    )
    return code
