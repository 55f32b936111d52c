// A node run's live output in the run detail (API.md "Reading output"): filled from the REST
// pages, then kept current by `output` pushes (subscribe with `output_of`); a push that does not
// continue where the text ends triggers a catch-up read instead. Auto-scrolls while the reader is
// at the bottom; a download link saves the whole attempt. The <pre> holds text nodes only, at
// most MAX_CHARS of the end (the download has everything).
import * as api from "./api.js";
import { h } from "./dom.js";

const MAX_CHARS = 2000000;
const POLL_MS = 1000;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

export class RunOutput {
  constructor(session, taskId, run) {
    this.session = session;
    this.taskId = taskId;
    this.node = run.node;
    this.attempt = run.attempt;
    this.next = 0;
    this.chars = 0;
    this.complete = false;
    this.reading = false;
    this.again = false;
    this.stopped = false;
    this.timer = null;
    this.pre = h("pre", { class: "run-output", id: "run-output", "data-node": run.node, "data-attempt": String(run.attempt) });
    this.pre.addEventListener("scroll", () => { this.stick = this.atBottom(); });
    this.stick = true;
    this.link = h("a", { href: "#", id: "run-output-download", onclick: (e) => this.download(e) }, "Download");
    this.element = h("div", { class: "run-output-box" },
      h("div", { class: "run-output-head" }, h("strong", {}, `Output · attempt ${run.attempt}`), " ", this.link),
      this.pre);
  }

  path(offset) {
    const id = encodeURIComponent(this.taskId);
    return `/v1/tasks/${id}/nodes/${encodeURIComponent(this.node)}/output` + api.query({ attempt: this.attempt, offset });
  }

  start() {
    if (this.session.live) this.session.live.subscribeOutput(this.taskId, this.node);
    this.catchUp();
    this.timer = setInterval(() => {
      if (!this.complete && !(this.session.live && this.session.live.connected)) this.catchUp();
    }, POLL_MS);
  }

  stop() {
    this.stopped = true;
    clearInterval(this.timer);
    if (this.session.live) this.session.live.unsubscribeOutput(this.taskId, this.node);
  }

  // the run moved on (finished, or a new attempt: the task view then makes a new RunOutput)
  runChanged(run) {
    if (!this.complete && run.status !== "running") this.catchUp();
  }

  async catchUp() {
    if (this.reading) { this.again = true; return; }
    this.reading = true;
    try {
      do {
        this.again = false;
        let page;
        do {
          page = await api.get(this.path(this.next));
          if (this.stopped) return;
          if (page.next_offset > this.next) this.append(page.data, page.next_offset);
          this.complete = page.complete;
        } while (page.data && !page.complete);
      } while (this.again && !this.stopped);
    } catch (error) {
      console.error(error);
    } finally {
      this.reading = false;
    }
  }

  onOutput(message) {
    if (message.node !== this.node || message.attempt !== this.attempt) return;
    const bytes = encoder.encode(message.data);
    const end = message.offset + bytes.length;
    if (end <= this.next) return; // already shown
    if (message.offset > this.next || this.reading) { this.catchUp(); return; }
    const fresh = message.offset === this.next ? message.data : decoder.decode(bytes.slice(this.next - message.offset));
    this.append(fresh, end);
  }

  atBottom() {
    return this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 20;
  }

  append(text, nextOffset) {
    this.next = nextOffset;
    if (!text) return;
    const stick = this.stick;
    this.pre.append(document.createTextNode(text));
    this.chars += text.length;
    while (this.chars > MAX_CHARS && this.pre.firstChild) {
      this.chars -= this.pre.firstChild.textContent.length;
      this.pre.firstChild.remove();
    }
    this.pre.dataset.bytes = String(nextOffset);
    if (stick) { this.pre.scrollTop = this.pre.scrollHeight; this.stick = true; }
  }

  async download(event) {
    event.preventDefault();
    const parts = [];
    let offset = 0;
    for (;;) {
      const page = await api.get(this.path(offset));
      parts.push(page.data);
      if (page.next_offset === offset || page.complete) break;
      offset = page.next_offset;
    }
    const url = URL.createObjectURL(new Blob(parts, { type: "text/plain" }));
    const save = h("a", { href: url, download: `${this.taskId}-${this.node}-attempt${this.attempt}.log` });
    document.body.append(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }
}
