// The shell: one `app` object per page that plugins' panels build on.
//
//   import { app, h } from "/static/web/app.js";
//   app.addPanel({ id: "chat", mount({ sidebar, main }) { ... } });
//   app.on("chat.message", (data) => ...);          // WebSocket events
//   app.on("open", ({ reconnect }) => ...);          // after every (re)connect: catch up
//   app.provide("chat", api); await app.use("chat"); // panels extend each other
//   await app.api.get("/v1/conversations");         // REST with the session's token
//
// Panels mount after sign-in, in plugin order, and are torn down at sign-out.

import { Session } from "./api.js";
import { Realtime } from "./socket.js";
import { clear, h } from "./dom.js";

export { h, clear } from "./dom.js";
export { ApiError } from "./api.js";

function readConfig() {
  const meta = document.querySelector('meta[name="sc-config"]');
  return JSON.parse(meta ? meta.content : "{}");
}

class App {
  constructor() {
    this.config = readConfig();
    const pageMeta = document.querySelector('meta[name="sc-page"]');
    this.page = pageMeta ? pageMeta.content : "app";
    this.api = new Session();
    this.socket = new Realtime(this.api, this.config);
    this.listeners = new Map();
    this.services = new Map();
    this.waiters = new Map();
    this.panels = [];
    this.mounted = [];
    this.me = null;
    this.names = new Map();
    this.socket.listen((type, data) => this.emit(type, data));
    this.api.onChange((signedIn) => {
      if (!signedIn) this.signedOut();
    });
    this.on("signed_out", () => this.api.clear());
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type).delete(fn);
  }

  emit(type, data) {
    for (const fn of this.listeners.get(type) || []) {
      try {
        fn(data);
      } catch (err) {
        console.warn(`handler of ${type} failed`, err);
      }
    }
  }

  provide(name, service) {
    this.services.set(name, service);
    for (const resolve of this.waiters.get(name) || []) resolve(service);
    this.waiters.delete(name);
  }

  use(name) {
    if (this.services.has(name)) return Promise.resolve(this.services.get(name));
    return new Promise((resolve) => {
      if (!this.waiters.has(name)) this.waiters.set(name, []);
      this.waiters.get(name).push(resolve);
    });
  }

  addPanel(panel) {
    this.panels.push({ page: "app", ...panel });
  }

  notice(text, kind = "info") {
    const el = document.getElementById("notice");
    el.textContent = text;
    el.dataset.kind = kind;
    el.hidden = !text;
    clearTimeout(this.noticeTimer);
    if (text) this.noticeTimer = setTimeout(() => (el.hidden = true), 6000);
  }

  // A user's display name (cached); falls back to a short id when the user
  // directory (GET /v1/users/{id}) is unavailable.
  async userName(id) {
    if (this.me && id === this.me.id) return this.me.display_name;
    if (!this.names.has(id)) {
      this.names.set(id, this.api.get(`/v1/users/${encodeURIComponent(id)}`)
        .then((u) => u.display_name)
        .catch(() => `user ${String(id).slice(0, 8)}`));
    }
    return this.names.get(id);
  }

  rememberName(id, name) {
    this.names.set(id, Promise.resolve(name));
  }

  async signedIn(pair) {
    this.api.set(pair);
    this.me = await this.api.get("/v1/users/me");
    this.renderTopbar();
    this.socket.start();
    this.mountPanels();
  }

  // Stop everything that could still use the tokens first, then end the session on
  // the server with the token kept aside.
  async signOut() {
    const token = this.api.access;
    this.api.clear();
    try {
      await this.api.request("POST", "/v1/auth/logout", {}, { auth: false, headers: { Authorization: `Bearer ${token}` } });
    } catch {
      /* the session ended locally either way */
    }
  }

  signedOut() {
    this.socket.stop();
    for (const panel of this.mounted) if (panel.unmount) panel.unmount();
    this.mounted = [];
    this.me = null;
    this.renderTopbar();
    this.emit("signed-out", {});
  }

  renderTopbar() {
    const me = document.getElementById("me");
    const nav = clear(document.getElementById("topnav"));
    me.textContent = this.me ? this.me.display_name : "";
    if (!this.me) return;
    if (this.me.role === "admin") {
      const [href, id, label, page] = this.page === "admin" ? ["/", "nav-client", "Client", "app"] : ["/admin", "nav-admin", "Admin", "admin"];
      nav.append(h("a", { href, id, onclick: (e) => {
        e.preventDefault();
        history.pushState({ page }, "", href);
        this.switchPage(page);
      } }, label));
    }
    nav.append(h("a", { href: "/docs", target: "_blank", rel: "noopener" }, "API docs"));
    nav.append(h("button", { id: "sign-out", type: "button", onclick: () => this.signOut() }, "Sign out"));
  }

  // Between the client and the console without a page load: the session (kept in
  // memory only) survives.
  switchPage(page) {
    for (const panel of this.mounted) if (panel.unmount) panel.unmount();
    this.mounted = [];
    this.page = page;
    this.renderTopbar();
    this.mountPanels();
  }

  mountPanels() {
    const root = clear(document.getElementById("root"));
    const sidebar = h("aside", { id: "sidebar" });
    const main = h("section", { id: "main" });
    root.append(h("div", { id: "layout", "data-page": this.page }, sidebar, main));
    const wanted = this.panels.filter((p) => p.page === this.page);
    if (!wanted.length) main.append(h("p", { class: "empty" }, "No plugin provides a panel for this page."));
    for (const panel of wanted) {
      try {
        panel.mount({ sidebar, main, root });
        this.mounted.push(panel);
      } catch (err) {
        console.warn(`panel ${panel.id} failed to mount`, err);
      }
    }
  }
}

export const app = new App();
window.addEventListener("popstate", () => {
  const page = location.pathname === "/admin" ? "admin" : "app";
  if (app.me && page !== app.page) app.switchPage(page);
});
app.socket.listen((type, data) => {
  if (type === "state") {
    const el = document.getElementById("conn-status");
    if (el) {
      el.dataset.state = data.state;
      el.textContent = data.state;
    }
  }
});
