"""The pure parts of static/chorus/presence.js under Node (when installed): the typing and
"seen by" texts, typing expiry, the typing sender's throttle and the read marker's debounce,
with a fake clock. The browser tests (tests/browser/test_presence.py) drive the page."""

from __future__ import annotations

import pytest

from tests.webapp.test_js_modules import NODE, run_module

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the browser tests cover these modules)")

FAKE_CLOCK = """
let now = 0;
let timers = [];
let nextId = 1;
const setTimer = (fn, ms) => { const id = nextId++; timers.push({ id, at: now + ms, fn }); return id; };
const clearTimer = (id) => { timers = timers.filter((t) => t.id !== id); };
async function advance(ms) {
  const end = now + ms;
  for (;;) {
    timers.sort((a, b) => a.at - b.at);
    const due = timers[0];
    if (!due || due.at > end) break;
    timers.shift();
    now = due.at;
    await due.fn();
  }
  now = end;
}
globalThis.document = { querySelector: () => null };
const P = await import("./presence.js");
"""


def test_typing_text_names_people_and_the_assistant():
    out = run_module(
        FAKE_CLOCK
        + """
        const cases = [[], ["bob"], ["bob", "carol"], ["bob", "carol", "dave"], ["a", "b", "c", "d", "e"],
                       ["assistant"], ["bob", "assistant"]];
        console.log(JSON.stringify(cases.map(P.typingText)));
        """
    )
    assert out == [
        "",
        "bob is typing…",
        "bob and carol are typing…",
        "bob, carol and dave are typing…",
        "a, b and 3 others are typing…",
        "the assistant is typing…",
        "bob and the assistant are typing…",
    ]


def test_typing_board_expires_renews_stops_and_never_shows_me():
    out = run_module(
        FAKE_CLOCK
        + """
        const shown = [];
        const onChange = (n) => shown.push([now, n.join(",")]);
        const board = new P.TypingBoard({ me: "alice", onChange, setTimer, clearTimer });
        board.apply({ username: "alice", typing: true, expiresIn: 6 });   // me: never shown
        board.apply({ username: "assistant", typing: true, expiresIn: 6 });
        board.apply({ username: "bob", typing: true, expiresIn: 6 });
        await advance(4000);
        board.apply({ username: "bob", typing: true, expiresIn: 6 });     // renewed at 4 s
        await advance(3000);                                              // assistant expires at 6 s
        board.apply({ username: "carol", typing: true, expiresIn: 6 });
        board.apply({ username: "carol", typing: false });                // carol stopped
        await advance(10000);                                             // bob expires at 10 s
        board.apply({ username: "dave", typing: false });                 // not typing: no change
        console.log(JSON.stringify(shown));
        """
    )
    assert out == [
        [0, "assistant"],
        [0, "bob,assistant"],
        [6000, "bob"],
        [7000, "bob,carol"],
        [7000, "bob"],
        [10000, ""],
    ]


def test_typing_sender_posts_at_most_every_two_seconds_and_deletes_once():
    out = run_module(
        FAKE_CLOCK
        + """
        const sent = [];
        const sender = new P.TypingSender({ send: (t) => sent.push([now, t]), now: () => now, setTimer, clearTimer });
        for (let i = 0; i < 30; i++) {                                    // 6 s of typing
          sender.input("hello".slice(0, (i % 5) + 1));
          await advance(200);
        }
        await advance(5000);                      // stopped typing: DELETE after 4 s idle
        sender.input("again");
        sender.stop();                            // sent
        sender.stop();                            // nothing more
        await advance(2500);
        sender.input("x");
        sender.input("");                         // cleared the box
        await advance(100);
        sender.input("y");                        // right after a stop: held back to the window's end
        await advance(5000);
        console.log(JSON.stringify(sent));
        """
    )
    assert out == [
        [0, True],
        [2000, True],  # renewed while typing, once per 2 s
        [4000, True],
        [6000, True],  # the keystroke at 4.2 s, sent when its window ended
        [9800, False],  # idle 4 s after the last keystroke at 5.8 s
        [11000, True],
        [11000, False],
        [13500, True],
        [13500, False],
        [15500, True],
        [17600, False],
    ]


def test_read_marker_debounces_and_never_goes_backwards():
    out = run_module(
        FAKE_CLOCK
        + """
        const sent = [];
        let fail = false;
        const marker = new P.ReadMarker({
          start: 5, now: () => now, setTimer, everyMs: 2000,
          send: async (id) => { sent.push([now, id]); if (fail) throw new Error("429"); return id; },
        });
        marker.seen(3); marker.seen(5);           // at or below the stored position: nothing
        await advance(0);
        marker.seen(7);                           // first: at once
        await advance(0);
        marker.seen(8); marker.seen(9); marker.seen(6);
        await advance(1000);                      // still inside the 2 s window
        const within = sent.length;
        await advance(1000);                      // 9 (the newest), once
        fail = true;
        marker.seen(12);
        await advance(2000);                      // fails...
        fail = false;
        await advance(5000);
        marker.seen(12);                          // ...and is tried again with the next sighting
        await advance(0);
        console.log(JSON.stringify({ sent, within }));
        """
    )
    assert out["within"] == 1
    assert out["sent"] == [[0, 7], [2000, 9], [4000, 12], [9000, 12]]


def test_seen_by_and_first_unread():
    out = run_module(
        FAKE_CLOCK
        + """
        const positions = new Map([["alice", 50], ["bob", 42], ["carol", 41], ["dave", 0]]);
        const events = [
          { id: 41, type: "message_created", data: { messageId: "m1", author: "alice" } },   // mine
          { id: 42, type: "member_joined", data: { username: "erin" } },
          { id: 43, type: "message_created", data: { messageId: "gone", author: "bob" } },   // deleted since
          { id: 44, type: "message_created", data: { messageId: "m3", author: "bob" } },
        ];
        const present = (id) => id !== "gone";
        console.log(JSON.stringify({
          seen42: P.seenBy(positions, 42, "alice"),
          seen41: P.seenText(P.seenBy(positions, 41, "alice")),
          seenNone: P.seenBy(positions, null, "alice"),
          first: P.firstUnread(events, "alice", present),
          answer: P.firstUnread([{ id: 9, type: "message_regenerating", data: { messageId: "a1" } }], "alice", present),
          nothing: P.firstUnread(events.slice(0, 2), "alice", present),
        }));
        """
    )
    assert out["seen42"] == ["bob"]
    assert out["seen41"] == "Seen by bob and carol"
    assert out["seenNone"] == []
    assert out["first"] == "m3"
    assert out["answer"] == "a1"
    assert out["nothing"] is None


def test_initials_for_avatars():
    out = run_module(
        """
        import { initials } from "./dom.js";
        console.log(JSON.stringify(["alice", "mary-jane", "Bob Smith", "émile_zola", "", "x.y.z"].map(initials)));
        """
    )
    assert out == ["A", "MJ", "BS", "ÉZ", "?", "XY"]
