"""Secret hygiene, audited: representative scenarios (rotation, failures, stale serving,
bad values, malformed answers, the CLI) run with every logger at DEBUG (root,
scaling_credentials, httpx, httpcore, urllib3, hvac, botocore) captured, and no full key,
nor its token alone, may appear in any formatted log record, record argument, exception
message, traceback, repr, stats, CLI output or warning.

Then: ``redact_logging()`` (the opt-in filter for third-party DEBUG logs; the botocore
case with moto is in providers/aws/tests/test_reliability_aws.py), where the key may go
(Authorization never follows a redirect to another origin; never in a URL), and what
keeps it out of pickles and copies.

Covered elsewhere, not repeated here: FileProvider's size cap and its once-only warning
for a file others can read (tests/test_env_file_chain.py), ApiKey refusing pickles and
returning itself from copies (tests/test_key.py), destinations refused before anything
is sent (tests/test_auth.py).
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import pickle
import random
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from scaling_credentials import (
    ApiKey,
    EnvProvider,
    FileProvider,
    KeyCache,
    ProviderError,
    ScalingAPIError,
    ScalingAuth,
    ScalingCredentialsError,
    raise_for_scaling_error,
    redact_logging,
)
from scaling_credentials._redact import KeyRedactingFilter, redact_text
from scaling_credentials.testing import (
    FakeClock,
    FakeScalingAPI,
    FaultyProvider,
    ScriptedResponse,
)
from scaling_credentials.testing.provider_suite import BAD_VALUES, LEAK_MARKER, assert_no_secret

PATH = "/oncall/schedules"
LOGGERS = ("", "scaling_credentials", "httpx", "httpcore", "urllib3", "hvac", "botocore")


def token(key: str) -> str:
    return key.removeprefix("scl_live_")


def write_key(path: Path, value: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(value + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def render(error: BaseException) -> list[str]:
    """Everything an error shows: message, repr, the whole chained traceback."""
    return [
        str(error),
        repr(error),
        "".join(traceback.format_exception(type(error), error, error.__traceback__)),
    ]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Audit:
    """What the scenarios produced; ``secrets`` are checked against all of it."""

    stream: io.StringIO
    records: _Records
    secrets: set[str] = field(default_factory=set)
    texts: list[str] = field(default_factory=list)
    warned: list[warnings.WarningMessage] = field(default_factory=list)

    def key(self, value: str) -> str:
        self.secrets.add(value)
        return value

    def add(self, *texts: object) -> None:
        self.texts.extend(str(t) for t in texts)

    def everything(self) -> list[str]:
        rendered = [self.stream.getvalue()]
        for record in self.records.records:
            rendered.append(record.getMessage())
            rendered.append(repr(record.args))
            rendered.append(repr(record.msg))
            if record.exc_info and record.exc_info[1] is not None:
                rendered.extend(render(record.exc_info[1]))
        rendered.extend(str(w.message) for w in self.warned)
        return rendered + self.texts

    def check(self) -> None:
        everything = self.everything()
        for secret in self.secrets:
            assert_no_secret(secret, *everything)
            assert_no_secret(token(secret), *everything)


@pytest.fixture
def audit() -> Iterator[Audit]:
    stream = io.StringIO()
    text_handler = logging.StreamHandler(stream)
    text_handler.setLevel(logging.DEBUG)
    text_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    records = _Records()
    root = logging.getLogger()
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(text_handler)
    root.addHandler(records)
    audit = Audit(stream, records)
    try:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            yield audit
            audit.warned = list(warned)
        assert audit.records.records, "nothing was logged: the capture is not working"
        audit.check()
    finally:
        root.removeHandler(text_handler)
        root.removeHandler(records)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# ---------------------------------------------------------------------------- the scenarios


def test_rotation_through_sync_and_async_clients(
    audit: Audit, api: FakeScalingAPI, tmp_path: Path
) -> None:
    path = tmp_path / "api-key"
    key = audit.key(api.issue_key())
    write_key(path, key)
    cache = KeyCache(FileProvider(path), ttl=3600, min_refresh_interval=0)
    auth = ScalingAuth(cache)
    with httpx.Client(base_url=api.url, auth=auth) as client:
        response = client.get(PATH)
        audit.add(repr(response.request.headers), response.request, response.headers)
        for _ in range(2):
            new = audit.key(api.rotate())
            write_key(path, new)
            api.revoke(key)
            key = new
            response = client.post(PATH, json={"name": f"audit-{key[-4:]}"})
            assert response.status_code == 201 and len(response.history) == 1
            audit.add(repr(response.history[0].request.headers), response.history[0].text)

    async def async_part() -> None:
        nonlocal key
        async with httpx.AsyncClient(base_url=api.url, auth=auth) as client:
            new = audit.key(api.rotate())
            write_key(path, new)
            api.revoke(key)
            responses = await asyncio.gather(*(client.get(PATH) for _ in range(20)))
            assert {r.status_code for r in responses} == {200}

    asyncio.run(async_part())
    audit.add(repr(cache), cache.stats, repr(auth), repr(cache.peek()), str(cache.peek()))
    audit.add(*(repr(r) for r in api.requests))


def test_failures_stale_serving_and_exhaustion(audit: Audit, api: FakeScalingAPI) -> None:
    from scaling_credentials.testing import MemoryProvider

    key = audit.key(api.issue_key())
    clock = FakeClock()
    faulty = FaultyProvider(MemoryProvider(key), clock=clock)
    cache = KeyCache(
        faulty,
        ttl=60,
        jitter=0,
        refresh_ahead=0,
        max_stale=30,
        backoff_initial=1,
        backoff_max=4,
        clock=clock,
        rng=random.Random(1),
    )
    with httpx.Client(base_url=api.url, auth=ScalingAuth(cache)) as client:
        assert client.get(PATH).status_code == 200
        faulty.fail = OSError("disk error")
        clock.advance(61)
        for _ in range(20):
            clock.advance(1)
            assert client.get(PATH).status_code == 200  # stale
        clock.advance(20)
        with pytest.raises(ScalingCredentialsError) as info:
            client.get(PATH)
        audit.add(*render(info.value))
    audit.add(cache.stats, repr(cache))


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_in_the_source(
    audit: Audit, case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = BAD_VALUES[case]
    audit.secrets.add(LEAK_MARKER)
    path = tmp_path / "api-key"
    path.write_text(value)
    monkeypatch.setenv("SCALING_AUDIT_KEY", value.replace("\x00", ""))
    for provider in (FileProvider(path), EnvProvider("SCALING_AUDIT_KEY")):
        cache = KeyCache(provider, fetch_timeout=10)
        with (
            httpx.Client(base_url="http://127.0.0.1:9/v1", auth=ScalingAuth(cache)) as client,
            pytest.raises(ScalingCredentialsError) as info,
        ):
            client.get(PATH)  # fails before anything is sent
        audit.add(*render(info.value), repr(provider), cache.stats)
        logging.getLogger("scaling_credentials.audit").debug("done with %s", provider)


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, b"<html>Unauthorized</html>"),
        (401, b'{"code": "invalid_api_key"'),
        (401, b'{"statusCode": 401, "code": "invalid_api_key", "requestId": "r-9"}'),
        (502, b"<html>Bad Gateway</html>"),
    ],
)
def test_malformed_answers(audit: Audit, api: FakeScalingAPI, status: int, body: bytes) -> None:
    key = audit.key(api.issue_key())
    from scaling_credentials.testing import MemoryProvider

    auth = ScalingAuth(KeyCache(MemoryProvider(key), min_refresh_interval=0))
    api.script(ScriptedResponse(status, body, content_type="text/html"))
    with httpx.Client(base_url=api.url, auth=auth) as client:
        response = client.get(PATH)
    assert response.status_code == status
    with pytest.raises(ScalingAPIError) as info:
        raise_for_scaling_error(response)
    audit.add(*render(info.value), repr(response.request.headers))
    with pytest.raises(httpx.HTTPStatusError) as http_error:
        response.raise_for_status()
    audit.add(*render(http_error.value))


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SCALING_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "scaling_credentials", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_resolve_and_check(audit: Audit, api: FakeScalingAPI, tmp_path: Path) -> None:
    path = tmp_path / "api-key"
    key = audit.key(api.issue_key())
    write_key(path, key)
    source = f"file:{path}"
    outputs = [
        run_cli("--debug", "resolve", "--source", source, env={}),
        run_cli("resolve", "--json", env={"SCALING_API_KEY_FILE": str(path)}),
        run_cli("--debug", "check", "--source", source, "--base-url", api.url, env={}),
        run_cli("check", "--json", "--source", source, "--base-url", api.url, env={}),
        # The key itself in the environment, then revoked: check fails with a 401.
        run_cli("--debug", "check", "--base-url", api.url, env={"SCALING_API_KEY": key}),
    ]
    api.revoke(key)
    outputs.append(run_cli("--debug", "check", "--base-url", api.url, env={"SCALING_API_KEY": key}))
    # A key pasted where the source URI belongs, and a malformed key in the file.
    outputs.append(run_cli("--debug", "resolve", "--source", key, env={}))
    path.write_text(f"Bearer {key}")
    outputs.append(run_cli("--debug", "resolve", "--source", source, env={}))
    assert [p.returncode for p in outputs] == [0, 0, 0, 0, 0, 1, 2, 2]
    for proc in outputs:
        audit.add(proc.stdout, proc.stderr)
    logging.getLogger("scaling_credentials.audit").debug("cli audited")


def test_reprs_stats_and_pickles(audit: Audit, tmp_path: Path) -> None:
    value = audit.key("scl_live_reprsandpickles0123456789")
    path = tmp_path / "api-key"
    write_key(path, value)
    provider = FileProvider(path)
    cache = KeyCache(provider)
    auth = ScalingAuth(cache)
    key = cache.get()
    audit.add(repr(key), str(key), f"{key}", f"{key!r}", [key], {"key": key}, (key,))
    audit.add(repr(provider), provider.describe(), repr(cache), cache.stats, repr(auth))
    # Nothing that holds the key can be pickled with it (ApiKey refuses; the cache and
    # the auth hold locks), and the refusal does not quote the key.
    for holder in (key, {"key": key}, cache, auth):
        with pytest.raises(TypeError) as info:
            pickle.dumps(holder)
        audit.add(*render(info.value))
    logging.getLogger("scaling_credentials.audit").debug("reprs audited")


# ---------------------------------------------------------------------------- redact_logging


@pytest.fixture
def clean_filters() -> Iterator[None]:
    """Remove any KeyRedactingFilter the test installed (loggers, handlers, lastResort)."""
    yield
    filterers: list[logging.Filterer] = [logging.getLogger()]
    filterers += [logging.getLogger(n) for n in ("boto3", "botocore", "hvac", "httpcore")]
    filterers += [logging.getLogger(n) for n in ("httpx", "requests", "urllib3", "x")]
    filterers += [h for f in list(filterers) for h in getattr(f, "handlers", [])]
    if logging.lastResort is not None:
        filterers.append(logging.lastResort)
    for filterer in filterers:
        for existing in list(filterer.filters):
            if isinstance(existing, KeyRedactingFilter):
                filterer.removeFilter(existing)


KEY = "scl_live_redactme0123456789abcdWXYZ"


def formatted(record: logging.LogRecord) -> str:
    return logging.Formatter("%(message)s %(extra_field)s").format(record)


def make_record(msg: object, args: object = None, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("botocore.parsers", logging.DEBUG, __file__, 1, msg, args, None)  # type: ignore[arg-type]
    record.extra_field = extra.get("extra_field", "-")
    return record


@pytest.mark.parametrize(
    "record",
    [
        pytest.param(make_record(f"Response body: {KEY}"), id="in-message"),
        pytest.param(make_record("Response body:\n%r", (KEY.encode(),)), id="bytes-arg"),
        pytest.param(
            make_record("body %s", ({"SecretString": KEY, "VersionId": "v1"},)), id="dict-arg"
        ),
        pytest.param(
            make_record("%(body)s", ({"body": f'{{"SecretString":"{KEY}"}}'},)), id="mapping"
        ),
        pytest.param(make_record("header Authorization: Bearer %s\r\n", (KEY,)), id="bearer"),
        pytest.param(make_record("no key here", extra_field=f"token={KEY}"), id="extra"),
        pytest.param(make_record(f"url https://x/?key={KEY}&a=1"), id="query"),
    ],
)
def test_the_filter_masks_keys_wherever_they_are(record: logging.LogRecord) -> None:
    assert KeyRedactingFilter().filter(record) is True  # never drops a record
    text = formatted(record)
    assert_no_secret(token(KEY), text)
    assert "scl_live_****" in text


def test_the_filter_masks_a_traceback_and_bad_format_arguments() -> None:
    try:
        raise ValueError(f"backend said {KEY}")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    KeyRedactingFilter().filter(record)
    text = logging.Formatter().format(record)
    assert_no_secret(token(KEY), text)
    assert "Traceback" in text and "ValueError: backend said scl_live_****WXYZ" in text
    bad = logging.LogRecord("x", logging.INFO, __file__, 1, "%d and %s", (KEY,), None)
    KeyRedactingFilter().filter(bad)
    assert_no_secret(token(KEY), repr(bad.msg), repr(bad.args))


def test_the_filter_leaves_other_records_alone() -> None:
    record = make_record("fetched key %s from %s", ("scl_live_****abcd", "file:/k"))
    args = record.args
    KeyRedactingFilter().filter(record)
    assert (
        record.args is args and record.getMessage() == "fetched key scl_live_****abcd from file:/k"
    )


def test_redact_text() -> None:
    assert redact_text("nothing") == "nothing"
    assert redact_text(f'{{"k": "{KEY}"}}') == '{"k": "scl_live_****WXYZ"}'
    assert redact_text(f"{KEY} {KEY}") == "scl_live_****WXYZ scl_live_****WXYZ"
    assert redact_text("scl_live_short") == "scl_live_****"


def test_redact_logging_installs_on_root_handlers_and_library_loggers(
    clean_filters: None,
) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    botocore = logging.getLogger("botocore")
    own = logging.StreamHandler(io.StringIO())  # like boto3.set_stream_logger()
    botocore.addHandler(own)
    saved = botocore.level
    botocore.setLevel(logging.DEBUG)
    try:
        installed = redact_logging()
        assert installed in handler.filters
        assert redact_logging() is installed  # idempotent
        assert sum(isinstance(f, KeyRedactingFilter) for f in handler.filters) == 1
        assert installed in own.filters and installed in botocore.filters
        # A record from a child logger, propagated to root's handler, key in the args.
        logging.getLogger("botocore.parsers").debug("Response body:\n%r", KEY.encode())
        assert_no_secret(token(KEY), stream.getvalue(), own.stream.getvalue())  # type: ignore[attr-defined]
        assert "scl_live_****WXYZ" in stream.getvalue()
    finally:
        root.removeHandler(handler)
        botocore.removeHandler(own)
        botocore.setLevel(saved)


def test_redact_logging_on_one_named_logger(clean_filters: None) -> None:
    logger = logging.getLogger("x")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        redact_logging("x")
        logger.warning("key %s", KEY)
        assert_no_secret(token(KEY), stream.getvalue())
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    with pytest.raises(TypeError):
        redact_logging(42)  # type: ignore[arg-type]


def test_without_redact_logging_a_key_logged_by_a_dependency_shows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Why the filter exists: a library that logs a body at DEBUG writes the key as is."""
    with caplog.at_level(logging.DEBUG, logger="botocore"):
        logging.getLogger("botocore.parsers").debug("Response body:\n%r", KEY.encode())
    assert token(KEY) in caplog.text


# ---------------------------------------------------------------------------- where the key goes


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("target", ["other-port", "localhost-same-port", "localhost-other-port"])
def test_authorization_never_follows_a_redirect_to_another_origin(status: int, target: str) -> None:
    with FakeScalingAPI() as first, FakeScalingAPI() as second:
        key = first.issue_key()
        from scaling_credentials.testing import MemoryProvider

        destination = {
            "other-port": second.url,
            "localhost-same-port": first.url.replace("127.0.0.1", "localhost"),
            "localhost-other-port": second.url.replace("127.0.0.1", "localhost"),
        }[target] + "/oncall/schedules"
        receiver = second if target != "localhost-same-port" else first
        first.script(ScriptedResponse(status, b"", headers=(("Location", destination),)))
        auth = ScalingAuth(KeyCache(MemoryProvider(key)))
        with httpx.Client(base_url=first.url, auth=auth, follow_redirects=True) as client:
            response = client.get(PATH)
        assert response.status_code == 401  # the other origin saw no key
        assert len(response.history) == 1
        arrived = [r for r in receiver.requests if r.path == "/v1/oncall/schedules"][-1]
        assert arrived.key is None
        assert first.requests[0].key == ApiKey(key).masked


def test_authorization_follows_a_same_origin_redirect(api: FakeScalingAPI) -> None:
    from scaling_credentials.testing import MemoryProvider

    key = api.issue_key()
    api.script(ScriptedResponse(307, b"", headers=(("Location", api.url + "/oncall/schedules"),)))
    auth = ScalingAuth(KeyCache(MemoryProvider(key)))
    with httpx.Client(base_url=api.url, auth=auth, follow_redirects=True) as client:
        assert client.get("/oncall/schedules/").status_code == 200
    assert [r.key for r in api.requests] == [ApiKey(key).masked] * 2


def test_the_key_is_only_ever_in_the_authorization_header(api: FakeScalingAPI) -> None:
    from scaling_credentials.testing import MemoryProvider

    key = api.issue_key()
    provider = MemoryProvider(key)
    sent: list[httpx.Request] = []
    auth = ScalingAuth(KeyCache(provider, min_refresh_interval=0))
    hooks = {"request": [sent.append]}
    with httpx.Client(base_url=api.url, auth=auth, event_hooks=hooks) as client:
        client.get(PATH, params={"page": "2"})
        provider.value = api.rotate()
        api.revoke(key)
        client.post(PATH, json={"name": "where-is-the-key"})
    assert len(sent) == 3  # including the retry after the rotation
    for request in sent:
        assert_no_secret(token(key), str(request.url), request.url.query.decode())
        assert_no_secret(token(provider.value), str(request.url), request.content.decode())
        others = [v for k, v in request.headers.items() if k.lower() != "authorization"]
        assert_no_secret(token(key), *others)
        assert_no_secret(token(provider.value), *others)
        assert request.headers["authorization"].startswith("Bearer scl_live_")
        assert "[secure]" in repr(request.headers)  # httpx masks it in reprs
    for recorded in api.requests:
        assert "scl_live_" not in recorded.path


def test_plain_http_to_a_non_loopback_host_is_refused_before_anything_is_sent() -> None:
    from scaling_credentials.testing import MemoryProvider

    provider = MemoryProvider("scl_live_neverleavesloopback0123")
    auth = ScalingAuth(KeyCache(provider), allowed_hosts=["api.example.internal"])
    transport = httpx.MockTransport(lambda request: pytest.fail("a request was sent"))
    with httpx.Client(auth=auth, transport=transport) as client:
        for url in ("http://api.example.internal/v1", "http://10.1.2.3/v1", "https://evil.test/"):
            with pytest.raises(ScalingCredentialsError) as info:
                client.get(url)
            assert_no_secret(token(provider.value or ""), *render(info.value))
    assert provider.fetches == 0


def test_provider_errors_chain_no_secret_from_the_backend(audit: Audit) -> None:
    """A backend exception quoting the key is chained as ``__cause__``; the library's own
    message never repeats it. (What the backend exception itself says is the backend's:
    this is why the leak audit renders whole chains for the library's own errors.)"""
    key = audit.key("scl_live_chainedcause0123456789")
    from scaling_credentials.testing import MemoryProvider

    provider = MemoryProvider(key)
    provider.fail = ConnectionError(f"backend rejected {key}")
    cache = KeyCache(provider)
    with pytest.raises(ProviderError) as info:
        cache.get()
    assert isinstance(info.value.__cause__, ConnectionError)
    audit.add(str(info.value), repr(info.value), cache.stats)
    logging.getLogger("scaling_credentials.audit").debug("chained audited")
