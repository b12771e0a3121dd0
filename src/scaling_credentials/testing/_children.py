"""Waiting for a forked child process, bounded: a test that forks fails instead of
hanging when its child does not finish."""

from __future__ import annotations

import os
import signal
import time

__all__ = ["wait_child"]


def reap_child(pid: int, timeout: float) -> int | None:
    """The exit code of the child ``pid``, or None when it was still running after
    ``timeout`` seconds and so was killed (by that pid) and reaped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)  # waiting for a child process, not for a TTL
    os.kill(pid, signal.SIGKILL)  # the pid this process forked, nothing else
    os.waitpid(pid, 0)  # it was just killed: this returns at once
    return None


def wait_child(pid: int, timeout: float = 60.0) -> int:
    """Wait for the child process ``pid`` (one this process forked) to end, for at most
    ``timeout`` seconds, and return its exit code (``-N`` when signal ``N`` ended it).

    A child still running after ``timeout`` is killed with SIGKILL (by its pid, never
    by name) and reaped, and :class:`AssertionError` is raised: the test fails instead
    of hanging, and no child is left behind. POSIX only (it needs ``os.fork``).
    """
    code = reap_child(pid, timeout)
    if code is None:
        raise AssertionError(f"child process {pid} did not finish within {timeout} s (killed)")
    return code
