"""SSE framing (the text/event-stream wire format). Frames are bytes, built once per event."""

import json

RETRY = b"retry: 3000\n\n"
KEEPALIVE = b": keepalive\n\n"
SHUTDOWN = b": shutdown\n\n"  # the last words of a stream ended by server shutdown


def frame(seq: int, name: str, data_json: str) -> bytes:
    """A stored event: `id:`, `event:` and one `data:` line (`data_json` has no newline)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (seq, name.encode(), data_json.encode())


def unnumbered(name: str, data: dict) -> bytes:
    """A control event with no id (connection, history_truncated, access_revoked)."""
    body = json.dumps(data, separators=(",", ":"))
    return b"event: %s\ndata: %s\n\n" % (name.encode(), body.encode())
