"""The AWS error mapping's text handling: AWS's own words are kept, keys and known
credentials in them are masked."""

from __future__ import annotations

from scaling_credentials import ProviderError
from scaling_credentials.testing.provider_suite import assert_no_secret, good_value
from scaling_credentials_aws._aws_errors import SECRETS_MANAGER, error_for_code, short

KEY = good_value("errors")


def test_a_message_holding_a_key_is_masked_not_withheld() -> None:
    text = f"proxy says: bad value {KEY} in the request; try again"
    line = short(text)
    assert_no_secret(KEY, line)
    assert line.startswith("proxy says: bad value scl_live_****")
    assert line.endswith("in the request; try again")


def test_known_secrets_are_replaced_before_the_text_is_cut() -> None:
    token = "session-token-0123456789"
    line = short("x" * 20 + token + "y" * 400, 40, secrets=[token])
    assert_no_secret(token[:12], line)
    assert line.startswith("x" * 20 + "****") and line.endswith("...") and len(line) == 40


def test_short_makes_one_line() -> None:
    assert short("a\n  b\tc") == "a b c"


def test_aws_words_with_a_key_reach_the_error_masked() -> None:
    error = error_for_code(
        "AccessDeniedException",
        f"denied for {KEY}",
        service=SECRETS_MANAGER,
        operation="GetSecretValue",
        provider="aws-sm:x",
        name="x",
    )
    assert type(error) is ProviderError
    assert "denied for scl_live_****" in str(error)
    assert_no_secret(KEY, str(error), repr(error))
