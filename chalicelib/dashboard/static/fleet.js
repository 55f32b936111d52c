// The fleet: node counts (GET /v1/monitoring/snapshot, else counted from GET /v1/nodes) and
// the GPU trend from Prometheus (GET /v1/monitoring/gpu-trend), whose 503 message is shown as is.
// The node statuses are the service's (GET /v1/health `node_statuses`); without them, those counted.
import * as api from "./api.js";
import * as charts from "./charts.js";
import { h, fill, when } from "./dom.js";
import { View } from "./view.js";

const COLORS = ["#2f80ed", "#27ae60", "#e2b93b", "#d64545", "#b26bd6", "#5b6270", "#f2994a", "#56ccf2"];
const REFRESH_MS = 10000;

export class FleetView extends View {
  async mount(root) {
    await super.mount(root);
    this.snapshot = h("div", { id: "fleet-snapshot" });
    this.trend = h("div", { id: "gpu-trend" });
    this.nodes = h("div", { id: "fleet-nodes" });
    root.append(
      h("section", { class: "card" }, h("h1", {}, "Fleet"), this.snapshot),
      h("section", { class: "card" }, h("h2", {}, "GPU utilisation (6 h)"), this.trend),
      h("section", { class: "card" }, h("h2", {}, "Nodes"), this.nodes),
    );
    this.lastRefresh = 0;
    await this.refresh();
  }

  async refresh() {
    this.lastRefresh = Date.now();
    await Promise.all([this.showSnapshot(), this.showTrend()]);
  }

  async poll() { if (Date.now() - this.lastRefresh > REFRESH_MS) await this.refresh(); }
  onTask() { this.poll().catch(() => {}); }

  async showSnapshot() {
    const nodes = await api.get("/v1/nodes" + api.query({ limit: 200 })).catch(() => ({ items: [] }));
    const statuses = await api.health().then((health) => health.node_statuses || []).catch(() => []);
    let snapshot = null, note = null;
    try {
      snapshot = await api.get("/v1/monitoring/snapshot");
    } catch (error) {
      note = api.notDeployed(error)
        ? "Live fleet figures (GET /v1/monitoring/snapshot) are not available in this deployment; counts below are from the node list."
        : `Fleet snapshot unavailable: ${error.message}`;
    }
    if (!this.alive) return;
    const counts = (snapshot && (snapshot.nodes_by_status || snapshot.node_counts || snapshot.nodes)) || {};
    if (!snapshot) for (const node of nodes.items) counts[node.status] = (counts[node.status] || 0) + 1;
    const stat = (label, value) => h("div", { class: "stat" }, h("div", { class: "value" }, value ?? "—"), h("div", { class: "label" }, label));
    fill(this.snapshot,
      h("div", { class: "cards" },
        (statuses.length ? statuses : Object.keys(counts)).map((s) => stat(`nodes ${s}`, counts[s] || 0)),
        snapshot ? stat("running tasks", snapshot.running_tasks) : null,
        snapshot ? stat("node runs in flight", snapshot.node_runs_in_flight ?? snapshot.runs_in_flight) : null,
        // unclaimed runs (a runner that is not a node, offline or busy) wait: never counted as in flight
        snapshot ? stat("node runs waiting", snapshot.node_runs_waiting ?? (snapshot.node_runs || {}).pending) : null),
      snapshot && snapshot.as_of ? h("p", { class: "muted" }, `as of ${when(snapshot.as_of)}`) : null,
      note ? h("p", { class: "muted", "data-testid": "snapshot-note" }, note) : null,
    );
    this.nodes.replaceChildren(nodes.items.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["Node", "Status", "Slots", "Labels", "Last seen"].map((t) => h("th", {}, t)))),
        h("tbody", {}, nodes.items.map((n) => h("tr", {}, h("td", { class: "mono" }, n.node_id), h("td", {}, n.status),
          h("td", {}, n.slots), h("td", { class: "mono" }, Object.entries(n.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ")),
          h("td", {}, when(n.last_seen_at))))))
      : h("p", { class: "muted" }, "No registered nodes."));
  }

  async showTrend() {
    let trend;
    try {
      trend = await api.get("/v1/monitoring/gpu-trend" + api.query({ range: "6h", step: 300 }));
    } catch (error) {
      if (!this.alive) return;
      const message = api.notDeployed(error)
        ? "The GPU trend (GET /v1/monitoring/gpu-trend) is not available in this deployment."
        : error.message;
      this.trend.replaceChildren(h("p", { class: "notice", "data-testid": "gpu-trend-message" }, message));
      return;
    }
    if (!this.alive) return;
    const util = (trend.series || []).filter((s) => /UTIL/i.test(s.metric));
    if (!util.length) { this.trend.replaceChildren(h("p", { class: "muted" }, "Prometheus has no GPU series for this period.")); return; }
    const stamps = [...new Set(util.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    const label = (t) => new Date(t * 1000).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
    const avg = stamps.map((t) => {
      const values = util.map((s) => (s.points.find((p) => p[0] === t) || [])[1]).filter((v) => v !== undefined).map(Number);
      return { label: label(t), value: values.length ? values.reduce((a, b) => a + b, 0) / values.length : null };
    });
    this.trend.replaceChildren(
      charts.line(avg, { max: 100, color: COLORS[0], unit: "%" }),
      h("p", { class: "muted" }, `average of ${util.length} host(s): ${util.map((s) => s.host).join(", ")} · source ${trend.source}`),
    );
  }
}
