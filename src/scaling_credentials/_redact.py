"""redact_logging: an opt-in log filter that masks anything shaped like a Scaling API key.

scaling-credentials itself never logs a key (only its masked form). Some libraries it
works with do, at DEBUG: botocore logs whole response bodies, so ``GetSecretValue``'s
``SecretString`` reaches the log of any process that turns botocore's DEBUG logging on.
This filter rewrites such records before a handler writes them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Final

from ._key import KEY_PREFIX, mask

__all__ = ["KeyRedactingFilter", "redact_logging", "redact_text"]

# A key is the prefix and a run of visible ASCII. The run stops at whitespace, quotes,
# backslashes and angle brackets, so that a key inside JSON, a repr, escaped bytes or
# HTML is cut at its end; other punctuation is taken in (a key may contain it), which at
# worst masks a few characters of what follows.
KEY_PATTERN: Final = re.compile(re.escape(KEY_PREFIX) + r"""[^\s"'`\\<>]+""")
# What mask() produces: left as it is, so that masking twice changes nothing.
_MASKED: Final = re.compile(re.escape(KEY_PREFIX) + r"\*{4}[^\s\*]{0,4}")

# Loggers of libraries that can log request or response bodies or headers at DEBUG.
THIRD_PARTY_LOGGERS: Final = (
    "boto3",
    "botocore",
    "hvac",
    "httpcore",
    "httpx",
    "requests",
    "urllib3",
)


def redact_text(text: str) -> str:
    """``text`` with every key-shaped run replaced by its masked form
    (``scl_live_****abcd``)."""
    if KEY_PREFIX not in text:
        return text
    return KEY_PATTERN.sub(_mask_match, text)


def _mask_match(match: re.Match[str]) -> str:
    found = match.group(0)
    return found if _MASKED.fullmatch(found) else mask(found)


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, (bytes, bytearray)):
        text = repr(bytes(value))
        return redact_text(text) if KEY_PREFIX in text else value
    return value


class KeyRedactingFilter(logging.Filter):
    """A :class:`logging.Filter` that masks Scaling keys in a record: its formatted
    message (so keys passed as arguments are caught too), its exception text, its stack
    text and any string attribute added through ``extra``. It never drops a record.

    A traceback that holds a key is formatted here and kept as masked text; the record's
    ``exc_info`` is then cleared, so that no formatter can render the original.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> None:
    """Mask every key in ``record`` in place (see :class:`KeyRedactingFilter`)."""
    try:
        message = record.getMessage()
    except Exception:
        # Arguments that do not fit the format: logging would print msg and args as
        # they are in its error report, so mask both and let it report.
        record.msg = _redact_value(record.msg)
        if isinstance(record.args, Mapping):
            record.args = {k: _redact_value(v) for k, v in record.args.items()}
        elif isinstance(record.args, tuple):
            record.args = tuple(_redact_value(v) for v in record.args)
    else:
        masked = redact_text(message)
        if masked != message:
            record.msg = masked
            record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        masked = redact_text(text)
        if masked != text:
            record.exc_text = masked
            record.exc_info = None
    for name, value in list(vars(record).items()):
        if name != "msg" and isinstance(value, str) and KEY_PREFIX in value:
            masked = redact_text(value)
            if masked != value:
                setattr(record, name, masked)


def redact_logging(logger: logging.Logger | str | None = None) -> logging.Filter:
    """Mask anything shaped like a Scaling API key in log output (opt-in).

    With no argument, a :class:`KeyRedactingFilter` goes on the root logger and every
    handler it has now, on the loggers of libraries that log bodies or headers at DEBUG
    (botocore, boto3, urllib3, requests, hvac, httpx, httpcore) and their handlers, and
    on :data:`logging.lastResort`. With a logger (or its name), on that logger and its
    handlers only. Call it after logging is configured (``basicConfig``,
    ``dictConfig``); add the returned filter to handlers created later
    (``handler.addFilter(f)``). Calling it again adds no second filter.

    A key is recognized by its ``scl_live_`` prefix; a key that was encoded (base64,
    percent-encoding of the prefix) before it was logged is not.
    """
    if logger is None:
        targets = [logging.getLogger(), *(logging.getLogger(n) for n in THIRD_PARTY_LOGGERS)]
    elif isinstance(logger, str):
        targets = [logging.getLogger(logger)]
    elif isinstance(logger, logging.Logger):
        targets = [logger]
    else:
        raise TypeError(f"redact_logging takes a Logger, a logger name or None, got {logger!r}")
    found = _installed(targets)
    chosen = found if found is not None else KeyRedactingFilter()
    filterers: list[logging.Filterer] = []
    for target in targets:
        filterers.append(target)
        filterers.extend(target.handlers)
    if logger is None and logging.lastResort is not None:
        filterers.append(logging.lastResort)
    for filterer in filterers:
        if not any(isinstance(f, KeyRedactingFilter) for f in filterer.filters):
            filterer.addFilter(chosen)
    return chosen


def _installed(targets: list[logging.Logger]) -> KeyRedactingFilter | None:
    for target in targets:
        for filterer in (target, *target.handlers):
            for existing in filterer.filters:
                if isinstance(existing, KeyRedactingFilter):
                    return existing
    return None
