// The task list: filters, newest first, rows that appear and change live.
import * as api from "./api.js";
import { h, badge, progressBar, when, shortId, TASK_STATUSES } from "./dom.js";
import { View } from "./view.js";

const FILTERS = ["status", "type", "tag", "owner"];

export class TasksView extends View {
  constructor(session, params) {
    super(session);
    this.filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) || ""]));
    this.rows = new Map();
    this.cursor = null;
  }

  async mount(root) {
    await super.mount(root);
    this.body = h("tbody", { id: "task-rows" });
    this.more = h("button", { class: "secondary", hidden: true, onclick: () => this.loadMore() }, "Load more");
    this.empty = h("p", { class: "muted", hidden: true }, "No tasks match.");
    root.append(
      h("section", { class: "card" }, h("h1", {}, "Tasks"), await this.filterForm()),
      h("section", { class: "card" },
        h("table", { id: "tasks" },
          h("thead", {}, h("tr", {}, ["Task", "Name", "Type", "Owner", "Status", "Progress", "Nodes", "Created"]
            .map((title) => h("th", {}, title)))),
          this.body),
        this.empty, this.more),
    );
    this.session.live.subscribe("*");
    await this.reload();
  }

  async filterForm() {
    // every page: defined types follow the built-ins, and a team may define many
    const types = await api.allPages("/v1/task-types").then((items) => items.map((t) => t.name)).catch(() => []);
    const select = (name, options) => h("select", { name, "data-filter": name },
      h("option", { value: "" }, "any"), options.map((o) => h("option", { value: o, selected: this.filters[name] === o }, o)));
    const form = h("form", { class: "filters", onchange: () => this.applyFilters(form), onsubmit: (e) => { e.preventDefault(); this.applyFilters(form); } },
      h("div", {}, h("label", {}, "Status"), select("status", TASK_STATUSES)),
      h("div", {}, h("label", {}, "Type"), select("type", types)),
      h("div", {}, h("label", {}, "Tag"), h("input", { name: "tag", "data-filter": "tag", value: this.filters.tag, size: 12 })),
      this.session.role === "admin"
        ? h("div", {}, h("label", {}, "Owner"), h("input", { name: "owner", "data-filter": "owner", value: this.filters.owner, size: 12 }))
        : null,
    );
    return form;
  }

  applyFilters(form) {
    for (const name of FILTERS) if (form.elements[name]) this.filters[name] = form.elements[name].value.trim();
    history.replaceState(null, "", "#/tasks" + api.query(this.filters));
    this.reload();
  }

  async reload() {
    this.rows.clear();
    this.body.replaceChildren();
    this.cursor = null;
    await this.loadMore();
  }

  async loadMore() {
    const page = await api.get("/v1/tasks" + api.query({ ...this.filters, limit: 50, cursor: this.cursor }));
    if (!this.alive) return;
    for (const task of page.items) this.upsert(task, false);
    this.cursor = page.next_cursor;
    this.more.hidden = !this.cursor;
    this.empty.hidden = this.rows.size > 0;
  }

  matches(task) {
    const f = this.filters;
    return (!f.status || task.status === f.status) && (!f.type || task.type === f.type)
      && (!f.tag || (task.tags || []).includes(f.tag)) && (!f.owner || task.owner === f.owner);
  }

  onTask(task) {
    if (this.matches(task)) this.upsert(task, true);
    else if (this.rows.has(task.task_id) && !this.isOlder(task)) {
      this.rows.get(task.task_id).remove();
      this.rows.delete(task.task_id);
    }
    this.empty.hidden = this.rows.size > 0;
  }

  unmount() {
    super.unmount();
    this.session.live.unsubscribe("*");
  }

  async poll() {
    const page = await api.get("/v1/tasks" + api.query({ ...this.filters, limit: 50 }));
    if (!this.alive) return;
    for (const task of page.items) this.upsert(task, true);
    this.empty.hidden = this.rows.size > 0;
  }

  // an older snapshot than its row shows (a page read racing a push, a push delivered late)
  isOlder(task) {
    const existing = this.rows.get(task.task_id);
    return Boolean(existing && api.olderTask(task, existing.task));
  }

  upsert(task, live) {
    if (this.isOlder(task)) return;
    const row = this.row(task);
    const existing = this.rows.get(task.task_id);
    if (existing) {
      if (existing.dataset.version === row.dataset.version) return;
      existing.replaceWith(row);
    } else {
      // ULIDs sort by creation time: keep newest first
      const after = [...this.rows.values()].find((other) => other.dataset.taskId < task.task_id);
      if (after) this.body.insertBefore(row, after);
      else if (live && this.cursor && this.rows.size) return; // older than the loaded pages
      else this.body.append(row);
    }
    if (live) row.classList.add("flash");
    this.rows.set(task.task_id, row);
  }

  row(task) {
    const counts = task.node_counts || {};
    const done = (counts.succeeded || 0) + (counts.failed || 0) + (counts.timed_out || 0) + (counts.cancelled || 0);
    const total = (task.dispatch && task.dispatch.target_node_count) || (task.target_nodes || []).length;
    const bad = (counts.failed || 0) + (counts.timed_out || 0);
    const row = h("tr", {
      class: "task-row", "data-task-id": task.task_id, "data-status": task.status,
      onclick: () => { location.hash = `#/tasks/${encodeURIComponent(task.task_id)}`; },
    },
    h("td", { class: "mono" }, h("a", { href: `#/tasks/${encodeURIComponent(task.task_id)}`, title: task.task_id }, shortId(task.task_id))),
    h("td", {}, task.name || ""),
    h("td", {}, task.type),
    h("td", {}, task.owner),
    h("td", {}, badge(task.status)),
    h("td", {}, progressBar(task.progress || 0, false, task.status)),
    h("td", { title: JSON.stringify(counts) }, `${done}/${total}`, bad ? h("span", { class: "error" }, ` · ${bad} failed`) : ""),
    h("td", { class: "muted" }, when(task.created_at)));
    row.dataset.version = `${task.updated_at}|${task.status}|${task.progress}|${done}|${bad}`;
    row.task = task;
    return row;
  }
}
