"""The web app's ES modules under Node (when installed): the text-offset rule and the
stream client's dedup, fresh-ticket reconnect and revocation, with a fake EventSource.
The browser tests drive the same modules against real servers."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "static" / "chorus"
NODE = shutil.which("node") or shutil.which("nodejs")

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the browser tests cover these modules)")


def run_module(script: str) -> object:
    """Run `script` as an ES module next to static/chorus; returns what it printed as JSON."""
    result = subprocess.run(
        [NODE, "--input-type=module", "-e", script], cwd=STATIC, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_append_at_applies_only_what_is_new_counting_code_points():
    out = run_module(
        """
        import { appendAt } from "./dom.js";
        const steps = [];
        let s = { content: "", length: 0 };
        for (const [offset, delta] of [[0, "Hé"], [2, "llo 😀"], [2, "llo 😀"], [0, "Hé"], [7, " wo"], [8, "world"]]) {
          s = appendAt(s.content, s.length, offset, delta);
          steps.push([s.content, s.length, s.gap]);
        }
        steps.push(appendAt("ab", 2, 5, "x"));
        console.log(JSON.stringify(steps));
        """
    )
    assert out[:6] == [
        ["Hé", 2, False],
        ["Héllo 😀", 7, False],
        ["Héllo 😀", 7, False],  # the same delta again: nothing doubled
        ["Héllo 😀", 7, False],  # a delta the content already holds
        ["Héllo 😀 wo", 10, False],
        ["Héllo 😀 world", 13, False],  # overlapping: only the new tail
    ]
    assert out[6] == {"content": "ab", "length": 2, "gap": True}


STREAM_HARNESS = """
const sources = [];
class FakeEventSource {
  static CONNECTING = 0; static OPEN = 1; static CLOSED = 2;
  constructor(url) { this.url = url; this.readyState = 0; this.listeners = {}; sources.push(this); }
  addEventListener(name, fn) { (this.listeners[name] ||= []).push(fn); }
  close() { this.readyState = 2; }
  open() { this.readyState = 1; this.onopen && this.onopen(); }
  frame(name, data) { for (const fn of this.listeners[name] || []) fn({ data: JSON.stringify(data) }); }
  fail(state) { this.readyState = state; this.onerror && this.onerror(); }
}
let ticketStatus = 201;
const ticketCalls = [];
globalThis.EventSource = FakeEventSource;
globalThis.window = { addEventListener() {} };
globalThis.navigator = { onLine: true };
globalThis.document = { querySelector: () => ({ content: "csrf" }) };
globalThis.location = { origin: "http://test" };
globalThis.fetch = async (url, init) => {
  ticketCalls.push([url, init.method, init.headers["X-CSRFToken"]]);
  const body = { ticket: `t${ticketCalls.length}`, expiresIn: 60 };
  return { ok: ticketStatus < 400, status: ticketStatus, json: async () => body };
};
const tick = () => new Promise((resolve) => setTimeout(resolve, 5));
const { SessionStream } = await import("./stream.js");
const env = (id, type) => ({ id, type, sessionId: "s", timestamp: "", data: {} });
"""


def test_stream_drops_what_it_applied_and_passes_every_event_name():
    out = run_module(
        STREAM_HARNESS
        + """
        const stream = new SessionStream({ sessionId: "s" });
        const seen = [], statuses = [];
        stream.onStatus((s) => statuses.push(s));
        stream.on("message_created", (e) => seen.push(e.id));
        stream.on("presence", (d) => seen.push(`presence:${d.online.join(",")}`));
        stream.start(5);
        await tick();
        const [source] = sources;
        source.open();
        source.frame("message_created", env(4, "message_created"));  // already loaded
        source.frame("message_created", env(6, "message_created"));
        source.frame("message_created", env(6, "message_created"));  // a duplicate
        source.frame("presence", { online: ["alice"] });             // unnumbered
        source.frame("message_created", env(7, "message_created"));
        // A handler registered while connected gets its frames too.
        stream.on("typing", (d) => seen.push(`typing:${d.username}`));
        source.frame("typing", { username: "bob", typing: true });
        const last = stream.lastEventId;
        console.log(JSON.stringify({ url: source.url, seen, statuses, last, tickets: ticketCalls }));
        """
    )
    assert out["url"] == "/sse/sessions/s/?ticket=t1&lastEventId=5"
    assert out["seen"] == [6, "presence:alice", 7, "typing:bob"]
    assert out["statuses"] == ["idle", "connecting", "live"]
    assert out["last"] == 7
    assert out["tickets"] == [["/api/v1/sessions/s/stream-ticket/", "POST", "csrf"]]


def test_stream_takes_a_fresh_ticket_when_the_browser_gives_up():
    out = run_module(
        STREAM_HARNESS
        + """
        const stream = new SessionStream({ sessionId: "s", baseDelayMs: 1, maxDelayMs: 4 });
        const statuses = [];
        stream.onStatus((s) => statuses.push(s));
        stream.on("message_created", () => {});
        stream.start(0);
        await tick();
        sources[0].open();
        sources[0].frame("message_created", env(1, "message_created"));
        sources[0].frame("message_created", env(2, "message_created"));
        sources[0].fail(FakeEventSource.CONNECTING);   // the browser retries by itself
        const whileRetrying = sources.length;
        sources[0].fail(FakeEventSource.CLOSED);       // ...and gives up (401: the ticket expired)
        ticketStatus = 503;                            // the server is still down once
        for (let i = 0; i < 20 && sources.length < 2; i++) {
          await tick();
          if (ticketCalls.length >= 2) ticketStatus = 201;
        }
        sources[1].open();
        const urls = sources.map((s) => s.url);
        console.log(JSON.stringify({ whileRetrying, urls, statuses, tickets: ticketCalls.length }));
        """
    )
    assert out["whileRetrying"] == 1  # no new EventSource while the browser retries
    assert out["urls"][1].endswith("lastEventId=2")  # from the last id applied
    assert out["urls"][1].startswith("/sse/sessions/s/?ticket=t")  # a fresh ticket
    assert out["tickets"] >= 3
    assert out["statuses"] == ["idle", "connecting", "live", "reconnecting", "live"]


def test_access_revoked_stops_for_good():
    out = run_module(
        STREAM_HARNESS
        + """
        const stream = new SessionStream({ sessionId: "s", baseDelayMs: 1 });
        const revoked = [], statuses = [];
        stream.onStatus((s) => statuses.push(s));
        stream.on("access_revoked", (d) => revoked.push(d));
        stream.start(0);
        await tick();
        sources[0].open();
        sources[0].frame("access_revoked", { sessionId: "s" });
        sources[0].fail(FakeEventSource.CLOSED);
        await tick(); await tick();
        // A ticket refused with 404 (membership gone) is the same.
        const other = new SessionStream({ sessionId: "t", baseDelayMs: 1 });
        const refused = [];
        other.on("access_revoked", (d) => refused.push(d));
        ticketStatus = 404;
        other.start(0);
        await tick(); await tick();
        console.log(JSON.stringify({ revoked, statuses, sources: sources.length, refused, otherStatus: other.status }));
        """
    )
    assert out["revoked"] == [{"sessionId": "s"}]
    assert out["statuses"][-1] == "offline"
    assert out["sources"] == 1  # never reconnected
    assert out["refused"] == [{"sessionId": "t", "reason": "no_access"}]
    assert out["otherStatus"] == "offline"
