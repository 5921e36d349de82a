"""The client against real server processes (uvicorn on PostgreSQL and Redis): the REST
calls, follow() across a server crash and a graceful restart, access_revoked, the answer
rebuilt by Conversation, and the tail command as a subprocess."""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from chorus_client import (
    AccessRevoked,
    AsyncClient,
    Backoff,
    ChorusError,
    Client,
    Connected,
    Conversation,
    Event,
    Forbidden,
    HistoryTruncated,
    NotFound,
    Unauthorized,
)
from tests.client.conftest import restart
from tests.support.servers import ROOT

pytestmark = pytest.mark.services

FAST = {"read_timeout": 5.0, "backoff": Backoff(initial=0.2, maximum=0.5)}


class FailureSeen(logging.Handler):
    """`seen` is set once follow() has logged two failed connections: the broken stream
    (or the refused first attempt) and at least one more refused attempt during the outage."""

    def __init__(self, count: int = 2) -> None:
        super().__init__(logging.WARNING)
        self.count = count
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "failed" in record.getMessage():
            self.count -= 1
            if self.count <= 0:
                self.seen.set()


@pytest.fixture
def failures():
    handler = FailureSeen()
    logger = logging.getLogger("chorus_client")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def test_rest_calls_against_the_server(cluster, logins):
    url = cluster.urls[0]
    with Client(url, username="alice", password="pw") as alice:
        token = alice.login()
        assert token and alice.token == token
        session = alice.create_session("live")
        sid = session["id"]
        assert alice.session(sid)["title"] == "live"
        assert sid in {s["id"] for s in alice.sessions()}
        posted = alice.post_message(sid, "hello", reply=True)
        assert posted["content"] == "hello" and posted["regenerationId"]
        assert alice.regeneration(posted["regenerationId"])["messageId"]
        messages = alice.messages(sid)
        assert messages[0]["id"] == posted["id"] and messages.last_event_id >= 2
        page = alice.events(sid, after=0, limit=2)
        assert [e.id for e in page.events] == [1, 2] and page.events[0].type == "member_joined"
        assert alice.stream_ticket(sid)["ticket"]
        with pytest.raises(ChorusError) as raised:  # its reply is still being written
            alice.regenerate(sid, posted["id"], query="shorter")
        assert raised.value.status == 409
        plain = alice.post_message(sid, "no reply wanted")
        assert "regenerationId" not in plain
        regenerating = alice.regenerate(sid, plain["id"], query="shorter")
        assert regenerating["success"] is True and regenerating["originalMessageId"] == plain["id"]
        assert alice.cancel(regenerating["regenerationId"])["status"] in ("cancelled", "completed")
        with Client(url, token=token) as by_token:
            assert by_token.session(sid)["id"] == sid
    with Client(url, **logins["bob"]) as bob, pytest.raises(NotFound) as raised:
        bob.session(sid)  # not a member
    assert raised.value.status == 404 and raised.value.detail
    with Client(url, token="not-a-token") as nobody, pytest.raises(Unauthorized):
        nobody.sessions()
    with Client(url, username="alice", password="wrong") as wrong, pytest.raises(Unauthorized) as raised:
        wrong.login()
    assert raised.value.status == 400 and "credentials" in raised.value.detail


def test_a_viewer_writing_gets_forbidden(cluster, logins):
    with Client(cluster.urls[1], **logins["alice"]) as alice:
        sid = alice.create_session("roles")["id"]
        assert alice.add_member(sid, "carol", "viewer") == {"username": "carol", "role": "viewer"}
    with Client(cluster.urls[1], **logins["carol"]) as carol, pytest.raises(Forbidden) as raised:
        carol.post_message(sid, "hi")
    assert raised.value.status == 403


def _post(client: Client, sid: str, tag: str, count: int) -> None:
    for n in range(count):
        client.post_message(sid, f"{tag}-{n}")


def test_sync_follow_survives_a_crashed_server_without_losing_or_repeating(cluster, failures, logins):
    """Events before, during (through the other process) and after a SIGKILL of the process
    the stream comes from; it comes back on the same port. The ids are exactly 1..N."""
    per_phase = 5
    with Client(cluster.urls[1], **logins["alice"]) as poster:
        sid = poster.create_session("crash")["id"]  # event 1: member_joined
        total = 1 + 3 * per_phase
        outage_errors: list[BaseException] = []

        def outage() -> None:
            try:
                cluster.kill(0)
                with Client(cluster.urls[1], **logins["alice"]) as other:
                    _post(other, sid, "during", per_phase)
                    assert failures.seen.wait(30), "the follower never noticed the crash"
                    restart(cluster, 0)
                    _post(other, sid, "after", per_phase)
            except BaseException as error:  # reported by the test's thread
                outage_errors.append(error)

        seen: list[int] = []
        connections = 0
        crash = threading.Thread(target=outage)
        deadline = time.monotonic() + 90
        with Client(cluster.urls[0], **logins["alice"], **FAST) as follower:
            for item in follower.follow(sid, last_event_id=0):
                assert time.monotonic() < deadline, f"gave up waiting; ids so far {seen}"
                assert not outage_errors, outage_errors
                if isinstance(item, Connected):
                    connections += 1
                    if connections == 1:
                        _post(poster, sid, "before", per_phase)  # live, while the stream is open
                elif isinstance(item, Event):
                    seen.append(item.id)
                    if item.id == 1 + per_phase:
                        crash.start()
                    if item.id == total:
                        break
        crash.join(60)
        assert not outage_errors, outage_errors
    assert seen == list(range(1, total + 1))
    assert connections >= 2


async def test_async_follow_survives_a_graceful_restart_without_losing_or_repeating(cluster, failures, logins):
    """The same with SIGTERM: the server ends its streams on shutdown, the client waits its
    `retry:`, is refused while the process is down, and resumes when it is back."""
    per_phase = 5
    async with AsyncClient(cluster.urls[1], **logins["alice"]) as poster:
        sid = (await poster.create_session("restart"))["id"]
        total = 1 + 3 * per_phase

        async def post(tag: str) -> None:
            for n in range(per_phase):
                await poster.post_message(sid, f"{tag}-{n}")

        def stop_process() -> None:
            cluster.procs[0].send_signal(signal.SIGTERM)
            cluster.procs[0].wait(20)

        async def outage() -> None:
            await asyncio.to_thread(stop_process)
            await post("during")
            assert await asyncio.to_thread(failures.seen.wait, 30), "the follower never noticed the restart"
            await asyncio.to_thread(restart, cluster, 0)
            await post("after")

        seen: list[int] = []
        connections = 0
        task: asyncio.Task | None = None
        async with AsyncClient(cluster.urls[0], **logins["alice"], **FAST) as follower:
            async with asyncio.timeout(90):
                async for item in follower.follow(sid, last_event_id=0):
                    if isinstance(item, Connected):
                        connections += 1
                        if connections == 1:
                            await post("before")
                    elif isinstance(item, Event):
                        seen.append(item.id)
                        if item.id == 1 + per_phase:
                            task = asyncio.ensure_future(outage())
                        if item.id == total:
                            break
            assert task is not None
            await asyncio.wait_for(task, 30)
    assert seen == list(range(1, total + 1))
    assert connections >= 2


async def test_removed_member_gets_access_revoked(cluster, logins):
    async with AsyncClient(cluster.urls[0], **logins["alice"]) as alice:
        sid = (await alice.create_session("revoke"))["id"]
        await alice.add_member(sid, "carol", "viewer")
        async with AsyncClient(cluster.urls[1], **logins["carol"], **FAST) as carol:
            seen = []
            with pytest.raises(AccessRevoked) as raised:
                async with asyncio.timeout(30):
                    async for item in carol.follow(sid, last_event_id=0):
                        if isinstance(item, Event):
                            seen.append(item.type)
                            if item.type == "member_joined" and item.data["username"] == "carol":
                                await alice.remove_member(sid, "carol")
    assert seen == ["member_joined", "member_joined", "member_left"]
    assert raised.value.session_id == sid and raised.value.last_event_id == 3
    assert isinstance(raised.value.__cause__, NotFound)  # it checked once more: gone for good


async def test_conversation_rebuilds_the_streamed_answer_exactly(cluster, logins):
    """The local provider's answers contain accents and emoji: offsets in code points end
    to end, from the server's deltas to the client's strings."""
    async with AsyncClient(cluster.urls[0], **logins["alice"], **FAST) as alice:
        sid = (await alice.create_session("answer"))["id"]
        await alice.post_message(sid, "Plan the launch of the garden café, with budget and timing.")
        loaded = await alice.messages(sid)
        conversation = Conversation.from_messages(loaded)
        posted = await alice.post_message(sid, "And the risks?", reply=True)
        progress = 0
        async with asyncio.timeout(60):
            async for item in alice.follow(sid, last_event_id=loaded.last_event_id):
                if isinstance(item, Event):
                    message = conversation.apply(item)
                    progress += item.type == "regeneration_progress"
                    if item.type == "message_regenerated":
                        break
        final = await alice.regeneration(posted["regenerationId"])
    assert progress > 1
    assert final["status"] == "completed"
    assert message.content == final["content"] and message.status == "complete"
    assert any(ord(ch) > 127 for ch in final["content"])  # every local answer ends with an emoji
    assert [m.role for m in conversation] == ["user", "user", "assistant"]


def test_tail_command_prints_events_and_one_final_line_per_answer(cluster, logins):
    with Client(cluster.urls[0], **logins["alice"]) as alice:
        sid = alice.create_session("tail")["id"]
        env = {**os.environ, "CHORUS_URL": cluster.urls[1], "PYTHONUNBUFFERED": "1"}
        env.pop("CHORUS_TOKEN", None)
        command = [sys.executable, "-m", "chorus_client", "tail", sid, "--token", logins["alice"]["token"]]
        proc = subprocess.Popen(
            [*command, "--from", "0"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
        )  # fmt: skip
        lines: queue.Queue[str | None] = queue.Queue()

        def read() -> None:
            for line in proc.stdout:
                lines.put(line.rstrip("\n"))
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()

        def next_line() -> str:
            line = lines.get(timeout=30)
            assert line is not None, proc.stderr.read()
            return line

        try:
            assert next_line() == f"* connected to session {sid} (newest event 1)"
            assert next_line() == "* online: alice"  # the presence snapshot (typing is not printed)
            assert next_line().startswith("#1 member_joined ")
            posted = alice.post_message(sid, "What next?", reply=True)
            assert next_line() == "#2 message_created alice: What next?"
            assert next_line().startswith("#3 message_regenerating ")
            rest = []
            while not (line := next_line()).startswith("#") or "message_regenerated" not in line:
                rest.append(line)
            answer = alice.regeneration(posted["regenerationId"])["content"]
            assert line.endswith(f" message_regenerated assistant: {answer}")
            # Thought steps have lines of their own; progress never does.
            assert all("regeneration_progress" not in r for r in rest)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(20)
            finally:
                if proc.poll() is None:
                    proc.kill()
        stderr = proc.stderr.read()
    assert proc.returncode == 130
    assert "Traceback" not in stderr


def test_keepalives_keep_a_quiet_stream_open_past_the_read_timeout(cluster, logins):
    """The server sends `: keepalive` every second here; a read timeout of 2.5 s must not
    fire on a stream that is quiet for 5 s, and the comments are never yielded."""
    with Client(cluster.urls[0], **logins["alice"], read_timeout=2.5) as alice:
        sid = alice.create_session("quiet")["id"]

        def post() -> None:  # from another thread: a client of its own
            with Client(cluster.urls[1], **logins["alice"]) as poster:
                poster.post_message(sid, "after the quiet")

        later = threading.Timer(5.0, post)
        items = []
        started = time.monotonic()
        try:
            for item in alice.follow(sid):
                items.append(item)
                if isinstance(item, Connected):
                    later.start()
                elif isinstance(item, Event):
                    break
        finally:
            later.cancel()
    assert time.monotonic() - started >= 5
    assert [(type(item).__name__, item.type) for item in items] == [
        ("Connected", "connection"),
        ("ControlEvent", "presence"),
        ("Event", "message_created"),
    ]
    assert items[2].data["content"] == "after the quiet"


def test_a_pruned_history_is_surfaced_then_the_replay_continues(cluster, logins):
    with Client(cluster.urls[0], **logins["alice"], **FAST) as alice:
        sid = alice.create_session("pruned")["id"]  # event 1
        _post(alice, sid, "old", 5)  # events 2..6
        cluster.manage_script(f"from realtime.retention import events_prune; events_prune(session_id={sid!r}, keep=2)")
        items = []
        for item in alice.follow(sid, last_event_id=0):
            items.append(item)
            if isinstance(item, Event) and item.id == 6:
                break
    truncated = [item for item in items if isinstance(item, HistoryTruncated)]
    assert len(truncated) == 1 and (truncated[0].requested, truncated[0].oldest_available) == (0, 5)
    assert [item.id for item in items if isinstance(item, Event)] == [5, 6]
    assert items.index(truncated[0]) < next(i for i, item in enumerate(items) if isinstance(item, Event))
