// The admin console at /admin: a kernel panel over the /v1/admin API. Plugins add
// sections with `(await app.use("admin")).addSection({ id, title, render(el) })`.

import { app, clear, h } from "./app.js";

const sections = [];

// Button handlers report failures in the notice line (no unhandled rejections).
const safely = (fn) => (...args) =>
  Promise.resolve().then(() => fn(...args)).catch((err) => {
    if (!err.quiet) app.notice(err.message || String(err), "error");
  });
const SAMPLES = 30;

function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "never";
}

async function plugins(el) {
  const { plugins } = await app.api.get("/v1/admin/plugins");
  el.append(table(["plugin", "enabled", "version", "hooks", "panels"], plugins.map((p) =>
    h("tr", { class: "plugin", dataset: { name: p.name, enabled: String(p.enabled) } },
      h("td", {}, p.name, p.essential ? " (essential)" : ""),
      h("td", { class: "enabled" }, p.enabled ? "enabled" : "disabled"),
      h("td", {}, p.version),
      h("td", { class: "hooks" }, p.hooks.join(", ")),
      h("td", {}, p.panels.join(", "))))));
}

async function health(el) {
  const { ready, checks } = await app.api.get("/v1/admin/health");
  el.append(h("p", { id: "admin-ready", dataset: { ready: String(ready) } }, ready ? "All dependencies answer." : "Some dependencies fail."));
  el.append(table(["dependency", "status", "detail"], Object.entries(checks).map(([name, r]) =>
    h("tr", {}, h("td", {}, name), h("td", {}, r.status), h("td", {}, r.error || (r.seconds !== undefined ? `${r.seconds} s` : ""))))));
}

function drawChart(canvas, values) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  const max = Math.max(1, ...values);
  ctx.strokeStyle = "#2b6cb0";
  ctx.beginPath();
  values.forEach((v, i) => {
    const x = (i / Math.max(1, SAMPLES - 1)) * width;
    const y = height - (v / max) * (height - 4) - 2;
    if (i === 0) ctx.moveTo(x, y);
    else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

// The p99 of the requests between two samples, from cumulative histogram buckets:
// the upper bound of the first bucket holding 99 % of them.
function p99(before, after) {
  const bounds = Object.keys(after).filter((le) => le !== "+Inf").map(Number).sort((x, y) => x - y);
  const total = (after["+Inf"] || 0) - ((before || {})["+Inf"] || 0);
  if (total <= 0) return 0;
  for (const le of bounds) {
    const key = Object.keys(after).find((k) => Number(k) === le);
    if ((after[key] || 0) - ((before || {})[key] || 0) >= 0.99 * total) return le;
  }
  return bounds.length ? bounds[bounds.length - 1] : 0;
}

async function metrics(el) {
  const history = [];
  const grid = h("div", { class: "charts" });
  el.append(grid);
  const charts = {
    "requests/s": (a, b) => (b.metrics.requests_total - a.metrics.requests_total) / Math.max(0.001, b.at - a.at),
    "5xx errors/s": (a, b) => (b.metrics.request_errors_total - a.metrics.request_errors_total) / Math.max(0.001, b.at - a.at),
    "p99 latency (ms)": (a, b) => p99(a.latency_buckets, b.latency_buckets) * 1000,
    "WebSocket connections": (a, b) => b.metrics.websocket_connections,
    "fan-out frames/s": (a, b) => (b.metrics.websocket_messages_out_total - a.metrics.websocket_messages_out_total) / Math.max(0.001, b.at - a.at),
  };
  const boxes = Object.keys(charts).map((title) => {
    const canvas = h("canvas", { width: 220, height: 60 });
    const value = h("span", { class: "value" });
    grid.append(h("figure", {}, h("figcaption", {}, title, ": ", value), canvas));
    return { title, canvas, value };
  });
  const sample = async () => {
    if (!el.isConnected) return;
    try {
      history.push(await app.api.get("/v1/admin/metrics"));
    } catch {
      return;
    }
    while (history.length > SAMPLES + 1) history.shift();
    for (const box of boxes) {
      const values = [];
      for (let i = 1; i < history.length; i++) values.push(charts[box.title](history[i - 1], history[i]));
      box.value.textContent = values.length ? values[values.length - 1].toFixed(1) : "…";
      drawChart(box.canvas, values);
    }
    setTimeout(sample, 5000);
  };
  await sample();
}

async function config(el) {
  const { settings } = await app.api.get("/v1/admin/config");
  el.append(h("pre", { id: "admin-config" }, JSON.stringify(settings, null, 2)));
}

// Accounts: search, sign out everywhere, disable / enable, make admin / user, delete
// (a second click confirms). The server refuses changes to one's own account (409).
async function users(el) {
  const results = h("tbody");
  let query = "";
  const act = (fn) => safely(async () => {
    await fn();
    await load(query);
  });
  const row = (u) => {
    const self = app.me && u.id === app.me.id;
    const remove = h("button", { type: "button", class: "delete-user secondary", disabled: self }, "Delete");
    remove.addEventListener("click", act(async () => {
      if (remove.dataset.confirm !== "1") {
        remove.dataset.confirm = "1";
        remove.textContent = "Confirm delete";
        throw Object.assign(new Error(""), { quiet: true });
      }
      await app.api.delete(`/v1/admin/users/${u.id}`);
    }));
    return h("tr", { class: "user", dataset: { id: u.id, email: u.email, role: u.role, disabled: String(u.disabled) } },
      h("td", {}, u.email), h("td", {}, u.display_name), h("td", { class: "role" }, u.role),
      h("td", {}, u.email_verified ? "yes" : "no"), h("td", { class: "state" }, u.disabled ? "disabled" : "active"),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "sign-out-user secondary", onclick: safely(async (e) => {
          const r = await app.api.post(`/v1/admin/users/${u.id}/sign-out`);
          e.target.textContent = `${r.sessions_revoked} session(s) ended`;
        }) }, "Sign out everywhere"),
        h("button", { type: "button", class: "toggle-disabled secondary", disabled: self && !u.disabled,
          onclick: act(() => app.api.post(`/v1/admin/users/${u.id}/${u.disabled ? "enable" : "disable"}`)) },
        u.disabled ? "Enable" : "Disable"),
        h("button", { type: "button", class: "toggle-role secondary", disabled: self,
          onclick: act(() => app.api.put(`/v1/admin/users/${u.id}/role`, { role: u.role === "admin" ? "user" : "admin" })) },
        u.role === "admin" ? "Make user" : "Make admin"),
        remove));
  };
  const load = async (q) => {
    query = q;
    const { users } = await app.api.get(`/v1/admin/users?q=${encodeURIComponent(q)}`);
    results.replaceChildren(...users.map(row));
  };
  const input = h("input", { type: "search", name: "q", placeholder: "email or name prefix" });
  el.append(
    h("form", { id: "user-search", onsubmit: (e) => { e.preventDefault(); safely(load)(input.value); } }, input, h("button", { type: "submit" }, "Search")),
    h("table", { id: "admin-users" }, h("thead", {}, h("tr", {}, ["email", "name", "role", "verified", "state", ""].map((t) => h("th", {}, t)))), results));
  await load("");
}

async function jobs(el) {
  const body = h("tbody");
  const render = async () => {
    const { jobs } = await app.api.get("/v1/admin/jobs");
    body.replaceChildren(...jobs.map((j) => h("tr", { class: "job", dataset: { name: j.name } },
      h("td", {}, j.name), h("td", {}, j.plugin), h("td", {}, `${j.interval} s`),
      h("td", { class: "last-run", dataset: { status: j.last_run ? j.last_run.status : "" } },
        j.last_run ? `${when(j.last_run.at)} · ${j.last_run.status} · result ${j.last_run.result}` : "never"),
      h("td", {}, h("button", { type: "button", class: "run-job", onclick: safely(async () => {
        await app.api.post(`/v1/admin/jobs/${encodeURIComponent(j.name)}/run`);
        await render();
      }) }, "Run now")))));
  };
  el.append(h("table", { id: "admin-jobs" }, h("thead", {}, h("tr", {}, ["job", "plugin", "interval", "last run", ""].map((t) => h("th", {}, t)))), body));
  await render();
}

async function audit(el) {
  const { entries } = await app.api.get("/v1/admin/audit");
  el.append(h("ol", { id: "admin-audit" }, entries.slice(0, 50).map((e) =>
    h("li", {}, `${when(e.at)} ${e.action}${e.target ? ` ${e.target}` : ""} by ${e.actor}`))));
}

const builtIn = [
  { id: "plugins", title: "Plugins", render: plugins },
  { id: "health", title: "Dependencies", render: health },
  { id: "metrics", title: "Metrics", render: metrics },
  { id: "users", title: "Users", render: users },
  { id: "jobs", title: "Jobs", render: jobs },
  { id: "config", title: "Configuration (redacted)", render: config },
  { id: "audit", title: "Audit log", render: audit },
];

app.provide("admin", { addSection: (section) => sections.push(section) });

app.addPanel({
  id: "admin",
  page: "admin",
  mount({ sidebar, main }) {
    if (!app.me || app.me.role !== "admin") {
      main.append(h("p", { id: "admin-denied", class: "error" }, "The admin console is for administrators."));
      return;
    }
    const nav = h("nav", { id: "admin-nav" });
    sidebar.append(nav);
    for (const section of [...builtIn, ...sections]) {
      const body = h("div", { class: "section-body" });
      main.append(h("section", { id: `admin-${section.id}`, class: "admin-section" }, h("h2", {}, section.title), body));
      nav.append(h("a", { href: `#admin-${section.id}` }, section.title));
      Promise.resolve(section.render(body)).catch((err) => {
        clear(body).append(h("p", { class: "error" }, err.message || String(err)));
      });
    }
  },
});
