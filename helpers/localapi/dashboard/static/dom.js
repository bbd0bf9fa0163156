// What every view shares: building elements from API data (as text, never HTML), formatting, the status
// names, and the polling loop a view stops when it closes.

export const STATUS_ZH = {
  validating_files: "校验文件", queued: "排队中", running: "训练中", paused: "已暂停",
  succeeded: "成功", failed: "失败", cancelled: "已取消",
};
export const ACTIVE = ["validating_files", "queued", "running", "paused"];
export const PAUSABLE = ["queued", "running"];

/** An element with attributes and children (strings become text nodes, never HTML). */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

/** A time in seconds since the epoch, in the reader's local time. */
export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString("zh-CN", { hour12: false }) : "—";
}

/** Bytes as B / KB / MB / GB. */
export function size(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KB", "MB", "GB"];
  let v = bytes, i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i ? `${v.toFixed(1)} ${units[i]}` : `${v} B`;
}

/** A job status as a coloured badge: the Chinese word and the API's value. */
export function badge(status) {
  return h("span", { class: `badge ${status}`, "data-status": status }, `${STATUS_ZH[status] || status}（${status}）`);
}

/** A number for a table cell (integers grouped, others to `digits` places), or a dash. */
export function num(v, digits = 4) {
  return typeof v === "number" ? (Number.isInteger(v) ? v.toLocaleString("en-US") : v.toFixed(digits)) : "—";
}

/** An API error as a line on the page. */
export function errorLine(err) {
  return h("p", { class: "error", role: "alert" }, `出错了：${err.message}`);
}

/** A loop that calls `fn` every `delay()` ms until stopped; errors go to `onError` (a 401 stops it). */
export function poller(fn, delay, onError) {
  let timer = null, stopped = false;
  const tick = async () => {
    try { await fn(); } catch (err) { onError(err); if (err.status === 401) return; }
    if (!stopped) timer = setTimeout(tick, delay());
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}
