"""FileProvider: the key from a file (Kubernetes secret volumes, Vault/OpenBao agent
templates, Docker secrets)."""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Hashable

from ._errors import ConfigurationError
from ._fileio import MAX_FILE_SIZE, read_capped_file
from ._key import ApiKey
from ._options import format_query, text_option, whole_number
from ._provider import Provider
from ._redact import get_logger
from ._registry import SourceURI
from ._values import decode_text, field_from_json, make_key

__all__ = ["MAX_FILE_SIZE", "FileProvider"]

logger: logging.Logger = get_logger("scaling_credentials.file")


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
        if not isinstance(path, (str, os.PathLike)):
            raise ConfigurationError(f"FileProvider needs a path, got {type(path).__name__}")
        self.path: str = text_option(os.fspath(path), "FileProvider's path") or ""
        self.field = text_option(field, "field", optional=True)
        self.max_size = whole_number(max_size, "max_size", minimum=1)
        self._warned_mode = False
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: SourceURI) -> FileProvider:
        """``file:/path/to/key[?field=api_key]``."""
        uri.check_params(("field",))
        return cls(uri.require_path("a path"), field=uri.param("field"))

    def describe(self) -> str:
        return f"file:{self.path}" + format_query([("field", self.field)])

    def stamp(self) -> Hashable | None:
        """Device, inode, size and modification time of the file the path resolves to
        (following the kubelet's ``..data`` symlink): any swap, rename-into-place or
        rewrite changes it. A path that cannot be examined gives its error number."""
        try:
            info = os.stat(self.path)
        except OSError as exc:
            return ("error", exc.errno)
        return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)

    def explain_stuck(self, rejected: ApiKey) -> str:
        desc = self.describe()
        if _in_kubelet_volume(self.path):
            return (
                f"{desc} still holds it: the kubelet has not written the new key yet (it "
                "syncs secret volumes about once a minute); put the new key in the "
                "Kubernetes secret before revoking the old one"
            )
        return (
            f"{desc} still holds it, and it is not inside a kubelet ..data directory: if it "
            "is a Kubernetes subPath mount, it never updates (mount the whole secret volume "
            "instead, or restart the pod); otherwise write the new key to the file before "
            "revoking the old one"
        )

    def fetch(self) -> ApiKey:
        desc = self.describe()
        raw = read_capped_file(
            self.path,
            name=desc,
            provider=desc,
            max_size=self.max_size,
            hint="point at the file that holds the key (for a Kubernetes secret volume, "
            "the key's file inside the mount)",
            check=self._check_mode,
        )
        text = decode_text(raw, name=f"{desc}: the file")
        if self.field is not None:
            text = field_from_json(text, self.field, name=desc)
        return make_key(text, source=desc)

    def _check_mode(self, info: os.stat_result) -> None:
        mode = info.st_mode
        if self._warned_mode or not (mode & stat.S_IROTH):
            return
        with self._lock:
            first, self._warned_mode = not self._warned_mode, True
        if not first:
            return
        logger.warning(
            "%s is readable by every user on this host (mode %o); restrict it to the "
            "service: chmod 0400 when the service's user owns the file; on a Kubernetes "
            "secret volume (files owned by root), defaultMode: 0440 with the pod's fsGroup",
            self.describe(),
            stat.S_IMODE(mode),
        )


def _in_kubelet_volume(path: str) -> bool:
    """Whether ``path`` is read through a kubelet ``..data`` directory: the volume's
    ``<name> -> ..data/<name>`` symlink, or a path through ``..data`` itself. Such a file
    is updated in place by the kubelet; a subPath mount of it is not."""
    if "..data" in path.split(os.sep):
        return True
    try:
        target = os.readlink(path)
    except OSError:
        return False
    return target.split(os.sep, 1)[0] == "..data"
