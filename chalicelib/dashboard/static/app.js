// The dashboard shell: sign-in, hash routes, one live connection shared by the views, and
// polling while there is no live connection.
import * as api from "./api.js";
import { Live } from "./live.js";
import { TasksView } from "./tasks.js";
import { TaskView } from "./task.js";
import { StatsView } from "./stats.js";
import { FleetView } from "./fleet.js";

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

// What the views know about the signed-in user (display only: the server decides).
export const session = {
  user: "",
  role: "viewer",
  live: null,
  // whether the role lets this user act on `task` (operators act on their own tasks)
  canAct(task) {
    if (this.role === "admin") return true;
    return this.role === "operator" && task.owner === this.user;
  },
  signOut(message) { signOut(message); },
};

// for the browser console and the end-to-end test (which drops the socket to test reconnects)
window.fleetrunDashboard = session;

let current = null;
let pollTimer = null;

function route() {
  const hash = location.hash || "#/tasks";
  const match = hash.match(/^#\/tasks\/([^/?]+)/);
  if (match) return new TaskView(session, decodeURIComponent(match[1]));
  if (hash.startsWith("#/stats")) return new StatsView(session);
  if (hash.startsWith("#/fleet")) return new FleetView(session);
  return new TasksView(session, new URLSearchParams(hash.split("?")[1] || ""));
}

function show() {
  if (current) current.unmount();
  const view = $("view");
  view.replaceChildren();
  delete view.dataset.rendered;
  delete view.dataset.complete;
  current = route();
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", (location.hash || "#/tasks").startsWith(`#/${link.dataset.nav}`));
  }
  current.mount(view).catch(failed);
}

function failed(error) {
  if (error instanceof api.ApiError && error.status === 401) {
    signOut("The token was refused (expired or not valid here). Sign in again.");
    return;
  }
  console.error(error);
}

function onMessage(message) {
  if (!current) return;
  if (message.type === "task" && message.task) current.onTask(message.task);
  else if (message.type === "event" && message.event) current.onEvent(message.task_id, message.event);
  else if (message.type === "runs" && message.runs) current.onRuns(message.task_id, message.runs);
  else if (message.type === "output") current.onOutput(message);
}

function onLiveState(state, wasLive) {
  const badge = $("live-state");
  badge.dataset.state = state;
  badge.textContent = { live: "live", reconnecting: "reconnecting · polling", polling: "polling", off: "offline" }[state] || state;
  // back after a drop: fetch what was missed (the views resume from their last event id)
  if (state === "live" && !wasLive && current) current.catchUp().catch(failed);
}

// GET /v1/health advertises the WebSocket URL; without one the views poll.
async function websocketUrl() {
  try {
    return (await api.health()).websocket_url || "";
  } catch {
    return "";
  }
}

async function start(token) {
  session.user = (api.claims(token) || {}).sub || "?";
  session.role = api.roleOf(token);
  $("sign-in").hidden = true;
  $("nav").hidden = false;
  $("sign-out").hidden = false;
  $("who").textContent = `${session.user} · ${session.role}`;
  session.live = new Live(token, onMessage, onLiveState);
  session.live.start(await websocketUrl());
  let polling = false; // one poll at a time: a slow API must not pile requests up
  pollTimer = setInterval(() => {
    if (!current || session.live.connected || polling) return;
    polling = true;
    current.poll().catch(failed).finally(() => { polling = false; });
  }, POLL_MS);
  window.addEventListener("hashchange", show);
  show();
}

function signOut(message) {
  api.forgetToken();
  if (session.live) session.live.stop();
  clearInterval(pollTimer);
  window.removeEventListener("hashchange", show);
  if (current) current.unmount();
  current = null;
  $("view").replaceChildren();
  $("nav").hidden = true;
  $("sign-out").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message || "";
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value.trim().replace(/^Bearer\s+/i, "");
  if (!api.claims(token)) {
    $("sign-in-error").textContent = "That is not a JWT (three base64url parts separated by dots).";
    return;
  }
  api.storeToken(token);
  try {
    await api.get("/v1/task-types");
  } catch (error) {
    api.forgetToken();
    $("sign-in-error").textContent = error instanceof api.ApiError ? error.message : String(error);
    return;
  }
  $("token").value = "";
  await start(token);
}

$("sign-in-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => signOut(""));
if (api.storedToken()) start(api.storedToken());
else signOut("");
