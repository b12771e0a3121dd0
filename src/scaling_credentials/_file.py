"""FileProvider: the key from a file (Kubernetes secret volumes, Vault/OpenBao agent
templates, Docker secrets)."""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import tempfile
import threading
from collections.abc import Hashable
from typing import ClassVar

from ._errors import ConfigurationError, ProviderError
from ._fileio import MAX_FILE_SIZE, read_capped_file
from ._key import ApiKey
from ._options import format_query, text_option, whole_number
from ._provider import Provider
from ._redact import get_logger
from ._registry import SourceURI
from ._values import decode_text, field_from_json, json_type, make_key

__all__ = ["MAX_FILE_SIZE", "FileProvider"]

logger: logging.Logger = get_logger("scaling_credentials.file")


class FileProvider(Provider):
    """Reads the key from ``path`` at every fetch.

    The path is opened anew each time, so the kubelet's atomic ``..data`` symlink swap
    and an agent's rename-into-place are both followed. ``field`` reads one field of a
    JSON file. Files larger than ``max_size`` bytes (64 KiB) are refused. A file that
    other users can read is reported once, as a warning. :meth:`store` replaces the file
    atomically (not in a kubelet-managed secret volume).
    """

    can_store: ClassVar[bool] = True

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
        self._store_lock = threading.Lock()

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

    def store(self, key: ApiKey) -> str | None:
        """Replace the file's key with ``key`` atomically and return ``None`` (a file
        keeps no versions).

        The new content is written to a temporary file in the same directory (mode 0600
        while it is written), flushed to disk, given the old file's mode and owner, then
        renamed over the old file: a concurrent :meth:`fetch`, here or in another process,
        reads the old key or the new one, never a partial file. A symlink is followed (the
        file it points to is replaced). With ``field``, the file's other JSON fields are
        kept. A file in a Kubernetes secret volume is refused (:class:`ConfigurationError`):
        the kubelet owns it; update the Kubernetes Secret instead. A missing file is
        created (mode 0600). Two processes storing to the same file at once are not
        coordinated: the last rename wins.
        """
        if not isinstance(key, ApiKey):
            raise ConfigurationError(
                f"FileProvider.store takes an ApiKey, got {type(key).__name__}"
            )
        desc = self.describe()
        if _kubelet_managed(self.path):
            raise ConfigurationError(
                f"{desc} is in a Kubernetes secret volume (a kubelet-managed ..data "
                "directory): the kubelet owns it, mounts it read-only and would overwrite "
                "any change; update the Kubernetes Secret instead (kubectl apply, or your "
                "secrets operator) and the kubelet writes the new key to every pod"
            )
        with self._store_lock:
            target = os.path.realpath(self.path)
            try:
                info: os.stat_result | None = os.stat(target)
            except FileNotFoundError:
                info = None
            except OSError as exc:
                raise self._store_error(exc, target) from None
            content = self._new_content(key, target if info is not None else None)
            self._replace(target, content, info)
        logger.info("stored a new key in %s (%s)", desc, key.masked)
        return None

    def _new_content(self, key: ApiKey, existing: str | None) -> bytes:
        """The file's new bytes: the key alone, or the JSON object with ``field`` set."""
        desc = self.describe()
        old = ""
        if existing is not None:
            raw = read_capped_file(
                existing, name=desc, provider=desc, max_size=self.max_size, check=None
            )
            old = decode_text(raw, name=f"{desc}: the file", error=ProviderError)
        newline = "\n" if not old or old.endswith("\n") else ""
        if self.field is None:
            return (key.reveal() + newline).encode("utf-8")
        document: object = {}
        if old.strip():
            problem = None
            try:
                document = json.loads(old)
            except (json.JSONDecodeError, RecursionError):
                problem = "not valid JSON"
            if problem is None and not isinstance(document, dict):
                problem = f"a JSON {json_type(document)}, not an object"
            if problem is not None:
                raise ProviderError(
                    f"{desc}: the file is {problem}, so its other fields cannot be kept; "
                    "nothing was written",
                    provider=desc,
                )
        assert isinstance(document, dict)
        document[self.field] = key.reveal()
        indent = 2 if "\n" in old.strip() else None
        return (json.dumps(document, indent=indent) + newline).encode("utf-8")

    def _replace(self, target: str, content: bytes, info: os.stat_result | None) -> None:
        directory = os.path.dirname(target) or "."
        try:
            fd, tmp = tempfile.mkstemp(
                prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory
            )
        except OSError as exc:
            raise self._store_error(exc, directory) from None
        try:
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view) :]
                if info is not None:
                    os.fchmod(fd, stat.S_IMODE(info.st_mode))
                    self._keep_owner(fd, info)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except OSError as exc:
            _remove(tmp)
            raise self._store_error(exc, target) from None
        except BaseException:
            _remove(tmp)
            raise
        _sync_directory(directory)

    def _keep_owner(self, fd: int, info: os.stat_result) -> None:
        """Give the new file the old one's owner and group (a process running as root,
        rotating a service's key file, must not leave it unreadable by the service)."""
        current = os.fstat(fd)
        if (current.st_uid, current.st_gid) == (info.st_uid, info.st_gid):
            return
        try:
            os.fchown(fd, info.st_uid, info.st_gid)
        except OSError:
            desc = self.describe()
            raise ProviderError(
                f"{desc}: the new file cannot be given the old one's owner (uid "
                f"{info.st_uid}, gid {info.st_gid}); nothing was written; run as that user "
                "(or as root)",
                provider=desc,
            ) from None

    def _store_error(self, exc: OSError, where: str) -> ProviderError:
        desc = self.describe()
        if exc.errno in (errno.EACCES, errno.EPERM):
            problem = (
                f"{where} is not writable by this process (permission denied); the key is "
                "replaced by a new file in the same directory, so the directory must be "
                "writable"
            )
        elif exc.errno == errno.EROFS:
            problem = f"{where} is on a read-only file system"
        elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
            problem = f"the directory of {where} does not exist"
        else:
            problem = f"{where} could not be written: {exc.strerror}"
        return ProviderError(f"{desc}: {problem}; nothing was written", provider=desc)

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


def _kubelet_managed(path: str) -> bool:
    """Whether ``path`` is a file of a kubelet-managed secret volume: through its
    ``..data`` symlink, or (after following symlinks) inside one of the volume's
    timestamped ``..<time>`` directories, next to a ``..data`` link."""
    if _in_kubelet_volume(path):
        return True
    parent = os.path.dirname(os.path.realpath(path))
    return os.path.basename(parent).startswith("..") and os.path.islink(
        os.path.join(os.path.dirname(parent), "..data")
    )


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _sync_directory(directory: str) -> None:
    """Make the rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
