"""ApiKey: validation with leak-free typed errors, masking, equality, immutability."""

from __future__ import annotations

import copy
import pickle
import traceback

import pytest

from scaling_credentials import ApiKey, InvalidKeyFormatError
from scaling_credentials._key import KEY_PREFIX, MAX_KEY_LENGTH, mask
from scaling_credentials.testing.provider_suite import assert_key_is, assert_no_secret

# Every bad value carries this marker, so a leak anywhere is easy to detect.
MARKER = "LEAKMARKER9q2w"
GOOD = f"scl_live_{MARKER}0123456789wxyz"


def rendered(error: BaseException) -> str:
    """The error as a user would see it in a log: message, repr and full traceback."""
    return "\n".join(
        [
            str(error),
            repr(error),
            "".join(traceback.format_exception(type(error), error, error.__traceback__)),
        ]
    )


def invalid(value: object) -> InvalidKeyFormatError:
    with pytest.raises(InvalidKeyFormatError) as info:
        ApiKey(value)  # type: ignore[arg-type]
    return info.value


BAD_VALUES = {
    "empty": "",
    "whitespace": "  \n\t\r ",
    "bearer": f"Bearer scl_live_{MARKER}abcdef",
    "bearer-lowercase": f"bearer scl_live_{MARKER}abcdef",
    "wrong-prefix": f"sk_live_{MARKER}abcdef",
    "test-prefix": f"scl_test_{MARKER}abcdef",
    "prefix-uppercase": f"SCL_LIVE_{MARKER}abcdef",
    "prefix-only": "scl_live_",
    "prefix-only-padded": "  scl_live_  ",
    "embedded-space": f"scl_live_{MARKER} abcdef",
    "embedded-tab": f"scl_live_{MARKER}\tabcdef",
    "embedded-newline": f"scl_live_{MARKER}\nabcdef",
    "two-keys-on-two-lines": f"scl_live_{MARKER}aaaa\nscl_live_{MARKER}bbbb",
    "control-bel": f"scl_live_{MARKER}\x07abcdef",
    "control-nul": f"scl_live_{MARKER}\x00abcdef",
    "control-esc": f"scl_live_{MARKER}\x1b[0mabcdef",
    "control-del": f"scl_live_{MARKER}\x7fabcdef",
    "non-ascii": f"scl_live_{MARKER}\u00e9abcdef",
    "zero-width-space": f"scl_live_{MARKER}\u200babcdef",
    "nbsp-inside": f"scl_live_{MARKER}\u00a0abcdef",
    "one-mebibyte": f"scl_live_{MARKER}" + "a" * (1024 * 1024),
    "just-over-max": "scl_live_" + MARKER + "a" * (MAX_KEY_LENGTH - len(MARKER) - 8),
    "json-document": f'{{"api_key": "scl_live_{MARKER}abcdef"}}',
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_value_raises_typed_error_without_the_value(case: str) -> None:
    value = BAD_VALUES[case]
    error = invalid(value)
    assert str(error), "the message says what to fix"
    assert_no_secret(MARKER, rendered(error))
    # Not even the bad value with the marker cut out: the message never quotes the input.
    assert_no_secret("abcdef", rendered(error))


def test_bearer_prefix_gets_a_hint_to_drop_it() -> None:
    message = str(invalid(f"Bearer scl_live_{MARKER}abcdef"))
    assert "Bearer" in message
    assert "scl_live_" in message  # says what to store instead


def test_bearer_hint_applies_after_stripping() -> None:
    assert "Bearer" in str(invalid(f"  Bearer scl_live_{MARKER}abcdef\n"))


def test_wrong_prefix_names_the_expected_prefix() -> None:
    assert KEY_PREFIX in str(invalid(f"sk_live_{MARKER}abcdef"))


def test_empty_and_whitespace_say_empty() -> None:
    assert "empty" in str(invalid(""))
    assert "empty" in str(invalid(" \n "))


def test_embedded_whitespace_and_control_characters_are_named_with_position() -> None:
    space = str(invalid("scl_live_abc def"))
    assert "whitespace" in space
    assert "position 12" in space
    control = str(invalid("scl_live_abc\x07def"))
    assert "control character" in control
    assert "non-ASCII" in str(invalid("scl_live_abc\u00e9def"))


def test_oversized_value_is_refused_by_length() -> None:
    message = str(invalid("scl_live_" + "a" * (1024 * 1024)))
    assert "characters long" in message


def test_maximum_length_key_is_accepted() -> None:
    value = "scl_live_" + "a" * (MAX_KEY_LENGTH - len("scl_live_"))
    assert_key_is(ApiKey(value), value)


@pytest.mark.parametrize("value", [None, b"scl_live_" + MARKER.encode() + b"abcdef", 12345, ["x"]])
def test_non_str_is_refused_with_its_type_only(value: object) -> None:
    error = invalid(value)
    assert type(value).__name__ in str(error)
    assert_no_secret(MARKER, rendered(error))


def test_bytes_hint_says_decode() -> None:
    assert "decode" in str(invalid(b"scl_live_abcdefabcdefabcdef"))


@pytest.mark.parametrize(
    "raw", [GOOD, f"  {GOOD}", f"{GOOD}\n", f"\t{GOOD}\r\n", f"\n\n{GOOD}  \n"]
)
def test_surrounding_whitespace_is_stripped(raw: str) -> None:
    assert_key_is(ApiKey(raw), GOOD)


def test_source_and_version_are_kept() -> None:
    key = ApiKey(GOOD, source="env:X", version="v7")
    assert key.source == "env:X"
    assert key.version == "v7"
    assert ApiKey(GOOD).source is None
    assert ApiKey(GOOD).version is None


# -- masking


def test_str_and_repr_show_prefix_and_last_four_at_most() -> None:
    key = ApiKey(GOOD, source="file:/run/secrets/key", version="3")
    assert str(key) == "scl_live_****wxyz"
    assert key.masked == "scl_live_****wxyz"
    assert repr(key) == "ApiKey('scl_live_****wxyz', source='file:/run/secrets/key', version='3')"
    assert_no_secret(MARKER, str(key), repr(key), f"{key}", f"{key!r}", "%s %r" % (key, key))  # noqa: UP031


@pytest.mark.parametrize("token", ["a", "abc", "abcdefghijk"])  # shorter than 12 characters
def test_short_tokens_are_fully_masked(token: str) -> None:
    key = ApiKey(KEY_PREFIX + token)
    assert str(key) == "scl_live_****"
    assert repr(key) == "ApiKey('scl_live_****')"


def test_twelve_character_token_shows_last_four() -> None:
    assert str(ApiKey("scl_live_abcdefgh1234")) == "scl_live_****1234"


def test_mask_of_a_non_key_reveals_nothing() -> None:
    assert mask(f"sk_live_{MARKER}") == "****"
    assert mask("") == "****"


def test_masked_key_inside_containers_and_format_strings() -> None:
    key = ApiKey(GOOD)
    assert_no_secret(MARKER, repr([key]), repr({"k": key}), repr((key,)), str({key}))


# -- equality and hashing


def test_equal_values_are_equal_and_hash_alike() -> None:
    a, b = ApiKey(GOOD), ApiKey(f"  {GOOD}\n", source="other", version="2")
    assert a == b
    assert not (a != b)  # noqa: SIM202 - the operator itself is under test
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: 1}[b] == 1


def test_different_values_are_not_equal() -> None:
    a = ApiKey(GOOD)
    for other in (GOOD[:-1] + "Z", GOOD + "a", "scl_live_" + "b" * 30):
        assert a != ApiKey(other)
        assert not (a == ApiKey(other))  # noqa: SIM201
    assert len({a, ApiKey(GOOD[:-1] + "Z")}) == 2


def test_not_equal_to_its_string_or_other_types() -> None:
    key = ApiKey(GOOD)
    assert key != GOOD
    assert not (key == GOOD)  # noqa: SIM201 - the operator itself is under test
    assert key != GOOD.encode()
    assert key != None  # noqa: E711
    assert key.__eq__(GOOD) is NotImplemented


def test_equality_uses_constant_time_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    import hmac

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert ApiKey(GOOD) == ApiKey(GOOD)
    assert ApiKey(GOOD) != ApiKey(GOOD + "x")
    assert len(calls) == 2


# -- immutability, pickling, copying


def test_immutable() -> None:
    key = ApiKey(GOOD, source="s")
    for name in ("_value", "source", "version", "masked", "new_attribute"):
        with pytest.raises(AttributeError):
            setattr(key, name, "x")
    with pytest.raises(AttributeError):
        del key.source
    assert_key_is(key, GOOD)
    assert key.source == "s"


def test_no_instance_dict() -> None:
    assert not hasattr(ApiKey(GOOD), "__dict__")
    assert_no_secret(MARKER, str(dir(ApiKey(GOOD))))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_not_picklable(protocol: int) -> None:
    with pytest.raises(TypeError) as info:
        pickle.dumps(ApiKey(GOOD), protocol=protocol)
    assert "pickle" in str(info.value)
    assert_no_secret(MARKER, rendered(info.value))


def test_not_picklable_inside_a_container() -> None:
    with pytest.raises(TypeError) as info:
        pickle.dumps({"key": ApiKey(GOOD)})
    assert_no_secret(MARKER, rendered(info.value))


def test_copy_and_deepcopy_return_the_same_object() -> None:
    key = ApiKey(GOOD)
    assert copy.copy(key) is key
    assert copy.deepcopy(key) is key
    holder = {"a": [key]}
    assert copy.deepcopy(holder)["a"][0] is key
