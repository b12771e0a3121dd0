"""Local TCP ports for tests that start servers: a free one, and waiting for a process
to listen on one."""

from __future__ import annotations

import socket
import subprocess
import time

__all__ = ["free_port", "wait_for_port"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for tests that start their own servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int,
    *,
    process: subprocess.Popen[bytes] | None = None,
    timeout: float = 30.0,
    what: str = "the server",
) -> None:
    """Wait (bounded by ``timeout`` seconds) until something listens on 127.0.0.1:``port``.

    Raises :class:`RuntimeError` when ``process`` (the server started for it) exits
    first, or when the time runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)  # waiting for a process to bind its port, not for a TTL
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:g} s")
