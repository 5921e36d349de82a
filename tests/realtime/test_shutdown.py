"""The shutdown drain in-process: streams end with a final comment, a stream that opens
while draining ends after its opening frames, and a real SIGTERM reaches the drain first
and the server's own handler after."""

import asyncio
import os
import signal

import pytest
from channels.db import database_sync_to_async

from realtime import shutdown
from realtime.hub import get_hub
from tests.conftest import token_for
from tests.support.asgi import ASGIStream

pytestmark = [pytest.mark.django_db(transaction=True)]


def auth(user) -> dict:
    return {"Authorization": f"Token {token_for(user)}"}


async def rest_of(stream: ASGIStream) -> list:
    frames = []
    while (frame := await stream.next_frame()) is not None:
        frames.append(frame)
    return frames


async def test_drain_ends_open_streams_with_a_final_comment(asgi_app, collab, alice):
    headers = await database_sync_to_async(auth)(alice)
    async with ASGIStream(asgi_app, f"/sse/sessions/{collab.pk}/", headers=headers) as s:
        assert (await s.next_event()).event == "connection"
        await asyncio.wait_for(shutdown.drain(), 5)
        frames = await rest_of(s)
        assert frames[-1].comments == ["shutdown"]
        assert s.finished.is_set()
    assert get_hub().stream_count() == 0


async def test_a_stream_opening_while_draining_ends_after_its_opening_frames(asgi_app, collab, alice):
    headers = await database_sync_to_async(auth)(alice)
    get_hub().draining = True
    async with ASGIStream(asgi_app, f"/sse/sessions/{collab.pk}/", headers=headers) as s:
        assert s.status == 200
        frames = await rest_of(s)
        assert [f.event for f in frames if f.event] == ["connection", "presence"]  # the opening frames
        assert frames[-1].comments == ["shutdown"]


@pytest.fixture
def server_signal_handlers(monkeypatch):
    """SIGTERM/SIGINT handled in Python, as a server installs them; restored after."""
    received = []
    previous = {sig: signal.getsignal(sig) for sig in shutdown.SIGNALS}
    for sig in shutdown.SIGNALS:
        signal.signal(sig, lambda number, frame: received.append(number))
    monkeypatch.setattr(shutdown, "_installed_for", None)
    monkeypatch.setattr(shutdown, "_draining", False)
    yield received
    for sig, handler in previous.items():
        signal.signal(sig, handler)


async def test_sigterm_drains_then_reaches_the_servers_handler(asgi_app, collab, alice, server_signal_handlers):
    headers = await database_sync_to_async(auth)(alice)
    assert shutdown.install_signal_handlers(asyncio.get_running_loop())
    async with ASGIStream(asgi_app, f"/sse/sessions/{collab.pk}/", headers=headers) as s:
        await s.next_event()
        os.kill(os.getpid(), signal.SIGTERM)
        frames = await rest_of(s)
        assert frames[-1].comments == ["shutdown"]
        async with asyncio.timeout(5):
            while not server_signal_handlers:
                await asyncio.sleep(0.01)
    assert server_signal_handlers == [signal.SIGTERM]


def test_no_handlers_are_installed_where_no_server_handles_sigterm(monkeypatch):
    monkeypatch.setattr(shutdown, "_installed_for", None)
    before = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert not shutdown.install_signal_handlers(asyncio.new_event_loop())
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, before)
