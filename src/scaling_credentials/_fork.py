"""Fork safety: values built once per process, and resets that run in a forked child.

After ``os.fork()`` only the forking thread survives in the child. A lock that another
thread held at that moment stays held forever, and a pooled connection shared with the
parent would interleave both processes' bytes. :class:`PerProcess` builds its value anew
in each process; :func:`after_fork` runs a reset for an object in the child, for as long
as the object lives.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["PerProcess", "after_fork"]

T = TypeVar("T")

_registry_lock = threading.Lock()
_resets: list[tuple[weakref.ReferenceType[Any], Callable[[Any], None]]] = []


def after_fork(owner: T, reset: Callable[[T], None]) -> None:
    """Call ``reset(owner)`` in the child after every ``os.fork()``, as long as ``owner``
    is alive (it is referenced weakly: registering keeps nothing alive).

    Typical resets replace the owner's locks and drop its connections, which belong to
    the parent. A reset that raises is ignored, so one broken owner cannot break the
    others.
    """
    ref = weakref.ref(owner)
    with _registry_lock:
        _resets[:] = [(r, f) for r, f in _resets if r() is not None]
        _resets.append((ref, reset))


def _run_resets() -> None:
    global _registry_lock
    # The registry's own lock may have been held by a thread that no longer exists.
    _registry_lock = threading.Lock()
    for ref, reset in list(_resets):
        owner = ref()
        if owner is None:
            continue
        try:
            reset(owner)
        except Exception:  # noqa: S112 - a reset must never break the child
            continue


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_run_resets)


class PerProcess(Generic[T]):
    """A value built on first use by ``factory``, once per process, and shared by that
    process's threads (the build runs under a lock, so it happens once even when many
    threads ask at the same moment).

    After ``os.fork()`` the child builds its own value at its first :meth:`get`: it never
    uses the parent's (an HTTP client's pooled connections, a boto3 client). The
    parent's value is not closed in the child, since the parent still uses it.
    """

    __slots__ = ("__weakref__", "_factory", "_lock", "_pid", "_value")

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._value: T | None = None
        self._pid: int | None = None
        after_fork(self, PerProcess._forget)

    def get(self) -> T:
        """The value for this process, built now if there is none yet."""
        value, pid = self._value, self._pid
        if value is not None and pid == os.getpid():
            return value
        with self._lock:
            if self._value is None or self._pid != os.getpid():
                self._value = self._factory()
                self._pid = os.getpid()
            return self._value

    def peek(self) -> T | None:
        """The value if this process built one, else ``None`` (builds nothing)."""
        return self._value if self._pid == os.getpid() else None

    def clear(self) -> None:
        """Drop the value: the next :meth:`get` builds a new one."""
        with self._lock:
            self._value = None
            self._pid = None

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._value = None
        self._pid = None
