// Statistics: the cards of GET /v1/statistics and hourly charts of GET /v1/statistics/timeseries.
import * as api from "./api.js";
import * as charts from "./charts.js";
import { h, duration } from "./dom.js";
import { View } from "./view.js";

const FINAL = [
  { key: "completed", label: "completed", color: "#27ae60" },
  { key: "partial_failure", label: "partial failure", color: "#e2b93b" },
  { key: "failed", label: "failed", color: "#d64545" },
  { key: "cancelled", label: "cancelled", color: "#5b6270" },
  { key: "discarded", label: "discarded", color: "#a0a0a0" },
];
const REFRESH_MS = 5000;

export class StatsView extends View {
  constructor(session) {
    super(session);
    this.hours = 24;
    this.lastRefresh = 0;
    this.trailing = null;
  }

  async mount(root) {
    await super.mount(root);
    this.cards = h("div", { class: "cards even", id: "stat-cards" });
    this.charts = h("div", { class: "charts", id: "stat-charts" });
    const hours = h("select", { onchange: (e) => { this.hours = Number(e.target.value); this.refresh(); } },
      [6, 24, 72, 168].map((n) => h("option", { value: n, selected: n === this.hours }, n < 48 ? `${n} hours` : `${n / 24} days`)));
    root.append(
      h("section", { class: "card" }, h("div", { class: "detail-head" }, h("h1", {}, "Statistics"),
        h("span", { class: "spacer" }), h("label", {}, "Period "), hours)),
      this.cards, this.charts,
    );
    this.session.live.subscribe("*");
    await this.refresh();
  }

  async refresh() {
    this.lastRefresh = Date.now();
    const [stats, series] = await Promise.all([
      api.get("/v1/statistics"),
      api.get("/v1/statistics/timeseries" + api.query({ hours: this.hours })),
    ]);
    if (!this.alive) return;
    this.showCards(stats);
    this.showCharts(series);
  }

  showCards(s) {
    const card = (label, value, id) => h("div", { class: "stat", "data-stat": id }, h("div", { class: "value" }, value), h("div", { class: "label" }, label));
    const runs = s.node_runs || {};
    this.cards.replaceChildren(
      card("tasks", s.total_tasks, "total"),
      card("running", s.running_tasks, "running"),
      card("completed", s.completed_tasks, "completed"),
      card("failed", s.failed_tasks, "failed"),
      card("partial failure", s.by_status.partial_failure, "partial_failure"),
      card("success rate", s.success_rate === null ? "—" : `${s.success_rate}%`, "success_rate"),
      card("average duration", duration(s.avg_duration_seconds), "avg_duration"),
      card("node runs ok / failed", `${runs.succeeded || 0} / ${(runs.failed || 0) + (runs.timed_out || 0)}`, "node_runs"),
    );
  }

  showCharts(series) {
    const label = (hour) => new Date(hour).toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
    const rows = series.buckets.map((b) => ({ label: label(b.hour), values: b.by_status }));
    const chart = (title, svg, extra) => h("section", { class: "card" }, h("h2", {}, title), svg, extra);
    this.charts.replaceChildren(
      chart("Tasks per hour by final status", charts.stackedBars(rows, FINAL), charts.legend(FINAL)),
      chart("Success rate per hour", charts.line(series.buckets.map((b) => ({ label: label(b.hour), value: b.success_rate })),
        { max: 100, color: "#27ae60", unit: "%" })),
      chart("Average duration per hour (s)", charts.line(series.buckets.map((b) => ({ label: label(b.hour), value: b.avg_duration_seconds })),
        { color: "#2f80ed", format: (v) => v.toFixed(v < 10 ? 1 : 0), unit: " s" })),
    );
  }

  // a task changed: refresh the figures, at most every few seconds, and once more after the last change
  onTask() {
    if (this.trailing) return;
    const wait = Math.max(0, this.lastRefresh + REFRESH_MS - Date.now());
    this.trailing = setTimeout(() => {
      this.trailing = null;
      if (this.alive) this.refresh().catch(() => {});
    }, wait);
  }

  unmount() {
    super.unmount();
    clearTimeout(this.trailing);
    this.session.live.unsubscribe("*");
  }

  async poll() {
    if (Date.now() - this.lastRefresh > REFRESH_MS) await this.refresh();
  }
}
