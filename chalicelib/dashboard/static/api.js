// The HTTP API (API.md) with the signed-in token; errors carry the contract's code.
const TOKEN_KEY = "fleetrun.token";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function storedToken() { return localStorage.getItem(TOKEN_KEY) || ""; }
export function storeToken(token) { localStorage.setItem(TOKEN_KEY, token); }
export function forgetToken() { localStorage.removeItem(TOKEN_KEY); }

// The token's claims, for display only: the server checks every request.
export function claims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    return JSON.parse(atob(padded));
  } catch {
    return null;
  }
}

export function roleOf(token) {
  const roles = (claims(token) || {}).roles || [];
  for (const role of ["admin", "operator", "viewer"]) if (roles.includes(role)) return role;
  return "viewer";
}

// API paths are resolved against the page, not the host: behind API Gateway the app lives
// under its stage (`https://…/api/`), locally at the root.
export function resolve(path) { return path.replace(/^\//, ""); }

export async function request(method, path, body) {
  const headers = { Authorization: `Bearer ${storedToken()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(resolve(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  if (!response.ok) {
    const error = (parsed && parsed.error) || {};
    throw new ApiError(response.status, error.code || `http_${response.status}`,
      error.message || (parsed && parsed.message) || text || response.statusText);
  }
  return parsed;
}

// A route this deployment does not have: 404, or the 403 API Gateway / Chalice answer for
// unknown routes (its message is not ours to show: it can echo the Authorization header).
export function notDeployed(error) {
  return error instanceof ApiError && (error.status === 404 || (error.status === 403 && error.code !== "forbidden"));
}

// GET /v1/health (no credentials): the WebSocket URL and the node statuses. Asked once per
// page; a failed answer is not kept, so the next caller asks again.
let healthAnswer = null;
export function health() {
  healthAnswer ||= fetch(resolve("/v1/health"))
    .then((response) => { if (!response.ok) throw new Error(`health: HTTP ${response.status}`); return response.json(); })
    .catch((error) => { healthAnswer = null; throw error; });
  return healthAnswer;
}

export const get = (path) => request("GET", path);
export const post = (path, body) => request("POST", path, body);

export function query(params) {
  const entries = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "");
  return entries.length ? "?" + new URLSearchParams(entries).toString() : "";
}

// Every page of a paginated list (200 a page), in order.
export async function allPages(path, params = {}) {
  const items = [];
  let cursor = null;
  do {
    const page = await get(path + query({ ...params, limit: 200, cursor }));
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

// Whether copy `a` of a task is older than copy `b` (a read racing a push, a push delivered
// again): by `revision` (API.md), which counts and progress move too; by `updated_at` without it.
export function olderTask(a, b) {
  if (Number.isInteger(a.revision) && Number.isInteger(b.revision)) return a.revision < b.revision;
  return Boolean(a.updated_at && b.updated_at && a.updated_at < b.updated_at);
}
