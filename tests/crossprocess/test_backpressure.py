"""A client that stops reading is cut off under uvicorn, the recommended server, so it
cannot grow the server's memory without bound (CONTRACT §5); it then recovers by replay."""

import socket
import time

import httpx
import pytest

from tests.support.servers import Cluster
from tests.support.sse import SSEParser

pytestmark = pytest.mark.services

QUEUE_SIZE = 20
EVENTS = 150
# 150 events of 60 KB (9 MB): more than the kernel's socket buffers (up to 4 MB for the
# sender on Linux), the receiver's window and uvicorn's 64 KB write buffer hold together.
CONTENT = "x" * 60_000


@pytest.fixture(scope="module")
def small_queue_cluster(postgres_url, redis_url):
    running = Cluster(
        postgres_url=postgres_url,
        redis_url=redis_url,
        server="uvicorn",
        processes=1,
        env={"CHORUS_STREAM_QUEUE_SIZE": str(QUEUE_SIZE), "CHORUS_MAX_MESSAGE_CHARS": "100000"},
    ).start()
    running.tokens = running.create_users("alice")
    yield running
    running.stop()


def open_raw_stream(url: str, path: str, token: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, like a stalled phone
    sock.settimeout(20)
    sock.connect((host, int(port)))
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {token}\r\nConnection: close\r\n\r\n"
    sock.sendall(request.encode())
    return sock


def read_until_eof(sock: socket.socket, deadline: float) -> bytes:
    chunks = []
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    raise AssertionError("the server kept the frozen client's stream open")


def event_ids(raw: bytes) -> list[int]:
    # uvicorn sends each ASGI body message as one chunk, and the server writes whole
    # frames, so chunk-size lines never split an `id:` line.
    ids = []
    for line in raw.split(b"\n"):
        if line.startswith(b"id: "):
            ids.append(int(line[4:].strip()))
    return ids


def test_frozen_client_is_ended_and_recovers_by_replay(small_queue_cluster):
    cluster = small_queue_cluster
    url = cluster.urls[0]
    token = cluster.tokens["alice"]
    with httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=20) as api:
        session = api.post("/api/v1/sessions/", json={"title": "frozen"}).json()
        path = f"/sse/sessions/{session['id']}/"
        sock = open_raw_stream(url, path, token)
        head = sock.recv(4096)  # headers (and maybe the opening frames); then stop reading
        assert b"200 OK" in head
        start = session["lastEventId"]
        for _ in range(EVENTS):
            assert api.post(f"/api/v1/sessions/{session['id']}/messages/", json={"content": CONTENT}).status_code == 201
        final = start + EVENTS
        raw = head + read_until_eof(sock, time.monotonic() + 30)
        sock.close()
        seen = event_ids(raw)
        assert seen == list(range(start + 1, start + 1 + len(seen))), "what arrived is a contiguous run"
        assert len(seen) < EVENTS, "the frozen client was not cut off"

        resumed_from = seen[-1] if seen else start
        with httpx.stream(
            "GET", url + path, headers={"Authorization": f"Token {token}", "Last-Event-ID": str(resumed_from)},
            timeout=20,
        ) as response:  # fmt: skip
            parser = SSEParser()
            replayed = []
            for chunk in response.iter_raw():
                replayed += [f.id for f in parser.feed(chunk) if f.id is not None]
                if replayed and replayed[-1] >= final:
                    break
        assert replayed == list(range(resumed_from + 1, final + 1))
