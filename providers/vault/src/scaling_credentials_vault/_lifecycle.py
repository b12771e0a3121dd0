"""The Vault token's life as plain decisions: what to do with the token we hold now.

No I/O, no clock of its own, no hvac: the provider passes what Vault said about the
token (its TTL and whether it is renewable), when it was obtained and the time now, all
on the provider's monotonic clock, and acts on the answer::

    ttl unknown (None) or 0 (never expires) ─────────────────────> USE
    less than 2/3 of the ttl elapsed ────────────────────────────> USE
    2/3 elapsed, renewable, not yet expired ─────────────────────> RENEW
    2/3 elapsed, not renewable, or already expired ──────────────> LOGIN

After a renewal, :func:`renewal_extends` says whether Vault really extended the token:
once a token reaches its max TTL, renew-self succeeds but grants only what is left, and
the provider must log in again instead.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["RENEW_AFTER_FRACTION", "TokenAction", "remaining", "renewal_extends", "token_action"]

# Renew (or log in again) once this fraction of the token's lifetime has passed, as
# Vault Agent does: early enough to survive a slow Vault, late enough to renew rarely.
RENEW_AFTER_FRACTION: Final = 2 / 3
# A renewal that extends the token by less than this many seconds did not extend it:
# Vault's TTLs are whole seconds, so the same expiry may come back a second longer.
_GRACE: Final = 1.0


class TokenAction(enum.Enum):
    """What to do with the token held now."""

    USE = "use"  # read with it as it is
    RENEW = "renew"  # auth/token/renew-self first
    LOGIN = "login"  # log in again with the auth method


def remaining(*, ttl: float, obtained_at: float, now: float) -> float:
    """Seconds left before a token of lifetime ``ttl`` obtained at ``obtained_at`` expires
    (negative once expired)."""
    return ttl - (now - obtained_at)


def token_action(
    *, ttl: float | None, renewable: bool, obtained_at: float, now: float
) -> TokenAction:
    """What to do with a token of lifetime ``ttl`` seconds (``None``: unknown, ``0``:
    never expires), obtained at ``obtained_at``, at time ``now``.

    A negative ``ttl`` (which Vault never sends) counts as unknown: the token is used, and
    a 403 from Vault will say when it is dead. A clock that went backwards (``now`` before
    ``obtained_at``) leaves the token in use.
    """
    if ttl is None or ttl <= 0:
        return TokenAction.USE
    if now - obtained_at < ttl * RENEW_AFTER_FRACTION:
        return TokenAction.USE
    if renewable and remaining(ttl=ttl, obtained_at=obtained_at, now=now) > 0:
        return TokenAction.RENEW
    return TokenAction.LOGIN


def renewal_extends(new_ttl: float | None, *, ttl: float, obtained_at: float, now: float) -> bool:
    """Whether a renewal at ``now`` that granted ``new_ttl`` seconds extended a token of
    lifetime ``ttl`` obtained at ``obtained_at``: ``False`` when Vault said nothing
    (``None``) or granted no more than was left (the token reached its max TTL)."""
    if new_ttl is None:
        return False
    if new_ttl == 0:
        return True  # the token no longer expires
    return new_ttl > remaining(ttl=ttl, obtained_at=obtained_at, now=now) + _GRACE
