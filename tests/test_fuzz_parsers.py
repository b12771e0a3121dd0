"""Fuzzing the parsers that see untrusted text, with hypothesis: 401 bodies (and their
encodings), source URIs, key files and JSON fields. Each may only return, or raise its
documented error; no error may show a key that was in its input.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    FileProvider,
    InvalidKeyFormatError,
    Provider,
    ProviderError,
    ScalingCredentialsError,
    SourceURI,
    provider_from_uri,
)
from scaling_credentials._api import MAX_ERROR_BODY, parse_error_body, read_error_body
from scaling_credentials.testing.provider_suite import assert_no_secret_in_error
from scaling_credentials.toolkit import field_from_json

SETTINGS = settings(
    max_examples=int(os.environ.get("SCALING_HYPOTHESIS_EXAMPLES", "150")),
    deadline=None,
    database=None,  # no .hypothesis directory in the checkout
    suppress_health_check=[HealthCheck.too_slow],
)
T = TypeVar("T")
TOKEN = "FUZZtoken0123456789abcdefWXYZ"
KEY = "scl_live_" + TOKEN
PASTED = ["", KEY, "scl%5Flive%5F" + TOKEN, "%73cl_live_" + TOKEN, "scl%255Flive_" + TOKEN]


def attempt(action: Callable[[], T]) -> tuple[T | None, ScalingCredentialsError | None]:
    """``action()``'s result, or the library error it raised (any other escapes)."""
    try:
        return action(), None
    except ScalingCredentialsError as exc:
        return None, exc


def with_key(text: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Texts with, at a random place, nothing or a key in one of its pasted forms."""
    return st.tuples(text, st.sampled_from(PASTED), text).map("".join)


def with_key_bytes(data: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.tuples(data, st.sampled_from([p.encode() for p in PASTED]), data).map(b"".join)


# ============================================================================ 401 bodies

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
BODIES = (
    st.binary(max_size=2048)
    | JSONISH.map(lambda v: repr(v).encode())
    | st.fixed_dictionaries(
        {},
        optional={
            "statusCode": st.integers() | st.text(max_size=5),
            "type": JSONISH,
            "code": st.sampled_from(["invalid_api_key", "not_authorized"]) | JSONISH,
            "requestId": JSONISH,
        },
    ).map(lambda d: json.dumps(d).encode())
)


@SETTINGS
@given(body=BODIES)
def test_parse_error_body_never_raises(body: bytes) -> None:
    parsed = parse_error_body(body)
    for value in parsed:
        assert value is None or (isinstance(value, str) and len(value) <= 200)


ENCODINGS = st.lists(
    st.sampled_from(["gzip", "deflate", "identity", "br", "zstd", "x-unknown", " GZIP ", ""]),
    max_size=3,
)


def encode(body: bytes, encodings: list[str], corrupt: int) -> bytes:
    for encoding in encodings:
        name = encoding.strip().lower()
        if name == "gzip":
            body = gzip.compress(body)
        elif name == "deflate":
            body = zlib.compress(body)
    if corrupt and body:
        index = corrupt % len(body)
        body = body[:index] + bytes([body[index] ^ 0xFF]) + body[index + 1 :]
    return body


@SETTINGS
@given(
    body=BODIES,
    encodings=ENCODINGS,
    corrupt=st.integers(min_value=0, max_value=5000),
    chunk=st.integers(min_value=1, max_value=4096),
)
def test_read_error_body_on_any_encoded_body(
    body: bytes, encodings: list[str], corrupt: int, chunk: int
) -> None:
    # Whatever the body and its claimed encodings (lying, layered, corrupt), the reader
    # returns at most MAX_ERROR_BODY bytes or None, never raises, and the caller still
    # gets every raw byte.
    raw = encode(body, encodings, corrupt)
    headers = {"Content-Encoding": ", ".join(encodings)} if encodings else {}

    def handler(request: httpx.Request) -> httpx.Response:
        parts = [raw[i : i + chunk] for i in range(0, len(raw), chunk)]
        return httpx.Response(401, content=iter(parts), headers=headers)

    with (
        httpx.Client(transport=httpx.MockTransport(handler)) as client,
        client.stream("GET", "https://api.scaling.cloud/v1/x") as response,
    ):
        read = read_error_body(response)
        assert read is None or len(read) <= MAX_ERROR_BODY
        if (
            read is not None
            and not corrupt
            and all(
                e.strip().lower() in ("gzip", "deflate", "identity", "x-unknown", "")
                for e in encodings
            )
        ):
            assert read == body
        assert b"".join(response.iter_raw()) == raw
        parse_error_body(read or b"")


# ============================================================================ source URIs

URI_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.text(
    "abcdefgiklmnoprstuvwxyz:/?&=%._-2F5", max_size=40
)
SCHEMES = st.sampled_from(
    ["env", "file", "aws-sm", "aws-ssm", "aws-lambda-extension", "vault", "nope", "ENV", ""]
)


@SETTINGS
@given(scheme=SCHEMES, rest=with_key(URI_TEXT))
def test_source_uris_parse_or_raise_configuration_error(scheme: str, rest: str) -> None:
    uri = f"{scheme}:{rest}" if scheme else rest
    parsed, error = attempt(lambda: SourceURI.parse(uri))
    provider, later = attempt(lambda: provider_from_uri(uri))
    for exc in (error, later):
        if exc is not None:
            assert isinstance(exc, ConfigurationError), type(exc)
            assert_no_secret_in_error(TOKEN, exc)
    assert (parsed is None) == (error is not None)
    if parsed is not None:
        assert parsed.scheme == parsed.scheme.lower()
    if provider is not None:
        assert isinstance(provider, Provider)
        assert TOKEN not in provider.describe() and TOKEN not in repr(provider)


# ============================================================================ key files


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


FIELDS = st.none() | st.sampled_from(["api_key", "key", KEY, "", " "]) | st.text(max_size=10)


@settings(
    SETTINGS, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    content=with_key_bytes(st.binary(max_size=200))
    | with_key(URI_TEXT).map(str.encode)
    | JSONISH.map(lambda v: json.dumps(v).encode()),
    field=FIELDS,
)
def test_file_provider_on_any_bytes(scratch: Path, content: bytes, field: str | None) -> None:
    path = scratch / "key"
    path.write_bytes(content)
    path.chmod(0o600)
    key, error = attempt(lambda: FileProvider(path, field=field).fetch())
    if error is not None:
        assert isinstance(error, (ConfigurationError, InvalidKeyFormatError, ProviderError))
        assert_no_secret_in_error(TOKEN, error)
    else:
        assert isinstance(key, ApiKey)
        assert TOKEN not in repr(key) and TOKEN not in str(key)


@SETTINGS
@given(
    text=with_key(URI_TEXT)
    | JSONISH.map(lambda v: json.dumps(v))
    | st.dictionaries(with_key(st.text(max_size=8)), JSONISH, max_size=5).map(
        lambda d: json.dumps(d)
    ),
    field=with_key(st.text(max_size=8)),
)
def test_field_from_json_on_any_text(text: str, field: str) -> None:
    value, error = attempt(lambda: field_from_json(text, field, name="fuzz"))
    if error is not None:
        assert isinstance(error, InvalidKeyFormatError)
        assert_no_secret_in_error(TOKEN, error)
        assert error.__context__ is None and error.__cause__ is None
    else:
        assert isinstance(value, str)
