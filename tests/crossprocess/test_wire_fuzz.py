"""Odd requests on the wire, to real uvicorn and daphne processes running as `make run`
does (DJANGO_DEBUG=1): bytes that are not UTF-8 in headers and URLs, NUL bytes, huge and
odd Last-Event-ID values, very long URLs, malformed ids. Each gets one of the contract's
answers (a 200 stream, or a JSON 400 / 401 / 404; `/v1/` in OpenAI's shape) within a few
seconds, or, for bytes that break HTTP's own syntax, the server's 400 before the app sees
them (or, for a request line longer than Twisted's limit, daphne closes the connection).
The server logs no traceback and stays up."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.support.servers import Cluster

pytestmark = pytest.mark.services

TIMEOUT = 10.0


@pytest.fixture(scope="module", params=["uvicorn", "daphne"])
def debug_server(request, postgres_url, redis_url):
    running = Cluster(
        postgres_url=postgres_url, redis_url=redis_url, server=request.param, processes=1, env={"DJANGO_DEBUG": "1"}
    ).start()
    running.tokens = running.create_users("alice")
    with socket.create_connection(("127.0.0.1", running.ports[0])):
        pass
    yield running
    running.stop()


@pytest.fixture(scope="module")
def session_id(debug_server) -> str:
    import httpx

    headers = {"Authorization": f"Token {debug_server.tokens['alice']}"}
    with httpx.Client(base_url=debug_server.urls[0], headers=headers, timeout=20) as api:
        session = api.post("/api/v1/sessions/", json={"title": "wire"}).json()
        for n in range(3):
            api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": f"m{n}"})
        return session["id"]


def exchange(port: int, target: bytes, headers: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send one raw HTTP/1.1 request; the status, headers and body (for a stream: up to the
    `connection` event); status 0 if the server closed the connection without a byte.
    Fails if no complete answer comes within TIMEOUT."""
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close", *headers]
    deadline = time.monotonic() + TIMEOUT
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n")
        data = b""
        while True:
            assert time.monotonic() < deadline, f"no complete answer within {TIMEOUT} s: {data[:300]!r}"
            if b"\r\n\r\n" in data:
                head, _, body = data.partition(b"\r\n\r\n")
                status_line, *header_lines = head.split(b"\r\n")
                status = int(status_line.split()[1])
                found = {}
                for line in header_lines:
                    name, _, value = line.partition(b":")
                    found[name.strip().lower().decode()] = value.strip().decode("latin-1")
                if status == 200 and b"event: connection" in body:
                    return status, found, body
            chunk = sock.recv(65536)
            if not chunk:
                if not data:
                    return 0, {}, b""  # closed without an answer
                return status, found, data.partition(b"\r\n\r\n")[2]
            data += chunk


def json_body(body: bytes, headers: dict[str, str]) -> dict:
    if headers.get("transfer-encoding") == "chunked":  # de-chunk
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2 :]
        body = out
    return json.loads(body)


# (target, extra header lines, what may answer: statuses of the app, and whether the server
# may refuse first because the bytes break HTTP's syntax)
def cases(session_id: str, token: str) -> list[tuple[str, bytes, list[bytes], set[int], bool]]:
    stream = f"/sse/sessions/{session_id}/".encode()
    auth = f"Authorization: Token {token}".encode()
    return [
        ("non-UTF-8 Last-Event-ID", stream, [auth, b"Last-Event-ID: \xff\xfe"], {400}, False),
        ("Arabic-Indic digits", stream, [auth, "Last-Event-ID: ١٢".encode()], {400}, False),
        ("10**30", stream, [auth, b"Last-Event-ID: 1" + b"0" * 30], {200}, False),
        ("5000 digits", stream, [auth, b"Last-Event-ID: " + b"9" * 5000], {200}, False),
        ("leading +", stream, [auth, b"Last-Event-ID: +1"], {400}, False),
        ("negative", stream, [auth, b"Last-Event-ID: -1"], {400}, False),
        ("spaces around", stream, [auth, b"Last-Event-ID:   2   "], {200}, False),
        ("NUL in Last-Event-ID", stream, [auth, b"Last-Event-ID: 1\x00"], {400}, True),
        ("two Last-Event-ID", stream, [auth, b"Last-Event-ID: 1", b"Last-Event-ID: x"], {200, 400}, False),
        ("bad query encoding", stream + b"?lastEventId=%FF%FE", [auth], {400}, False),
        ("raw bytes in the query", stream + b"?lastEventId=\xff", [auth], {400}, True),
        ("many parameters", stream + b"?" + b"&".join(b"p%d=1" % n for n in range(3000)), [auth], {200}, True),
        ("repeated lastEventId", stream + b"?lastEventId=x&lastEventId=1", [auth], {200}, False),
        ("NUL in the token", stream, [b"Authorization: Token a\x00b"], {401}, True),
        ("obs-text token", stream, [b"Authorization: Token \xff\xfe"], {401}, False),
        ("NUL session cookie", stream, [b'Cookie: sessionid="\\000\\377abcdefgh"'], {401}, False),
        ("no credentials", stream, [], {401}, False),
        ("malformed session id", b"/sse/sessions/not-a-uuid/", [auth], {404}, False),
        ("raw bytes in the path", b"/sse/sessions/\xff\xfe/", [auth], {404}, True),
        ("encoded NUL in the path", b"/sse/sessions/%00/", [auth], {404}, False),
        ("very long path", b"/sse/sessions/" + b"a" * 20_000 + b"/", [auth], {404}, True),
        ("unknown API path", b"/api/v1/nothing/", [auth], {404}, False),
        (
            "malformed message id",
            f"/api/v1/sessions/{session_id}/messages/\xff/".encode("latin-1"),
            [auth],
            {404},
            True,
        ),
        ("API NUL cookie", b"/api/v1/sessions/", [b'Cookie: sessionid="\\000abcdefgh"'], {401}, False),
        ("unknown /v1/ path", b"/v1/nothing", [auth], {404}, False),
    ]


def check_one(port: int, target: bytes, headers: list[bytes], expected: set[int], server_may_refuse: bool) -> None:
    status, found, body = exchange(port, target, headers)
    content_type = found.get("content-type", "")
    if server_may_refuse and (status == 0 or (status in (400, 414, 431) and "json" not in content_type)):
        # The server refused before the app saw it: bytes that HTTP does not allow, or a
        # request line over its limit (daphne, through Twisted, closes the connection).
        return
    assert status != 0, "the connection closed without an answer"
    assert status in expected, (status, body[:300])
    if status == 200:
        assert content_type == "text/event-stream"
        return
    assert content_type == "application/json", (content_type, body[:300])
    decoded = json_body(body, found)
    if target.startswith(b"/v1/"):
        assert set(decoded["error"]) == {"message", "type", "param", "code"}
    else:
        assert isinstance(decoded["detail"], str)


def test_odd_requests_get_only_the_contracts_answers(debug_server, session_id):
    port = debug_server.ports[0]
    failures = []
    for name, target, headers, expected, server_may_refuse in cases(session_id, debug_server.tokens["alice"]):
        try:
            check_one(port, target, headers, expected, server_may_refuse)
        except AssertionError as exc:
            failures.append(f"{name}: {exc}")
    assert not failures, failures
    assert debug_server.procs[0].poll() is None, "the server died"
    log = debug_server.log_text(0)
    assert "Traceback" not in log, log[-3000:]
