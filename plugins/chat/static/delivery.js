// Chat delivery state, apart from any DOM: per-conversation timelines, history paging
// and catch-up by seq, and the outbox of idempotent sends.
//
//  * A Timeline keys messages by id (so nothing shows twice) and remembers the
//    highest seq it holds; catchUp() pages history newest-first, by cursor, until
//    that seq is reached (so a reconnect or `resync` leaves no gap).
//  * The Outbox gives each message a random client_id once and re-sends it with the
//    same id after a disconnect or timeout: the server answers a resend whose first
//    attempt got through with the original message, never a duplicate.

import { randomId } from "/static/web/dom.js";

const CATCH_UP_PAGES = 20;
const RETRY_CODES = new Set(["disconnected", "timeout", "rate_limited", "internal_error"]);

export function conversationPath(id, rest = "") {
  return `/v1/conversations/${encodeURIComponent(id)}${rest}`;
}

export class Timeline {
  constructor(id) {
    this.id = id;
    this.byId = new Map();
    this.maxSeq = 0;
    this.cursor = null;
    this.complete = false;
    this.loaded = false;
    this.catching = null;
  }

  has(id) {
    return this.byId.has(id);
  }

  add(message) {
    this.byId.set(message.id, message);
    if (message.seq > this.maxSeq) this.maxSeq = message.seq;
  }

  sorted() {
    return [...this.byId.values()].sort((a, b) => a.seq - b.seq);
  }

  // One page older than what is loaded (the first call loads the newest page).
  async loadOlder(api, pageSize) {
    if (this.complete) return;
    const before = this.cursor ? `&before=${encodeURIComponent(this.cursor)}` : "";
    const page = await api.get(conversationPath(this.id, `/messages?limit=${pageSize}${before}`));
    for (const m of page.messages) this.add(m);
    this.cursor = page.next_cursor;
    this.complete = !page.next_cursor;
    this.loaded = true;
  }

  // Fetch what came after the highest seq held; concurrent callers share one run.
  catchUp(api, pageSize) {
    if (!this.loaded) return Promise.resolve();
    if (!this.catching) {
      this.catching = (async () => {
        const known = this.maxSeq;
        let before = "";
        for (let i = 0; i < CATCH_UP_PAGES; i++) {
          const page = await api.get(conversationPath(this.id, `/messages?limit=${pageSize}${before}`));
          for (const m of page.messages) this.add(m);
          if (!page.next_cursor || page.messages.some((m) => m.seq <= known + 1)) break;
          before = `&before=${encodeURIComponent(page.next_cursor)}`;
        }
      })().finally(() => {
        this.catching = null;
      });
    }
    return this.catching;
  }
}

export class Outbox {
  // socket: the shell's Realtime; delivered(message) and changed() are callbacks
  constructor(socket, { delivered, changed }) {
    this.socket = socket;
    this.delivered = delivered;
    this.changed = changed;
    this.entries = []; // {client_id, conversation_id, content, state, error}
    this.retryTimer = null;
  }

  add(conversationId, content) {
    const entry = { client_id: randomId(), conversation_id: conversationId, content, state: "queued", error: "" };
    this.entries.push(entry);
    return entry;
  }

  pending(conversationId) {
    return this.entries.filter((e) => e.conversation_id === conversationId);
  }

  clear() {
    this.entries = [];
    clearTimeout(this.retryTimer);
  }

  // Send every queued entry now if the socket is open; the rest waits for the next
  // flush (the client calls it after every (re)connect).
  flush() {
    for (const entry of this.entries) {
      if (entry.state !== "queued" || !this.socket.connected) continue;
      entry.state = "sending";
      this.socket.request("chat.send", {
        conversation_id: entry.conversation_id, content: entry.content, message_type: "text",
        client_id: entry.client_id, metadata: { client_id: entry.client_id },
      }).then((message) => {
        this.entries = this.entries.filter((e) => e !== entry);
        this.delivered(message);
      }).catch((err) => {
        if (RETRY_CODES.has(err.code)) {
          entry.state = "queued"; // same client_id next time: never a duplicate
          clearTimeout(this.retryTimer);
          this.retryTimer = setTimeout(() => this.flush(), 2000);
        } else {
          entry.state = "failed";
          entry.error = err.message;
        }
        this.changed();
      });
    }
  }
}
