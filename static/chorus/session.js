// The session page (CONTRACT §6): load the state through the REST API, then keep it live
// over the stream from the id that state was read at. Every handler is idempotent (keyed by
// message id, progress applied by offset), so the overlap between what the REST calls read
// and what the stream replays changes nothing.

import { api, apiAllPages, ApiError } from "./api.js";
import { appendAt, codePoints, el, initials, shortTime } from "./dom.js";
import { PresenceUI } from "./presence.js";
import { SessionStream } from "./stream.js";

const config = JSON.parse(document.getElementById("session-config").textContent);
const base = `/api/v1/sessions/${encodeURIComponent(config.sessionId)}`;
const ROLE_ORDER = { owner: 0, editor: 1, viewer: 2 };

const nodes = {
  title: document.getElementById("session-title"),
  badge: document.getElementById("connection-badge"),
  notices: document.getElementById("notices"),
  messages: document.getElementById("messages"),
  members: document.getElementById("members"),
  memberCount: document.getElementById("member-count"),
  composer: document.getElementById("composer"),
  onlineRow: document.getElementById("online-now"),
  typingLine: document.getElementById("typing-line"),
  seenBy: document.getElementById("seen-by"),
};

const state = {
  messages: new Map(), // id -> record (see newRecord)
  members: new Map(), // username -> role
  canWrite: config.canWrite,
  revoked: false,
};

export const stream = new SessionStream({ sessionId: config.sessionId });

// Presence, typing and read positions (presence.js): it reads the newest message shown.
const presence = new PresenceUI({
  stream,
  config,
  nodes,
  lastMessage: () => {
    const nodesShown = nodes.messages.querySelectorAll(".message");
    const node = nodesShown[nodesShown.length - 1];
    const record = node && state.messages.get(node.dataset.messageId);
    return record ? { eventId: record.eventId, node } : null;
  },
  messageNode: (id) => state.messages.get(id)?.node || null,
});

// --- messages -------------------------------------------------------------------------------
function newRecord(fields) {
  return {
    id: fields.id,
    // The id of the event that created or last changed it (for "seen by"); see presence.js.
    eventId: fields.eventId || null,
    role: fields.role || "user",
    author: fields.author ?? null,
    content: fields.content || "",
    length: codePoints(fields.content || ""),
    createdAt: fields.createdAt || null,
    editedAt: fields.editedAt || null,
    originalMessageId: fields.originalMessageId || null,
    regenerationId: config.activeRegenerations[fields.id] || null,
    running: Boolean(config.activeRegenerations[fields.id]),
    progress: 0,
    problem: null, // {kind: "error"|"cancelled", text}
    thoughts: null, // {about, steps: [{step, reasoning}], conclusion}
    editing: false,
    confirmingDelete: false,
    node: null,
  };
}

function nearBottom() {
  return window.innerHeight + window.scrollY >= document.body.scrollHeight - 120;
}

function keepScrolled(wasNearBottom) {
  if (wasNearBottom) window.scrollTo({ top: document.body.scrollHeight });
}

function upsertMessage(fields) {
  let record = state.messages.get(fields.id);
  const stick = nearBottom();
  if (record === undefined) {
    record = newRecord(fields);
    state.messages.set(record.id, record);
    record.node = el("li", { class: "message", dataset: { messageId: record.id } });
    nodes.messages.querySelector(".messages__placeholder")?.remove();
    nodes.messages.append(record.node);
  } else {
    for (const key of ["role", "author", "createdAt", "editedAt", "originalMessageId"]) {
      if (fields[key] !== undefined && fields[key] !== null) record[key] = fields[key];
    }
    if (fields.eventId) record.eventId = Math.max(record.eventId || 0, fields.eventId);
    if (fields.content !== undefined) setContent(record, fields.content);
  }
  renderMessage(record);
  keepScrolled(stick);
  return record;
}

function setContent(record, content) {
  record.content = content;
  record.length = codePoints(content);
}

function removeMessage(id) {
  const record = state.messages.get(id);
  if (record === undefined) return;
  record.node.remove();
  state.messages.delete(id);
  if (state.messages.size === 0) showEmpty();
}

function showEmpty() {
  if (nodes.messages.querySelector(".message, .notice")) return;
  nodes.messages.replaceChildren(
    el("li", {
      class: "messages__placeholder muted",
      text: state.canWrite ? "No messages yet. Say hello, or ask the assistant." : "No messages yet.",
    }),
  );
}

function displayName(record) {
  if (record.role === "assistant") return "Assistant";
  return record.author || "Former member";
}

function mayChange(record) {
  return state.canWrite && !state.revoked && (config.isOwner || (record.author !== null && record.author === config.username));
}

function renderMessage(record) {
  const node = record.node;
  node.className = `message message--${record.role}${record.author === config.username ? " message--mine" : ""}`;
  node.classList.toggle("is-running", record.running);
  const name = displayName(record);
  const meta = [shortTime(record.createdAt)];
  if (record.editedAt) meta.push("edited");
  if (record.originalMessageId) meta.push("new version");
  const head = el(
    "div",
    { class: "message__head" },
    el("span", { class: `avatar avatar--${record.role}`, "aria-hidden": "true", text: initials(name) }),
    el("span", { class: "message__author", text: name }),
    el("span", { class: "message__meta muted", title: record.createdAt || "", text: meta.filter(Boolean).join(" · ") }),
  );
  const children = [head];
  if (record.thoughts) children.push(renderThoughts(record));
  if (record.editing) {
    children.push(renderEditor(record));
  } else {
    const content = el("div", { class: "message__content" });
    content.textContent = record.content;
    if (record.running && record.content === "") content.classList.add("is-waiting");
    children.push(content);
  }
  if (record.running) {
    children.push(
      el(
        "div",
        { class: "message__progress" },
        el("progress", { max: "100", value: String(record.progress), "aria-label": "Answer progress" }),
        el("span", { class: "message__progress-label muted", text: `${record.progress}%` }),
      ),
    );
  }
  if (record.problem) {
    children.push(el("p", { class: `message__problem message__problem--${record.problem.kind}`, text: record.problem.text }));
  }
  const actions = renderActions(record);
  if (actions.childElementCount) children.push(actions);
  node.replaceChildren(...children);
}

/** The hot path of a token stream: only the text, the progress bar and its label change. */
function renderProgress(record) {
  const content = record.node.querySelector(".message__content");
  const bar = record.node.querySelector(".message__progress progress");
  if (content === null || bar === null || record.editing) {
    renderMessage(record);
    return;
  }
  content.textContent = record.content;
  content.classList.toggle("is-waiting", record.content === "");
  bar.value = record.progress;
  record.node.querySelector(".message__progress-label").textContent = `${record.progress}%`;
}

function renderThoughts(record) {
  const thoughts = record.thoughts;
  const label = thoughts.conclusion !== null || !record.running ? "Thought process" : "Thinking…";
  const count = thoughts.steps.length;
  const details = el(
    "details",
    { class: "thoughts" },
    el("summary", { text: `${label} · ${count} step${count === 1 ? "" : "s"}` }),
  );
  details.open = Boolean(thoughts.open);
  details.addEventListener("toggle", () => {
    thoughts.open = details.open;
  });
  if (thoughts.about) details.append(el("p", { class: "thoughts__about", text: `Thinking about: ${thoughts.about}` }));
  const list = el("ol", { class: "thoughts__steps" });
  for (const step of thoughts.steps) list.append(el("li", { text: step.reasoning }));
  details.append(list);
  if (thoughts.conclusion) {
    details.append(el("p", { class: "thoughts__conclusion", text: `Conclusion: ${thoughts.conclusion}` }));
  }
  return details;
}

function renderActions(record) {
  const bar = el("div", { class: "message__actions" });
  if (!state.canWrite || state.revoked || record.editing) return bar;
  if (record.running && record.regenerationId) {
    bar.append(button("Cancel", () => cancelRegeneration(record), "danger"));
  }
  if (record.role === "assistant" && !record.running) {
    bar.append(button("Regenerate", () => regenerate(record)));
  }
  if (mayChange(record) && !record.running) {
    bar.append(button("Edit", () => startEditing(record)));
    if (record.confirmingDelete) {
      bar.append(button("Delete for everyone", () => deleteMessage(record), "danger"));
      bar.append(
        button("Keep", () => {
          record.confirmingDelete = false;
          renderMessage(record);
        }),
      );
    } else {
      bar.append(
        button("Delete", () => {
          record.confirmingDelete = true;
          renderMessage(record);
        }),
      );
    }
  }
  return bar;
}

function button(label, onClick, kind = "") {
  return el("button", {
    type: "button",
    class: `button button--small button--ghost${kind ? ` button--${kind}` : ""}`,
    text: label,
    onclick: async (event) => {
      const target = event.currentTarget;
      target.disabled = true;
      try {
        await onClick();
      } finally {
        target.disabled = false;
      }
    },
  });
}

function renderEditor(record) {
  const area = el("textarea", { class: "message__editor", rows: "3", maxlength: String(config.maxMessageChars) });
  area.value = record.content;
  const form = el(
    "form",
    { class: "message__edit-form" },
    area,
    el(
      "div",
      { class: "message__edit-bar" },
      el("button", { type: "submit", class: "button button--small button--primary", text: "Save" }),
      el("button", {
        type: "button",
        class: "button button--small button--ghost",
        text: "Cancel",
        onclick: () => {
          record.editing = false;
          renderMessage(record);
        },
      }),
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const ok = await act(() => api(`${base}/messages/${record.id}/`, { method: "PATCH", body: { content: area.value } }));
    if (ok) {
      record.editing = false;
      upsertMessage(messageFields(ok));
    }
  });
  queueMicrotask(() => area.focus());
  return form;
}

function startEditing(record) {
  record.editing = true;
  record.confirmingDelete = false;
  renderMessage(record);
}

async function deleteMessage(record) {
  const ok = await act(() => api(`${base}/messages/${record.id}/`, { method: "DELETE" }), true);
  if (ok !== undefined) removeMessage(record.id);
}

async function regenerate(record) {
  const started = await act(() =>
    api("/api/v1/chat_actions/regenerate", { method: "POST", body: { sessionId: config.sessionId, messageId: record.id } }),
  );
  if (started) {
    const fresh = upsertMessage({ id: started.messageId, role: "assistant", originalMessageId: started.originalMessageId });
    markRunning(fresh, started.regenerationId);
  }
}

async function cancelRegeneration(record) {
  await act(() => api(`/api/v1/regenerations/${record.regenerationId}/cancel/`, { method: "POST" }));
}

/** Run an API call; show its error as a notice. Resolves to its result, or undefined on error. */
async function act(call, emptyOk = false) {
  try {
    const result = await call();
    return emptyOk && result === null ? null : result;
  } catch (error) {
    notice(error instanceof ApiError && error.detail ? error.detail : "That did not work. Please try again.", "error");
    return undefined;
  }
}

function messageFields(message) {
  return {
    id: message.id,
    role: message.role,
    author: message.author,
    content: message.content,
    createdAt: message.createdAt,
    editedAt: message.editedAt,
    originalMessageId: message.originalMessageId,
  };
}

function markRunning(record, regenerationId) {
  record.running = true;
  record.problem = null;
  if (regenerationId) record.regenerationId = regenerationId;
  renderMessage(record);
}

function finish(record, problem, envelope) {
  record.running = false;
  record.eventId = envelope.id;
  record.progress = 100;
  record.problem = problem;
  renderMessage(record);
}

// --- members, notices, title ------------------------------------------------------------------
function renderMembers() {
  const sorted = [...state.members.entries()].sort(
    ([a, roleA], [b, roleB]) => (ROLE_ORDER[roleA] ?? 9) - (ROLE_ORDER[roleB] ?? 9) || a.localeCompare(b),
  );
  nodes.members.replaceChildren(
    ...sorted.map(([username, role]) =>
      el(
        "li",
        { class: "member", dataset: { username } },
        // Filled in by the presence helper: [data-online] on the dot when the member has a stream open.
        el("span", { class: "presence-dot", dataset: { presenceDot: "", username }, title: "offline" }),
        el("span", { class: "avatar avatar--small", "aria-hidden": "true", text: initials(username) }),
        el("span", { class: "member__name", text: username }),
        el("span", { class: "visually-hidden", dataset: { presenceText: "", username } }),
        username === config.username ? el("span", { class: "member__you muted", text: "(you)" }) : null,
        el("span", { class: `role role--${role}`, text: role }),
      ),
    ),
  );
  nodes.memberCount.textContent = `(${state.members.size})`;
  presence.paintOnline();
}

function notice(text, kind = "info") {
  const item = el(
    "div",
    { class: `alert alert--${kind}`, role: kind === "error" ? "alert" : "status" },
    el("span", { text }),
    el("button", {
      type: "button",
      class: "alert__close",
      "aria-label": "Dismiss",
      text: "×",
      onclick: () => item.remove(),
    }),
  );
  nodes.notices.append(item);
  if (kind !== "revoked") setTimeout(() => item.remove(), 8000);
}

function systemNotice(envelope) {
  const stick = nearBottom();
  nodes.messages.querySelector(".messages__placeholder")?.remove();
  nodes.messages.append(
    el(
      "li",
      { class: "notice", role: "note" },
      el("span", { class: "notice__label", text: "Notice" }),
      el("span", { class: "notice__text", text: envelope.data.message }),
      el("span", { class: "notice__time muted", text: shortTime(envelope.timestamp) }),
    ),
  );
  keepScrolled(stick);
}

function setTitle(title) {
  nodes.title.textContent = title;
  document.title = `${title} · Chorus`;
}

// --- the stream's events --------------------------------------------------------------------
const handlers = {
  member_joined: (e) => {
    state.members.set(e.data.username, e.data.role);
    renderMembers();
  },
  member_left: (e) => {
    state.members.delete(e.data.username);
    renderMembers();
  },
  message_created: (e) =>
    upsertMessage({
      id: e.data.messageId,
      eventId: e.id,
      role: e.data.role,
      author: e.data.author,
      content: e.data.content,
      createdAt: e.timestamp,
    }),
  message_edited: (e) =>
    upsertMessage({
      id: e.data.messageId,
      eventId: e.id,
      role: e.data.role,
      author: e.data.author,
      content: e.data.content,
      editedAt: e.timestamp,
    }),
  message_deleted: (e) => e.data.deletedMessageIds.forEach(removeMessage),
  message_regenerating: (e) => {
    const record = upsertMessage({
      id: e.data.messageId,
      role: "assistant",
      originalMessageId: e.data.originalMessageId,
      createdAt: e.timestamp,
      eventId: e.id,
    });
    markRunning(record, e.data.regenerationId);
  },
  regeneration_progress: (e) => {
    const record = state.messages.get(e.data.messageId);
    if (record === undefined) return;
    const applied = appendAt(record.content, record.length, e.data.offset, e.data.delta);
    if (applied.gap) {
      // Text is missing before this delta (never expected: ids have no gaps); read it again.
      resync(record);
      return;
    }
    record.content = applied.content;
    record.length = applied.length;
    record.progress = Math.max(record.progress, e.data.progress);
    const wasRunning = record.running;
    record.running = true;
    record.regenerationId ||= e.data.taskId;
    const stick = nearBottom();
    if (wasRunning) renderProgress(record);
    else renderMessage(record);
    keepScrolled(stick);
  },
  message_regenerated: (e) => {
    const record = state.messages.get(e.data.messageId);
    if (record === undefined) return;
    setContent(record, e.data.content);
    finish(record, null, e);
  },
  regeneration_error: (e) => {
    const record = state.messages.get(e.data.messageId);
    if (record !== undefined) finish(record, { kind: "error", text: e.data.error }, e);
  },
  regeneration_cancelled: (e) => {
    const record = state.messages.get(e.data.messageId);
    if (record !== undefined) finish(record, { kind: "cancelled", text: "Cancelled." }, e);
  },
  thought_process_start: (e) => thought(e, (t) => {
    t.about = e.data.thinkingAbout;
  }),
  thought_process_step: (e) => thought(e, (t) => {
    t.steps.push({ step: e.data.step, reasoning: e.data.reasoning });
  }),
  thought_process_complete: (e) => thought(e, (t) => {
    t.conclusion = e.data.conclusion;
  }),
  session_updated: (e) => setTitle(e.data.title),
  system: (e) => systemNotice(e),
};

function thought(envelope, change) {
  const record = state.messages.get(envelope.data.messageId);
  if (record === undefined) return;
  record.thoughts ||= { about: "", steps: [], conclusion: null, open: false };
  change(record.thoughts);
  renderMessage(record);
}

async function resync(record) {
  if (!record.regenerationId) return reload();
  try {
    const regeneration = await api(`/api/v1/regenerations/${record.regenerationId}/`);
    if (codePoints(regeneration.content) > record.length) setContent(record, regeneration.content);
    renderMessage(record);
  } catch {
    reload();
  }
}

// --- loading ----------------------------------------------------------------------------------
/** The session and every message, and the event id both were read at (the smaller one). */
async function loadState() {
  const [session, [messages, firstPage]] = await Promise.all([api(`${base}/`), apiAllPages(`${base}/messages/`)]);
  return { session, messages, lastEventId: Math.min(session.lastEventId, firstPage.lastEventId) };
}

function applyState({ session, messages, lastEventId }) {
  setTitle(session.title);
  state.members = new Map(session.members.map((m) => [m.username, m.role]));
  renderMembers();
  state.messages.clear();
  nodes.messages.replaceChildren();
  // A REST message's own event id is unknown: the load's id stands in (see presence.js).
  for (const message of messages) upsertMessage({ ...messageFields(message), eventId: lastEventId });
  showEmpty();
  presence.loaded(session, lastEventId);
}

let reloading = null;
/** history_truncated (or a hole in a message's text): read everything again, resume from there. */
function reload() {
  reloading ||= (async () => {
    stream.stop("reconnecting");
    for (;;) {
      try {
        const loaded = await loadState();
        applyState(loaded);
        stream.start(loaded.lastEventId);
        return;
      } catch (error) {
        if (error instanceof ApiError && [401, 403, 404].includes(error.status)) {
          revoked();
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, 2000));
      }
    }
  })().finally(() => {
    reloading = null;
  });
  return reloading;
}

function revoked(reason) {
  if (state.revoked) return;
  state.revoked = true;
  state.canWrite = false;
  nodes.composer?.remove();
  notice(
    reason === "signed_out"
      ? "You are signed out. Sign in again to keep following this session."
      : "You no longer have access to this session.",
    "revoked",
  );
  for (const record of state.messages.values()) renderMessage(record);
}

// --- composer -------------------------------------------------------------------------------
function setUpComposer() {
  const form = nodes.composer;
  if (!form) return;
  const input = form.querySelector("textarea");
  const error = form.querySelector(".composer__error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const reply = event.submitter?.dataset.reply === "true";
    const content = input.value;
    if (!content.trim()) {
      error.textContent = "Write something first.";
      return;
    }
    error.textContent = "";
    const buttons = form.querySelectorAll("button");
    buttons.forEach((b) => (b.disabled = true));
    try {
      const message = await api(`${base}/messages/`, { method: "POST", body: { content, reply } });
      input.value = "";
      presence.sent();
      upsertMessage(messageFields(message));
    } catch (failure) {
      error.textContent = failure instanceof ApiError && failure.detail ? failure.detail : "Not sent. Please try again.";
    } finally {
      buttons.forEach((b) => (b.disabled = false));
      input.focus();
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit(form.querySelector('[data-action="send"]'));
    }
  });
  presence.attachComposer(input);
}

// --- start ----------------------------------------------------------------------------------
function badge(status) {
  nodes.badge.dataset.state = status;
  nodes.badge.textContent = status === "idle" ? "connecting" : status;
}

async function main() {
  stream.onStatus(badge);
  for (const [name, handler] of Object.entries(handlers)) stream.on(name, handler);
  presence.listen(Object.keys(handlers));
  stream.on("history_truncated", () => reload());
  stream.on("access_revoked", (data) => revoked(data && data.reason));
  setUpComposer();
  for (;;) {
    try {
      const loaded = await loadState();
      applyState(loaded);
      config.activeRegenerations = {}; // from now on the stream says what runs
      // The page's own id was read before the active regenerations it lists: resuming from
      // the smaller id brings every change to them.
      stream.start(Math.min(config.lastEventId, loaded.lastEventId));
      break;
    } catch (error) {
      if (error instanceof ApiError && [401, 403, 404].includes(error.status)) {
        revoked(error.status === 401 ? "signed_out" : "no_access");
        stream.stop("offline");
        break;
      }
      badge("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
  document.dispatchEvent(new CustomEvent("chorus:stream", { detail: { stream, sessionId: config.sessionId } }));
}

main();
