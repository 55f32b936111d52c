// Small DOM and formatting helpers shared by the views.
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replace the children of `node` (null, undefined and false are skipped).
export function fill(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return node;
}

export function badge(status) {
  return h("span", { class: "badge", "data-status": status, "data-testid": "status" }, status.replace("_", " "));
}

// `status` colours the fill: completed green, partial failure amber, failed red, cancelled grey
export function progressBar(progress, big = false, status = "") {
  const bar = h("div", { class: big ? "bar big" : "bar", "data-done": progress >= 100 ? "true" : "false", "data-status": status || null });
  bar.append(h("span", { style: `width:${Math.max(0, Math.min(100, progress))}%` }));
  return h("div", { class: "progress-cell" }, bar, h("span", { class: "bar-label", "data-testid": "progress" }, `${progress}%`));
}

export function when(timestamp) {
  if (!timestamp) return "—";
  const date = new Date(timestamp);
  return date.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function clock(timestamp) {
  if (!timestamp) return "";
  return new Date(timestamp).toLocaleTimeString(undefined, { hour12: false });
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  if (seconds < 3600) return `${(seconds / 60).toFixed(1)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// seconds from `start` to `end` (or to now while it runs); null before it started
export function elapsed(start, end) {
  if (!start) return null;
  return Math.max(0, ((end ? new Date(end) : new Date()) - new Date(start)) / 1000);
}

// A modal <dialog> asking before a destructive action; resolves true when confirmed.
export function confirmAction(title, message, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", id: "confirm-dialog", "aria-labelledby": "confirm-title" });
    const done = (answer) => { dialog.returnValue = answer ? "confirm" : "keep"; dialog.close(); };
    dialog.append(
      h("h2", { id: "confirm-title" }, title),
      h("p", {}, message),
      h("div", { class: "dialog-buttons" },
        h("button", { class: "secondary", "data-confirm": "keep", onclick: () => done(false) }, "Keep it"),
        h("button", { class: "danger", "data-confirm": "confirm", onclick: () => done(true) }, confirmLabel)),
    );
    dialog.addEventListener("close", () => { dialog.remove(); resolve(dialog.returnValue === "confirm"); });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector("[data-confirm=keep]").focus();
  });
}

// Copy `text` to the clipboard (a hidden textarea where the Clipboard API is unavailable).
export async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try { await navigator.clipboard.writeText(text); return true; } catch { /* fall back */ }
  }
  const area = h("textarea", { style: "position:fixed;top:-1000px;opacity:0", readonly: true });
  area.value = text;
  document.body.append(area);
  area.select();
  let copied = false;
  try { copied = document.execCommand("copy"); } catch { copied = false; }
  area.remove();
  return copied;
}

export function shortId(id) { return id.length > 10 ? `…${id.slice(-8)}` : id; }

export const TERMINAL = new Set(["completed", "partial_failure", "failed", "cancelled", "discarded"]);
export const TASK_STATUSES = ["pending", "running", "apply_pending", "cancelling", "completed", "partial_failure",
  "failed", "cancelled", "discarded"];
