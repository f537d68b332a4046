// Push's web panel: Web Push for this browser (a service worker subscribes with the
// server's VAPID public key and the subscription is registered as a `webpush` device),
// a test notification, and — on the admin page — the dead letters (retry / drop).

import { app, h } from "/static/web/app.js";

const SW_URL = "/static/plugins/push/sw.js";
let box = null;
let device = null; // the device id registered from this page

function b64urlToBytes(text) {
  const pad = "=".repeat((4 - (text.length % 4)) % 4);
  const raw = atob((text + pad).replace(/-/g, "+").replace(/_/g, "/"));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function supported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function status(text, state) {
  const el = document.getElementById("push-status");
  if (!el) return;
  el.textContent = text;
  el.dataset.state = state;
}

function activated(registration) {
  if (registration.active) return Promise.resolve(registration);
  const worker = registration.installing || registration.waiting;
  return new Promise((resolve, reject) => {
    worker.addEventListener("statechange", () => {
      if (worker.state === "activated") resolve(registration);
      if (worker.state === "redundant") reject(new Error("the service worker could not start"));
    });
  });
}

async function enable() {
  const { public_key: key } = await app.api.get("/v1/push/webpush/vapid-public-key");
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    status("notifications are blocked in this browser", "denied");
    return;
  }
  // the worker's scope is its own folder (the page is not under it, so
  // `navigator.serviceWorker.ready` would never resolve): wait for it to activate
  const registration = await activated(await navigator.serviceWorker.register(SW_URL, { scope: "/static/plugins/push/" }));
  let subscription = await registration.pushManager.getSubscription();
  if (!subscription) {
    subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64urlToBytes(key) });
  }
  const saved = await app.api.post("/v1/push/devices", { platform: "webpush", token: JSON.stringify(subscription) });
  device = saved.id;
  status("notifications are on for this browser", "on");
  draw();
}

async function disable() {
  const registration = await navigator.serviceWorker.getRegistration("/static/plugins/push/");
  const subscription = registration && (await registration.pushManager.getSubscription());
  if (subscription) await subscription.unsubscribe();
  if (device) await app.api.delete(`/v1/push/devices/${device}`);
  device = null;
  status("notifications are off for this browser", "off");
  draw();
}

function draw() {
  if (!box) return;
  const attempt = (fn) => async () => {
    try {
      await fn();
    } catch (err) {
      status(err.code === "webpush_not_configured" ? "Web Push is not configured on this server" : `could not change notifications: ${err.message}`, "error");
    }
  };
  box.replaceChildren(h("strong", {}, "Notifications"),
    h("p", { id: "push-status", class: "hint", dataset: { state: device ? "on" : "off" } },
      supported() ? (device ? "on for this browser" : "off for this browser") : "this browser has no Web Push"),
    supported() && !device ? h("button", { type: "button", id: "push-enable", class: "secondary", onclick: attempt(enable) }, "Turn on") : null,
    device ? h("button", { type: "button", id: "push-disable", class: "secondary", onclick: attempt(disable) }, "Turn off") : null,
    h("button", { type: "button", id: "push-test", class: "secondary", onclick: attempt(async () => {
      const r = await app.api.post("/v1/push/test");
      status(`test sent to ${r.queued} device(s)`, device ? "on" : "off");
    }) }, "Send a test"));
}

// -- admin: dead letters ---------------------------------------------------------------
async function deadLetters(el) {
  const body = h("tbody");
  const load = async () => {
    const { dead_letters: rows } = await app.api.get("/v1/admin/push/dead-letters?limit=100");
    body.replaceChildren(...rows.map((d) => h("tr", { class: "dead-letter", dataset: { id: d.id } },
      h("td", {}, d.provider), h("td", {}, d.user_id), h("td", {}, String(d.attempts)),
      h("td", { class: "error" }, d.last_error || ""), h("td", {}, d.failed_at || ""),
      h("td", {},
        h("button", { type: "button", class: "retry-dead-letter secondary", onclick: () => act(() => app.api.post("/v1/admin/push/dead-letters/retry", { ids: [d.id] })) }, "Retry"),
        h("button", { type: "button", class: "drop-dead-letter secondary", onclick: () => act(() => app.api.delete(`/v1/admin/push/dead-letters/${d.id}`)) }, "Drop")))));
    if (!rows.length) body.append(h("tr", {}, h("td", { colspan: 6, class: "empty" }, "no dead letters")));
  };
  const act = async (fn) => {
    try {
      await fn();
      await load();
    } catch (err) {
      app.notice(err.message, "error");
    }
  };
  el.append(h("table", { id: "push-dead-letters" },
    h("thead", {}, h("tr", {}, ["provider", "user", "attempts", "last error", "failed at", ""].map((t) => h("th", {}, t)))), body),
  h("button", { type: "button", id: "retry-all-dead-letters", class: "secondary", onclick: () => act(() => app.api.post("/v1/admin/push/dead-letters/retry", { all: true })) }, "Retry all"));
  await load();
}

app.addPanel({
  id: "push",
  mount({ sidebar }) {
    box = h("section", { id: "push-settings", class: "push-settings" });
    sidebar.append(box);
    draw();
  },
  unmount() {
    box = null;
    device = null;
  },
});

app.use("admin").then((admin) => admin.addSection({ id: "push-dead-letters", title: "Push dead letters", render: deadLetters }));
