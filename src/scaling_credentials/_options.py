"""Checks for configuration values, shared by every provider: typed errors that say
which option is wrong and what it takes, and never echo a value shaped like a key."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from urllib.parse import quote

from ._errors import ConfigurationError
from ._redact import looks_like_key, redact

__all__ = ["flag", "format_query", "port_number", "seconds", "text_option", "whole_number"]

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _shown(value: object) -> str:
    """``repr(value)`` for a message: masked, and cut to 80 characters."""
    text = redact(repr(value))
    return text if len(text) <= 80 else text[:77] + "..."


def seconds(value: object, name: str, *, allow_zero: bool = True) -> float:
    """``value`` (a number of seconds or a :class:`~datetime.timedelta`) as a float;
    :class:`ConfigurationError` for anything else, a negative or NaN value, or zero
    when ``allow_zero`` is false."""
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {type(value).__name__}")
    number = float(value)
    if number != number or number < 0 or (not allow_zero and number == 0):
        bound = "0 or more" if allow_zero else "greater than 0"
        raise ConfigurationError(f"{name} must be {bound} seconds, got {_shown(value)}")
    return number


def whole_number(value: object, name: str, *, minimum: int = 0) -> int:
    """``value`` as an int of at least ``minimum`` (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(
            f"{name} must be a whole number of at least {minimum}, got {_shown(value)}"
        )
    return value


def port_number(value: object, name: str) -> int:
    """A TCP port (1-65535) given as an int or a string of digits."""
    text = str(value).strip() if isinstance(value, (int, str)) else ""
    if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ConfigurationError(f"{name} must be a TCP port number (1-65535), got {_shown(value)}")
    return int(text)


def text_option(value: object, name: str, *, optional: bool = False) -> str | None:
    """A non-empty string option (stripped), or ``None`` when ``optional`` and absent.

    A value that looks like an API key is refused without being repeated: a key pasted
    where a name (a secret ID, a path, a role) belongs.
    """
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{name} must be a non-empty str, got {_shown(value)}")
    if looks_like_key(value):
        raise ConfigurationError(
            f"{name} looks like an API key (scl_live_...); pass where the key is (a name, "
            "a path, an ID), never the key itself"
        )
    return value.strip()


def flag(value: object, name: str) -> bool:
    """A yes/no option: a bool, or ``true``/``false``, ``1``/``0``, ``yes``/``no``,
    ``on``/``off`` (any case, as in a URI query)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ConfigurationError(f"{name} must be true or false, got {_shown(value)}")


def format_query(params: Iterable[tuple[str, str | None]]) -> str:
    """``?a=1&b=2`` for a provider's ``describe()``, leaving out empty values (``""``
    when none is left). Values are percent-encoded except ``/`` and ``:``."""
    pairs = [(k, v) for k, v in params if v]
    if not pairs:
        return ""
    return "?" + "&".join(f"{k}={quote(v, safe='/:')}" for k, v in pairs)
