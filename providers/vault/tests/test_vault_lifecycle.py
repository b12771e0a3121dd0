"""The Vault token's life as plain decisions (no server): what to do with the token held
now, and whether a renewal extended it."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaling_credentials_vault._lifecycle import (
    RENEW_AFTER_FRACTION,
    TokenAction,
    remaining,
    renewal_extends,
    token_action,
)

USE, RENEW, LOGIN = TokenAction.USE, TokenAction.RENEW, TokenAction.LOGIN


@pytest.mark.parametrize(
    ("ttl", "renewable", "elapsed", "expected"),
    [
        # unknown lifetime, or a token that never expires (root, some static tokens)
        (None, True, 0, USE),
        (None, False, 10**9, USE),
        (0, False, 10**9, USE),
        (0, True, 10**9, USE),
        (-5, True, 100, USE),  # nonsense from a server: treated as unknown
        # fresh
        (3600, True, 0, USE),
        (3600, False, 0, USE),
        (3600, True, 2399.9, USE),
        (3600, False, 2399.9, USE),
        # two thirds gone: renew when possible, else log in again
        (3600, True, 2400, RENEW),
        (3600, False, 2400, LOGIN),
        (3600, True, 3599.9, RENEW),
        # expired: renewal is too late
        (3600, True, 3600, LOGIN),
        (3600, True, 10**6, LOGIN),
        (3600, False, 10**6, LOGIN),
        # short TTLs
        (3, True, 1.9, USE),
        (3, True, 2, RENEW),
        (3, True, 3, LOGIN),
        # the clock went backwards (a restored VM): keep the token
        (3600, True, -50, USE),
        (3600, False, -50, USE),
    ],
)
def test_token_action_table(
    ttl: float | None, renewable: bool, elapsed: float, expected: TokenAction
) -> None:
    obtained_at = 1000.0
    action = token_action(
        ttl=ttl, renewable=renewable, obtained_at=obtained_at, now=obtained_at + elapsed
    )
    assert action is expected


def reference(ttl: float | None, renewable: bool, elapsed: float) -> TokenAction:
    """The rule, spelled out once more, for the sweep below."""
    if ttl is None or ttl <= 0 or elapsed < ttl * RENEW_AFTER_FRACTION:
        return USE
    return RENEW if renewable and elapsed < ttl else LOGIN


TTLS = (None, -1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 30.0, 3600.0, 86400.0)
ELAPSED = (-10.0, 0.0, 0.3, 0.5, 1.0, 1.5, 2.0, 2.9, 3.0, 20.0, 2399.0, 2400.0, 3600.0, 1e6)


@pytest.mark.parametrize(("ttl", "renewable"), list(itertools.product(TTLS, (True, False))))
def test_token_action_sweep_matches_the_rule(ttl: float | None, renewable: bool) -> None:
    for elapsed, obtained_at in itertools.product(ELAPSED, (0.0, 12345.678)):
        action = token_action(
            ttl=ttl, renewable=renewable, obtained_at=obtained_at, now=obtained_at + elapsed
        )
        assert action is reference(ttl, renewable, elapsed), (ttl, renewable, elapsed)


@given(
    ttl=st.floats(min_value=0.001, max_value=1e7),
    renewable=st.booleans(),
    obtained_at=st.floats(min_value=0, max_value=1e9),
    steps=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=20),
)
def test_as_time_passes_the_action_only_escalates(
    ttl: float, renewable: bool, obtained_at: float, steps: list[float]
) -> None:
    """USE, then (for a renewable token) RENEW, then LOGIN: never back."""
    order = {USE: 0, RENEW: 1, LOGIN: 2}
    now = obtained_at
    last = token_action(ttl=ttl, renewable=renewable, obtained_at=obtained_at, now=now)
    assert last is USE
    for step in steps:
        now += step
        action = token_action(ttl=ttl, renewable=renewable, obtained_at=obtained_at, now=now)
        assert order[action] >= order[last]
        if not renewable:
            assert action is not RENEW
        last = action


def test_remaining() -> None:
    assert remaining(ttl=60, obtained_at=100, now=130) == 30
    assert remaining(ttl=60, obtained_at=100, now=200) == -40


@pytest.mark.parametrize(
    ("new_ttl", "elapsed", "expected"),
    [
        (None, 40, False),  # Vault said nothing about the lifetime
        (0, 40, True),  # the token no longer expires
        (60, 40, True),  # a full new lease: 60 > 20 left
        (21.5, 40, True),  # more than a second beyond what was left
        (21, 40, False),  # capped by the max TTL: the same expiry, rounded up
        (20, 40, False),  # exactly what was left
        (5, 40, False),  # less than was left
        (1, 59.5, False),  # capped near the end: 1 s granted, 0.5 s was left
        (3, 59.5, True),
    ],
)
def test_renewal_extends(new_ttl: float | None, elapsed: float, expected: bool) -> None:
    obtained_at = 500.0
    extends = renewal_extends(new_ttl, ttl=60, obtained_at=obtained_at, now=obtained_at + elapsed)
    assert extends is expected
