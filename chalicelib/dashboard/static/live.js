// Live updates over the WebSocket API (API.md "Real time"): subscribe, reconnect with
// exponential backoff, and tell the views to catch up from the HTTP API after a drop.
// Without a WebSocket URL (or while it is down) the views poll instead.
const MAX_BACKOFF_MS = 15000;

export class Live {
  constructor(token, onMessage, onState) {
    this.token = token;
    this.onMessage = onMessage;
    this.onState = onState;
    this.url = "";
    this.socket = null;
    this.topics = new Set();
    // live output subscriptions (`output_of`), keyed `<task id>\n<node>`
    this.outputs = new Map();
    this.attempt = 0;
    this.closed = false;
    this.timer = null;
    this.state = "off";
  }

  start(url) {
    this.url = url;
    if (!url || typeof WebSocket === "undefined") { this.setState("polling"); return; }
    this.connect();
  }

  get connected() { return this.state === "live"; }

  setState(state) {
    if (this.state === state) return;
    const wasLive = this.state === "live";
    this.state = state;
    this.onState(state, wasLive);
  }

  connect() {
    if (this.closed) return;
    const separator = this.url.includes("?") ? "&" : "?";
    let socket;
    try {
      socket = new WebSocket(`${this.url}${separator}token=${encodeURIComponent(this.token)}`);
    } catch {
      this.retry();
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      for (const topic of this.topics) this.send(topic);
      for (const [taskId, node] of this.outputs.values()) this.sendOutput("subscribe", taskId, node);
      this.setState("live");
    };
    socket.onmessage = (message) => {
      let parsed;
      try { parsed = JSON.parse(message.data); } catch { return; }
      this.onMessage(parsed);
    };
    socket.onclose = () => { if (this.socket === socket) this.retry(); };
    socket.onerror = () => socket.close();
  }

  retry() {
    this.socket = null;
    if (this.closed) return;
    this.setState("reconnecting");
    const delay = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempt) * (0.8 + Math.random() * 0.4);
    this.attempt += 1;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), delay);
  }

  send(taskId) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ action: "subscribe", task_id: taskId }));
    }
  }

  subscribe(taskId) {
    if (this.topics.has(taskId)) return;
    this.topics.add(taskId);
    this.send(taskId);
  }

  unsubscribe(taskId) {
    if (!this.topics.delete(taskId)) return;
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ action: "unsubscribe", task_id: taskId }));
    }
  }

  sendOutput(action, taskId, node) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify({ action, task_id: taskId, output_of: node }));
    }
  }

  subscribeOutput(taskId, node) {
    const key = `${taskId}\n${node}`;
    if (this.outputs.has(key)) return;
    this.outputs.set(key, [taskId, node]);
    this.sendOutput("subscribe", taskId, node);
  }

  unsubscribeOutput(taskId, node) {
    if (!this.outputs.delete(`${taskId}\n${node}`)) return;
    this.sendOutput("unsubscribe", taskId, node);
  }

  stop() {
    this.closed = true;
    clearTimeout(this.timer);
    if (this.socket) { const s = this.socket; this.socket = null; s.close(); }
    this.setState("off");
  }
}
