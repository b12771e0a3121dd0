"""FakeScalingAPI: a real HTTP server on 127.0.0.1 that behaves like the Scaling API's
authentication and error bodies, for tests, the demo and local development."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from http import HTTPStatus
from types import TracebackType
from typing import Any

from .._key import KEY_PREFIX, ApiKey, mask

__all__ = ["FakeScalingAPI", "RecordedRequest", "ScriptedResponse"]

_ORG_ID = "7d1f4c1e-6a55-4d9e-9a53-3f0b7a1c2e10"


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received: ``key`` is masked (never the full key)."""

    method: str
    path: str
    key: str | None
    status: int
    request_id: str
    body: bytes = b""


@dataclass(frozen=True)
class ScriptedResponse:
    """A canned answer for the next request(s), to test odd server behaviour (HTML 401s,
    invalid JSON, huge bodies, proxies)."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def _sample_schedules() -> list[dict[str, Any]]:
    created = "2026-01-15T09:30:00Z"
    return [
        {
            "id": "3b241101-e2bb-4255-8caf-4136c566a962",
            "orgId": _ORG_ID,
            "name": "Primary on-call",
            "description": "Follow-the-sun rotation for production incidents",
            "timezone": "UTC",
            "createdBy": "c56a4180-65aa-42ec-a945-5fd21dec0538",
            "createdAt": created,
            "updatedAt": created,
        },
        {
            "id": "9c5b94b1-35ad-49bb-b118-8e8fc24abf80",
            "orgId": _ORG_ID,
            "name": "Database escalation",
            "description": "Second line for database alerts",
            "timezone": "Europe/Berlin",
            "createdBy": "c56a4180-65aa-42ec-a945-5fd21dec0538",
            "createdAt": created,
            "updatedAt": created,
        },
    ]


class _HTTPServer:
    """A small HTTP/1.1 server on one asyncio loop in its own thread.

    One loop rather than a thread per connection: hundreds of concurrent keep-alive
    clients in the same process would otherwise fight over the GIL with the client
    under test. The listen backlog is far above http.server's default of 5.
    """

    def __init__(self, fake: FakeScalingAPI) -> None:
        self._fake = fake
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self._run, name="fake-scaling-api", daemon=True)
        self._ready = threading.Event()
        self.port = 0

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10) or self._server is None:
            raise RuntimeError("FakeScalingAPI did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._client, "127.0.0.1", 0, backlog=1024)
            )
            self.port = int(self._server.sockets[0].getsockname()[1])
        finally:
            self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in list(self._clients):
                task.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            self._loop.stop()

        if self._loop.is_running():
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(timeout=10)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while await self._exchange(reader, writer):
                pass
        except asyncio.CancelledError:
            pass  # shutting down: end quietly
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            asyncio.TimeoutError,
            ValueError,
            UnicodeDecodeError,
        ):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        line = await asyncio.wait_for(reader.readline(), timeout=30)  # idle keep-alive limit
        if not line.strip():
            return False
        method, target, version = line.decode("latin-1").split()
        headers: dict[str, str] = {}
        for _ in range(200):  # bounded header count
            raw = await reader.readline()
            if raw in (b"\r\n", b"\n", b""):
                break
            name, _, value = raw.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await self._read_body(reader, headers)
        if self._fake.latency:
            await asyncio.sleep(self._fake.latency)
        status, payload, extra = self._fake._respond(
            method, target, headers.get("authorization"), body
        )
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        head = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in extra)]
        head.append(f"Content-Length: {len(payload)}")
        head.append("Connection: " + ("keep-alive" if keep_alive else "close"))
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        writer.write(data + (payload if method != "HEAD" else b""))
        await writer.drain()
        return keep_alive

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            chunks: list[bytes] = []
            for _ in range(1_000_000):  # bounded by the client's final zero-size chunk
                size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    break
                chunks.append(await reader.readexactly(size))
                await reader.readline()
            return b"".join(chunks)
        length = int(headers.get("content-length") or 0)
        return await reader.readexactly(length) if length > 0 else b""


class FakeScalingAPI:
    """A Scaling API stand-in over real sockets on 127.0.0.1 (ephemeral port, own thread).

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``url`` is the base
    URL ending in ``/v1``. Keys are issued with :meth:`issue_key`, rotated with
    :meth:`rotate` (the old key stays valid until :meth:`revoke`). Every answer carries an
    ``X-Request-Id`` header, and every error the documented JSON body with its
    ``requestId``. ``latency`` adds a delay (seconds) to every answer.
    """

    def __init__(self, *, keys: Iterable[str] = (), latency: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._valid: set[str] = set()
        self._current: str | None = None
        for key in keys:
            ApiKey(key)  # validate
            self._valid.add(key)
            self._current = key
        self._requests: list[RecordedRequest] = []
        self._scripted: list[ScriptedResponse] = []
        self._schedules = _sample_schedules()
        self.latency = latency
        self._server: _HTTPServer | None = None

    # -- lifecycle

    def start(self) -> FakeScalingAPI:
        """Start serving; returns self."""
        if self._server is not None:
            return self
        server = _HTTPServer(self)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stop()

    def __enter__(self) -> FakeScalingAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("FakeScalingAPI is not started")
        return self._server.port

    @property
    def url(self) -> str:
        """The base URL, ending in ``/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- keys

    def issue_key(self) -> str:
        """Create a new valid key and return it (it becomes the current key)."""
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        with self._lock:
            self._valid.add(key)
            self._current = key
        return key

    def rotate(self) -> str:
        """Issue a new key; the old one stays valid until :meth:`revoke`."""
        return self.issue_key()

    def revoke(self, key: str | ApiKey) -> None:
        """Revoke ``key`` at once (like deleting it in the dashboard)."""
        value = key.reveal() if isinstance(key, ApiKey) else key
        with self._lock:
            self._valid.discard(value)
            if self._current == value:
                self._current = None

    def is_valid(self, key: str | ApiKey) -> bool:
        """Whether ``key`` is accepted now."""
        value = key.reveal() if isinstance(key, ApiKey) else key
        with self._lock:
            return value in self._valid

    @property
    def current_key(self) -> str | None:
        """The most recently issued key that is still valid."""
        with self._lock:
            return self._current

    # -- observation and scripting

    @property
    def requests(self) -> list[RecordedRequest]:
        """What the server received so far (a copy)."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        """Forget the request log."""
        with self._lock:
            self._requests.clear()

    def script(self, *responses: ScriptedResponse) -> None:
        """Answer the next requests with these responses, in order, whatever they carry."""
        with self._lock:
            self._scripted.extend(responses)

    # -- the API

    def _respond(
        self, method: str, target: str, authorization: str | None, body: bytes
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        request_id = str(uuid.uuid4())
        path = target.split("?", 1)[0]
        key = None
        if authorization and authorization.startswith("Bearer "):
            key = authorization[len("Bearer ") :]
        masked = mask(key) if key is not None else None
        with self._lock:
            scripted = self._scripted.pop(0) if self._scripted else None
            valid = key is not None and key in self._valid
        if scripted is not None:
            status, payload = scripted.status, scripted.body
            headers = [("Content-Type", scripted.content_type), *scripted.headers]
        elif authorization is None:
            status, payload = self._error(
                401, "not_authorized_error", "missing_authorization_header", request_id
            )
            headers = [("Content-Type", "application/json")]
        elif not valid:
            status, payload = self._error(
                401, "not_authorized_error", "invalid_api_key", request_id
            )
            headers = [("Content-Type", "application/json")]
        else:
            status, payload = self._route(method, path, body, request_id)
            headers = [("Content-Type", "application/json")]
        headers.append(("X-Request-Id", request_id))
        with self._lock:
            self._requests.append(RecordedRequest(method, path, masked, status, request_id, body))
        return status, payload, headers

    @staticmethod
    def _error(status: int, type_: str, code: str, request_id: str) -> tuple[int, bytes]:
        document = {"statusCode": status, "type": type_, "code": code, "requestId": request_id}
        return status, json.dumps(document).encode()

    def _route(self, method: str, path: str, body: bytes, request_id: str) -> tuple[int, bytes]:
        path = path.rstrip("/")
        if path == "/v1/oncall/schedules" and method in ("GET", "HEAD"):
            with self._lock:
                data = list(self._schedules)
            return 200, json.dumps({"data": data}).encode()
        if path == "/v1/oncall/schedules" and method == "POST":
            return self._create_schedule(body, request_id)
        if path.startswith("/v1/oncall/schedules/") and method == "GET":
            wanted = path.rsplit("/", 1)[1]
            with self._lock:
                found = [s for s in self._schedules if s["id"] == wanted]
            if found:
                return 200, json.dumps({"data": found[0]}).encode()
        return self._error(404, "invalid_request_error", "not_found", request_id)

    def _create_schedule(self, body: bytes, request_id: str) -> tuple[int, bytes]:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict) or not isinstance(document.get("name"), str):
            return self._error(422, "validation_error", "invalid_body", request_id)
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            if any(s["name"] == document["name"] for s in self._schedules):
                return self._error(409, "invalid_request_error", "name_conflict", request_id)
            schedule = {
                "id": str(uuid.uuid4()),
                "orgId": _ORG_ID,
                "name": document["name"],
                "description": str(document.get("description", "")),
                "timezone": str(document.get("timezone", "UTC")),
                "createdBy": "c56a4180-65aa-42ec-a945-5fd21dec0538",
                "createdAt": now,
                "updatedAt": now,
            }
            self._schedules.append(schedule)
        return 201, json.dumps({"data": schedule}).encode()
