// The dashboard's only way to the data: the server's /v1 API, the same one the SDK calls, with the bearer key
// the user typed in. The key lives in this tab's sessionStorage and travels only in the Authorization header.

const KEY_NAME = "localapi-dashboard-key";
const TIMEOUT_MS = 30_000;          // every call but generation
export const CHAT_TIMEOUT_MS = 600_000;  // a long answer from a 0.5B model on a CPU takes minutes

/** An error answered by the API (OpenAI's error shape) or a failed request. */
export class ApiError extends Error {
  constructor(status, message, param = null, code = null) {
    super(message);
    this.status = status;
    this.param = param;
    this.code = code;
  }
}

/** The key of this tab, or "" when none was entered. */
export function getKey() {
  return sessionStorage.getItem(KEY_NAME) || "";
}

/** Keep the key for this tab only. */
export function setKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

/** Forget the key (the page then shows nothing but the key form). */
export function forgetKey() {
  sessionStorage.removeItem(KEY_NAME);
}

/** Send `/v1{path}` with the key; the Response when it is 2xx, else an ApiError with the server's message. */
async function request(path, { method = "GET", body = null, timeoutMs = TIMEOUT_MS } = {}) {
  const key = getKey();
  if (!key) throw new ApiError(401, "没有密钥（API key）。");
  const headers = { Authorization: `Bearer ${key}` };
  if (body !== null) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/v1${path}`, {
      method, headers, body: body === null ? undefined : JSON.stringify(body),
      cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer", signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const why = err.name === "TimeoutError" ? `${timeoutMs / 1000} 秒内没有回答` : "连不上本地服务器（它还在运行吗？）";
    throw new ApiError(0, `${method} /v1${path}：${why}`);
  }
  if (!response.ok) {
    const text = await response.text();
    let error = {};
    try { error = JSON.parse(text).error || {}; } catch { /* not JSON: use the status */ }
    throw new ApiError(response.status, error.message || `HTTP ${response.status}`, error.param, error.code);
  }
  return response;
}

/** Call `/v1{path}`; the parsed JSON, or an ApiError with the server's message. */
export async function api(path, options = {}) {
  return (await request(path, options)).json();
}

/** The first non-empty line of a file's content (`/v1/files/{id}/content`), read without downloading the rest. */
export async function firstLine(fileId) {
  const response = await request(`/files/${encodeURIComponent(fileId)}/content`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder("utf-8");
  let text = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      text += decoder.decode(value || new Uint8Array(), { stream: !done });
      const line = text.split("\n").find((l, i, all) => l.trim() && (i < all.length - 1 || done));
      if (line !== undefined) return line;
      if (done) return "";
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** Every item of a paginated list (`has_more` / `after`), newest first; at most `maxPages` pages. */
export async function listAll(path, { limit = 100, maxPages = 50 } = {}) {
  const items = [];
  let after = null;
  for (let page = 0; page < maxPages; page++) {
    const sep = path.includes("?") ? "&" : "?";
    const cursor = after ? `&after=${encodeURIComponent(after)}` : "";
    const res = await api(`${path}${sep}limit=${limit}${cursor}`);
    items.push(...res.data);
    if (!res.has_more || !res.data.length) break;
    after = res.data[res.data.length - 1].id;
  }
  return items;
}
