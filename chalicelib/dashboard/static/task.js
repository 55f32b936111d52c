// One task: progress, dispatch figures, a per-node grid coloured by status (compact squares
// past 60 nodes; one element per node, only changed cells touched), the live event timeline
// and the lifecycle actions the user's role allows.
import * as api from "./api.js";
import { h, fill, badge, progressBar, when, clock, duration, elapsed, confirmAction, copyText, TERMINAL } from "./dom.js";
import { View } from "./view.js";
import { RunOutput } from "./output.js";

const WIDE_GRID_MAX = 60;
const RUNS_REFRESH_MS = 1000;
// a task whose counts still disagree with the grid's this long after its last change has had a
// run push lost (pushes are best effort): the runs are read again
const RUNS_VERIFY_MS = 2500;
const TIMELINE_MAX = 1000;
// a catch-up reads events from this long before the newest shown (see catchUpEventsSoon)
const EVENTS_SETTLE_MS = 10000;
const ULID_DIGITS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RUN_STATUSES = ["pending", "running", "apply_pending", "succeeded", "failed", "timed_out", "cancelled"];
// `ask`: the question of the dialog shown before the action is sent (confirm apply is itself the
// confirmation of a two-phase task)
const ACTIONS = [
  { id: "cancel", label: "Cancel", from: ["pending", "running", "apply_pending"], path: "cancel", style: "danger",
    ask: "Cancel this task? Nodes that have not started are cancelled; running ones are told to stop." },
  { id: "retry-failed", label: "Retry failed", from: ["failed", "partial_failure", "cancelled"], path: "retry", body: { scope: "failed" },
    ask: "Run the failed, timed-out and cancelled nodes of this task again, as a new attempt?" },
  { id: "retry-all", label: "Retry all", from: ["failed", "partial_failure", "cancelled"], path: "retry", body: { scope: "all" }, style: "secondary",
    ask: "Run every node of this task again, including those that succeeded?" },
  { id: "confirm", label: "Confirm apply", from: ["apply_pending"], path: "confirm" },
  { id: "discard", label: "Discard plan", from: ["apply_pending"], path: "discard", style: "secondary",
    ask: "Discard the plan? The task ends discarded and nothing is applied." },
];
// runners of pending runs whose state is asked (GET /v1/nodes/{id}), and how often each
const RUNNER_CHECK_MAX = 20;
const RUNNER_CHECK_MS = 10000;

// the smallest event id written `ms` before `eventId` was (an id starts with a ULID: 10 digits of ms)
const idBefore = (eventId, ms) => {
  let time = 0;
  for (const digit of eventId.slice(0, 10).toUpperCase()) time = time * 32 + ULID_DIGITS.indexOf(digit);
  time = Math.max(0, time - ms);
  let head = "";
  for (let i = 0; i < 10; i++, time = Math.floor(time / 32)) head = ULID_DIGITS[time % 32] + head;
  return `${head}${"0".repeat(16)}-000`;
};
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
// whether `a` is the same or a later state of a node's run than `b`: a later attempt, or the same
// attempt changed later (every change stamps updated_at); a read that raced a push never undoes it
const notOlder = (a, b) => (a.attempt !== b.attempt ? a.attempt > b.attempt : (a.updated_at || "") >= (b.updated_at || ""));
const byNode = (a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : 0);

export class TaskView extends View {
  constructor(session, taskId) {
    super(session);
    this.taskId = taskId;
    this.task = null;
    this.runs = new Map();
    // counts by status of `runs`; `gridComplete` once every page was read (pushes keep it so)
    this.runCounts = {};
    this.gridComplete = false;
    this.countsKey = "";
    this.verifyTimer = null;
    this.cells = new Map();
    this.lastEventId = "";
    this.seenEvents = new Set();
    this.runsTimer = null;
    this.runsDirty = false;
    this.selected = null;
    this.loadingRuns = false;
    this.output = null;
    this.runnerStates = new Map();
    this.tick = null;
    this.waitingTimer = null;
    this.early = { task: null, events: [] };
  }

  async mount(root) {
    await super.mount(root);
    const started = performance.now();
    this.session.live.subscribe(this.taskId);
    const id = encodeURIComponent(this.taskId);
    let task, first, events;
    try {
      [task, first, events] = await Promise.all([
        api.get(`/v1/tasks/${id}`),
        api.get(`/v1/tasks/${id}/nodes` + api.query({ limit: 200 })),
        api.allPages(`/v1/tasks/${id}/events`),
      ]);
    } catch (error) {
      if (error instanceof api.ApiError && error.status === 404) {
        root.append(h("section", { class: "card" }, h("h1", {}, "Task not found"), h("p", {}, `No task ${this.taskId} that you may see.`)));
        return;
      }
      throw error;
    }
    if (!this.alive) return;
    const fetched = performance.now();
    this.build(root);
    this.showTask(task);
    this.showRuns([...first.items]);
    for (const event of events) this.addEvent(event);
    const early = this.early;
    this.early = { task: null, events: [] };
    if (early.task) this.onTask(early.task);
    for (const event of early.events) this.addEvent(event);
    root.dataset.rendered = "true";
    const shown = performance.now();
    // read by bench/dashboard_render.py
    const timing = { ms: shown - started, fetch_ms: fetched - started, dom_ms: shown - fetched, events: events.length };
    window.__fleetrunTaskRender = timing;
    // the other runs a page at a time (1,000 nodes: 4 more pages), the grid growing with each
    const runs = [...first.items];
    let cursor = first.next_cursor;
    this.loadingRuns = true;
    try {
      while (cursor && this.alive) {
        const page = await api.get(`/v1/tasks/${id}/nodes` + api.query({ limit: 200, cursor }));
        runs.push(...page.items);
        cursor = page.next_cursor;
        if (this.alive) this.showRuns(page.items);
      }
      this.gridComplete = !cursor;
    } finally {
      this.loadingRuns = false;
    }
    if (this.alive) this.showCounts();
    timing.complete_ms = performance.now() - started;
    timing.grid_dom_ms = this.gridMs;
    timing.nodes = runs.length;
    root.dataset.complete = "true";
    if (this.runsDirty && this.alive) { this.runsDirty = false; this.refreshRunsSoon(); }
  }

  unmount() {
    super.unmount();
    clearTimeout(this.runsTimer);
    clearTimeout(this.verifyTimer);
    clearInterval(this.tick);
    clearTimeout(this.waitingTimer);
    if (this.output) this.output.stop();
    if (this.session.live) this.session.live.unsubscribe(this.taskId);
  }

  build(root) {
    this.title = h("h1", { id: "task-title" });
    this.taskIdText = h("code", { class: "task-id", id: "task-id" });
    this.copyButton = h("button", { class: "copy", id: "copy-task-id", title: "Copy the task id", onclick: () => this.copyId() }, "Copy id");
    this.waiting = h("div", { class: "notice waiting-reason", id: "waiting-reason", hidden: true });
    this.params = h("div", { class: "params", id: "task-params" });
    this.statusSlot = h("span", { id: "task-status" });
    this.actions = h("div", { class: "actions", id: "task-actions" });
    this.actionError = h("p", { class: "error", role: "alert", id: "action-error" });
    this.progress = h("div", { id: "task-progress" });
    this.facts = h("div", { class: "kv", id: "task-facts" });
    this.dispatch = h("div", { class: "kv", id: "task-dispatch" });
    this.legend = h("div", { class: "legend", id: "node-legend" });
    this.nodeCountsText = h("span", { id: "task-node-counts" });
    this.grid = h("div", { class: "node-grid", id: "node-grid", onclick: (e) => this.pick(e) });
    this.runDetail = h("div", { class: "run-detail muted", id: "run-detail" }, "Click a node for its run.");
    this.outputSlot = h("div", { id: "run-output-slot" });
    this.timeline = h("div", { class: "timeline", id: "timeline" });
    root.append(
      h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")),
      h("section", { class: "card" },
        h("div", { class: "detail-head" }, this.title, this.statusSlot, this.actions),
        h("div", { class: "task-id-line" }, this.taskIdText, this.copyButton),
        this.actionError, this.progress, this.waiting, this.facts, this.params),
      h("div", { class: "two" },
        h("section", { class: "card" }, h("h2", {}, "Nodes"), this.legend, this.grid, this.runDetail, this.outputSlot),
        h("section", { class: "card" }, h("h2", {}, "Dispatch"), this.dispatch,
          h("h2", { style: "margin-top:16px" }, "Events"), this.timeline)),
    );
  }

  // --- the task ------------------------------------------------------------------------
  showTask(task) {
    const previous = this.task;
    this.task = task;
    this.title.textContent = task.name || task.type;
    this.taskIdText.textContent = task.task_id;
    this.taskIdText.title = task.task_id;
    this.statusSlot.replaceChildren(badge(task.status));
    this.progress.replaceChildren(progressBar(task.progress || 0, true, task.status));
    const fact = (label, value) => h("div", {}, h("span", {}, label), value === null || value === undefined || value === "" ? "—" : value);
    fill(this.facts,
      fact("Type", task.type), fact("Owner", task.owner),
      fact("Stage", task.stage), fact("Attempt", task.attempt), fact("Priority", task.priority),
      fact("Max concurrency", task.max_concurrency), fact("Max errors", task.max_errors),
      fact("Created", when(task.created_at)), fact("Started", when(task.started_at)), fact("Completed", when(task.completed_at)),
      fact("Duration", h("span", { id: "task-duration" }, this.taskDuration(task))),
      fact("Tags", (task.tags || []).length ? task.tags.map((tag) => h("span", { class: "tag" }, tag)) : null),
      fact("Nodes", this.nodeCountsText),
      task.error_message ? fact("Error", h("span", { class: "error" }, task.error_message)) : null,
      task.waiting_for ? fact("Waiting for", h("span", { class: "waiting-for" },
        h("a", { href: `#/tasks/${encodeURIComponent(task.waiting_for.task_id)}`, class: "mono" }, task.waiting_for.task_id),
        ` (${task.waiting_for.owner}) holds concurrency key ${task.concurrency_key}`)) : null,
      task.target_selector ? fact("Selector", Object.entries(task.target_selector.labels || {})
        .map(([k, v]) => `${k}=${v}`).join(", ")) : null,
      fact("Type version", task.type_version),
    );
    const d = task.dispatch || {};
    this.dispatch.replaceChildren(
      fact("Triggered", d.triggered ? "yes" : "no"), fact("Target nodes", d.target_node_count),
      fact("Runs created", d.created_count), fact("Skipped (existed)", d.skipped_count),
    );
    this.showActions(task);
    this.showParams(task);
    this.tickDuration(task);
    this.explainWaiting();
    const changed = !previous || previous.status !== task.status || previous.attempt !== task.attempt
      || JSON.stringify(previous.node_counts) !== JSON.stringify(task.node_counts) || previous.progress !== task.progress;
    this.showCounts();
    if (previous && changed) this.verifyRunsSoon();
  }

  // buttons are replaced only when the allowed set changes: an update arriving while the user
  // clicks must not swap the button under the pointer
  showActions(task) {
    const allowed = this.session.canAct(task) ? ACTIONS.filter((a) => a.from.includes(task.status)) : [];
    const key = allowed.map((a) => a.id).join(",");
    if (this.actions.dataset.key === key) return;
    this.actions.dataset.key = key;
    this.actions.replaceChildren(...allowed.map((action) =>
      h("button", { class: action.style || "", "data-action": action.id, onclick: (e) => this.act(action, e.target) }, action.label)));
  }

  async act(action, button) {
    if (action.ask && !(await confirmAction(`${action.label}?`, action.ask, action.label))) return;
    button.disabled = true;
    this.actionError.textContent = "";
    try {
      const task = await api.post(`/v1/tasks/${encodeURIComponent(this.taskId)}/${action.path}`, action.body);
      if (this.alive) this.showTask(task);
    } catch (error) {
      this.actionError.textContent = error.message;
    } finally {
      button.disabled = false;
    }
  }

  async copyId() {
    const copied = await copyText(this.taskId);
    this.copyButton.textContent = copied ? "Copied" : "Copy failed";
    setTimeout(() => { this.copyButton.textContent = "Copy id"; }, 1500);
  }

  // parameters as the API answers them: secret ones already read "***"
  showParams(task) {
    const entries = Object.entries(task.parameters || {});
    const shown = (value) => {
      const text = typeof value === "string" ? value : JSON.stringify(value);
      return text.length > 600 ? `${text.slice(0, 600)}…` : text;
    };
    fill(this.params, h("h2", {}, "Parameters"), entries.length
      ? h("dl", {}, entries.flatMap(([key, value]) => [h("dt", { class: "mono" }, key), h("dd", { class: "mono", "data-param": key }, shown(value))]))
      : h("p", { class: "muted" }, "none"));
  }

  taskDuration(task) {
    const seconds = elapsed(task.started_at, task.completed_at);
    return seconds === null ? "—" : `${duration(seconds)}${task.completed_at ? "" : " so far"}`;
  }

  // an unfinished task's duration counts up every second
  tickDuration(task) {
    clearInterval(this.tick);
    this.tick = null;
    if (!task.started_at || task.completed_at) return;
    this.tick = setInterval(() => {
      const slot = this.facts.querySelector("#task-duration");
      if (slot && this.task) slot.textContent = this.taskDuration(this.task);
    }, 1000);
  }

  // --- why is this waiting ---------------------------------------------------------------
  // What keeps an unfinished task from moving: the holder of its concurrency key, the
  // max_concurrency window, a plan waiting for confirmation, and runners of pending runs that are
  // not registered, offline, in maintenance or never seen (GET /v1/nodes/{id}). Shown shortly
  // after each task update (its runs refresh first), and asked again while runs are pending.
  explainWaiting(delay = 400) {
    clearTimeout(this.waitingTimer);
    this.waitingTimer = setTimeout(() => {
      this.checkRunners().then(() => this.showWaiting()).catch((error) => console.error(error));
    }, delay);
  }

  pendingRuns() { return [...this.runs.values()].filter((run) => run.status === "pending"); }

  async checkRunners() {
    if (!this.task || TERMINAL.has(this.task.status)) return;
    const now = Date.now();
    const runners = [...new Set(this.pendingRuns().map((run) => run.runner || run.node))].slice(0, RUNNER_CHECK_MAX)
      .filter((runner) => !(this.runnerStates.has(runner) && this.runnerStates.get(runner).at > now - RUNNER_CHECK_MS));
    await Promise.all(runners.map(async (runner) => {
      let why = null;
      try {
        why = runnerTrouble(await api.get(`/v1/nodes/${encodeURIComponent(runner)}`));
      } catch (error) {
        // not found: not a registered node; anything else (e.g. a role that may not read nodes): unknown
        if (error instanceof api.ApiError && error.code === "not_found") why = "is not a registered node";
      }
      this.runnerStates.set(runner, { why, at: now });
    }));
  }

  runnerReason(run) {
    const runner = run.runner || run.node;
    const state = this.runnerStates.get(runner);
    return state && state.why ? `runner ${runner} ${state.why}` : null;
  }

  waitingReasons() {
    const task = this.task;
    if (!task || TERMINAL.has(task.status)) return [];
    const reasons = [];
    if (task.waiting_for) {
      reasons.push(h("li", { "data-reason": "concurrency_key" }, "concurrency key ", h("code", {}, task.concurrency_key),
        " is held by task ", h("a", { href: `#/tasks/${encodeURIComponent(task.waiting_for.task_id)}`, class: "mono" }, task.waiting_for.task_id),
        ` (${task.waiting_for.owner}): this task starts when that one ends`));
    }
    if (task.status === "apply_pending") reasons.push(h("li", { "data-reason": "confirmation" }, "the plan waits for a confirm or a discard"));
    const counts = task.node_counts || {};
    const running = counts.running || 0;
    if (counts.pending > 0 && task.max_concurrency && running >= task.max_concurrency) {
      reasons.push(h("li", { "data-reason": "window" },
        `waiting for a slot: ${running} of max_concurrency ${task.max_concurrency} running, ${counts.pending} pending`));
    }
    const troubled = new Map();
    for (const run of this.pendingRuns()) {
      const reason = this.runnerReason(run);
      if (reason) troubled.set(reason, (troubled.get(reason) || 0) + 1);
    }
    const listed = [...troubled].slice(0, 10);
    for (const [reason, runs] of listed) {
      reasons.push(h("li", { "data-reason": "runner" }, reason, runs > 1 ? ` (${runs} pending runs)` : ""));
    }
    if (troubled.size > listed.length) reasons.push(h("li", {}, `and ${troubled.size - listed.length} more runners`));
    return reasons;
  }

  showWaiting() {
    if (!this.alive || !this.task) return;
    const reasons = this.waitingReasons();
    this.waiting.hidden = !reasons.length;
    fill(this.waiting, reasons.length ? [h("strong", {}, "Why is this waiting?"), h("ul", {}, reasons)] : []);
    const selected = this.selected && this.runs.get(this.selected);
    if (selected && selected.status === "pending") this.showRun(this.selected);
    if (!TERMINAL.has(this.task.status) && this.pendingRuns().length) this.explainWaiting(RUNNER_CHECK_MS);
  }

  onTask(task) {
    if (task.task_id !== this.taskId) return;
    // pushed (or answered to the subscription) while the first read is under way: shown after it,
    // when newer, as the read may have been served before the change
    if (!this.task) {
      if (!this.early.task || !api.olderTask(task, this.early.task)) this.early.task = task;
      return;
    }
    // an older snapshot than the one shown (a poll racing a push, a push delivered again) is ignored
    if (api.olderTask(task, this.task)) return;
    const moved = task.status !== this.task.status;
    this.showTask(task);
    if (moved) this.catchUpEventsSoon();
  }

  // --- node runs -----------------------------------------------------------------------
  // The grid holds the task's runs by node. Pages read and run pushes (`{"type": "runs"}`) are
  // merged run by run, the later state winning (`notOlder`), so neither undoes the other.
  // The legend and the header's "Nodes" are drawn together from `nodeCounts()`, so they agree
  // at every moment whatever order task and run pushes arrive in.
  showRuns(runs) {
    const started = performance.now();
    this.drawRuns(this.mergeRuns(runs));
    this.gridMs = performance.now() - started;
  }

  onRuns(taskId, runs) {
    if (taskId !== this.taskId) return;
    // pushed while the first pages load: kept, and merged with them
    const changes = this.mergeRuns(runs);
    if (this.task && this.grid) this.drawRuns(changes);
  }

  mergeRuns(runs) {
    const changes = { changed: [] };
    for (const run of runs) {
      const held = this.runs.get(run.node);
      if (held && !notOlder(run, held)) continue;
      if (held) this.runCounts[held.status] -= 1;
      this.runCounts[run.status] = (this.runCounts[run.status] || 0) + 1;
      this.runs.set(run.node, run);
      changes.changed.push(run);
    }
    return changes;
  }

  drawRuns({ changed }) {
    const wide = this.runs.size <= WIDE_GRID_MAX;
    // a node the grid has no cell for (runs are never removed): drawn anew, in node order
    if (this.cells.size !== this.runs.size || this.grid.classList.contains("wide") !== wide) {
      this.grid.classList.toggle("wide", wide);
      const runs = [...this.runs.values()].sort(byNode);
      this.grid.innerHTML = runs.map((run) =>
        `<i class="s-${escape(run.status)}${this.selected === run.node ? " sel" : ""}" data-node="${escape(run.node)}" title="${escape(this.tip(run))}">${wide ? escape(run.node) : ""}</i>`).join("");
      this.cells = new Map([...this.grid.children].map((cell) => [cell.dataset.node, cell]));
    } else {
      for (const run of changed) {
        const cell = this.cells.get(run.node);
        const cls = `s-${run.status}${this.selected === run.node ? " sel" : ""}`;
        if (cell.className !== cls) cell.className = cls;
        const tip = this.tip(run);
        if (cell.title !== tip) cell.title = tip;
      }
    }
    this.showCounts();
    if (this.selected && changed.some((run) => run.node === this.selected)) this.showRun(this.selected);
  }

  // The node counts the page shows: the grid's own once it holds every run; the task's
  // (node_counts, from the stream's counters) while its pages are still being read.
  nodeCounts() {
    if (this.gridComplete || !this.task) return this.runCounts;
    return this.task.node_counts || {};
  }

  showCounts() {
    if (!this.legend) return;
    const counts = this.nodeCounts();
    const shown = RUN_STATUSES.filter((s) => counts[s] > 0);
    const key = shown.map((s) => `${s}:${counts[s]}`).join(",");
    if (key === this.countsKey) return;
    this.countsKey = key;
    this.legend.replaceChildren(...shown.map((s) =>
      h("span", { "data-run-status": s }, h("i", { style: `background:var(--${s})` }), `${s.replace("_", " ")} ${counts[s]}`)));
    this.nodeCountsText.textContent = shown.map((s) => `${counts[s]} ${s.replace("_", " ")}`).join(", ") || "—";
  }

  // Run pushes are best effort: when the task's own counts still disagree with the grid's a
  // while after the task last changed, one was lost, and the runs are read again.
  verifyRunsSoon() {
    clearTimeout(this.verifyTimer);
    this.verifyTimer = setTimeout(() => {
      this.verifyTimer = null;
      if (!this.alive || !this.task || !this.gridComplete) return;
      const counts = this.task.node_counts || {};
      if (RUN_STATUSES.some((s) => (counts[s] || 0) !== (this.runCounts[s] || 0))) this.refreshRunsSoon(0);
    }, RUNS_VERIFY_MS);
  }

  tip(run) {
    return `${run.node}: ${run.status} · attempt ${run.attempt} · ${run.progress}%${run.step ? ` · ${run.step}` : ""}`
      + (run.error_message ? ` · ${run.error_message}` : "");
  }

  pick(event) {
    const node = event.target.dataset && event.target.dataset.node;
    if (!node) return;
    if (this.selected && this.cells.get(this.selected)) this.cells.get(this.selected).classList.remove("sel");
    this.selected = node;
    event.target.classList.add("sel");
    this.showRun(node);
  }

  showRun(node) {
    const run = this.runs.get(node);
    if (!run) return;
    this.runDetail.classList.remove("muted");
    fill(this.runDetail,
      h("strong", {}, run.node), " ", badge(run.status), ` attempt ${run.attempt} · ${run.progress}% · step ${run.step || "—"}`,
      run.runner && run.runner !== run.node ? ` · runner ${run.runner}` : "",
      h("div", { class: "run-times", id: "run-times" }, `started ${when(run.started_at)} · completed ${when(run.completed_at)}`
        + ` · took ${this.runDuration(run)}`),
      run.error_message ? h("div", { class: "error" }, run.error_message) : null,
      this.runWaiting(run),
    );
    this.showOutput(run);
  }

  runDuration(run) {
    const seconds = elapsed(run.started_at, run.completed_at);
    return seconds === null ? "—" : `${duration(seconds)}${run.completed_at ? "" : " so far"}`;
  }

  // why a pending run does not start (the task's reasons that concern it)
  runWaiting(run) {
    if (run.status !== "pending" || !this.task || TERMINAL.has(this.task.status)) return null;
    const counts = this.task.node_counts || {};
    const reason = this.runnerReason(run)
      || (this.task.waiting_for ? `task ${this.task.waiting_for.task_id} holds concurrency key ${this.task.concurrency_key}` : null)
      || ((counts.running || 0) >= this.task.max_concurrency ? `waiting for a slot: ${counts.running} of max_concurrency ${this.task.max_concurrency} running` : null);
    return reason ? h("div", { class: "notice waiting-reason", "data-run-waiting": "" }, `Waiting: ${reason}`) : null;
  }

  // the selected run's live output (output.js); a new node or attempt gets a new panel
  showOutput(run) {
    if (run.status === "pending" && run.attempt <= 1) return;
    if (this.output && this.output.node === run.node && this.output.attempt === run.attempt) {
      this.output.runChanged(run);
      return;
    }
    if (this.output) this.output.stop();
    this.output = new RunOutput(this.session, this.taskId, run);
    this.outputSlot.replaceChildren(this.output.element);
    this.output.start();
  }

  onOutput(message) {
    if (message.task_id === this.taskId && this.output) this.output.onOutput(message);
  }

  // at most one refresh of the runs a second (1,000 nodes are 5 pages)
  refreshRunsSoon(delay = 150) {
    if (this.runsTimer || this.loadingRuns) { this.runsDirty = true; return; }
    this.runsTimer = setTimeout(async () => {
      try {
        const runs = await api.allPages(`/v1/tasks/${encodeURIComponent(this.taskId)}/nodes`);
        if (this.alive) { this.gridComplete = true; this.showRuns(runs); }
      } finally {
        this.runsTimer = null;
        if (this.runsDirty && this.alive) { this.runsDirty = false; this.refreshRunsSoon(RUNS_REFRESH_MS); }
      }
    }, delay);
  }

  // --- events --------------------------------------------------------------------------
  onEvent(taskId, event) {
    if (taskId !== this.taskId) return;
    if (!this.task) { this.early.events.push(event); return; }
    this.addEvent(event);
  }

  addEvent(event) {
    if (this.seenEvents.has(event.event_id)) return;
    this.seenEvents.add(event.event_id);
    if (event.event_id > this.lastEventId) this.lastEventId = event.event_id;
    const stick = this.timeline.scrollTop + this.timeline.clientHeight >= this.timeline.scrollHeight - 20;
    const line = h("div", { class: "ev", "data-type": event.type, "data-event-id": event.event_id },
      h("span", { class: "t", title: event.at }, clock(event.at)),
      h("span", { class: "k" }, event.type),
      h("span", { class: "mono" }, event.node || event.step || ""),
      h("span", { class: "m" }, event.message, event.progress !== null && event.progress !== undefined ? ` (${event.progress}%)` : ""));
    // events can arrive out of order (a push overtaking a catch-up page): keep them sorted by id
    let before = null;
    for (let node = this.timeline.lastElementChild; node && node.dataset.eventId > event.event_id; node = node.previousElementSibling) before = node;
    this.timeline.insertBefore(line, before);
    while (this.timeline.childElementCount > TIMELINE_MAX) this.timeline.firstElementChild.remove();
    if (stick) this.timeline.scrollTop = this.timeline.scrollHeight;
  }

  // Pushes are best effort (one lost, or sent before the subscription took, is never resent), so
  // each status change reads the events again from a little before the newest shown: ids are
  // taken when a write starts, so one committed late may sort before an event already shown.
  catchUpEventsSoon(delay = 300) {
    if (this.eventsTimer) return;
    this.eventsTimer = setTimeout(async () => {
      try {
        const after = this.lastEventId ? { after: idBefore(this.lastEventId, EVENTS_SETTLE_MS) } : {};
        const events = await api.allPages(`/v1/tasks/${encodeURIComponent(this.taskId)}/events`, after);
        if (this.alive) for (const event of events) this.addEvent(event);
      } finally {
        this.eventsTimer = null;
      }
    }, delay);
  }

  async poll() {
    if (!this.task) return;
    const id = encodeURIComponent(this.taskId);
    const [task, events] = await Promise.all([
      api.get(`/v1/tasks/${id}`),
      api.allPages(`/v1/tasks/${id}/events`, this.lastEventId ? { after: idBefore(this.lastEventId, EVENTS_SETTLE_MS) } : {}),
    ]);
    if (!this.alive) return;
    this.onTask(task);
    for (const event of events) this.addEvent(event);
    if (!TERMINAL.has(task.status) || events.length) this.refreshRunsSoon();
  }
}

// why a registered runner does not claim its runs (chalicelib/services/runner_state.py says the
// same), read from the node's own fields: no status is spelled out here (GET /v1/health owns them)
function runnerTrouble(node) {
  if (node.offline_since) return `is ${node.status} since ${when(node.offline_since)}`;
  if (node.reclaim) return `is ${node.status} for a reclaim (it claims only its machine.reclaim run)`;
  if (!node.last_seen_at) return "has never been seen: no agent has connected for it";
  return null;
}
