"""One capped, bounded read of a small secret file, with errors that say what to fix.

Shared by :class:`FileProvider` and by any provider that reads a credential from a file
(a Vault token sink, a service-account JWT). The content never appears in an error.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from ._errors import ProviderError, SecretNotFoundError

__all__ = ["MAX_FILE_SIZE", "read_capped_file"]

MAX_FILE_SIZE = 64 * 1024
_OPEN_ATTEMPTS = 3
_NOT_REGULAR = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def read_capped_file(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    provider: str | None = None,
    max_size: int = MAX_FILE_SIZE,
    hint: str = "",
    check: Callable[[os.stat_result], None] | None = None,
) -> bytes:
    """The bytes of the regular file at ``path``, at most ``max_size`` of them.

    * ``name``: how messages name the file (default: the path); ``provider``: the
      :attr:`ProviderError.provider` of the errors; ``hint``: appended to the messages
      for a missing or unusable file (what to do).
    * ``check``: called with the open file's ``stat`` before it is read (a mode check).

    Symlinks are followed, and the kubelet's atomic ``..data`` swap is survived: a
    lookup that raced the swap and found its file gone looks again (bounded). A FIFO,
    socket or device is refused at once (opening never blocks), as is a directory or a
    file over the cap (also one that grows while it is read).

    Raises :class:`SecretNotFoundError` when the file does not exist and
    :class:`ProviderError` for every other problem, the ``OSError`` chained.
    """
    where = os.fspath(path)
    label = name or where
    extra = f"; {hint}" if hint else ""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_NOCTTY", 0)
    fd = -1
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            fd = os.open(where, flags)
            break
        except FileNotFoundError as exc:
            # The kubelet swaps ..data, then deletes the old timestamped directory: a
            # lookup that resolved ..data just before the swap finds its file gone while
            # the new one is already in place. Look again (bounded).
            if attempt + 1 == _OPEN_ATTEMPTS:
                raise _os_error(exc, label, provider, extra, where) from exc
        except OSError as exc:
            raise _os_error(exc, label, provider, extra, where) from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ProviderError(
                f"{label} is a directory; point at the file inside it{extra}", provider=provider
            )
        kind = _not_regular(info.st_mode)
        if kind is not None:
            raise ProviderError(f"{label} is {kind}, not a regular file{extra}", provider=provider)
        if info.st_size > max_size:
            raise ProviderError(
                f"{label} is {info.st_size} bytes, over the {max_size}-byte cap for a "
                "secret file; check the path",
                provider=provider,
            )
        if check is not None:
            check(info)
        # Read one byte past the cap: a file that grows while we read is refused too.
        chunks: list[bytes] = []
        remaining = max_size + 1
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise _os_error(exc, label, provider, extra, where) from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_size:
        raise ProviderError(
            f"{label} is over the {max_size}-byte cap for a secret file", provider=provider
        )
    return data


def _not_regular(mode: int) -> str | None:
    for test, kind in _NOT_REGULAR:
        if test(mode):
            return kind
    return None


def _os_error(
    exc: OSError, label: str, provider: str | None, extra: str, where: str
) -> ProviderError:
    if exc.errno == errno.ENXIO:  # opening a Unix socket
        try:
            kind = _not_regular(os.stat(where).st_mode)
        except OSError:
            kind = None
        if kind is not None:
            return ProviderError(f"{label} is {kind}, not a regular file{extra}", provider=provider)
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return SecretNotFoundError(f"{label} does not exist{extra}", provider=provider)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return ProviderError(
            f"{label} is not readable by this process (permission denied); give the "
            "service's user read access",
            provider=provider,
        )
    if exc.errno == errno.EISDIR:
        return ProviderError(f"{label} is a directory{extra}", provider=provider)
    return ProviderError(f"{label} could not be read: {exc.strerror}", provider=provider)
