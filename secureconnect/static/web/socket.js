// The realtime connection: one WebSocket at /v1/ws with
//  * a client heartbeat: a `web.ping` frame every heartbeat_interval seconds; no
//    answer within heartbeat_timeout means the socket is dead even if it looks open
//    (the "dead socket after sleep" bug), so it is dropped and replaced;
//  * reconnect with exponential backoff and jitter, capped at reconnect_max_delay;
//  * an "open" event after every (re)connect, so features catch up from history.
// Requests (`request(type, data)`) are answered by `ack`/`error` frames matched by id.

export class Realtime {
  constructor(session, config) {
    this.session = session;
    this.intervalMs = config.heartbeat_interval * 1000;
    this.timeoutMs = config.heartbeat_timeout * 1000;
    this.maxDelayMs = config.reconnect_max_delay * 1000;
    this.ws = null;
    this.pending = new Map();
    this.listeners = new Set();
    this.nextId = 0;
    this.attempt = 0;
    this.stopped = true;
    this.opened = 0;
    this.state = "offline";
  }

  // fn(type, data) for every server event and for "open"/"close"/"state"
  listen(fn) {
    this.listeners.add(fn);
  }

  emit(type, data) {
    for (const fn of this.listeners) {
      try {
        fn(type, data);
      } catch (err) {
        console.warn("listener failed", type, err);
      }
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.emit("state", { state });
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    const ws = this.ws;
    this.ws = null;
    this.cleanup(1000);
    if (ws) ws.close(1000, "signed out");
    this.setState("offline");
  }

  connect() {
    clearTimeout(this.retryTimer);
    if (this.stopped || !this.session.access) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/v1/ws?access_token=${encodeURIComponent(this.session.access)}`;
    this.setState("connecting");
    const ws = new WebSocket(url);
    this.ws = ws;
    const openTimer = setTimeout(() => {
      if (ws.readyState !== WebSocket.OPEN) this.drop(ws);
    }, this.timeoutMs + 5000);
    ws.onopen = () => {
      clearTimeout(openTimer);
      if (this.ws !== ws) return;
      this.attempt = 0;
      this.opened += 1;
      this.setState("online");
      this.heartbeat = setInterval(() => this.beat(ws), this.intervalMs);
      this.emit("open", { reconnect: this.opened > 1 });
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "ack" || frame.type === "error") {
        const waiter = this.pending.get(frame.id);
        if (!waiter) return;
        this.pending.delete(frame.id);
        clearTimeout(waiter.timer);
        if (frame.type === "ack") waiter.resolve(frame.data);
        else waiter.reject(Object.assign(new Error((frame.data && frame.data.message) || "error"), { code: frame.data && frame.data.code }));
        return;
      }
      this.emit(frame.type, frame.data || {});
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      clearTimeout(openTimer);
      if (this.ws === ws) this.closed(event.code);
    };
  }

  beat(ws) {
    this.request("web.ping", {}, this.timeoutMs).catch(() => this.drop(ws));
  }

  // Give up on a socket that stopped answering; its late close event is ignored.
  drop(ws) {
    if (this.ws !== ws) return;
    this.ws = null;
    try {
      ws.close(4000, "heartbeat timeout");
    } catch {
      /* already closing */
    }
    this.closed(4000);
  }

  cleanup(code) {
    clearInterval(this.heartbeat);
    for (const [id, waiter] of this.pending) {
      clearTimeout(waiter.timer);
      waiter.reject(Object.assign(new Error("disconnected"), { code: "disconnected" }));
      this.pending.delete(id);
    }
  }

  closed(code) {
    this.ws = null;
    this.cleanup(code);
    this.setState("offline");
    this.emit("close", { code });
    if (this.stopped) return;
    if (code === 1008) {
      // revoked or expired token: rotate first; a failed rotation means signed out
      // (a refusal signs out through the session; a network failure retries later)
      this.session.refresh().then(() => {
        if (this.session.signedIn) this.schedule();
        else this.emit("signed_out", {});
      });
      return;
    }
    this.schedule();
  }

  schedule() {
    const cap = Math.min(this.maxDelayMs, 500 * 2 ** Math.min(this.attempt, 16));
    const delay = cap / 2 + Math.random() * (cap / 2);
    this.attempt += 1;
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  get connected() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  // Send a frame with an id; resolves with the ack's data, rejects on error,
  // timeout or disconnect (callers that must not lose the frame retry it).
  request(type, data, timeoutMs = 10000) {
    return new Promise((resolve, reject) => {
      const ws = this.ws;
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        reject(Object.assign(new Error("disconnected"), { code: "disconnected" }));
        return;
      }
      const id = `c${++this.nextId}`;
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(Object.assign(new Error("timeout"), { code: "timeout" }));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ type, id, data }));
    });
  }
}
