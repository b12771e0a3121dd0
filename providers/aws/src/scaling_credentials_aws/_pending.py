"""``pending_fallback``: the ``AWSPENDING`` key after ``AWSCURRENT``'s was rejected.

A Secrets Manager rotation function stages the new key at ``AWSPENDING``
(``createSecret``), puts it in service (``setSecret``), tests it (``testSecret``), and
only then moves ``AWSCURRENT`` to it (``finishSecret``). When ``setSecret`` also revokes
the old key, the API rejects ``AWSCURRENT``'s key until ``finishSecret``: a refetch that
finds the rejected key still current may take the pending one instead. The decision is
here, once, for the boto3 provider and the Lambda extension provider.
"""

from __future__ import annotations

from collections.abc import Callable

from scaling_credentials import (
    ApiKey,
    ConfigurationError,
    InvalidKeyFormatError,
    SecretNotFoundError,
)
from scaling_credentials.toolkit import flag, get_logger

__all__ = [
    "CURRENT_STAGE",
    "PENDING_STAGE",
    "pending_fallback_option",
    "pending_or_none",
    "prefer_pending",
]

logger = get_logger("scaling_credentials.aws")

CURRENT_STAGE = "AWSCURRENT"
PENDING_STAGE = "AWSPENDING"


def pending_fallback_option(
    value: object, *, version_stage: str | None, version_id: str | None
) -> bool:
    """The ``pending_fallback`` option, checked: it applies to a source reading
    ``AWSCURRENT`` only."""
    enabled = flag(value, "pending_fallback")
    if enabled and (version_id or version_stage not in (None, CURRENT_STAGE)):
        raise ConfigurationError(
            "pending_fallback applies to a source that reads AWSCURRENT; drop it, or drop "
            "version_stage/version_id"
        )
    return enabled


def pending_or_none(read: Callable[[], ApiKey]) -> ApiKey | None:
    """``read()`` (the key at ``AWSPENDING``), or ``None`` when no version has that
    stage or it holds no valid key (a warning says so, without the value)."""
    problem: str | None = None
    try:
        return read()
    except SecretNotFoundError:
        return None
    except InvalidKeyFormatError as exc:
        problem = str(exc)
    logger.warning("%s; keeping the AWSCURRENT key", problem)
    return None


def prefer_pending(current: ApiKey, rejected: ApiKey, pending: ApiKey | None) -> ApiKey:
    """``pending`` when it is a key other than ``rejected`` (which ``current`` still
    is), else ``current``."""
    if pending is None or pending == rejected:
        return current
    logger.info(
        "%s still holds the rejected key %s at AWSCURRENT; using AWSPENDING (version %s, "
        "%s) until finishSecret moves AWSCURRENT to it",
        current.source,
        current.masked,
        pending.version,
        pending.masked,
    )
    return pending
