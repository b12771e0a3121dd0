"""From a secret's raw value to an :class:`ApiKey`: decoding, JSON fields, validation.

Every error here says what is wrong and where, never what the value is. Errors are
raised *after* the ``except`` block that caught the decoder's own exception, so that
exception (a ``JSONDecodeError`` keeps the whole document in ``.doc``, a
``UnicodeDecodeError`` the bytes in ``.object``) is not kept as ``__context__`` either.
"""

from __future__ import annotations

import json

from ._errors import InvalidKeyFormatError, ScalingCredentialsError
from ._key import ApiKey
from ._redact import redact

__all__ = [
    "decode_text",
    "field_from_json",
    "field_from_object",
    "json_type",
    "json_with_field",
    "make_key",
]


def decode_text(
    data: bytes,
    *,
    name: str,
    error: type[ScalingCredentialsError] = InvalidKeyFormatError,
) -> str:
    """``data`` decoded as UTF-8 (a byte-order mark is dropped); otherwise ``error``
    naming ``name`` and the offset of the first bad byte, never the bytes."""
    offset: int | None = None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start
    raise error(f"{name} is not UTF-8 text (invalid byte at offset {offset})")


def json_type(value: object) -> str:
    """The JSON name of ``value``'s type (``object``, ``array``, ``string``, ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _decode_json(text: str) -> tuple[object, str | None]:
    """``text`` decoded, or ``None`` and what is wrong (never the text: the decoder's
    exception, which holds the document, is dropped here)."""
    problem: str | None = None
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        problem = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        problem = "nested too deeply"
    return None, problem


def field_from_json(text: str, field: str, *, name: str) -> str:
    """Field ``field`` (a string) of the JSON object ``text``.

    Raises :class:`InvalidKeyFormatError` naming ``name`` when ``text`` is not JSON, not
    an object, lacks the field (listing the fields present, masked where one looks like
    a key) or holds something other than a string there.
    """
    document, problem = _decode_json(text)
    if problem is not None:
        raise InvalidKeyFormatError(
            f"{name}: expected a JSON object with field {redact(repr(field))}, but the "
            f"content is not valid JSON ({problem})"
        )
    return field_from_object(document, field, name=name)


def json_with_field(text: str, field: str, value: str, *, name: str) -> str:
    """The JSON object ``text`` with ``field`` set to ``value`` and every other field
    kept: what a provider writes back when it stores a key in one field of a JSON secret.

    Raises :class:`InvalidKeyFormatError` naming ``name`` when ``text`` is not a JSON
    object (it never quotes the text, nor keeps the decoder's exception).
    """
    document, problem = _decode_json(text)
    wanted = f"{name}: expected a JSON object to write field {redact(repr(field))} into"
    if problem is not None:
        raise InvalidKeyFormatError(f"{wanted}, but the content is not valid JSON ({problem})")
    if not isinstance(document, dict):
        raise InvalidKeyFormatError(f"{wanted}, got a JSON {json_type(document)}")
    document[field] = value
    return json.dumps(document, ensure_ascii=False)


def field_from_object(document: object, field: str, *, name: str) -> str:
    """Field ``field`` (a string) of ``document``, a JSON object already decoded (a
    ``dict``, such as the data of a Vault KV secret or a parsed ``SecretString``).

    Raises :class:`InvalidKeyFormatError` naming ``name`` when ``document`` is not an
    object, lacks the field (listing the fields present, masked where one looks like a
    key) or holds something other than a string there.
    """
    if not isinstance(document, dict):
        raise InvalidKeyFormatError(
            f"{name}: expected a JSON object with field {redact(repr(field))}, got a JSON "
            f"{json_type(document)}"
        )
    if field not in document:
        names = ", ".join(redact(repr(str(k))) for k in sorted(document)[:20]) or "none"
        raise InvalidKeyFormatError(
            f"{name}: the JSON object has no field {redact(repr(field))} (fields present: {names})"
        )
    value = document[field]
    if not isinstance(value, str):
        raise InvalidKeyFormatError(
            f"{name}: field {redact(repr(field))} is a JSON {json_type(value)}, expected a string"
        )
    return value


def make_key(value: str, *, source: str, version: str | None = None) -> ApiKey:
    """``ApiKey(value, source=source, version=version)``; a bad value raises
    :class:`InvalidKeyFormatError` whose message starts with ``source``, with no
    exception chained."""
    problem: str | None = None
    try:
        return ApiKey(value, source=source, version=version)
    except InvalidKeyFormatError as exc:
        problem = str(exc)
    raise InvalidKeyFormatError(f"{source}: {problem}")
