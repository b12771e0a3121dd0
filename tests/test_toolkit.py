"""The provider toolkit (scaling_credentials.toolkit): fork-safe holders, the capped file
read, value decoding without secrets in any exception chain, redaction, option checks."""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    InvalidKeyFormatError,
    ProviderError,
    SecretNotFoundError,
    SourceURI,
)
from scaling_credentials.testing import wait_child
from scaling_credentials.testing.provider_suite import assert_equal_masked, assert_no_secret
from scaling_credentials.toolkit import (
    KEY_PREFIX,
    PerProcess,
    after_fork,
    decode_text,
    field_from_json,
    field_from_object,
    flag,
    format_query,
    get_logger,
    json_with_field,
    looks_like_key,
    make_key,
    port_number,
    read_capped_file,
    redact,
    seconds,
    text_option,
    whole_number,
)

SECRET = "scl_live_TOOLKITSECRET0123456789"
VAULT_TOKEN = "hvs.CAESIToolkitVaultTokenValue0123"


def chain(error: BaseException) -> list[BaseException]:
    """The error and everything in its __cause__ / __context__ chain."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def assert_no_secret_anywhere(error: BaseException, secret: str) -> None:
    """No exception in the chain holds ``secret`` in its text or any attribute."""
    for link in chain(error):
        texts = [str(link), repr(link), *(repr(v) for v in vars(link).values())]
        texts += [repr(a) for a in link.args]
        for name in ("doc", "object", "filename"):
            texts.append(repr(getattr(link, name, "")))
        assert_no_secret(secret, *texts)


# ---------------------------------------------------------------- values


def test_field_from_json_keeps_no_decode_error_holding_the_document() -> None:
    broken = '{"api_key": "' + SECRET + '", oops}'
    with pytest.raises(InvalidKeyFormatError) as info:
        field_from_json(broken, "api_key", name="file:/k")
    assert "not valid JSON" in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert_no_secret_anywhere(info.value, SECRET)


def test_field_names_that_look_like_keys_are_masked() -> None:
    with pytest.raises(InvalidKeyFormatError) as info:
        field_from_json(json.dumps({SECRET: "x", "other": "y"}), "api_key", name="src")
    message = str(info.value)
    assert "'other'" in message and "scl_live_****" in message
    assert_no_secret(SECRET, message)


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("[1, 2]", "got a JSON array"),
        ('{"api_key": 5}', "is a JSON number"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_field_from_json_errors(document: str, fragment: str) -> None:
    with pytest.raises(InvalidKeyFormatError, match=fragment):
        field_from_json(document, "api_key", name="src")


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ([1, 2], "got a JSON array"),
        (None, "got a JSON null"),
        ({"api_key": 5}, "is a JSON number"),
        ({"api_key": {"nested": SECRET}}, "is a JSON object"),
        (
            {"token": "x", SECRET: "y"},
            "has no field 'api_key' (fields present: 'scl_live_****",
        ),
    ],
)
def test_field_from_object_errors_name_the_problem_never_the_value(
    document: object, fragment: str
) -> None:
    with pytest.raises(InvalidKeyFormatError) as info:
        field_from_object(document, "api_key", name="vault:scaling/api")
    assert str(info.value).startswith("vault:scaling/api: ")
    assert fragment in str(info.value)
    assert_no_secret_anywhere(info.value, SECRET)


def test_field_from_object_returns_the_string_field() -> None:
    assert_equal_masked(
        field_from_object({"api_key": SECRET, "other": 1}, "api_key", name="x"), SECRET
    )


def test_json_with_field_sets_the_field_and_keeps_the_others() -> None:
    text = json.dumps({"api_key": "old", "owner": "ops", "limit": 5, "note": "café"})
    written = json.loads(json_with_field(text, "api_key", SECRET, name="x"))
    assert_equal_masked(written, {"api_key": SECRET, "owner": "ops", "limit": 5, "note": "café"})
    assert_equal_masked(
        json.loads(json_with_field("{}", "api_key", SECRET, name="x")), {"api_key": SECRET}
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"api_key": "' + SECRET + '", oops}', "not valid JSON"),
        (SECRET, "not valid JSON"),
        (json.dumps([SECRET]), "got a JSON array"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_json_with_field_errors_never_hold_the_document(text: str, fragment: str) -> None:
    with pytest.raises(InvalidKeyFormatError) as info:
        json_with_field(text, "api_key", "new", name="aws-sm:x")
    assert str(info.value).startswith("aws-sm:x: expected a JSON object to write field")
    assert fragment in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert_no_secret_anywhere(info.value, SECRET)


def test_decode_text_keeps_no_decode_error_holding_the_bytes() -> None:
    data = SECRET.encode() + b"\xff\xfe"
    with pytest.raises(InvalidKeyFormatError, match="invalid byte at offset 32") as info:
        decode_text(data, name="file:/k")
    assert info.value.__context__ is None
    assert_no_secret_anywhere(info.value, SECRET)
    bom = b"\xef\xbb\xbf"
    assert_equal_masked(decode_text(bom + SECRET.encode(), name="x"), SECRET)  # BOM dropped
    with pytest.raises(ProviderError):
        decode_text(b"\xff", name="x", error=ProviderError)


def test_make_key_names_the_source_and_chains_nothing() -> None:
    key = make_key(f"  {SECRET}\n", source="env:X", version="7")
    assert (key.source, key.version, key) == ("env:X", "7", ApiKey(SECRET))
    with pytest.raises(
        InvalidKeyFormatError, match=r"^env:X: the token contains whitespace"
    ) as info:
        make_key(SECRET + " tail", source="env:X")
    assert info.value.__context__ is None
    assert_no_secret_anywhere(info.value, SECRET)


# ---------------------------------------------------------------- files


def test_read_capped_file_reads_and_refuses_what_it_should(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"abc")
    assert read_capped_file(path) == b"abc"
    with pytest.raises(ProviderError, match="over the 2-byte cap"):
        read_capped_file(path, max_size=2)
    with pytest.raises(SecretNotFoundError, match=r"the token file .* does not exist; run login"):
        read_capped_file(
            tmp_path / "nope", name=f"the token file {tmp_path}/nope", hint="run login"
        )
    with pytest.raises(ProviderError, match="is a directory") as info:
        read_capped_file(tmp_path, provider="x:y")
    assert info.value.provider == "x:y"


def test_read_capped_file_check_sees_the_stat(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_bytes(b"abc")
    seen: list[int] = []
    read_capped_file(path, check=lambda info: seen.append(info.st_size))
    assert seen == [3]


# ---------------------------------------------------------------- fork safety


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_per_process_builds_once_per_process_and_anew_after_fork() -> None:
    built: list[int] = []

    def factory() -> int:
        built.append(os.getpid())
        return len(built)

    holder = PerProcess(factory)
    barrier = threading.Barrier(8)
    results: list[int] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        results.append(holder.get())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert results == [1] * 8 and built == [os.getpid()]
    assert holder.peek() == 1

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a fresh value, the parent's never seen
        try:
            os.write(write_end, f"{holder.peek()},{holder.get()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    assert wait_child(pid) == 0  # its short answer waits in the pipe
    with os.fdopen(read_end) as reader:
        answer = reader.read()
    assert answer == "None,2"
    assert holder.get() == 1  # the parent keeps its own
    holder.clear()
    assert holder.peek() is None and holder.get() == 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_after_fork_runs_the_reset_in_the_child_only_while_the_owner_lives() -> None:
    class Owner:
        lock = threading.Lock()

    owner = Owner()
    owner.lock.acquire()  # held by the parent at fork time

    def reset(target: Owner) -> None:
        target.lock = threading.Lock()

    after_fork(owner, reset)
    after_fork(Owner(), reset)  # dies at once: never called
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, b"free" if owner.lock.acquire(timeout=1) else b"held")
        finally:
            os._exit(0)
    os.close(write_end)
    assert wait_child(pid) == 0  # its short answer waits in the pipe
    with os.fdopen(read_end) as reader:
        answer = reader.read()
    owner.lock.release()
    assert answer == "free"


# ---------------------------------------------------------------- redaction


def test_redact_masks_keys_percent_encoded_prefixes_tokens_and_known_secrets() -> None:
    text = (
        f"a {SECRET} b scl%5Flive_PERCENTENCODED0123 c scl%5flive%5FLOWERCASE012345 "
        f"d {VAULT_TOKEN} e s3cr3t-value"
    )
    masked = redact(text, secrets=["s3cr3t-value"])
    for secret in (SECRET, "PERCENTENCODED0123", "LOWERCASE012345", VAULT_TOKEN, "s3cr3t-value"):
        assert_no_secret(secret, masked)
    assert "scl_live_****6789" in masked
    assert redact(masked) == masked  # idempotent
    prose = "store only the key (scl_live_...), the library adds the prefix"
    assert redact(prose) == prose  # a placeholder is no key
    assert redact("nothing here") == "nothing here"


def test_looks_like_key() -> None:
    assert looks_like_key(SECRET)
    assert looks_like_key("env:scl%5Flive_abc")
    assert not looks_like_key("env:SCALING_API_KEY")
    assert KEY_PREFIX == "scl_live_"


def test_get_logger_masks_whatever_a_record_holds(caplog: pytest.LogCaptureFixture) -> None:
    logger = get_logger("scaling_credentials.tests.toolkit")
    assert get_logger("scaling_credentials.tests.toolkit").filters == logger.filters
    with caplog.at_level(logging.INFO, logger="scaling_credentials.tests.toolkit"):
        logger.info("value %s and token %s", SECRET, VAULT_TOKEN)
    assert_no_secret(SECRET, caplog.text)
    assert_no_secret(VAULT_TOKEN, caplog.text)
    assert "scl_live_****6789" in caplog.text


# ---------------------------------------------------------------- options


def test_option_checks() -> None:
    assert seconds(timedelta(minutes=1), "ttl") == 60.0
    assert seconds(0, "x") == 0.0
    for bad in (-1, float("nan"), "5", True):
        with pytest.raises(ConfigurationError, match="ttl must be"):
            seconds(bad, "ttl")
    with pytest.raises(ConfigurationError, match="greater than 0"):
        seconds(0, "ttl", allow_zero=False)
    assert whole_number(3, "n", minimum=1) == 3
    with pytest.raises(ConfigurationError, match="at least 1"):
        whole_number(0, "n", minimum=1)
    assert port_number("2773", "port") == 2773
    for bad_port in ("0", "65536", "x", True, 1.5):
        with pytest.raises(ConfigurationError, match="TCP port"):
            port_number(bad_port, "port")
    assert text_option(" name ", "secret_id") == "name"
    assert text_option(None, "field", optional=True) is None
    with pytest.raises(ConfigurationError) as info:
        text_option(SECRET, "secret_id")
    assert "looks like an API key" in str(info.value)
    assert_no_secret(SECRET, str(info.value))
    assert flag("TRUE", "f") is True and flag("off", "f") is False and flag(True, "f") is True
    with pytest.raises(ConfigurationError, match="true or false"):
        flag("maybe", "f")
    assert format_query([("field", "api_key"), ("region", None), ("stage", "A B")]) == (
        "?field=api_key&stage=A%20B"
    )
    assert format_query([("a", "")]) == ""


def test_source_uri_param_and_flag() -> None:
    uri = SourceURI.parse("aws-sm:x?field=%20f%20&empty=&on=true&off=0&bad=maybe")
    assert uri.param("field") == "f"
    assert uri.param("empty") is None and uri.param("absent") is None
    assert uri.flag("on") is True and uri.flag("off") is False and uri.flag("absent") is False
    with pytest.raises(ConfigurationError, match=r"bad= in a aws-sm: source URI"):
        uri.flag("bad")
