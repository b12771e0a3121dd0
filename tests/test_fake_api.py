"""FakeScalingAPI over real sockets: documented error bodies, request ids, key
issue/rotate/revoke, the masked request log, schedules, scripted answers, 250 concurrent
keep-alive connections, and the ``scaling_api`` fixture from the pytest11 entry point."""

from __future__ import annotations

import http.client
import importlib.metadata
import json
import socket
import threading
import uuid
from typing import Any

import httpx
import pytest

from scaling_credentials import ApiKey, InvalidKeyFormatError
from scaling_credentials.testing import FakeScalingAPI, RecordedRequest, ScriptedResponse
from scaling_credentials.testing.provider_suite import (
    assert_equal_masked,
    assert_key_is,
    assert_no_secret,
)

SCHEDULES = "/oncall/schedules"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def check_error(response: httpx.Response, status: int, type_: str, code: str) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body == {
        "statusCode": status,
        "type": type_,
        "code": code,
        "requestId": response.headers["x-request-id"],
    }
    assert is_uuid(body["requestId"])


@pytest.fixture
def client(scaling_api: FakeScalingAPI) -> Any:
    with httpx.Client(base_url=scaling_api.url, timeout=30) as c:
        yield c


# ====================================================================== lifecycle


def test_url_port_and_lifecycle() -> None:
    api = FakeScalingAPI()
    with pytest.raises(RuntimeError):
        _ = api.url
    with api:
        assert api.start() is api  # idempotent
        assert api.url == f"http://127.0.0.1:{api.port}/v1"
        assert api.url.endswith("/v1")
        key = api.issue_key()
        response = httpx.get(api.url + SCHEDULES, headers=bearer(key), timeout=30)
        assert response.status_code == 200
        port = api.port
    api.stop()  # stopping twice is harmless
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1{SCHEDULES}", timeout=5)


def test_two_fakes_are_independent() -> None:
    with FakeScalingAPI() as first, FakeScalingAPI() as second:
        assert first.port != second.port
        key = first.issue_key()
        assert httpx.get(first.url + SCHEDULES, headers=bearer(key)).status_code == 200
        assert httpx.get(second.url + SCHEDULES, headers=bearer(key)).status_code == 401


def test_keys_given_at_construction_are_validated_and_valid() -> None:
    key = "scl_live_preloaded0123456789"
    with FakeScalingAPI(keys=[key]) as api:
        assert api.is_valid(key)
        assert_equal_masked(api.current_key, key)
        assert httpx.get(api.url + SCHEDULES, headers=bearer(key)).status_code == 200
    with pytest.raises(InvalidKeyFormatError):
        FakeScalingAPI(keys=["Bearer nope"])


# ====================================================================== documented errors


def test_missing_authorization_header(client: httpx.Client) -> None:
    check_error(client.get(SCHEDULES), 401, "not_authorized_error", "missing_authorization_header")


@pytest.mark.parametrize(
    "authorization",
    ["Bearer scl_live_neverissued0123456789", "Bearer not-a-key", "Basic dXNlcjpwYXNz", "Bearer"],
)
def test_invalid_key(client: httpx.Client, authorization: str) -> None:
    response = client.get(SCHEDULES, headers={"Authorization": authorization})
    check_error(response, 401, "not_authorized_error", "invalid_api_key")


def test_unknown_path_method_and_id_are_404(
    client: httpx.Client, scaling_api: FakeScalingAPI
) -> None:
    headers = bearer(scaling_api.issue_key())
    for response in (
        client.get("/nowhere", headers=headers),
        client.delete(SCHEDULES, headers=headers),
        client.get(f"{SCHEDULES}/{uuid.uuid4()}", headers=headers),
        client.get(f"http://127.0.0.1:{scaling_api.port}/v2/oncall/schedules", headers=headers),
    ):
        check_error(response, 404, "invalid_request_error", "not_found")


def test_authentication_comes_before_routing(client: httpx.Client) -> None:
    check_error(client.get("/nowhere"), 401, "not_authorized_error", "missing_authorization_header")


def test_every_answer_has_a_fresh_request_id(
    client: httpx.Client, scaling_api: FakeScalingAPI
) -> None:
    key = scaling_api.issue_key()
    responses = [
        client.get(SCHEDULES, headers=bearer(key)),
        client.get(SCHEDULES),
        client.get("/nowhere", headers=bearer(key)),
        client.post(SCHEDULES, headers=bearer(key), json={"name": "Request id check"}),
    ]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(is_uuid(i) for i in ids)
    assert len(set(ids)) == len(ids)
    assert [r.request_id for r in scaling_api.requests] == ids


# ====================================================================== keys


def test_issue_rotate_revoke(client: httpx.Client, scaling_api: FakeScalingAPI) -> None:
    first = scaling_api.issue_key()
    assert_key_is(ApiKey(first), first)  # well-formed
    assert_equal_masked(scaling_api.current_key, first)
    assert client.get(SCHEDULES, headers=bearer(first)).status_code == 200

    second = scaling_api.rotate()
    assert ApiKey(second) != ApiKey(first)
    assert_equal_masked(scaling_api.current_key, second)
    # Rotation alone keeps the old key valid until it is revoked.
    assert client.get(SCHEDULES, headers=bearer(first)).status_code == 200
    assert client.get(SCHEDULES, headers=bearer(second)).status_code == 200

    scaling_api.revoke(first)
    assert not scaling_api.is_valid(first)
    check_error(
        client.get(SCHEDULES, headers=bearer(first)),
        401,
        "not_authorized_error",
        "invalid_api_key",
    )
    assert client.get(SCHEDULES, headers=bearer(second)).status_code == 200
    assert_equal_masked(scaling_api.current_key, second)

    scaling_api.revoke(ApiKey(second))  # an ApiKey works too
    current: str | None = scaling_api.current_key
    assert current is None
    assert client.get(SCHEDULES, headers=bearer(second)).status_code == 401


def test_issued_keys_are_distinct() -> None:
    with FakeScalingAPI() as api:
        keys = {api.issue_key() for _ in range(50)}
    assert len(keys) == 50


def test_revoking_an_unknown_key_is_harmless(scaling_api: FakeScalingAPI) -> None:
    key = scaling_api.issue_key()
    scaling_api.revoke("scl_live_unknown0123456789")
    assert scaling_api.is_valid(key)


# ====================================================================== request log


def test_request_log_masks_keys(client: httpx.Client, scaling_api: FakeScalingAPI) -> None:
    key = scaling_api.issue_key()
    client.get(SCHEDULES + "?limit=5", headers=bearer(key))
    client.get(SCHEDULES)
    client.get(SCHEDULES, headers={"Authorization": "Bearer scl_live_notvalid0123456789"})
    log = scaling_api.requests
    assert all(isinstance(r, RecordedRequest) for r in log)
    assert [(r.method, r.path, r.status) for r in log] == [
        ("GET", "/v1/oncall/schedules", 200),
        ("GET", "/v1/oncall/schedules", 401),
        ("GET", "/v1/oncall/schedules", 401),
    ]
    assert log[0].key == f"scl_live_****{key[-4:]}"
    assert log[1].key is None
    assert log[2].key == "scl_live_****6789"
    token = key.removeprefix("scl_live_")
    assert_no_secret(token[:-4], repr(log), str(log))
    assert_no_secret("notvalid0123", repr(log))


def test_request_log_records_bodies_and_is_a_copy(
    client: httpx.Client, scaling_api: FakeScalingAPI
) -> None:
    key = scaling_api.issue_key()
    client.post(SCHEDULES, headers=bearer(key), json={"name": "Body log"})
    log = scaling_api.requests
    assert json.loads(log[0].body) == {"name": "Body log"}
    log.clear()
    assert len(scaling_api.requests) == 1
    scaling_api.clear_requests()
    assert scaling_api.requests == []


# ====================================================================== schedules


def test_sample_schedules(client: httpx.Client, scaling_api: FakeScalingAPI) -> None:
    response = client.get(SCHEDULES, headers=bearer(scaling_api.issue_key()))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert is_uuid(response.headers["x-request-id"])
    data = response.json()["data"]
    # The two sample schedules, in a stable order.
    assert [(s["name"], s["timezone"]) for s in data] == [
        ("Primary on-call", "UTC"),
        ("Database escalation", "Europe/Berlin"),
    ]
    for schedule in data:
        assert set(schedule) == {
            "id",
            "orgId",
            "name",
            "description",
            "timezone",
            "createdBy",
            "createdAt",
            "updatedAt",
        }
        assert is_uuid(schedule["id"])
        assert is_uuid(schedule["orgId"])
        assert is_uuid(schedule["createdBy"])


def test_trailing_slash_and_get_by_id(client: httpx.Client, scaling_api: FakeScalingAPI) -> None:
    headers = bearer(scaling_api.issue_key())
    listed = client.get(SCHEDULES + "/", headers=headers).json()["data"]
    one = client.get(f"{SCHEDULES}/{listed[0]['id']}", headers=headers)
    assert one.status_code == 200
    assert one.json()["data"] == listed[0]


def test_create_then_conflict(client: httpx.Client, scaling_api: FakeScalingAPI) -> None:
    headers = bearer(scaling_api.issue_key())
    created = client.post(
        SCHEDULES, headers=headers, json={"name": "Weekend", "timezone": "Asia/Tokyo"}
    )
    assert created.status_code == 201
    schedule = created.json()["data"]
    assert schedule["name"] == "Weekend"
    assert schedule["timezone"] == "Asia/Tokyo"
    assert is_uuid(schedule["id"])
    fetched = client.get(f"{SCHEDULES}/{schedule['id']}", headers=headers)
    assert fetched.json()["data"] == schedule
    assert schedule in client.get(SCHEDULES, headers=headers).json()["data"]
    again = client.post(SCHEDULES, headers=headers, json={"name": "Weekend"})
    check_error(again, 409, "invalid_request_error", "name_conflict")


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"[]", b'{"name": 5}', b'{"description": "no name"}', b"\xff\xfe"],
    ids=["empty", "not-json", "array", "name-number", "no-name", "not-utf8"],
)
def test_create_with_a_bad_body_is_422(
    client: httpx.Client, scaling_api: FakeScalingAPI, content: bytes
) -> None:
    response = client.post(
        SCHEDULES,
        headers={**bearer(scaling_api.issue_key()), "Content-Type": "application/json"},
        content=content,
    )
    check_error(response, 422, "validation_error", "invalid_body")


def test_chunked_request_body(client: httpx.Client, scaling_api: FakeScalingAPI) -> None:
    parts = [b'{"name": ', b'"Chunked', b' body"}']
    response = client.post(SCHEDULES, headers=bearer(scaling_api.issue_key()), content=iter(parts))
    assert response.status_code == 201
    assert response.json()["data"]["name"] == "Chunked body"


def test_head_has_headers_and_no_body(client: httpx.Client, scaling_api: FakeScalingAPI) -> None:
    response = client.head(SCHEDULES, headers=bearer(scaling_api.issue_key()))
    assert response.status_code == 200
    assert response.content == b""
    assert is_uuid(response.headers["x-request-id"])


# ====================================================================== scripted answers


def test_scripted_answers_in_order_then_normal(
    client: httpx.Client, scaling_api: FakeScalingAPI
) -> None:
    key = scaling_api.issue_key()
    scaling_api.script(
        ScriptedResponse(502, b"<html>Bad Gateway</html>", content_type="text/html"),
        ScriptedResponse(401, b"{not json", headers=(("Retry-After", "1"),)),
    )
    first = client.get(SCHEDULES, headers=bearer(key))
    second = client.get(SCHEDULES)  # scripted answers ignore authentication
    third = client.get(SCHEDULES, headers=bearer(key))
    assert (first.status_code, first.text) == (502, "<html>Bad Gateway</html>")
    assert first.headers["content-type"] == "text/html"
    assert (second.status_code, second.content) == (401, b"{not json")
    assert second.headers["retry-after"] == "1"
    assert third.status_code == 200
    # Scripted answers still carry a request id and are logged.
    assert all(is_uuid(r.headers["x-request-id"]) for r in (first, second, third))
    assert [r.status for r in scaling_api.requests] == [502, 401, 200]


def test_scripted_huge_body(client: httpx.Client, scaling_api: FakeScalingAPI) -> None:
    big = b"x" * (1024 * 1024)
    scaling_api.script(ScriptedResponse(500, big, content_type="text/plain"))
    response = client.get(SCHEDULES)
    assert response.status_code == 500
    assert response.content == big


# ====================================================================== raw protocol


def _raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        chunks = []
        for _ in range(10_000):  # bounded: the server closes the connection
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_connection_close_and_http_1_0(scaling_api: FakeScalingAPI) -> None:
    close = _raw_exchange(
        scaling_api.port,
        b"GET /v1/oncall/schedules HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert close.startswith(b"HTTP/1.1 401 ")
    assert b"missing_authorization_header" in close
    old = _raw_exchange(scaling_api.port, b"GET /v1/oncall/schedules HTTP/1.0\r\n\r\n")
    assert b" 401 " in old.split(b"\r\n", 1)[0]


def test_garbage_does_not_break_the_server(scaling_api: FakeScalingAPI) -> None:
    for garbage in (b"\r\n\r\n", b"NONSENSE\r\n\r\n", b"GET\r\n\r\n", b"\x00\xff" * 100 + b"\r\n"):
        _raw_exchange(scaling_api.port, garbage)  # whatever it answers, it must not hang
    key = scaling_api.issue_key()
    assert httpx.get(scaling_api.url + SCHEDULES, headers=bearer(key)).status_code == 200


# ====================================================================== many connections


def test_250_concurrent_keep_alive_connections(scaling_api: FakeScalingAPI) -> None:
    count = 250
    key = scaling_api.issue_key()
    connected = threading.Barrier(count)
    answered = threading.Barrier(count)
    results: list[object] = [None] * count

    def request(conn: http.client.HTTPConnection) -> int:
        conn.request("GET", "/v1/oncall/schedules", headers=bearer(key))
        response = conn.getresponse()
        body = response.read()
        assert json.loads(body)["data"]
        return response.status

    def worker(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", scaling_api.port, timeout=60)
        try:
            conn.connect()
            connected.wait(timeout=60)  # all 250 connections open at once
            first = request(conn)
            sock = conn.sock
            answered.wait(timeout=60)  # all 250 still open, each after one answer
            second = request(conn)
            results[index] = (first, second, conn.sock is sock)
        except BaseException as exc:
            results[index] = f"{type(exc).__name__}: {exc}"
            connected.abort()
            answered.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    failures = [r for r in results if r != (200, 200, True)]
    assert failures == [], failures[:5]
    log = scaling_api.requests
    assert len(log) == 2 * count
    assert {r.status for r in log} == {200}


# ====================================================================== the pytest plugin


def test_scaling_api_fixture_is_a_started_fake(scaling_api: FakeScalingAPI) -> None:
    assert isinstance(scaling_api, FakeScalingAPI)
    assert scaling_api.url.startswith("http://127.0.0.1:")
    assert httpx.get(scaling_api.url + SCHEDULES).status_code == 401


def test_fixture_comes_from_the_pytest11_entry_point(pytestconfig: pytest.Config) -> None:
    entry = [
        ep
        for ep in importlib.metadata.entry_points(group="pytest11")
        if ep.value == "scaling_credentials.testing.pytest_plugin"
    ]
    assert len(entry) == 1
    assert entry[0].dist is not None
    assert entry[0].dist.metadata["Name"] == "scaling-credentials"
    plugin = pytestconfig.pluginmanager.get_plugin(entry[0].name)
    assert plugin is not None
    assert plugin.__name__ == "scaling_credentials.testing.pytest_plugin"
