"""Turning a GetSecretValue or GetParameter answer into an ApiKey, with leak-safe errors."""

from __future__ import annotations

from scaling_credentials import ApiKey, InvalidKeyFormatError
from scaling_credentials.toolkit import decode_text, field_from_json, make_key

__all__ = ["key_from_parameter", "key_from_secret", "key_from_text"]


def key_from_secret(
    secret_string: str | None,
    secret_binary: bytes | None,
    *,
    field: str | None,
    source: str,
    version: str | None,
) -> ApiKey:
    """Build the key from ``SecretString`` (preferred) or ``SecretBinary`` (UTF-8).

    ``field`` picks a key of a JSON secret. Errors say what is wrong, never the value.
    """
    if secret_string is not None:
        text = secret_string
    elif secret_binary is not None:
        text = decode_text(
            secret_binary, name=f"{source}: SecretBinary (store the key as SecretString or UTF-8)"
        )
    else:
        raise InvalidKeyFormatError(
            f"{source}: the secret version holds neither SecretString nor SecretBinary"
        )
    return key_from_text(text, field=field, source=source, version=version)


def key_from_parameter(parameter: object, *, field: str | None, source: str) -> ApiKey:
    """Build the key from GetParameter's ``Parameter`` object (boto3's, or the
    extension's JSON): its ``Value`` string, its ``Version`` (an integer; anything else
    gives no version). ``field`` picks a key of a JSON value. Errors say what is wrong,
    never the value."""
    value = parameter.get("Value") if isinstance(parameter, dict) else None
    if not isinstance(value, str):
        raise InvalidKeyFormatError(
            f"{source}: the parameter has no value (the answer has no Parameter.Value string)"
        )
    version = parameter.get("Version") if isinstance(parameter, dict) else None
    # bool is an int too, but no version.
    numbered = isinstance(version, int) and not isinstance(version, bool)
    return key_from_text(
        value, field=field, source=source, version=str(version) if numbered else None
    )


def key_from_text(text: str, *, field: str | None, source: str, version: str | None) -> ApiKey:
    """The key in ``text``, or in its JSON field ``field``."""
    if field is not None:
        text = field_from_json(text, field, name=source)
    return make_key(text, source=source, version=version)
