// What every view offers the shell; the defaults do nothing.
export class View {
  constructor(session) {
    this.session = session;
    this.root = null;
    this.alive = true;
  }

  async mount(root) { this.root = root; }
  unmount() { this.alive = false; }
  // a task changed (WebSocket `{"type": "task"}`)
  onTask(task) {} // eslint-disable-line no-unused-vars
  // a task has a new event (WebSocket `{"type": "event"}`)
  onEvent(taskId, event) {} // eslint-disable-line no-unused-vars
  // node runs of a task changed (WebSocket `{"type": "runs"}`, to subscribers of that task)
  onRuns(taskId, runs) {} // eslint-disable-line no-unused-vars
  // a node run's live output (WebSocket `{"type": "output"}`, for `output_of` subscriptions)
  onOutput(message) {} // eslint-disable-line no-unused-vars
  // no live connection: refresh from the HTTP API
  async poll() {}
  // the live connection is back after a drop: fetch what was missed
  async catchUp() { await this.poll(); }
}
