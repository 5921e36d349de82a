"""The tail command's output, in-process against a scripted server (the live-server run is
in test_live.py)."""

from __future__ import annotations

import datetime as dt
import io

import httpx
import pytest

from chorus_client import Backoff, Client, Event
from chorus_client.cli import TailPrinter, main, tail
from tests.client.fake_server import RETRY, SESSION, FakeServer, StopFollowing, connection, stored, stream

PIECES = ["Voilà", ", a plan", " 🚀"]


def answer_frames(start: int) -> list[bytes]:
    frames = [
        stored(start, "message_regenerating", messageId="a1", originalMessageId=None, taskId="t", regenerationId="r")
    ]
    offset = 0
    for n, piece in enumerate(PIECES):
        frames.append(
            stored(
                start + 1 + n,
                "regeneration_progress",
                messageId="a1",
                taskId="t",
                progress=30 * (n + 1),
                offset=offset,
                delta=piece,
            )
        )
        offset += len(piece)
    frames.append(stored(start + 4, "message_regenerated", messageId="a1", taskId="t", content="".join(PIECES)))
    return frames


def run_tail(out, from_id=None) -> FakeServer:
    script = [
        stream(
            RETRY,
            connection(2),
            stored(2, "message_created", messageId="u1", role="user", author="alice", content="plan?"),
            *answer_frames(3),
            # A late repeat of a delta the final content holds: no line, no redraw.
            stored(8, "regeneration_progress", messageId="a1", taskId="t", progress=100, offset=0, delta="Voilà"),
        )
    ]
    server = FakeServer(script)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/messages/"):
            return httpx.Response(200, json={"count": 0, "next": None, "results": [], "lastEventId": 1})
        return server(request)

    transport = httpx.MockTransport(handler)
    with (
        Client("http://chorus.test", token="t0", transport=transport, backoff=Backoff()) as client,
        pytest.raises(StopFollowing),
    ):
        client._sleep = lambda seconds: None  # the script ends after one stream: no need to wait
        tail(client, SESSION, from_id, TailPrinter(out, tty=out.isatty(), width=60))
    return server


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_tty_prints_one_final_line_per_message():
    out = io.StringIO()
    server = run_tail(out)
    assert server.stream_requests[0].headers["last-event-id"] == "1"  # from the loaded messages
    assert out.getvalue().splitlines() == [
        f"* connected to session {SESSION} (newest event 2)",
        "#2 message_created alice: plan?",
        "#3 message_regenerating a1",
        "#7 message_regenerated assistant: Voilà, a plan 🚀",
    ]
    assert "\r" not in out.getvalue()


def test_on_a_tty_the_answer_is_rewritten_in_place():
    out = Terminal()
    run_tail(out, from_id=1)
    text = out.getvalue()
    # Each progress redraws the one live line (clear, then the text so far)...
    assert "\r\x1b[2Kassistant (30%): Voilà" in text
    assert "\r\x1b[2Kassistant (60%): Voilà, a plan" in text
    # ...and the final line replaces it, once.
    assert text.count("#7 message_regenerated assistant: Voilà, a plan 🚀\n") == 1
    lines = [line.rsplit("\r\x1b[2K", 1)[-1] for line in text.split("\n")]
    assert lines[:4] == [
        f"* connected to session {SESSION} (newest event 2)",
        "#2 message_created alice: plan?",
        "#3 message_regenerating a1",
        "#7 message_regenerated assistant: Voilà, a plan 🚀",
    ]


def test_other_events_get_a_readable_line():
    out = io.StringIO()
    printer = TailPrinter(out, tty=False)
    moment = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    for seq, type_, data in [
        (1, "member_joined", {"username": "bob", "role": "editor"}),
        (2, "thought_process_step", {"messageId": "a1", "taskId": "t", "step": 2, "reasoning": "Pick the key terms."}),
        (3, "system", {"message": "Maintenance at 10:00"}),
        (4, "brand_new_type", {"anything": [1, 2]}),
    ]:
        printer.event(Event(id=seq, type=type_, session_id=SESSION, timestamp=moment, data=data), None)
    assert out.getvalue().splitlines() == [
        "#1 member_joined bob (editor)",
        "#2 thought_process_step 2. Pick the key terms.",
        "#3 system Maintenance at 10:00",
        '#4 brand_new_type {"anything": [1, 2]}',
    ]


def test_credentials_are_required_and_unambiguous(capsys):
    assert main(["tail", SESSION], environ={}) == 2
    assert "credentials needed" in capsys.readouterr().err
    assert main(["tail", SESSION, "--token", "t", "--username", "u"], environ={}) == 2
    assert "not both" in capsys.readouterr().err


def test_url_and_token_come_from_the_environment():
    server = FakeServer([stream(RETRY, connection(4), error=StopFollowing())])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/messages/"):
            return httpx.Response(200, json={"count": 0, "next": None, "results": [], "lastEventId": 4})
        return server(request)

    out = io.StringIO()
    environ = {"CHORUS_URL": "http://env.chorus.test:8123", "CHORUS_TOKEN": "from-env"}
    with pytest.raises(StopFollowing):  # the script's end; a real stream goes on until Ctrl-C
        main(["tail", SESSION], stdout=out, environ=environ, transport=httpx.MockTransport(handler))
    (request,) = server.stream_requests
    assert str(request.url) == f"http://env.chorus.test:8123/sse/sessions/{SESSION}/"
    assert request.headers["authorization"] == "Token from-env" and request.headers["last-event-id"] == "4"
    assert out.getvalue() == f"* connected to session {SESSION} (newest event 4)\n"


def test_presence_is_printed_and_typing_is_not():
    from chorus_client.events import control_event

    out = io.StringIO()
    printer = TailPrinter(out, tty=False)
    for name, data in [
        ("presence", '{"online": ["alice", "bob"]}'),
        ("typing", '{"username": "bob", "typing": true, "expiresIn": 6}'),
        ("presence_joined", '{"username": "carol"}'),
        ("read_position", '{"username": "bob", "lastEventId": 3}'),
        ("presence_left", '{"username": "bob"}'),
    ]:
        printer.control(control_event(name, data))
    assert out.getvalue().splitlines() == ["* online: alice, bob", "* carol is online", "* bob went offline"]
