// Same-origin calls to the REST API (CONTRACT §3) with the session cookie and, on unsafe
// methods, Django's CSRF token (rendered into <meta name="csrf-token"> by base.html).

export class ApiError extends Error {
  constructor(status, detail) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

/** fetch `path` as JSON; resolves to the parsed body (null for 204), rejects with ApiError. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (!["GET", "HEAD", "OPTIONS"].includes(method)) headers["X-CSRFToken"] = csrfToken();
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "The server could not be reached.");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) throw new ApiError(response.status, data && typeof data.detail === "string" ? data.detail : "");
  return data;
}

/** Every page of a DRF list (following `next` on this origin); returns [results, firstPage]. */
export async function apiAllPages(path) {
  const results = [];
  let first = null;
  let next = path;
  while (next) {
    const page = await api(next);
    if (first === null) first = page;
    results.push(...page.results);
    // `next` is absolute; keep only its path so a proxy's host name cannot send us elsewhere.
    next = page.next ? new URL(page.next, location.origin).pathname + new URL(page.next, location.origin).search : null;
  }
  return [results, first];
}
