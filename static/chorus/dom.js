// Building DOM nodes from data: text goes in through textContent only, never parsed as markup.

/** el("li", {class: "x", dataset: {id: "1"}, text: "…"}, child, …) */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "hidden") node.hidden = Boolean(value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/** "14:05" today, "3 Mar, 14:05" otherwise, in the reader's locale. */
export function shortTime(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  const sameDay = when.toDateString() === new Date().toDateString();
  const time = when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  return sameDay ? time : `${when.toLocaleDateString([], { day: "numeric", month: "short" })}, ${time}`;
}

/** Length in Unicode code points (the unit of regeneration_progress offsets). */
export function codePoints(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

/**
 * Apply a regeneration_progress delta to text of `length` code points: only the part past
 * what the text already holds is appended, so a delta applied twice, or one the loaded
 * content already contains, changes nothing. Returns {content, length, gap}; `gap` is true
 * (and nothing is applied) when the delta starts past the end, i.e. text is missing.
 */
export function appendAt(content, length, offset, delta) {
  if (offset > length) return { content, length, gap: true };
  const points = [...delta];
  const end = offset + points.length;
  if (end <= length) return { content, length, gap: false };
  return { content: content + points.slice(length - offset).join(""), length: end, gap: false };
}

/** Up to two letters for an avatar: "alice" → "A", "mary-jane" → "MJ", "Bob Smith" → "BS". */
export function initials(name) {
  const parts = String(name || "").split(/[\s._-]+/u).filter(Boolean);
  if (parts.length === 0) return "?";
  return parts
    .slice(0, 2)
    .map((part) => [...part][0])
    .join("")
    .toUpperCase();
}
