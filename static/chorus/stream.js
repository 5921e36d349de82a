// The client of a session's event stream (CONTRACT §5), for every page that listens to one.
//
//   const stream = new SessionStream({ sessionId, lastEventId });
//   stream.on("message_created", (data, frame) => …);   // any event name, stored or not
//   stream.on("presence", (data) => …);                  // unnumbered frames too
//   stream.onStatus((status) => …);  // "connecting" | "live" | "reconnecting" | "offline"
//   stream.start();
//
// Stored events (their data is the envelope: a numeric `id` and `type` equal to the frame's
// event name) are delivered once and in order: a frame whose id is not above the last one
// applied is dropped, so a replay that overlaps what the page loaded, a duplicate, or a
// reconnect never applies anything twice. Unnumbered frames (connection, presence, typing,
// history_truncated, access_revoked, …) are always delivered.
//
// Reconnecting: while the browser retries on its own (readyState CONNECTING, it sends
// Last-Event-ID) the status is "reconnecting". When it gives up (readyState CLOSED: a 401
// because the ticket expired, a 5xx, a wrong content type) the client asks for a fresh
// ticket and opens a new EventSource at `lastEventId` = the last id it applied, after an
// exponential backoff with jitter. `access_revoked` (or a ticket refused with 401/403/404)
// stops it for good: status "offline", and the handlers of "access_revoked" are called.

import { api } from "./api.js";

const BASE_DELAY_MS = 500;
const MAX_DELAY_MS = 30000;

function isStoredEvent(name, data) {
  return data !== null && typeof data === "object" && Number.isInteger(data.id) && data.type === name;
}

export class SessionStream {
  /**
   * @param {{sessionId: string, lastEventId?: number, baseDelayMs?: number, maxDelayMs?: number}} options
   */
  constructor({ sessionId, lastEventId = 0, baseDelayMs = BASE_DELAY_MS, maxDelayMs = MAX_DELAY_MS }) {
    this.sessionId = sessionId;
    this.lastEventId = lastEventId;
    this.baseDelayMs = baseDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.status = "idle";
    this.handlers = new Map();
    this.statusHandlers = new Set();
    this.source = null;
    this.attached = new Set();
    this.attempt = 0;
    this.timer = null;
    this.stopped = true;
    this.revoked = false;
    this.connectedOnce = false;
    this.generation = 0;
    window.addEventListener("offline", () => {
      if (!this.stopped) this.setStatus("offline");
    });
    window.addEventListener("online", () => {
      if (this.stopped) return;
      if (this.source === null || this.source.readyState === EventSource.CLOSED) {
        this.attempt = 0;
        this.connect();
      }
    });
  }

  /** Call `handler(data, frame)` for every frame named `eventName`; returns an unsubscribe function. */
  on(eventName, handler) {
    if (!this.handlers.has(eventName)) this.handlers.set(eventName, new Set());
    this.handlers.get(eventName).add(handler);
    this.attach(eventName);
    return () => this.handlers.get(eventName).delete(handler);
  }

  /** Call `handler(status)` now and on every change of the connection's status. */
  onStatus(handler) {
    this.statusHandlers.add(handler);
    handler(this.status);
    return () => this.statusHandlers.delete(handler);
  }

  /** Open the stream; with `lastEventId`, resume after that id (the state was loaded up to it). */
  start(lastEventId) {
    if (lastEventId !== undefined) this.lastEventId = lastEventId;
    this.stopped = false;
    this.revoked = false;
    this.attempt = 0;
    this.connect();
  }

  /** Close the stream and stop reconnecting; the status becomes `status`. */
  stop(status = "offline") {
    this.stopped = true;
    this.generation += 1;
    this.closeSource();
    this.setStatus(status);
  }

  setStatus(status) {
    if (status === this.status) return;
    this.status = status;
    for (const handler of this.statusHandlers) handler(status);
  }

  closeSource() {
    clearTimeout(this.timer);
    this.timer = null;
    if (this.source !== null) this.source.close();
    this.source = null;
    this.attached = new Set();
  }

  async connect() {
    const generation = ++this.generation;
    this.closeSource();
    this.setStatus(!navigator.onLine ? "offline" : this.connectedOnce ? "reconnecting" : "connecting");
    let ticket;
    try {
      ticket = await api(`/api/v1/sessions/${encodeURIComponent(this.sessionId)}/stream-ticket/`, { method: "POST" });
    } catch (error) {
      if (generation !== this.generation || this.stopped) return;
      if ([401, 403, 404].includes(error.status)) {
        this.revoke({ sessionId: this.sessionId, reason: error.status === 401 ? "signed_out" : "no_access" });
      } else {
        this.scheduleReconnect();
      }
      return;
    }
    if (generation !== this.generation || this.stopped) return;
    const query = new URLSearchParams({ ticket: ticket.ticket, lastEventId: String(this.lastEventId) });
    const source = new EventSource(`/sse/sessions/${encodeURIComponent(this.sessionId)}/?${query}`);
    this.source = source;
    source.onopen = () => {
      if (source !== this.source) return;
      this.attempt = 0;
      this.connectedOnce = true;
      this.setStatus("live");
    };
    source.onerror = () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (HTTP error, expired ticket): a fresh ticket, from the last id applied.
        this.scheduleReconnect();
      } else {
        // The browser retries by itself, sending Last-Event-ID.
        this.setStatus(navigator.onLine ? "reconnecting" : "offline");
      }
    };
    for (const name of ["access_revoked", ...this.handlers.keys()]) this.attach(name);
  }

  scheduleReconnect() {
    this.closeSource();
    if (this.stopped) return;
    this.setStatus(navigator.onLine ? "reconnecting" : "offline");
    const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** this.attempt);
    this.attempt += 1;
    const delay = ceiling / 2 + Math.random() * (ceiling / 2); // "equal jitter"
    this.timer = setTimeout(() => this.connect(), delay);
  }

  revoke(data) {
    this.revoked = true;
    this.stop("offline");
    this.emit("access_revoked", data, null);
  }

  attach(eventName) {
    const source = this.source;
    if (source === null || this.attached.has(eventName)) return;
    this.attached.add(eventName);
    source.addEventListener(eventName, (frame) => {
      if (source !== this.source) return;
      let data;
      try {
        data = JSON.parse(frame.data);
      } catch {
        return;
      }
      if (eventName === "access_revoked") {
        this.revoke(data);
        return;
      }
      if (isStoredEvent(eventName, data)) {
        if (data.id <= this.lastEventId) return;
        this.lastEventId = data.id;
      }
      this.emit(eventName, data, frame);
    });
  }

  emit(eventName, data, frame) {
    for (const handler of this.handlers.get(eventName) || []) {
      try {
        handler(data, frame);
      } catch (error) {
        console.error(`chorus: a handler of ${eventName} failed`, error);
      }
    }
  }
}
