"""Redaction: the one masking step for every text that leaves the library, and
redact_logging, an opt-in log filter for third-party loggers.

scaling-credentials itself never logs a key (only its masked form), and its own loggers
(:func:`get_logger`) pass every record through :class:`KeyRedactingFilter` as a second
line of defence. Some libraries it works with log secrets at DEBUG: botocore logs whole
response bodies, so ``GetSecretValue``'s ``SecretString`` reaches the log of any process
that turns botocore's DEBUG logging on. :func:`redact_logging` puts the same filter on
their loggers.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Final

from ._key import KEY_PREFIX, mask

__all__ = [
    "KeyRedactingFilter",
    "get_logger",
    "looks_like_key",
    "redact",
    "redact_logging",
    "redact_text",
]


def _encodable(text: str) -> str:
    """A pattern for ``text`` with any of its characters percent-encoded, once or more
    (``_``, ``%5F``, ``%5f``, ``%255F``, ...), as it appears in URIs and their logs."""
    parts = []
    for char in text:
        code = f"{ord(char):02X}"
        high, low = code[0], code[1]
        parts.append(f"(?:{re.escape(char)}|%(?:25)*{high}[{low}{low.lower()}])")
    return "".join(parts)


# Plain classes with slots, not NamedTuples: a NamedTuple class costs ~0.2 ms to create,
# which every Lambda cold start would pay.


class _Shape:
    """A credential shape: a pattern, and the markers (substrings) without which a text
    cannot hold it, tested first because they are far cheaper than the pattern."""

    __slots__ = ("markers", "pattern")

    def __init__(self, markers: tuple[str, ...], pattern: re.Pattern[str]) -> None:
        self.markers = markers
        self.pattern = pattern


class _Patterns:
    __slots__ = (
        "key",
        "key_prefix",
        "labelled",
        "labelled_ignoring_case",
        "others",
        "placeholder",
    )

    def __init__(
        self,
        key_prefix: re.Pattern[str],
        key: re.Pattern[str],
        placeholder: re.Pattern[str],
        others: tuple[_Shape, ...],
        labelled: re.Pattern[str],
        labelled_ignoring_case: re.Pattern[str],
    ) -> None:
        self.key_prefix = key_prefix
        self.key = key
        self.placeholder = placeholder
        self.others = others
        self.labelled = labelled
        self.labelled_ignoring_case = labelled_ignoring_case


@functools.cache
def _patterns() -> _Patterns:
    """The regular expressions, compiled at first use rather than at import (they cost
    more than a millisecond of a Lambda function's cold start)."""
    # A key is the prefix and a run of visible ASCII. The run stops at whitespace,
    # quotes, backslashes and angle brackets, so that a key inside JSON, a repr, escaped
    # bytes or HTML is cut at its end; other punctuation is taken in (a key may contain
    # it), which at worst masks a few characters of what follows. The prefix is also
    # recognized with any of its characters percent-encoded, at any depth
    # (scl%5Flive%5F..., %73cl_live_..., scl%255Flive...), as it appears in a URI pasted
    # where a key does not belong.
    key_prefix = re.compile(_encodable(KEY_PREFIX))
    key = re.compile(f"(?P<prefix>{key_prefix.pattern})" + r"""(?P<token>[^\s"'`\\<>]+)""")
    # A placeholder in prose ("scl_live_...)," in a message that says what a key looks
    # like): what follows the prefix is dots or stars and closing punctuation.
    placeholder = re.compile(r"[.*]+[)\],;:!?]*")
    # Other credentials that travel near the key. What a pattern's groups hold is kept (a
    # label, the kind of an access key ID); the rest of the match is masked.
    others = (
        # Vault and OpenBao tokens: hvs./hvb./hvr. service, batch and recovery tokens;
        # s./b./r. legacy ones.
        _Shape(("s.", "b.", "r."), re.compile(r"\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9_-]{16,}")),
        # AWS access key IDs, long-term (AKIA) and temporary (ASIA): the kind stays visible.
        _Shape(("AKIA", "ASIA"), re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b")),
        # JSON Web Tokens (a Kubernetes service account's, a JWT auth method's).
        _Shape(
            ("eyJ",), re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")
        ),
    )
    # Credentials by their label, in headers (botocore logs x-amz-security-token in the
    # request headers and the canonical request), JSON, XML, query strings, reprs and
    # configuration lines: AWS secret access keys and session tokens (any label ending in
    # "token": X-Amz-Security-Token, SessionToken, the Lambda extension's
    # X-Aws-Parameters-Secrets-Token, X-Vault-Token, client_token), AppRole secret IDs,
    # SigV4 signatures. Matched in the lower-cased text (far quicker than ignoring case);
    # the label and what separates it from the value are kept, and a Scaling key there is
    # left to the key's own masking (which keeps its last four characters).
    labelled = re.compile(
        r"""(?x)
        (?: token | secret_?(?:access_?key|id) | signature )
        (?: ["']? \s* [:=] \s* b?["']? | ["']? \s* > )
        (?!scl_live_) (?P<value> [a-z0-9/+=%._-]{8,} )
        """
    )
    ignoring_case = re.compile(labelled.pattern, re.IGNORECASE | re.VERBOSE)
    return _Patterns(key_prefix, key, placeholder, others, labelled, ignoring_case)


_SECRET_MASK: Final = "****"
_LABEL_MARKERS: Final = ("token", "secret", "signature")


def _mask_labelled(text: str) -> str:
    folded = text.lower()
    if not any(marker in folded for marker in _LABEL_MARKERS):
        return text
    patterns = _patterns()
    if len(folded) != len(text):  # lower() changed the length: positions would not match
        return patterns.labelled_ignoring_case.sub(
            lambda m: m.group(0)[: m.start("value") - m.start()] + _SECRET_MASK, text
        )
    parts: list[str] = []
    last = 0
    for match in patterns.labelled.finditer(folded):
        parts += [text[last : match.start("value")], _SECRET_MASK]
        last = match.end("value")
    return "".join(parts) + text[last:] if parts else text


# A cheap test before the regular expression: a text holding neither holds no key.
_KEY_MARKERS: Final = ("scl", "%")


def looks_like_key(text: str) -> bool:
    """Whether ``text`` holds something shaped like a Scaling API key, also with its
    prefix percent-encoded (a key pasted where a name, a path or a URI belongs)."""
    if "%" not in text:  # no percent-encoding: the prefix can only be there as it is
        return KEY_PREFIX in text
    return _patterns().key_prefix.search(text) is not None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every key-shaped run masked (``scl_live_****abcd``), every Vault
    token, AWS access key ID, session token and secret access key, JWT and signature
    masked (``****``, an access key ID keeps its ``AKIA``/``ASIA``), and every string in
    ``secrets`` (known credentials: a token, a secret ID) replaced by ``****``.
    Idempotent: redacting twice changes nothing more."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, _SECRET_MASK)
    patterns = _patterns()
    if any(marker in text for marker in _KEY_MARKERS):
        text = patterns.key.sub(_mask_match, text)
    for shape in patterns.others:
        if any(marker in text for marker in shape.markers):
            text = shape.pattern.sub(_mask_other, text)
    return _mask_labelled(text)


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
    (``scl_live_****abcd``), and other known credential shapes by ``****``."""
    return redact(text)


def _mask_match(match: re.Match[str]) -> str:
    token = match.group("token")
    if token.startswith(_SECRET_MASK) or _patterns().placeholder.fullmatch(token):
        return match.group(0)  # already masked, or a placeholder: left as it is
    return mask(KEY_PREFIX + token)


def _mask_other(match: re.Match[str]) -> str:
    return "".join(group or "" for group in match.groups()) + _SECRET_MASK


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (bytes, bytearray)):
        text = repr(bytes(value))
        masked = redact(text)
        return masked if masked != text else value
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
        masked = redact(message)
        if masked != message:
            record.msg = masked
            record.args = None
    if record.exc_info and record.exc_info[1] is not None:
        text = record.exc_text or logging.Formatter().formatException(record.exc_info)
        masked = redact(text)
        if masked != text:
            record.exc_text = masked
            record.exc_info = None
    for name, value in list(vars(record).items()):
        if name != "msg" and isinstance(value, str):
            masked = redact(value)
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


_LIBRARY_FILTER: Final = KeyRedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """The logger ``name`` with :class:`KeyRedactingFilter` on it (once), for the
    library's and its providers' own loggers: whatever a record holds, what leaves it is
    masked."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, KeyRedactingFilter) for f in logger.filters):
        logger.addFilter(_LIBRARY_FILTER)
    return logger
