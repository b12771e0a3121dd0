"""FileProvider: the key from a file (Kubernetes secret volumes, Vault/OpenBao agent
templates, Docker secrets)."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import threading

from ._errors import ConfigurationError, InvalidKeyFormatError, ProviderError, SecretNotFoundError
from ._key import ApiKey
from ._provider import Provider
from ._registry import SourceURI

__all__ = ["MAX_FILE_SIZE", "FileProvider", "key_from_json"]

logger = logging.getLogger("scaling_credentials.file")

MAX_FILE_SIZE = 64 * 1024
_OPEN_ATTEMPTS = 3


def key_from_json(text: str, field: str, *, source: str) -> str:
    """Return ``field`` of the JSON object ``text`` (a str), with typed errors that never
    quote the document."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        # The decode error keeps the whole document in ``exc.doc``: do not chain it.
        raise InvalidKeyFormatError(
            f"{source}: expected a JSON object with field {field!r}, but the content is not "
            f"valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(document, dict):
        raise InvalidKeyFormatError(
            f"{source}: expected a JSON object with field {field!r}, got a JSON "
            f"{_json_type(document)}"
        )
    if field not in document:
        names = ", ".join(repr(str(k)) for k in sorted(document)[:20]) or "none"
        raise InvalidKeyFormatError(
            f"{source}: the JSON object has no field {field!r} (fields present: {names})"
        )
    value = document[field]
    if not isinstance(value, str):
        raise InvalidKeyFormatError(
            f"{source}: field {field!r} is a JSON {_json_type(value)}, expected a string"
        )
    return value


def _json_type(value: object) -> str:
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
    return "string"


class FileProvider(Provider):
    """Reads the key from ``path`` at every fetch.

    The path is opened anew each time, so the kubelet's atomic ``..data`` symlink swap
    and an agent's rename-into-place are both followed. ``field`` reads one field of a
    JSON file. Files larger than ``max_size`` bytes (64 KiB) are refused. A file that
    other users can read is reported once, as a warning.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        field: str | None = None,
        max_size: int = MAX_FILE_SIZE,
    ) -> None:
        self.path = os.fspath(path)
        if not self.path:
            raise ConfigurationError("FileProvider needs a path")
        self.field = field
        self.max_size = max_size
        self._warned_mode = False
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: SourceURI) -> FileProvider:
        """``file:/path/to/key[?field=api_key]``."""
        uri.check_params(("field",))
        return cls(uri.require_path("a path"), field=uri.params.get("field") or None)

    def describe(self) -> str:
        return f"file:{self.path}" + (f"?field={self.field}" if self.field else "")

    def fetch(self) -> ApiKey:
        raw = self._read()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            # Not chained: the decode error holds the file's bytes.
            raise InvalidKeyFormatError(
                f"{self.describe()}: the file is not UTF-8 text "
                f"(invalid byte at offset {exc.start})"
            ) from None
        if self.field is not None:
            text = key_from_json(text, self.field, source=self.describe())
        try:
            return ApiKey(text, source=self.describe())
        except InvalidKeyFormatError as exc:
            raise InvalidKeyFormatError(f"{self.describe()}: {exc}") from None

    def _read(self) -> bytes:
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                fd = os.open(self.path, flags)
                break
            except FileNotFoundError as exc:
                # The kubelet swaps ..data, then deletes the old timestamped directory: a
                # lookup that resolved ..data just before the swap finds its file gone while
                # the new one is already in place. Look again (bounded).
                if attempt + 1 == _OPEN_ATTEMPTS:
                    raise self._error(exc) from exc
            except OSError as exc:
                raise self._error(exc) from exc
        try:
            info = os.fstat(fd)
            if stat.S_ISDIR(info.st_mode):
                raise ProviderError(
                    f"{self.describe()} is a directory; point at the file that holds the key "
                    "(for a Kubernetes secret volume, the key's file inside the mount)",
                    provider=self.describe(),
                )
            if info.st_size > self.max_size:
                raise ProviderError(
                    f"{self.describe()} is {info.st_size} bytes, over the {self.max_size}-byte "
                    "cap for a key file; check the path",
                    provider=self.describe(),
                )
            self._check_mode(info.st_mode)
            # Read one byte past the cap: a file that grows while we read is refused too.
            chunks: list[bytes] = []
            remaining = self.max_size + 1
            while remaining > 0:
                chunk = os.read(fd, remaining)
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
        except OSError as exc:
            raise self._error(exc) from exc
        finally:
            os.close(fd)
        if len(data) > self.max_size:
            raise ProviderError(
                f"{self.describe()} is over the {self.max_size}-byte cap for a key file",
                provider=self.describe(),
            )
        return data

    def _check_mode(self, mode: int) -> None:
        if self._warned_mode or not (mode & stat.S_IROTH):
            return
        with self._lock:
            first, self._warned_mode = not self._warned_mode, True
        if not first:
            return
        logger.warning(
            "%s is readable by every user on this host (mode %o); restrict it to the "
            "service's user (chmod 0400, or defaultMode: 0400 on a Kubernetes secret volume)",
            self.describe(),
            stat.S_IMODE(mode),
        )

    def _error(self, exc: OSError) -> ProviderError:
        desc = self.describe()
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return SecretNotFoundError(f"{desc} does not exist", provider=desc)
        if exc.errno in (errno.EACCES, errno.EPERM):
            return ProviderError(
                f"{desc} is not readable by this process (permission denied); give the "
                "service's user read access",
                provider=desc,
            )
        return ProviderError(f"{desc} could not be read: {exc.strerror}", provider=desc)
