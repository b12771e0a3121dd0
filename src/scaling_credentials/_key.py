"""ApiKey: a validated Scaling API key that keeps its value out of logs."""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Any, NoReturn

from ._errors import InvalidKeyFormatError

__all__ = ["KEY_PREFIX", "MAX_KEY_LENGTH", "ApiKey", "mask"]

KEY_PREFIX = "scl_live_"
# Far above any real key, far below what an HTTP server accepts in one header line.
MAX_KEY_LENGTH = 4096
# Tokens shorter than this are masked completely: showing four characters of a short
# token would give away too much of it.
_MIN_TOKEN_FOR_SUFFIX = 12
# Fingerprints are keyed per process: they identify a key within this process (the cache
# remembers rejected keys by fingerprint) and mean nothing anywhere else.
_FINGERPRINT_KEY = os.urandom(32)


def mask(value: str) -> str:
    """Return the masked form of a key-shaped string: the prefix and the last four
    characters at most (``scl_live_****abcd``)."""
    if not value.startswith(KEY_PREFIX):
        return "****"
    token = value[len(KEY_PREFIX) :]
    if len(token) < _MIN_TOKEN_FOR_SUFFIX:
        return KEY_PREFIX + "****"
    return f"{KEY_PREFIX}****{token[-4:]}"


def _validate(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidKeyFormatError(
            f"an API key must be a str, got {type(value).__name__}; decode bytes as UTF-8 first"
        )
    if len(value) > MAX_KEY_LENGTH + 64:
        raise InvalidKeyFormatError(
            f"the value is {len(value)} characters long, far more than an API key "
            f"(at most {MAX_KEY_LENGTH}); check that the source holds only the key"
        )
    stripped = value.strip()
    if not stripped:
        raise InvalidKeyFormatError("the value is empty; the source must hold a scl_live_ key")
    if stripped[:7].lower() == "bearer ":
        raise InvalidKeyFormatError(
            "the value starts with 'Bearer '; store only the key (scl_live_...), "
            "the library adds the 'Bearer ' prefix itself"
        )
    if not stripped.startswith(KEY_PREFIX):
        raise InvalidKeyFormatError(
            f"the value does not start with {KEY_PREFIX!r}; Scaling API keys look like "
            f"scl_live_<token> (check that the source holds the key itself, not a JSON "
            f"document or another credential)"
        )
    token = stripped[len(KEY_PREFIX) :]
    if not token:
        raise InvalidKeyFormatError(
            f"the value is only the prefix {KEY_PREFIX!r}; the token is missing"
        )
    if len(stripped) > MAX_KEY_LENGTH:
        raise InvalidKeyFormatError(
            f"the value is {len(stripped)} characters long; an API key has at most {MAX_KEY_LENGTH}"
        )
    for position, char in enumerate(token):
        # Visible ASCII only: whitespace, control characters and non-ASCII letters cannot
        # travel in an HTTP header and usually mean a copy-paste accident.
        if not ("!" <= char <= "~"):
            what = (
                "whitespace"
                if char.isspace()
                else "a control character"
                if ord(char) < 32 or ord(char) == 127
                else "a non-ASCII character"
            )
            raise InvalidKeyFormatError(
                f"the token contains {what} at position {len(KEY_PREFIX) + position}; "
                "an API key is a single run of visible ASCII characters"
            )
    return stripped


class ApiKey:
    """A Scaling API key (``scl_live_<token>``), validated, with its value kept out of
    ``str()``, ``repr()``, logs, pickles and copies.

    ``source`` says where it came from (a provider description) and ``version`` the
    backend's version of the secret, when it has one. Use :meth:`reveal` to get the
    value itself.
    """

    __slots__ = ("_fingerprint", "_masked", "_value", "source", "version")

    _value: str
    _masked: str
    _fingerprint: str | None
    source: str | None
    version: str | None

    def __init__(
        self, value: str, *, source: str | None = None, version: str | None = None
    ) -> None:
        clean = _validate(value)
        object.__setattr__(self, "_value", clean)
        object.__setattr__(self, "_masked", mask(clean))
        object.__setattr__(self, "_fingerprint", None)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "version", version)

    def reveal(self) -> str:
        """Return the key itself. Send it, never log it."""
        return self._value

    @property
    def masked(self) -> str:
        """The prefix and at most the last four characters, safe to log."""
        return self._masked

    @property
    def fingerprint(self) -> str:
        """A keyed hash of the value (32 hex digits), stable within this process only:
        what to remember a key by without keeping the key."""
        found = self._fingerprint
        if found is None:
            digest = hashlib.blake2b(self._value.encode(), key=_FINGERPRINT_KEY, digest_size=16)
            found = digest.hexdigest()
            object.__setattr__(self, "_fingerprint", found)
        return found

    def __str__(self) -> str:
        return self._masked

    def __repr__(self) -> str:
        parts = [repr(self._masked)]
        if self.source is not None:
            parts.append(f"source={self.source!r}")
        if self.version is not None:
            parts.append(f"version={self.version!r}")
        return f"ApiKey({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ApiKey):
            return NotImplemented
        # Constant time, so that comparing keys does not leak how much of them matches.
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("ApiKey is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("ApiKey is immutable")

    # An ApiKey never leaves the process by accident: pickling would write the value to
    # wherever the pickle goes (a cache, a queue, a multiprocessing pipe). Pass the
    # source URI instead and fetch in the other process.
    def __reduce__(self) -> NoReturn:
        raise TypeError(
            "ApiKey cannot be pickled, so that the key never lands in a cache, queue or "
            "file by accident; pass the source URI to the other process instead"
        )

    def __copy__(self) -> ApiKey:
        return self  # immutable: a copy would only duplicate the secret in memory

    def __deepcopy__(self, memo: dict[int, Any]) -> ApiKey:
        return self
