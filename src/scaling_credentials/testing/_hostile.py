"""HostileServer: an HTTP server on 127.0.0.1 that misbehaves on purpose.

For tests at the boundary where an attacker stands: a server (or a proxy, or a redirect
target) that answers with decompression bombs, endless streams, a body dripped one byte
at a time, or redirects elsewhere, and records every byte it receives, so that a test
can assert on what crossed the socket (no key, no token) and on what the client did
with the answer (memory, time, what it read).
"""

from __future__ import annotations

import functools
import socket
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from urllib.parse import urlsplit

__all__ = ["HostileServer", "HostileHit"]

MIB = 1024 * 1024
_MAX_HEAD = 64 * 1024
_MAX_BODY = 1024 * 1024


@dataclass(frozen=True)
class HostileHit:
    """One request as :class:`HostileServer` received it: ``headers`` has lower-case
    names; ``target`` is the request target as sent (a path, an absolute URL when the
    server is used as a proxy, ``host:port`` for ``CONNECT``); ``path`` is its path."""

    method: str
    target: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def path(self) -> str:
        if self.method == "CONNECT":
            return self.target
        return urlsplit(self.target).path or "/"


#: What a route answers: called with the request, it yields the bytes to send, in order;
#: a float is a pause of that many seconds (cut short when the server stops).
Answer = Callable[[HostileHit], Iterable["bytes | float"]]


def _head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@functools.lru_cache(maxsize=8)
def _gzip_bomb(size: int, layers: int) -> bytes:
    """``size`` zero bytes, gzip-compressed ``layers`` times, built without compressing
    them all: after a full flush a deflate compressor forgets its window, so each
    megabyte of zeros compresses to the same bytes, which are repeated."""
    zeros = bytes(MIB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    first = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
    end = compressor.flush()
    megabytes = max(1, size // MIB)
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(zeros, crc)
    data = b"".join(
        (
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff",  # gzip header, no name, no time
            first,
            again * (megabytes - 1),
            end,
            struct.pack("<II", crc, (megabytes * MIB) & 0xFFFFFFFF),
        )
    )
    for _ in range(layers - 1):
        outer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
        data = outer.compress(data) + outer.flush()
    return data


class HostileServer:
    """An HTTP/1.1 server on 127.0.0.1 (ephemeral port, a thread per connection, one
    request per connection) whose answers are chosen per path with :meth:`route`.

    Everything received on every connection is kept in :attr:`received` (request lines,
    headers, bodies, proxy ``CONNECT`` lines), each request in :attr:`hits`; the bytes
    sent are counted in :attr:`sent`. Use as a context manager, or :meth:`start` and
    :meth:`stop`; stopping closes every connection, so endless and dripping answers end.

    Answers are built by the static methods (:meth:`reply`, :meth:`json`,
    :meth:`redirect`, :meth:`gzip_bomb`, :meth:`endless`, :meth:`drip`) or written by
    hand: a callable taking the :class:`HostileHit` and yielding bytes and pauses.

    It also serves as a proxy that records what it is sent: point ``HTTP_PROXY`` at
    :attr:`url`; every request is answered by the route of its path, ``CONNECT`` ones
    included (by default: 404).
    """

    def __init__(self, default: Answer | None = None) -> None:
        self._default = default or self.reply(404)
        self._routes: dict[str, Answer] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._received = bytearray()
        self._hits: list[HostileHit] = []
        self._sent = 0
        self._connections: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.port = 0

    # -- lifecycle

    def start(self) -> HostileServer:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._acceptor = threading.Thread(target=self._accept, name="hostile-server", daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._acceptor is not None:
            self._acceptor.join(timeout=10)
        for thread in list(self._threads):
            thread.join(timeout=10)

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what a test reads

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no path)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def received(self) -> bytes:
        """Every byte received so far, on every connection, in arrival order per
        connection."""
        with self._lock:
            return bytes(self._received)

    @property
    def hits(self) -> list[HostileHit]:
        """The requests received so far."""
        with self._lock:
            return list(self._hits)

    @property
    def sent(self) -> int:
        """How many bytes the server has sent, in all."""
        with self._lock:
            return self._sent

    def route(self, path: str, answer: Answer) -> None:
        """Answer requests for ``path`` (the path alone, no query; ``host:port`` for a
        ``CONNECT``) with ``answer``."""
        with self._lock:
            self._routes[path] = answer

    # -- answers

    @staticmethod
    def reply(status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = ()) -> Answer:
        """A plain answer with a ``Content-Length``."""
        head = _head(status, [*headers, ("Content-Length", str(len(body)))])
        return HostileServer._send(head, body)

    @staticmethod
    def json(status: int, body: bytes, headers: Iterable[tuple[str, str]] = ()) -> Answer:
        """:meth:`reply` with ``Content-Type: application/json``."""
        return HostileServer.reply(status, body, [("Content-Type", "application/json"), *headers])

    @staticmethod
    def redirect(location: str, status: int = 307) -> Answer:
        """A redirect to ``location``."""
        return HostileServer.reply(status, b"", [("Location", location)])

    @staticmethod
    def gzip_bomb(
        status: int = 401, *, size: int = 512 * MIB, layers: int = 2, length: bool = True
    ) -> Answer:
        """A JSON-typed answer whose body is ``size`` zero bytes compressed ``layers``
        times (``Content-Encoding: gzip, gzip`` for two): about 1 KiB on the wire for
        512 MiB. ``length=False`` sends it chunked, with no ``Content-Length``."""
        data = _gzip_bomb(size, layers)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Encoding", ", ".join(["gzip"] * layers)),
        ]
        if length:
            headers.append(("Content-Length", str(len(data))))
            return HostileServer._send(_head(status, headers), data)
        headers.append(("Transfer-Encoding", "chunked"))
        head = _head(status, headers)

        def answer(hit: HostileHit) -> Iterator[bytes | float]:
            yield head
            yield b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)

        return answer

    @staticmethod
    def endless(
        status: int = 401, *, gzip: bool = False, chunk: int = 16 * 1024, limit: int = 256 * MIB
    ) -> Answer:
        """A chunked answer that never ends: JSON-looking text, or with ``gzip=True`` a
        gzip stream of zeros (each ``chunk`` bytes on the wire decode to about a thousand
        times more). After ``limit`` bytes of body (counted decoded), it stalls with the
        connection open instead, so that a client that reads without bound is not run
        out of memory by its own test; it ends when the client leaves or the server
        stops."""
        headers = [("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]
        if gzip:
            headers.append(("Content-Encoding", "gzip"))
        head = _head(status, headers)

        def answer(hit: HostileHit) -> Iterator[bytes | float]:
            yield head
            produced = 0
            if gzip:
                compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
                zeros = bytes(MIB)
                pending = b""
                while produced < limit:
                    pending += compressor.compress(zeros) + compressor.flush(zlib.Z_SYNC_FLUSH)
                    produced += len(zeros)
                    if len(pending) >= chunk:
                        yield b"%x\r\n%s\r\n" % (len(pending), pending)
                        pending = b""
            else:
                piece = b'{"statusCode": 401, "type": "not_authorized_error", "padding": "'
                yield b"%x\r\n%s\r\n" % (len(piece), piece)
                filler = b"x" * chunk
                while produced < limit:
                    yield b"%x\r\n%s\r\n" % (len(filler), filler)
                    produced += chunk
            yield 3600.0  # stall until the client leaves or the server stops

        return answer

    @staticmethod
    def drip(
        status: int = 401,
        body: bytes = b'{"statusCode": 401, "code": "invalid_api_key"' + b" " * 4096 + b"}",
        *,
        interval: float = 0.2,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Answer:
        """An answer whose headers come at once and whose body (with its true
        ``Content-Length``) comes one byte every ``interval`` seconds."""
        head = _head(
            status,
            [("Content-Type", "application/json"), *headers, ("Content-Length", str(len(body)))],
        )

        def answer(hit: HostileHit) -> Iterator[bytes | float]:
            yield head
            for index in range(len(body)):
                yield body[index : index + 1]
                yield interval

        return answer

    @staticmethod
    def _send(head: bytes, body: bytes) -> Answer:
        def answer(hit: HostileHit) -> Iterator[bytes | float]:
            # Two sends, not head + body: joining them would allocate the whole body
            # again, in the test's process, against the client's memory budget.
            yield head
            yield body

        return answer

    # -- serving

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopped.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                self._connections.add(connection)
            thread = threading.Thread(
                target=self._serve, args=(connection,), name="hostile-connection", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            connection.settimeout(30)
            hit = self._read_request(connection)
            if hit is None:
                return
            with self._lock:
                self._hits.append(hit)
                answer = self._routes.get(hit.path, self._default)
            for part in answer(hit):
                if self._stopped.is_set():
                    return
                if isinstance(part, float):
                    if self._stopped.wait(part):
                        return
                    continue
                connection.sendall(part)
                with self._lock:
                    self._sent += len(part)
        except OSError:
            pass  # the client went away, or the server is stopping
        finally:
            with self._lock:
                self._connections.discard(connection)
            connection.close()

    def _read_request(self, connection: socket.socket) -> HostileHit | None:
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > _MAX_HEAD:
                return None
            chunk = connection.recv(65536)
            if not chunk:
                self._record(data)
                return None
            data += chunk
        self._record(data)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.rpartition(" ")[0] or rest
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get("content-length", "")
        wanted = min(int(length), _MAX_BODY) if length.isdigit() else 0
        while len(body) < wanted:
            chunk = connection.recv(65536)
            if not chunk:
                break
            self._record(chunk)
            body += chunk
        return HostileHit(method=method, target=target, headers=headers, body=body)

    def _record(self, data: bytes) -> None:
        with self._lock:
            self._received += data
