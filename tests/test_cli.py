"""The scaling-credentials command, run as a user runs it: in a subprocess
(``python -m scaling_credentials``) with a controlled environment, against a
FakeScalingAPI over real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scaling_credentials._key import mask
from scaling_credentials.cli import exit_code_for, main
from scaling_credentials.testing import FakeScalingAPI, free_port
from scaling_credentials.testing.provider_suite import (
    LEAK_MARKER,
    assert_equal_masked,
    assert_no_secret,
)

KEY_VAR = "SCALING_CLI_TEST_KEY"
_DROPPED_PREFIXES = ("SCALING_", "AWS_", "VAULT_", "BAO_")
_PROXY_VARS = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without key sources, cloud credentials or proxies."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith(_DROPPED_PREFIXES) and name.lower() not in _PROXY_VARS
    }
    env["NO_PROXY"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaling_credentials", *args],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def token(key: str) -> str:
    """The secret part of a key: a leak of it alone is a leak too."""
    return key.removeprefix("scl_live_")


def no_secret(key: str, proc: subprocess.CompletedProcess[str] | Ran) -> None:
    assert_no_secret(token(key), proc.stdout, proc.stderr)


def error_lines(proc: subprocess.CompletedProcess[str] | Ran) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


RunMain = Callable[..., Ran]


@pytest.fixture
def run_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> RunMain:
    """``main(argv)`` in this process (fast), with the same controlled environment."""

    def run(*args: str, env: Mapping[str, str] | None = None) -> Ran:
        for name in list(os.environ):
            if name.upper().startswith(_DROPPED_PREFIXES):
                monkeypatch.delenv(name)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    return run


# --------------------------------------------------------------------------- basics


def test_help_lists_every_subcommand() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("resolve", "check", "providers", "demo"):
        assert command in proc.stdout


def test_no_subcommand_prints_usage_and_exits_2() -> None:
    proc = run_cli()
    assert proc.returncode == 2
    assert "usage:" in proc.stderr


def test_unknown_option_exits_2() -> None:
    proc = run_cli("resolve", "--no-such-option")
    assert proc.returncode == 2
    assert "--no-such-option" in proc.stderr


def test_console_script_is_the_same_command() -> None:
    script = Path(sys.executable).with_name("scaling-credentials")
    if not script.exists():
        pytest.skip("the console script is not installed next to this interpreter")
    proc = subprocess.run(
        [str(script), "--version"], env=clean_env(), capture_output=True, text=True, timeout=60
    )
    module = run_cli("--version")
    assert proc.returncode == module.returncode == 0
    assert proc.stdout == module.stdout
    assert proc.stdout.startswith("scaling-credentials ")


# --------------------------------------------------------------------------- resolve


def test_resolve_shows_the_masked_key_and_where_it_came_from(api: FakeScalingAPI) -> None:
    key = api.issue_key()
    proc = run_cli("resolve", env={"SCALING_API_KEY": key})
    assert proc.returncode == 0, proc.stderr
    assert mask(key) in proc.stdout
    assert "env:SCALING_API_KEY" in proc.stdout
    assert "chosen by SCALING_API_KEY" in proc.stdout
    no_secret(key, proc)


def test_resolve_json_from_a_file_source(tmp_path: Path) -> None:
    key = "scl_live_" + "f1le" * 8
    path = tmp_path / "api-key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    proc = run_cli("resolve", "--source", f"file:{path}", "--json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["ok"] is True
    assert document["key"] == mask(key)
    assert document["source"] == f"file:{path}"
    assert document["chosen_by"] == "--source"
    assert document["version"] is None
    assert document["fetch_ms"] >= 0
    assert "value" not in document
    no_secret(key, proc)


def test_resolve_reveal_prints_the_key_only_when_asked() -> None:
    key = "scl_live_" + "r3veal" * 4
    proc = run_cli("resolve", "--reveal", "--source", f"env:{KEY_VAR}", env={KEY_VAR: key})
    assert proc.returncode == 0, proc.stderr
    assert_equal_masked({key} - set(proc.stdout.split()), set())  # printed as a word
    assert "--reveal" in proc.stderr  # the warning, which holds no key
    assert_no_secret(token(key), proc.stderr)
    as_json = run_cli(
        "resolve", "--reveal", "--json", "--source", f"env:{KEY_VAR}", env={KEY_VAR: key}
    )
    assert_equal_masked(json.loads(as_json.stdout)["value"], key)


def test_resolve_with_nothing_configured_exits_2_with_one_line() -> None:
    proc = run_cli("resolve")
    assert proc.returncode == 2
    lines = error_lines(proc)
    assert len(lines) == 1, lines
    assert "SCALING_API_KEY_SOURCE" in lines[0]
    assert "--source" in lines[0]
    assert "Traceback" not in proc.stderr


def test_debug_adds_the_traceback() -> None:
    proc = run_cli("--debug", "resolve")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr
    after = run_cli("resolve", "--debug")
    assert after.returncode == 2
    assert "Traceback" in after.stderr


def test_debug_keeps_the_error_line_and_the_json_message(run_main: RunMain) -> None:
    # The traceback comes in addition to the message and its hint, not instead of them.
    plain = run_main("resolve")
    traced = run_main("--debug", "resolve")
    assert traced.returncode == plain.returncode == 2
    assert "Traceback (most recent call last)" in traced.stderr
    assert error_lines(plain)[0] in error_lines(traced)
    assert "error: Traceback" not in traced.stderr
    document = json.loads(run_main("--debug", "resolve", "--json").stdout)
    assert (
        document["error"]["message"]
        == json.loads(run_main("resolve", "--json").stdout)["error"]["message"]
    )


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer scl_live_{LEAK_MARKER}abcdef",
        f"sk_live_{LEAK_MARKER}abcdef",
        f"scl_live_{LEAK_MARKER} abcdef",
    ],
    ids=["bearer-prefix", "wrong-prefix", "embedded-space"],
)
def test_resolve_malformed_key_in_the_source_exits_2_without_the_value(
    value: str, run_main: RunMain
) -> None:
    proc = run_main("resolve", "--json", "--source", f"env:{KEY_VAR}", env={KEY_VAR: value})
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["type"] == "InvalidKeyFormatError"
    assert len(error_lines(proc)) == 1
    assert_no_secret(LEAK_MARKER, proc.stdout, proc.stderr)


def test_resolve_bad_source_uri_exits_2_with_json_error(run_main: RunMain) -> None:
    proc = run_main("resolve", "--source", "not a uri", "--json")
    assert proc.returncode == 2
    document = json.loads(proc.stdout)
    assert document["ok"] is False
    assert document["exit_code"] == 2
    assert document["error"]["type"] == "ConfigurationError"


def test_resolve_missing_file_exits_2_and_says_what_to_do(
    tmp_path: Path, run_main: RunMain
) -> None:
    proc = run_main("resolve", "--source", f"file:{tmp_path / 'absent'}")
    assert proc.returncode == 2
    (line,) = error_lines(proc)
    assert "does not exist" in line
    assert "--source" in line


def test_a_key_pasted_as_the_source_is_not_echoed(run_main: RunMain) -> None:
    key = "scl_live_" + "pasted" * 4
    proc = run_main("resolve", "--source", key)
    assert proc.returncode == 2
    no_secret(key, proc)


# --------------------------------------------------------------------------- check


def test_check_good_key_exits_0_with_the_request_id(api: FakeScalingAPI) -> None:
    key = api.issue_key()
    proc = run_cli("check", "--base-url", api.url, env={"SCALING_API_KEY": key})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("OK")
    (received,) = api.requests
    assert received.path == "/v1/oncall/schedules"
    assert received.request_id in proc.stdout
    assert mask(key) in proc.stdout
    no_secret(key, proc)


def test_check_json_parses(api: FakeScalingAPI) -> None:
    key = api.issue_key()
    proc = run_cli(
        "check", "--json", "--base-url", api.url, "--source", f"env:{KEY_VAR}", env={KEY_VAR: key}
    )
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert document["ok"] is True
    assert document["exit_code"] == 0
    assert document["status"] == 200
    assert document["key"] == mask(key)
    assert document["request_id"] == api.requests[-1].request_id
    assert document["url"] == api.url + "/oncall/schedules"
    no_secret(key, proc)


def test_check_revoked_key_exits_1_with_code_and_request_id(api: FakeScalingAPI) -> None:
    key = api.issue_key()
    api.revoke(key)
    proc = run_cli("check", "--base-url", api.url, env={"SCALING_API_KEY": key})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith("FAILED")
    assert "invalid_api_key" in proc.stdout
    assert api.requests[-1].request_id in proc.stdout
    # The library's warning names the key in its masked form only.
    assert mask(key) in proc.stderr
    no_secret(key, proc)


def test_check_revoked_key_json(api: FakeScalingAPI, run_main: RunMain) -> None:
    key = api.issue_key()
    api.revoke(key)
    proc = run_main("check", "--json", "--base-url", api.url, env={"SCALING_API_KEY": key})
    assert proc.returncode == 1
    document = json.loads(proc.stdout)
    assert document["ok"] is False
    assert (document["status"], document["code"]) == (401, "invalid_api_key")
    assert document["request_id"] == api.requests[-1].request_id
    no_secret(key, proc)


def test_check_quiet_prints_nothing_on_success_and_one_line_on_failure(
    api: FakeScalingAPI,
) -> None:
    key = api.issue_key()
    ok = run_cli("check", "-q", "--base-url", api.url, env={"SCALING_API_KEY": key})
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    api.revoke(key)
    failed = run_cli("check", "--quiet", "--base-url", api.url, env={"SCALING_API_KEY": key})
    assert failed.returncode == 1
    assert failed.stdout == ""
    (line,) = error_lines(failed)
    assert "invalid_api_key" in line
    no_secret(key, failed)


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--source", "nonsense"], {}),
        (["--source", "no-such-scheme:x"], {}),
        (["--source", f"env:{KEY_VAR}"], {KEY_VAR: f"Bearer scl_live_{LEAK_MARKER}abcdef"}),
        (["--source", f"env:{KEY_VAR}"], {}),
        ([], {}),
    ],
    ids=["not-a-uri", "unknown-scheme", "malformed-key", "unset-variable", "nothing-configured"],
)
def test_check_configuration_errors_exit_2(
    api: FakeScalingAPI, args: list[str], env: dict[str, str], run_main: RunMain
) -> None:
    proc = run_main("check", "--base-url", api.url, *args, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(error_lines(proc)) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_secret(LEAK_MARKER, proc.stdout, proc.stderr)
    assert api.requests == []  # nothing was sent


def test_check_malformed_source_exits_2(api: FakeScalingAPI) -> None:
    proc = run_cli(
        "check",
        "--base-url",
        api.url,
        "--source",
        f"env:{KEY_VAR}",
        env={KEY_VAR: f"Bearer scl_live_{LEAK_MARKER}abcdef"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = error_lines(proc)
    assert "Bearer" in line
    assert_no_secret(LEAK_MARKER, proc.stdout, proc.stderr)
    assert api.requests == []


@pytest.mark.parametrize(
    "base_url",
    ["https://example.com/v1", "http://api.scaling.cloud/v1", "ftp://127.0.0.1/v1", "nope"],
    ids=["foreign-host", "plain-http", "wrong-scheme", "not-a-url"],
)
def test_check_refuses_to_send_the_key_elsewhere(base_url: str, run_main: RunMain) -> None:
    key = "scl_live_" + "n0tsent" * 4
    proc = run_main("check", "--base-url", base_url, env={"SCALING_API_KEY": key})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(error_lines(proc)) == 1, proc.stderr
    no_secret(key, proc)


def test_check_uses_scaling_api_base_url(api: FakeScalingAPI, run_main: RunMain) -> None:
    key = api.issue_key()
    proc = run_main("check", env={"SCALING_API_KEY": key, "SCALING_API_BASE_URL": api.url})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"GET {api.url}/oncall/schedules answered 200" in proc.stdout
    assert len(api.requests) == 1


def test_check_base_url_option_wins_over_the_variable(
    api: FakeScalingAPI, run_main: RunMain
) -> None:
    key = api.issue_key()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    env = {"SCALING_API_KEY": key, "SCALING_API_BASE_URL": dead}
    proc = run_main("check", "--base-url", api.url, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    "value",
    ["api.scaling.cloud/v1", "ftp://api.scaling.cloud/v1", "https://user:pw@api.scaling.cloud/v1"],
    ids=["no-scheme", "wrong-scheme", "credentials"],
)
def test_check_malformed_scaling_api_base_url_exits_2_naming_it(
    value: str, run_main: RunMain
) -> None:
    key = "scl_live_" + "n0tsent" * 4
    proc = run_main("check", env={"SCALING_API_KEY": key, "SCALING_API_BASE_URL": value})
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (line,) = error_lines(proc)
    assert "SCALING_API_BASE_URL" in line
    assert "pw@" not in line
    no_secret(key, proc)


@pytest.mark.parametrize("where", ["variable", "option"])
def test_check_never_echoes_a_key_given_as_the_base_url(where: str, run_main: RunMain) -> None:
    key = f"scl_live_{LEAK_MARKER}base"
    pasted = f"https://api.scaling.cloud/v1?key={key}"
    if where == "variable":
        proc = run_main("check", env={"SCALING_API_KEY": key, "SCALING_API_BASE_URL": pasted})
        assert "SCALING_API_BASE_URL" in proc.stderr
    else:
        proc = run_main("check", "--base-url", key, env={"SCALING_API_KEY": key})
        assert "--base-url" in proc.stderr
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(error_lines(proc)) == 1, proc.stderr
    no_secret(key, proc)


def test_check_unreachable_exits_1() -> None:
    key = "scl_live_" + "unreach" * 4
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = run_cli("check", "--base-url", url, env={"SCALING_API_KEY": key})
    assert proc.returncode == 1
    assert "cannot reach" in proc.stdout
    no_secret(key, proc)


def test_check_is_bounded_by_timeout() -> None:
    with FakeScalingAPI(latency=30.0) as slow:
        key = slow.issue_key()
        proc = run_cli(
            "check",
            "--json",
            "--timeout",
            "0.5",
            "--base-url",
            slow.url,
            env={"SCALING_API_KEY": key},
            timeout=20,
        )
    assert proc.returncode == 1
    document = json.loads(proc.stdout)
    assert document["error"] == "timeout"
    no_secret(key, proc)


def test_check_wrong_base_path_is_a_configuration_error(
    api: FakeScalingAPI, run_main: RunMain
) -> None:
    key = api.issue_key()
    wrong = api.url.removesuffix("/v1") + "/v9"
    proc = run_main("check", "--base-url", wrong, env={"SCALING_API_KEY": key})
    assert proc.returncode == 2
    assert "--base-url" in proc.stdout


# --------------------------------------------------------------------------- providers


def test_providers_lists_first_party_schemes(run_main: RunMain) -> None:
    proc = run_cli("providers")
    assert proc.returncode == 0, proc.stderr
    for scheme in ("env", "file", "aws-sm", "aws-ssm", "aws-lambda-extension", "vault"):
        assert scheme in proc.stdout
    assert "All first-party schemes are installed." in proc.stdout
    as_json = run_main("providers", "--json")
    document: dict[str, Any] = json.loads(as_json.stdout)
    by_scheme = {item["scheme"]: item for item in document["installed"]}
    assert by_scheme["env"]["distribution"] == "scaling-credentials"
    assert by_scheme["file"]["distribution"] == "scaling-credentials"
    assert by_scheme["aws-sm"]["distribution"] == "scaling-credentials-aws"
    assert by_scheme["vault"]["distribution"] == "scaling-credentials-vault"
    assert all(item["version"] for item in document["installed"])
    assert document["missing"] == []


# --------------------------------------------------------------------------- demo


def test_demo_rotates_with_zero_failures_and_shows_the_static_contrast() -> None:
    # The defaults: 4 s, 3 rotations (1 s apart), the library's own min_refresh_interval.
    proc = run_cli("demo", "--json", "--threads", "2", "--tasks", "4", timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    library, static = report["library"], report["static"]
    assert report["ok"] is True
    assert library["failures"] == 0, library["failure_reasons"]
    assert library["requests"] > 0
    assert library["thread_requests"] > 0
    assert library["task_requests"] > 0
    assert library["rotations"] == 3
    assert report["min_refresh_interval_s"] == 5.0  # the library's default, not a demo's
    assert library["provider_fetches"] == 4  # the first read and one per rotation
    assert static["failures"] > 0
    assert static["provider_fetches"] == 1
    # Piped: plain progress lines, no carriage returns.
    assert "\r" not in proc.stderr
    assert "with scaling-credentials" in proc.stderr
    assert "scl_live_" not in proc.stdout + proc.stderr.replace("scl_live_****", "")


def test_demo_with_a_real_source_runs_once_without_rotation() -> None:
    key = "scl_live_" + "d3mosrc" * 4
    proc = run_cli(
        "demo",
        "--source",
        f"env:{KEY_VAR}",
        "--duration",
        "1",
        "--threads",
        "1",
        "--tasks",
        "2",
        "--no-progress",
        env={KEY_VAR: key},
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK: none of" in proc.stdout
    assert "static key" not in proc.stdout
    no_secret(key, proc)


def test_demo_rejects_impossible_options(run_main: RunMain) -> None:
    proc = run_main("demo", "--threads", "0", "--tasks", "0")
    assert proc.returncode == 2
    assert len(error_lines(proc)) == 1
    too_fast = run_main("demo", "--duration", "1", "--rotations", "50")
    assert too_fast.returncode == 2
    assert "--rotations" in too_fast.stderr


# --------------------------------------------------------------------------- in process


def test_main_returns_exit_codes_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["providers", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["installed"]
    assert main(["resolve", "--source", "nonsense"]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert main(["--version"]) == 0


def test_exit_code_mapping() -> None:
    from scaling_credentials import (
        ConfigurationError,
        InvalidKeyFormatError,
        ProviderError,
        ProviderTimeoutError,
        SecretNotFoundError,
    )

    assert exit_code_for(ConfigurationError("x")) == 2
    assert exit_code_for(InvalidKeyFormatError("x")) == 2
    assert exit_code_for(SecretNotFoundError("x")) == 2
    assert exit_code_for(ProviderError("x")) == 1
    assert exit_code_for(ProviderTimeoutError("x")) == 1


def test_providers_says_what_to_install_for_missing_first_party_schemes(
    run_main: RunMain, monkeypatch: pytest.MonkeyPatch
) -> None:
    from scaling_credentials import _registry

    core_only = [s for s in _registry.installed_schemes() if s.scheme in ("env", "file")]
    monkeypatch.setattr(_registry, "installed_schemes", lambda: core_only)
    text = run_main("providers")
    assert text.returncode == 0
    assert "Not installed (first-party):" in text.stdout
    assert "aws-sm                pip install 'scaling-credentials[aws]'" in text.stdout
    assert "vault                 pip install 'scaling-credentials[vault]'" in text.stdout
    document = json.loads(run_main("providers", "--json").stdout)
    assert {item["scheme"] for item in document["missing"]} == {
        "aws-sm",
        "aws-ssm",
        "aws-lambda-extension",
        "vault",
    }


def test_check_server_error_without_json_body_exits_1(
    api: FakeScalingAPI, run_main: RunMain
) -> None:
    from scaling_credentials.testing import ScriptedResponse

    key = api.issue_key()
    api.script(ScriptedResponse(502, b"<html>bad gateway</html>", content_type="text/html"))
    proc = run_main("check", "--base-url", api.url, env={"SCALING_API_KEY": key})
    assert proc.returncode == 1
    assert "answered 502 no error code" in proc.stdout
    assert "try again later" in proc.stdout
    assert api.requests[-1].request_id in proc.stdout  # from the X-Request-Id header
    no_secret(key, proc)


# --------------------------------------------------------------------------- docs/cli.md

CLI_DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
_VARYING = [
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "<requestId>"),
    (re.compile(r"scl_live_\*\*\*\*\S{4}"), "scl_live_****<last4>"),
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"\d+(\.\d+)? ms"), "<n> ms"),
]


def as_documented(text: str) -> str:
    """What may differ between runs (ids, keys, ports, timings) replaced by placeholders."""
    for pattern, placeholder in _VARYING:
        text = pattern.sub(placeholder, text)
    return text


def assert_quoted_in_cli_doc(*outputs: str) -> None:
    doc = as_documented(CLI_DOC.read_text(encoding="utf-8"))
    missing = [
        line
        for output in outputs
        for line in as_documented(output).splitlines()
        if line.strip() and line not in doc
    ]
    assert not missing, "docs/cli.md must quote the program's output as it is:\n" + "\n".join(
        missing
    )


def test_cli_doc_quotes_check_and_its_warning(api: FakeScalingAPI, run_main: RunMain) -> None:
    key = api.issue_key()
    ok = run_main("check", "--base-url", api.url, env={"SCALING_API_KEY": key})
    api.revoke(key)
    revoked = run_main("check", "--base-url", api.url, env={"SCALING_API_KEY": key})
    quiet = run_main("check", "--base-url", api.url, "--quiet", env={"SCALING_API_KEY": key})
    assert (ok.returncode, revoked.returncode, quiet.returncode) == (0, 1, 1)
    assert "warning: Scaling API rejected key" in revoked.stderr
    assert_quoted_in_cli_doc(ok.stdout, revoked.stdout, revoked.stderr, quiet.stderr)


def test_cli_doc_quotes_the_errors(run_main: RunMain) -> None:
    key = "scl_live_" + "d0cum3nt" * 3
    refused = run_main(
        "check", "--base-url", "https://example.com/v1", env={"SCALING_API_KEY": key}
    )
    bearer = run_main(
        "check", "--base-url", "http://127.0.0.1:9/v1", env={"SCALING_API_KEY": f"Bearer {key}"}
    )
    missing = run_main("resolve", "--source", "file:/run/secrets/scaling/api-key")
    assert (refused.returncode, bearer.returncode, missing.returncode) == (2, 2, 2)
    assert_quoted_in_cli_doc(refused.stderr, bearer.stderr, missing.stderr)


def test_cli_doc_quotes_resolve(api: FakeScalingAPI, run_main: RunMain) -> None:
    proc = run_main("resolve", env={"SCALING_API_KEY": api.issue_key()})
    assert proc.returncode == 0
    assert_quoted_in_cli_doc(proc.stdout)


def test_cli_doc_quotes_providers(run_main: RunMain, monkeypatch: pytest.MonkeyPatch) -> None:
    from scaling_credentials import _registry

    everything = run_main("providers")
    core_only = [s for s in _registry.installed_schemes() if s.scheme in ("env", "file")]
    monkeypatch.setattr(_registry, "installed_schemes", lambda: core_only)
    core = run_main("providers")
    assert (everything.returncode, core.returncode) == (0, 0)
    # The versions are the distributions' own; the doc shows the first release's.
    assert_quoted_in_cli_doc(
        *(re.sub(r"\b\d+\.\d+\.\d+\S*", "0.1.0", ran.stdout) for ran in (everything, core))
    )
