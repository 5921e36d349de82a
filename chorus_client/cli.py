"""`python -m chorus_client tail <session-id>`: print a session's events as they arrive.

An assistant's answer is rebuilt from its `regeneration_progress` events: on a terminal
its line is rewritten in place as it grows; otherwise (a pipe, a file) one final line is
printed per message. Ctrl-C exits cleanly (status 130).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from chorus_client.client import Client
from chorus_client.conversation import Conversation, Message
from chorus_client.errors import AccessRevoked, ChorusError
from chorus_client.events import Connected, ControlEvent, Event, HistoryTruncated

DEFAULT_URL = "http://127.0.0.1:8000"
_CLEAR_LINE = "\r\x1b[2K"
# Events whose message the printer shows with its text, once it is final.
_FINAL = {"message_regenerated", "regeneration_error", "regeneration_cancelled"}


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _summary(event: Event) -> str:
    """A readable rest of the line for the event types people watch; JSON for the others."""
    data = event.data
    try:
        if event.type in ("member_joined", "member_left"):
            return f"{data['username']} ({data['role']})"
        if event.type == "thought_process_start":
            return f"thinking about: {data['thinkingAbout']}"
        if event.type == "thought_process_step":
            return f"{data['step']}. {data['reasoning']}"
        if event.type == "thought_process_complete":
            return str(data["conclusion"])
        if event.type == "session_updated":
            return f"title: {data['title']}"
        if event.type == "system":
            return str(data["message"])
    except (KeyError, TypeError):
        pass  # a shape this client does not know: show it as it came
    return json.dumps(data, ensure_ascii=False)


# Unnumbered frames too frequent to print a line for.
_QUIET = frozenset({"typing", "read_position"})


class TailPrinter:
    """Turns events into lines on `out`; keeps at most one live (rewritten) line on a TTY."""

    def __init__(self, out: TextIO, *, tty: bool, width: int = 80) -> None:
        self.out = out
        self.tty = tty
        self.width = max(20, width)
        self.live: Message | None = None  # the streaming message whose line is on screen

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()

    def line(self, text: str) -> None:
        """A permanent line; on a TTY the live line is cleared first, then drawn again below."""
        if self.tty and self.live is not None:
            self._write(_CLEAR_LINE + text + "\n")
            self._draw_live()
        else:
            self._write(text + "\n")

    def _draw_live(self) -> None:
        if self.live is None:
            return
        prefix = f"{self.live.role} ({self.live.progress or 0}%): "
        room = self.width - len(prefix) - 1
        body = _one_line(self.live.content)
        if len(body) > room:
            body = "…" + body[-(room - 1) :]
        self._write(_CLEAR_LINE + prefix + body)

    def end_live(self) -> None:
        if self.tty and self.live is not None:
            self._write(_CLEAR_LINE)
        self.live = None

    def control(self, item: ControlEvent) -> None:
        if isinstance(item, Connected):
            self.line(f"* connected to session {item.session_id} (newest event {item.last_event_id})")
        elif isinstance(item, HistoryTruncated):
            self.line(f"* history truncated: events {item.requested + 1} to {item.oldest_available - 1} were pruned")
        elif item.type == "presence":
            self.line(f"* online: {', '.join(item.data.get('online', [])) or 'nobody'}")
        elif item.type in ("presence_joined", "presence_left"):
            verb = "is online" if item.type == "presence_joined" else "went offline"
            self.line(f"* {item.data.get('username')} {verb}")
        elif item.type in _QUIET:
            return  # typing notices come every few seconds, read positions on every scroll
        else:
            self.line(f"* {item.type} {json.dumps(item.data, ensure_ascii=False)}")

    def event(self, event: Event, message: Message | None) -> None:
        kind = event.type
        if kind == "regeneration_progress":
            if self.tty and message is not None and message.status == "streaming":
                self.live = message
                self._draw_live()
            return
        if kind in _FINAL and message is not None:
            if self.live is not None and self.live.id == message.id:
                self.end_live()
            status = "" if kind == "message_regenerated" else f" ({message.status}: {message.error or 'stopped'})"
            self.line(f"#{event.id} {kind} {message.role}{status}: {message.content}")
            return
        if kind in ("message_created", "message_edited") and message is not None:
            self.line(f"#{event.id} {kind} {message.author or message.role}: {message.content}")
            return
        if kind == "message_regenerating" and message is not None:
            self.line(f"#{event.id} {kind} {message.id}")
            if self.tty:
                self.live = message
                self._draw_live()
            return
        self.line(f"#{event.id} {kind} {_summary(event)}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chorus_client", description="A command-line client for Chorus.")
    commands = parser.add_subparsers(dest="command", required=True)
    tail = commands.add_parser("tail", help="print a session's events as they arrive")
    tail.add_argument("session_id", metavar="session-id")
    tail.add_argument("--base-url", help=f"server URL (env CHORUS_URL, default {DEFAULT_URL})")
    tail.add_argument("--token", help="API token (env CHORUS_TOKEN)")
    tail.add_argument("--username", help="log in as this user (env CHORUS_USERNAME)")
    tail.add_argument("--password", help="the user's password (env CHORUS_PASSWORD)")
    tail.add_argument(
        "--from", dest="from_id", type=int, metavar="N", help="replay the events after id N first (default: live only)"
    )
    return parser


def _credentials(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, str]:
    """Flags win over the environment; a token and a username together are ambiguous."""
    if args.token and (args.username or args.password):
        raise ValueError("give --token or --username/--password, not both")
    if args.token:
        return {"token": args.token}
    username = args.username or environ.get("CHORUS_USERNAME")
    password = args.password or environ.get("CHORUS_PASSWORD")
    if username and password:
        return {"username": username, "password": password}
    if environ.get("CHORUS_TOKEN") and not (args.username or args.password):
        return {"token": environ["CHORUS_TOKEN"]}
    raise ValueError("credentials needed: --token (or CHORUS_TOKEN), or --username and --password")


def tail(client: Client, session_id: str, from_id: int | None, printer: TailPrinter) -> None:
    """Load the messages (so an answer already being written continues correctly), then
    follow the stream from `from_id` or from the id the messages were read at."""
    messages = client.messages(session_id)
    conversation = Conversation.from_messages(messages, last_event_id=from_id)
    start = from_id if from_id is not None else messages.last_event_id
    for item in client.follow(session_id, last_event_id=start):
        if isinstance(item, Event):
            printer.event(item, conversation.apply(item))
        else:
            printer.control(item)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    transport: Any = None,
) -> int:
    """The command line; returns the exit status. `stdout`, `environ` and `transport` (for
    httpx) are for tests."""
    environ = os.environ if environ is None else environ
    out = stdout or sys.stdout
    args = _parser().parse_args(argv)
    try:
        credentials = _credentials(args, environ)
    except ValueError as problem:
        print(f"chorus_client: {problem}", file=sys.stderr)
        return 2
    base_url = args.base_url or environ.get("CHORUS_URL") or DEFAULT_URL
    tty = bool(getattr(out, "isatty", lambda: False)())
    printer = TailPrinter(out, tty=tty, width=shutil.get_terminal_size().columns)
    client = Client(base_url, **credentials, transport=transport)
    try:
        tail(client, args.session_id, args.from_id, printer)
    except KeyboardInterrupt:
        printer.end_live()
        return 130
    except AccessRevoked as error:
        printer.end_live()
        print(f"chorus_client: {error.detail}", file=sys.stderr)
        return 3
    except ChorusError as error:
        printer.end_live()
        print(f"chorus_client: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    return 0
