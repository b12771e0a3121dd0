"""A key pasted into every setting a user controls never comes back out.

Every user-supplied setting is fed a key, raw and percent-encoded (the URI parts before
and after decoding): the environment variables, every part of a source URI, the
constructors' arguments, the CLI's flags, a key file's content and its JSON field names.
What leaves the library is then searched for the key's token: every exception (message,
repr, ``args``, attributes, the whole ``__cause__``/``__context__`` chain and its
traceback), every log record (all loggers at DEBUG), every warning, and the CLI's
stdout and stderr (text, ``--json`` and ``--debug``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from scaling_credentials import (
    ConfigurationError,
    EnvProvider,
    FileProvider,
    KeyCache,
    ScalingAuth,
    ScalingCredentialsError,
    async_scaling_client,
    provider_from_env,
    provider_from_uri,
    scaling_client,
)
from scaling_credentials.cli import main
from scaling_credentials.testing import FakeScalingAPI, MemoryProvider
from scaling_credentials.testing.provider_suite import assert_no_secret, error_texts

TOKEN = "ECHOtest0123456789abcdefQRST"
KEY = "scl_live_" + TOKEN
# The key as it may be pasted: raw, with the prefix's underscores or all of it
# percent-encoded, encoded twice, in lower-case hex.
FORMS = {
    "raw": KEY,
    "underscores-encoded": "scl%5Flive%5F" + TOKEN,
    "lower-hex": "scl%5flive_" + TOKEN,
    "prefix-encoded": "%73%63%6C%5F%6C%69%76%65%5F" + TOKEN,
    "encoded-twice": "scl%255Flive%255F" + TOKEN,
}
ENVIRONMENT = ("SCALING_", "AWS_", "VAULT_", "BAO_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@dataclass
class Exits:
    """What left the library during a test."""

    records: pytest.LogCaptureFixture
    texts: list[str] = field(default_factory=list)
    warned: list[warnings.WarningMessage] = field(default_factory=list)

    def error(self, action: Callable[[], object]) -> BaseException | None:
        """Run ``action``; keep what its exception (if any) shows."""
        try:
            action()
        except Exception as exc:
            self.texts += error_texts(exc)
            return exc
        return None

    def everything(self) -> list[str]:
        formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
        texts = list(self.texts)
        for record in self.records.records:  # every logger's, at DEBUG
            texts.append(formatter.format(record))
            texts.append(repr(record.args))
            if record.exc_info and record.exc_info[1] is not None:
                texts += error_texts(record.exc_info[1])
        texts += [str(w.message) for w in self.warned]
        return texts

    def check(self) -> None:
        for index, text in enumerate(self.everything()):
            if TOKEN in text:
                line = next(line for line in text.splitlines() if TOKEN in line)
                shown_line = line.replace(TOKEN, "<TOKEN>")[:300]
                raise AssertionError(f"exit #{index} holds the key's token: {shown_line}")


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[Exits]:
    for name in list(os.environ):
        if name.upper().startswith(ENVIRONMENT):
            monkeypatch.delenv(name)
    caplog.set_level(logging.DEBUG)
    found = Exits(caplog)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        yield found
        found.warned = list(warned)
    found.check()


def raises(exits: Exits, action: Callable[[], object]) -> BaseException:
    error = exits.error(action)
    assert error is not None, "expected an error"
    return error


# ============================================================================ settings


# Source URIs with the key in each part: as the whole URI, the path, a parameter's
# value, a parameter's name, the scheme, for each scheme.
def source_uris(form: str) -> list[str]:
    return [
        form,
        f"env:{form}",
        f"env:X?{form}=1",
        f"file:/run/secrets/{form}",
        f"file:///run/{form}/key",
        f"file:/run/key?field={form}",
        f"file:/run/key?{form}=x",
        f"aws-sm:{form}",
        f"aws-sm:prod/x?field={form}",
        f"aws-sm:prod/x?region={form}",
        f"aws-lambda-extension:x?port={form}",
        f"aws-lambda-extension:x?stage={form}",
        f"vault:{form}",
        f"vault:x?mount={form}&field=api_key",
        f"vault:x?auth={form}",
        f"{form}:x",
        f"nosuchscheme:{form}",
        f"env:X?field={form}&field={form}",
    ]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_source_uris(exits: Exits, form: str) -> None:
    for uri in source_uris(FORMS[form]):
        exits.error(lambda uri=uri: provider_from_uri(uri).fetch())  # type: ignore[misc]
        exits.error(lambda uri=uri: ScalingAuth(uri))  # type: ignore[misc]
        exits.error(
            lambda uri=uri: provider_from_env({"SCALING_API_KEY_SOURCE": uri})  # type: ignore[misc]
        )


@pytest.mark.parametrize("form", sorted(FORMS))
def test_key_file_setting(exits: Exits, form: str, tmp_path: Path) -> None:
    value = FORMS[form]
    for path in (value, f"{tmp_path}/{value}", f"{tmp_path}/{value}/key"):
        env = {"SCALING_API_KEY_FILE": path}
        exits.error(lambda env=env: provider_from_env(env).fetch())  # type: ignore[misc]
        exits.error(lambda path=path: FileProvider(path).fetch())  # type: ignore[misc]
        exits.error(
            lambda path=path: KeyCache(FileProvider(path), max_stale=0).get()  # type: ignore[misc]
        )


@pytest.mark.parametrize("form", sorted(FORMS))
def test_ttl_setting(exits: Exits, form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCALING_API_KEY_TTL", FORMS[form])
    raises(exits, lambda: KeyCache(MemoryProvider(KEY)))


@pytest.mark.parametrize("form", sorted(FORMS))
def test_constructor_arguments(exits: Exits, form: str, tmp_path: Path) -> None:
    value = FORMS[form]
    (tmp_path / "key").write_text(KEY)
    exits.error(lambda: EnvProvider(value))
    exits.error(lambda: EnvProvider(f"X{value}"))
    exits.error(lambda: FileProvider(tmp_path / "key", field=value).fetch())
    exits.error(lambda: FileProvider(tmp_path / "key", max_size=value))  # type: ignore[arg-type]
    exits.error(lambda: KeyCache(MemoryProvider(KEY), ttl=value))  # type: ignore[arg-type]
    exits.error(lambda: ScalingAuth(MemoryProvider(KEY), allowed_hosts=[value]))
    exits.error(lambda: ScalingAuth(MemoryProvider(KEY), allowed_hosts=[f"https://{value}"]))
    exits.error(lambda: ScalingAuth(value))  # type: ignore[arg-type]


@pytest.mark.parametrize("form", sorted(FORMS))
def test_base_urls(exits: Exits, form: str) -> None:
    value = FORMS[form]
    for base_url in (
        value,
        f"https://{value}.example.com/v1",
        f"http://{value}/v1",
        f"http://127.0.0.1:1/{value}",
        f"http://user:{value}@127.0.0.1:1/v1",
        f"https://api.scaling.cloud/v1?key={value}",
    ):

        def send(base_url: str = base_url) -> None:
            with scaling_client(MemoryProvider(KEY), base_url=base_url, timeout=2) as client:
                client.get("/oncall/schedules")

        exits.error(send)


CONTENTS: dict[str, bytes] = {
    "bearer": f"Bearer {KEY}".encode(),
    "two-keys": f"{KEY} {KEY}".encode(),
    "control-character": f"{KEY}\x00".encode(),
    "not-utf8": b"\xff\xfe" + KEY.encode(),
    "invalid-json": b'{"api_key": "' + KEY.encode(),
    "json-key-as-field-name": json.dumps({KEY: "x"}).encode(),
    "json-encoded-key-as-field-name": json.dumps({FORMS["underscores-encoded"]: 1}).encode(),
    "json-number": json.dumps({"api_key": 5, KEY: KEY}).encode(),
    "json-list": json.dumps([KEY]).encode(),
    "json-nested": json.dumps({"api_key": {"value": KEY}}).encode(),
    "json-deep": b"[" * 100_000 + KEY.encode(),
    "huge": KEY.encode() * 3000,
}


@pytest.mark.parametrize("case", sorted(CONTENTS))
def test_key_file_contents(exits: Exits, case: str, tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(CONTENTS[case])
    path.chmod(0o600)
    for field_name in (None, "api_key", KEY):
        provider = FileProvider(path, field=field_name) if field_name != KEY else None
        if provider is None:
            exits.error(lambda: FileProvider(path, field=KEY))
            continue
        exits.error(provider.fetch)
        exits.error(lambda provider=provider: KeyCache(provider, max_stale=0).get())  # type: ignore[misc]
        auth = ScalingAuth(provider)
        exits.error(
            lambda auth=auth: next(
                auth.sync_auth_flow(httpx.Request("GET", "https://api.scaling.cloud/v1"))
            )
        )  # type: ignore[misc]


def test_the_environment_key_with_a_bad_value(exits: Exits) -> None:
    for value in (f"Bearer {KEY}", f"{KEY} x", f"{KEY}\n{KEY}", f"'{KEY}'"):
        exits.error(lambda value=value: provider_from_env({"SCALING_API_KEY": value}).fetch())  # type: ignore[misc]


# ============================================================================ the CLI


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(
    exits: Exits, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Ran]:
    """``main(argv)`` in this process with ``env`` set; its output joins the exits."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> Ran:
        with monkeypatch.context() as patch:
            for name, value in (env or {}).items():
                patch.setenv(name, value)
            capsys.readouterr()
            code = main(list(args))
            out, err = capsys.readouterr()
        exits.texts += [out, err]
        return Ran(code, out, err)

    return run


MODES = ([], ["--json"], ["--debug"], ["--debug", "--json"])


@pytest.mark.parametrize("form", sorted(FORMS))
def test_cli_flags(cli: Callable[..., Ran], form: str) -> None:
    value = FORMS[form]
    env = {"ECHO_TEST_KEY": KEY}
    for mode in MODES:
        for uri in source_uris(value):
            assert cli("resolve", "--source", uri, *mode).code == 2
        for flags in (
            ["--base-url", value],
            ["--base-url", f"https://{value}.example.com/v1"],
            ["--base-url", f"http://127.0.0.1:1/{value}"],
            ["--base-url", f"http://u:{value}@127.0.0.1:1/v1"],
            ["--allow-host", value, "--base-url", f"https://{value}/v1"],
            ["--timeout", value],
        ):
            ran = cli("check", "--source", "env:ECHO_TEST_KEY", *flags, *mode, env=env)
            assert ran.code != 0
        assert cli("resolve", "--timeout", value, *mode).code == 2
        assert cli("demo", "--duration", value, *mode).code == 2
        assert cli(value, *mode).code == 2


@pytest.mark.parametrize("form", sorted(FORMS))
def test_base_url_setting(exits: Exits, form: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for value in (
        FORMS[form],
        f"https://{FORMS[form]}.example/v1",
        f"http://127.0.0.1:1/{FORMS[form]}",
    ):
        monkeypatch.setenv("SCALING_API_BASE_URL", value)

        def send() -> None:
            with scaling_client(MemoryProvider(KEY), timeout=2) as client:
                client.get("/oncall/schedules")

        raises(exits, send)


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize(
    "variable",
    [
        "SCALING_API_KEY_SOURCE",
        "SCALING_API_KEY_FILE",
        "SCALING_API_KEY_TTL",
        "SCALING_API_BASE_URL",
    ],
)
def test_cli_environment(cli: Callable[..., Ran], form: str, variable: str) -> None:
    value = FORMS[form]
    env = {variable: value}
    if variable in ("SCALING_API_KEY_TTL", "SCALING_API_BASE_URL"):
        env["SCALING_API_KEY"] = KEY
    for mode in MODES:
        cli("resolve", *mode, env=env)
        cli("check", "--base-url", "http://127.0.0.1:1/v1", "--timeout", "2", *mode, env=env)
        cli("check", "--timeout", "2", *mode, env=env)


PASSWORD = "hunter2PASSWORDsecret"
# Base URLs with a password that do not parse as an http(s) URL (so are not seen to hold
# credentials): a port that is not a number or out of range, no scheme, a password with
# a slash in it, a broken IPv6 literal.
PASSWORD_URLS = [
    f"https://user:{PASSWORD}@api.scaling.cloud:port/v1",
    f"https://user:{PASSWORD}@api.scaling.cloud:99999999/v1",
    f"user:{PASSWORD}@api.scaling.cloud/v1",
    f"https://user:pa/{PASSWORD}@api.scaling.cloud/v1",
    f"https://user:{PASSWORD}@[::1/v1",
    f"//user:{PASSWORD}@api.scaling.cloud/v1",
]


@pytest.mark.parametrize(
    "value",
    PASSWORD_URLS,
    ids=[
        "bad-port",
        "port-out-of-range",
        "no-scheme",
        "slash-in-password",
        "bad-ipv6",
        "no-scheme-2",
    ],
)
def test_a_password_in_a_malformed_base_url_is_never_echoed(
    exits: Exits, cli: Callable[..., Ran], value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"ECHO_TEST_KEY": KEY}
    for mode in MODES:
        ran = cli("check", "--source", "env:ECHO_TEST_KEY", "--base-url", value, *mode, env=env)
        assert ran.code == 2
        ran = cli(
            "check",
            "--source",
            "env:ECHO_TEST_KEY",
            *mode,
            env={**env, "SCALING_API_BASE_URL": value},
        )
        assert ran.code == 2
    monkeypatch.setenv("SCALING_API_BASE_URL", value)
    raises(exits, lambda: scaling_client(MemoryProvider(KEY)))
    raises(exits, lambda: async_scaling_client(MemoryProvider(KEY)))
    assert_no_secret(PASSWORD, *exits.everything())
    assert_no_secret(PASSWORD.removeprefix("hunter2"), *exits.everything())


@pytest.mark.parametrize("case", sorted(CONTENTS))
def test_cli_key_file_contents(cli: Callable[..., Ran], case: str, tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(CONTENTS[case])
    for mode in MODES:
        assert cli("resolve", "--source", f"file:{path}", *mode).code != 0
        assert cli("resolve", "--source", f"file:{path}?field=api_key", *mode).code != 0


def test_error_classes_mask_what_they_are_given() -> None:
    # The one masking step for exceptions: whatever message a library error is built
    # with, a key in it is masked.
    for form in FORMS.values():
        error = ScalingCredentialsError(f"bad value {form!r}", form)
        assert TOKEN not in str(error) and TOKEN not in repr(error)


@pytest.mark.parametrize("form", sorted(FORMS))
def test_redact_masks_every_form_once(form: str) -> None:
    from scaling_credentials.toolkit import looks_like_key, redact

    text = f"source file:/run/{FORMS[form]} and {FORMS[form]}"
    masked = redact(text)
    assert TOKEN not in masked
    assert masked.count("scl_live_****QRST") == 2
    assert redact(masked) == masked
    assert looks_like_key(FORMS[form])


@pytest.mark.parametrize(
    "path",
    [
        f"/v1/{KEY}",
        f"/v1/x?key={KEY}",
        f"/v1/x?key={FORMS['underscores-encoded']}",
        f"/v1/{FORMS['prefix-encoded']}",
    ],
)
def test_a_url_that_holds_a_key_is_refused_before_anything_is_sent(
    api: FakeScalingAPI, path: str
) -> None:
    with (
        httpx.Client(auth=ScalingAuth(MemoryProvider(api.issue_key()))) as client,
        pytest.raises(ConfigurationError, match="URL holds an API key"),
    ):
        client.get(api.url.removesuffix("/v1") + path)
    assert api.requests == []


def test_cli_option_parsers_keep_no_parse_error_in_the_chain() -> None:
    # ``raise ... from None`` hides float()'s ValueError (which quotes the text) but
    # keeps it as __context__: the parsers raise outside the except block instead.
    import argparse

    from scaling_credentials.cli import _count, _positive_seconds

    for parse in (_positive_seconds, _count):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            parse(KEY)
        assert info.value.__context__ is None and info.value.__cause__ is None
        assert TOKEN not in str(info.value)
