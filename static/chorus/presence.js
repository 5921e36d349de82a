// Presence, typing and read positions on the session page (CONTRACT §7).
//
// The pure parts (typingText, seenText, seenBy, firstUnread, TypingBoard, TypingSender,
// ReadMarker) take their clock and timers as arguments, so tests run them under Node; the
// PresenceUI class wires them to the stream, the REST API and the page.
//
// What the page shows:
// - who is online: a dot (and "online" for screen readers) on every member, and a compact
//   row of avatars by the title; from the stream's `presence` snapshot, then
//   `presence_joined` / `presence_left`;
// - who is typing: "bob is typing…", "bob and carol are typing…", "the assistant is
//   typing…"; each notice lasts its `expiresIn` unless renewed, `typing: false` ends it, and
//   I am never shown;
// - read positions: a "New messages" divider above the first message from someone else
//   after my stored position when the page loaded (it stays until I leave), and "Seen by …"
//   under the last message: the other members whose position is at least the id of the
//   event that created or last changed it. Messages loaded through REST carry the load's
//   `lastEventId` instead of their own event id (the REST API does not say which event made
//   a message), so for them "seen" means "read up to at least the load": never shown too
//   early, but possibly late for someone who read it before newer events came.
//
// What the page sends: `POST typing/` while I type (at most once per TYPING_SEND_EVERY_MS,
// so at most 30 a minute, well under the server's 60), `DELETE typing/` when I send, clear
// the box or stop for TYPING_IDLE_MS; `PUT read-position/` with the newest event id applied
// while the page is visible and the last message is in view, at most once per
// READ_EVERY_MS, never backwards.

import { api } from "./api.js";
import { el, initials } from "./dom.js";

export const TYPING_SEND_EVERY_MS = 2000;
export const TYPING_IDLE_MS = 4000;
export const TYPING_DEFAULT_EXPIRES_S = 6;
export const READ_EVERY_MS = 2000;
export const ASSISTANT = "assistant";
const UNREAD_SCAN_LIMIT = 500;
// Called as methods of the classes below, the browser's own timers would throw "Illegal
// invocation" (their `this` must be the window): wrap them.
const later = (fn, ms) => setTimeout(fn, ms);
const cancel = (id) => clearTimeout(id);

function listing(names) {
  if (names.length <= 1) return names.join("");
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

/** The typing line for these usernames ("assistant" is the assistant); "" for nobody. */
export function typingText(names) {
  const shown = names.map((name) => (name === ASSISTANT ? "the assistant" : name));
  if (shown.length === 0) return "";
  if (shown.length === 1) return `${shown[0]} is typing…`;
  if (shown.length > 3) return `${shown.slice(0, 2).join(", ")} and ${shown.length - 2} others are typing…`;
  return `${listing(shown)} are typing…`;
}

/** "Seen by bob and carol"; "" for nobody. */
export function seenText(names) {
  if (names.length === 0) return "";
  if (names.length > 4) return `Seen by ${names.slice(0, 3).join(", ")} and ${names.length - 3} others`;
  return `Seen by ${listing(names)}`;
}

/** The members (not `me`) whose read position is at least `eventId`, sorted; none without an id. */
export function seenBy(positions, eventId, me) {
  if (!eventId) return [];
  return [...positions]
    .filter(([name, position]) => name !== me && position >= eventId)
    .map(([name]) => name)
    .sort((a, b) => a.localeCompare(b));
}

/**
 * The first message that arrived after my read position, from stored events (the polling
 * fallback's, in order): a message someone else posted, or an answer of the assistant, still
 * on the page (`present(messageId)`). Returns its id, or null.
 */
export function firstUnread(events, me, present) {
  for (const event of events) {
    const data = event.data || {};
    const fromOther =
      (event.type === "message_created" && data.author !== me) || event.type === "message_regenerating";
    if (fromOther && present(data.messageId)) return data.messageId;
  }
  return null;
}

/** Who is typing now, each until their notice expires; `onChange(names)` after every change. */
export class TypingBoard {
  constructor({ me, onChange, setTimer = later, clearTimer = cancel }) {
    this.me = me;
    this.onChange = onChange;
    this.setTimer = setTimer;
    this.clearTimer = clearTimer;
    this.timers = new Map(); // username -> expiry timer, in the order they started typing
  }

  /** A `typing` frame: {username, typing, expiresIn?}. */
  apply({ username, typing, expiresIn }) {
    if (!username || username === this.me) return;
    const wasTyping = this.timers.has(username);
    this.clearTimer(this.timers.get(username));
    if (typing) {
      const seconds = Number.isFinite(expiresIn) && expiresIn > 0 ? expiresIn : TYPING_DEFAULT_EXPIRES_S;
      this.timers.set(username, this.setTimer(() => this.drop(username), seconds * 1000));
      if (!wasTyping) this.onChange(this.names());
    } else if (wasTyping) {
      this.timers.delete(username);
      this.onChange(this.names());
    }
  }

  /** `username` stopped (went offline, or their notice expired). */
  drop(username) {
    if (!this.timers.has(username)) return;
    this.clearTimer(this.timers.get(username));
    this.timers.delete(username);
    this.onChange(this.names());
  }

  clear() {
    for (const name of [...this.timers.keys()]) this.drop(name);
  }

  /** People in the order they started, the assistant last. */
  names() {
    const names = [...this.timers.keys()];
    return [...names.filter((n) => n !== ASSISTANT), ...names.filter((n) => n === ASSISTANT)];
  }
}

/**
 * The composer's side of typing: `input(text)` on every change. `send(true)` at most once
 * per `everyMs` — a keystroke inside that window is sent when it ends (also right after a
 * stop, so typing and clearing fast cannot exceed the server's rate, and a quick reply is
 * still announced) — and `send(false)` once when the text is cleared, on `stop()` (sent),
 * or after `idleMs` without input.
 */
export class TypingSender {
  constructor({
    send,
    now = Date.now,
    setTimer = later,
    clearTimer = cancel,
    everyMs = TYPING_SEND_EVERY_MS,
    idleMs = TYPING_IDLE_MS,
  }) {
    Object.assign(this, { send, now, setTimer, clearTimer, everyMs, idleMs });
    this.active = false; // the others were told I type, and not yet that I stopped
    this.lastSent = -Infinity;
    this.pending = null; // a `send(true)` held back by the window
    this.idle = null;
  }

  input(text) {
    if (!text.trim()) {
      this.stop();
      return;
    }
    this.announce();
    this.clearTimer(this.idle);
    this.idle = this.setTimer(() => this.stop(), this.idleMs);
  }

  announce() {
    if (this.pending !== null) return;
    const wait = this.lastSent + this.everyMs - this.now();
    if (wait > 0) {
      this.pending = this.setTimer(() => {
        this.pending = null;
        this.announce();
      }, wait);
      return;
    }
    this.lastSent = this.now();
    this.active = true;
    this.send(true);
  }

  stop() {
    this.clearTimer(this.idle);
    this.clearTimer(this.pending);
    this.idle = null;
    this.pending = null;
    if (!this.active) return;
    this.active = false;
    this.send(false);
  }
}

/**
 * The read position's side: `seen(id)` whenever the newest applied id is in view. Sends
 * `send(id)` (a promise of the stored position) for ids above what was sent, the first at
 * once, then at most once per `everyMs` (the newest id by then). Never backwards: ids at or
 * below `start` (the stored position) or below what was sent are ignored. A failed send is
 * retried with the next `seen`.
 */
export class ReadMarker {
  constructor({ send, start = 0, now = Date.now, setTimer = later, everyMs = READ_EVERY_MS }) {
    Object.assign(this, { send, now, setTimer, everyMs });
    this.sent = start;
    this.wanted = start;
    this.lastAt = -Infinity;
    this.timer = null;
  }

  seen(id) {
    if (!Number.isInteger(id) || id <= this.wanted) return;
    this.wanted = id;
    this.schedule();
  }

  schedule() {
    if (this.timer !== null || this.wanted <= this.sent) return;
    const wait = Math.max(0, this.lastAt + this.everyMs - this.now());
    this.timer = this.setTimer(() => this.flush(), wait);
  }

  async flush() {
    this.timer = null;
    if (this.wanted <= this.sent) return;
    const before = this.sent;
    const id = this.wanted;
    this.sent = id;
    this.lastAt = this.now();
    try {
      const stored = await this.send(id);
      if (Number.isInteger(stored) && stored > this.sent) this.sent = stored;
    } catch {
      this.sent = before;
      this.wanted = before; // the next seen() tries again
    }
    this.schedule();
  }
}

/** The page's presence, typing and read positions (see the top of this module). */
export class PresenceUI {
  /**
   * @param {object} options
   * @param {import("./stream.js").SessionStream} options.stream
   * @param {{sessionId: string, username: string, role: string|null, canWrite: boolean}} options.config
   * @param {{onlineRow: Element, typingLine: Element, seenBy: Element, messages: Element}} options.nodes
   * @param {() => ({eventId: number|null, node: Element}|null)} options.lastMessage the newest message shown
   * @param {(id: string) => (Element|null)} options.messageNode a message's node, if shown
   */
  constructor({ stream, config, nodes, lastMessage, messageNode }) {
    this.stream = stream;
    this.config = config;
    this.me = config.username;
    this.base = `/api/v1/sessions/${encodeURIComponent(config.sessionId)}`;
    this.nodes = nodes;
    this.lastMessage = lastMessage;
    this.messageNode = messageNode;
    this.online = new Set();
    this.positions = new Map(); // username -> last read event id
    this.loadedAt = 0;
    this.firstLoad = true;
    this.marker = null;
    this.typing = new TypingBoard({ me: this.me, onChange: (names) => this.renderTyping(names) });
    this.sender = config.canWrite
      ? new TypingSender({
          send: (typing) => api(`${this.base}/typing/`, { method: typing ? "POST" : "DELETE" }).catch(() => {}),
        })
      : null;
  }

  /** Register the stream handlers; `storedNames` are the stored event types the page applies. */
  listen(storedNames) {
    const stream = this.stream;
    stream.on("presence", (data) => {
      this.online = new Set(data.online || []);
      this.paintOnline();
    });
    stream.on("presence_joined", (data) => {
      this.online.add(data.username);
      this.paintOnline();
    });
    stream.on("presence_left", (data) => {
      this.online.delete(data.username);
      this.typing.drop(data.username);
      this.paintOnline();
    });
    stream.on("typing", (data) => this.typing.apply(data));
    stream.on("read_position", (data) => {
      if (Number.isInteger(data.lastEventId)) {
        this.positions.set(data.username, Math.max(this.positions.get(data.username) || 0, data.lastEventId));
      }
      this.renderSeen();
    });
    // After the page's own handler of each stored event (registered before these).
    for (const name of storedNames) stream.on(name, () => this.changed());
    stream.onStatus((status) => {
      // A stream that dropped no longer hears "stopped typing": forget who was.
      if (status !== "live") this.typing.clear();
    });
    const check = () => this.markRead();
    document.addEventListener("visibilitychange", check);
    window.addEventListener("focus", check);
    window.addEventListener("scroll", check, { passive: true });
    window.addEventListener("resize", check, { passive: true });
  }

  /** The state was (re)loaded through REST up to `lastEventId`. */
  loaded(session, lastEventId) {
    this.loadedAt = lastEventId;
    for (const member of session.members) {
      this.positions.set(member.username, member.lastReadEventId || 0);
    }
    const mine = session.members.find((m) => m.username === this.me);
    if (this.firstLoad) {
      this.firstLoad = false;
      if (mine) {
        this.marker = new ReadMarker({
          start: mine.lastReadEventId || 0,
          send: async (id) => (await api(`${this.base}/read-position/`, { method: "PUT", body: { lastEventId: id } })).lastEventId,
        });
        if ((mine.lastReadEventId || 0) < lastEventId) this.showDivider(mine.lastReadEventId || 0);
      }
    }
    this.paintOnline();
    this.changed();
  }

  /** A stored event was applied, or the messages changed otherwise. */
  changed() {
    this.renderSeen();
    this.markRead();
  }

  // --- typing ---------------------------------------------------------------------------
  /** Hook the composer's textarea. */
  attachComposer(input) {
    if (this.sender === null || !input) return;
    input.addEventListener("input", () => this.sender.input(input.value));
  }

  /** My message was sent: I stopped typing. */
  sent() {
    this.sender?.stop();
  }

  renderTyping(names) {
    const line = this.nodes.typingLine;
    line.textContent = typingText(names);
    line.dataset.typing = names.join(" ");
    for (const member of document.querySelectorAll("li.member[data-username]")) {
      member.toggleAttribute("data-typing", names.includes(member.dataset.username));
    }
  }

  // --- who is online --------------------------------------------------------------------
  paintOnline() {
    for (const dot of document.querySelectorAll("[data-presence-dot][data-username]")) {
      const online = this.online.has(dot.dataset.username);
      dot.toggleAttribute("data-online", online);
      dot.title = online ? "online" : "offline";
    }
    for (const text of document.querySelectorAll("[data-presence-text][data-username]")) {
      text.textContent = this.online.has(text.dataset.username) ? "online" : "";
    }
    const names = [...this.online].sort((a, b) => (a === this.me) - (b === this.me) || a.localeCompare(b));
    const row = this.nodes.onlineRow;
    row.hidden = names.length === 0;
    row.setAttribute("aria-label", names.length ? `Online now: ${names.join(", ")}` : "Nobody online");
    row.replaceChildren(
      ...names.map((name) =>
        el("span", {
          class: "avatar avatar--small avatar--online",
          title: name === this.me ? `${name} (you)` : name,
          dataset: { username: name },
          text: initials(name),
        }),
      ),
      el("span", { class: "online-now__count muted", "aria-hidden": "true", text: `${names.length} online` }),
    );
  }

  // --- read positions -------------------------------------------------------------------
  /** The newest event id the page applied (the load's, or the stream's beyond it). */
  newestApplied() {
    return Math.max(this.loadedAt, this.stream.lastEventId || 0);
  }

  /** Send my read position when I can see the end of the conversation. */
  markRead() {
    if (this.marker === null || document.visibilityState !== "visible") return;
    const last = this.lastMessage();
    if (last !== null && last.node.getBoundingClientRect().top > window.innerHeight) return;
    this.marker.seen(this.newestApplied());
  }

  renderSeen() {
    const last = this.lastMessage();
    const names = last === null ? [] : seenBy(this.positions, last.eventId, this.me);
    const line = this.nodes.seenBy;
    line.textContent = seenText(names);
    line.dataset.seenBy = names.join(" ");
    line.hidden = names.length === 0;
  }

  async showDivider(after) {
    let page;
    try {
      page = await api(`${this.base}/events/?after=${after}&limit=${UNREAD_SCAN_LIMIT}`);
    } catch {
      return; // no divider is better than a wrong one
    }
    const id = firstUnread(page.events, this.me, (messageId) => this.messageNode(messageId) !== null);
    const node = id === null ? null : this.messageNode(id);
    if (node === null || node.parentNode === null) return;
    node.before(
      el(
        "li",
        { class: "unread-divider", role: "separator", "aria-label": "New messages", dataset: { unreadDivider: "" } },
        el("span", { text: "New messages" }),
      ),
    );
  }
}
