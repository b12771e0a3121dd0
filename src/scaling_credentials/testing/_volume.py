"""SecretVolume: a key file laid out and updated like a Kubernetes secret volume.

The kubelet writes a secret volume as ``..<timestamp>/<name>`` files, a ``..data``
symlink to the current timestamped directory, and ``<name> -> ..data/<name>`` symlinks.
An update writes a new timestamped directory, points a temporary symlink at it,
``rename()``\\ s that over ``..data`` (atomic), then removes the old directory. A
``subPath`` mount, by contrast, bind-mounts one file, which never changes again: see
:meth:`SecretVolume.pin`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

__all__ = ["SecretVolume"]


class SecretVolume:
    """A directory laid out like a Kubernetes secret volume: ``<dir>/<name>`` is a symlink
    to ``..data/<name>``, and ``..data`` a symlink to a timestamped directory that each
    :meth:`write` replaces atomically, as the kubelet does.

    ``keep_previous`` keeps the generation just swapped out until the next write (a
    reader that resolved ``..data`` just before a swap can still open it); ``False``
    removes it at once, as the kubelet does. Falls back to an atomic ``os.replace`` of a
    plain file where symlinks are not available.
    """

    def __init__(self, directory: Path, name: str = "api-key", *, keep_previous: bool = True):
        self.directory = Path(directory)
        self.name = name
        self.keep_previous = keep_previous
        self.generation = 0
        self._current: Path | None = None
        self._previous: Path | None = None
        self._symlinks = True

    @property
    def path(self) -> Path:
        """The path a workload reads (what ``FileProvider`` is given)."""
        return self.directory / self.name

    def write(self, value: str) -> None:
        """Put ``value`` in place atomically: a reader sees the old key or the new one."""
        self.generation += 1
        if self._symlinks:
            try:
                self._swap(value)
                return
            except (OSError, NotImplementedError):
                self._symlinks = False
        tmp = self.directory / f".{self.name}.{self.generation}.tmp"
        _write_private(tmp, value)
        os.replace(tmp, self.path)

    def pin(self, path: Path) -> Path:
        """Copy the current key to ``path`` as a plain file, as a ``subPath`` mount shows
        it: later :meth:`write` calls never reach it. Returns ``path``."""
        value = self.path.read_text(encoding="utf-8")
        _write_private(Path(path), value.rstrip("\n"))
        return Path(path)

    def _swap(self, value: str) -> None:
        stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
        version_dir = self.directory / f"..{stamp}.{self.generation:09d}"
        version_dir.mkdir(mode=0o755)
        _write_private(version_dir / self.name, value)
        tmp_link = self.directory / "..data_tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        tmp_link.symlink_to(version_dir.name, target_is_directory=True)
        os.replace(tmp_link, self.directory / "..data")
        if not self.path.is_symlink():
            self.path.symlink_to(Path("..data") / self.name)
        if self.keep_previous:
            old, self._previous = self._previous, self._current
        else:
            old = self._current
        self._current = version_dir
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _write_private(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    # Read-only for the owner (chmod 0400): not world-readable, so no warning.
    os.chmod(path, 0o400)
