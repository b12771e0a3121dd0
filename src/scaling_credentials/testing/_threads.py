"""Running one callable in many threads at once, for tests of code that must hold under
concurrency: started together behind a barrier, joined with a timeout, results in order."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_in_threads"]

T = TypeVar("T")


def run_in_threads(
    target: Callable[[], T], *, threads: int = 8, timeout: float = 30.0
) -> list[T | BaseException]:
    """Call ``target()`` in ``threads`` threads released together (a barrier), join each
    with ``timeout`` seconds, and return what each call returned or raised, in thread
    order. Raises :class:`AssertionError` when a thread is still running after the
    timeout (the call hung), so a test never hangs with it."""
    barrier = threading.Barrier(threads)
    results: list[T | BaseException | None] = [None] * threads

    def worker(index: int) -> None:
        barrier.wait(timeout=timeout)
        try:
            results[index] = target()
        except BaseException as exc:
            results[index] = exc

    started = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=timeout)
    stuck = sum(thread.is_alive() for thread in started)
    if stuck:
        raise AssertionError(f"{stuck} of {threads} threads still running after {timeout:g} s")
    return results  # type: ignore[return-value]
