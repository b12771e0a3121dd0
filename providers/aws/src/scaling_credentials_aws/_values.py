"""Turning a GetSecretValue answer into an ApiKey, with leak-safe errors."""

from __future__ import annotations

from scaling_credentials import ApiKey, InvalidKeyFormatError
from scaling_credentials._file import key_from_json

__all__ = ["key_from_secret"]


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
        try:
            text = secret_binary.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            # Not chained: the decode error holds the secret's bytes.
            raise InvalidKeyFormatError(
                f"{source}: SecretBinary is not UTF-8 text (invalid byte at offset "
                f"{exc.start}); store the key as SecretString or as UTF-8 bytes"
            ) from None
    else:
        raise InvalidKeyFormatError(
            f"{source}: the secret version holds neither SecretString nor SecretBinary"
        )
    if field is not None:
        text = key_from_json(text, field, source=source)
    try:
        return ApiKey(text, source=source, version=version)
    except InvalidKeyFormatError as exc:
        raise InvalidKeyFormatError(f"{source}: {exc}") from None
