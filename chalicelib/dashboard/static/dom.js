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

export function progressBar(progress, big = false) {
  const bar = h("div", { class: big ? "bar big" : "bar", "data-done": progress >= 100 ? "true" : "false" });
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

export function shortId(id) { return id.length > 10 ? `…${id.slice(-8)}` : id; }

export const TERMINAL = new Set(["completed", "partial_failure", "failed", "cancelled", "discarded"]);
export const TASK_STATUSES = ["pending", "running", "apply_pending", "cancelling", "completed", "partial_failure",
  "failed", "cancelled", "discarded"];
