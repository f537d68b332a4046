// AI's web panel: opt-in (a switch in the sidebar), a "Summarize" composer action that
// shows the conversation's summary, and smart replies as one-click chips for the
// latest incoming message (sent through chat's own composer, so the send is idempotent
// like any other). Nothing is read before the user opts in (the server refuses with
// 403 ai_not_enabled); encrypted messages are never read by the server.

import { app, h } from "/static/web/app.js";

let settings = null; // the caller's /v1/ai/settings
let box = null; // the sidebar switch
let chatApi = null;
let suggestTimer = null;
let suggestedFor = new Map(); // conversation id → seq the chips answer
let chipsGeneration = 0; // bumped whenever chips go stale: an answer asked for before is dropped

const base = (id) => `/v1/ai/conversations/${encodeURIComponent(id)}`;

async function loadSettings() {
  try {
    settings = await app.api.get("/v1/ai/settings");
  } catch {
    settings = null;
  }
  drawSwitch();
}

function drawSwitch() {
  if (!box) return;
  const on = Boolean(settings && settings.enabled);
  const input = h("input", { type: "checkbox", id: "ai-enabled", checked: on, disabled: !settings });
  input.addEventListener("change", async () => {
    input.disabled = true;
    try {
      settings = await app.api.put("/v1/ai/settings", { enabled: input.checked });
    } catch (err) {
      app.notice(err.message, "error");
    }
    drawSwitch();
    if (settings && settings.enabled) scheduleSuggestions();
    else clearChips();
  });
  box.replaceChildren(h("label", { class: "ai-switch" }, input, " AI assistant (summaries, reply suggestions)"),
    h("p", { class: "hint" }, on ? "Encrypted messages are never read." : "Off: nothing is sent to the assistant."));
}

function panelArea(chat) {
  const ui = chat.ui();
  if (!ui) return null;
  let area = document.getElementById("ai-area");
  if (!area || !area.isConnected) {
    area = h("div", { id: "ai-area" }, h("div", { id: "ai-replies", class: "chips" }), h("div", { id: "ai-summary-box" }));
    ui.input.closest("form").before(area);
  }
  return area;
}

async function summarize(conversationId) {
  const area = panelArea(chatApi);
  const out = area.querySelector("#ai-summary-box");
  out.replaceChildren(h("p", { class: "hint", id: "ai-summary-status" }, "Summarizing…"));
  try {
    const s = await app.api.post(`${base(conversationId)}/summary`, {});
    const lines = String(s.summary || "").split("\n").filter(Boolean);
    out.replaceChildren(h("div", { id: "ai-summary", class: "ai-summary" },
      h("strong", {}, "Summary"),
      h("ul", {}, lines.map((line) => h("li", {}, line))),
      h("p", { class: "hint" }, `${s.messages_read} message(s) read` +
        (s.encrypted_skipped ? `, ${s.encrypted_skipped} encrypted left unread` : "")),
      h("button", { type: "button", class: "secondary", onclick: () => out.replaceChildren() }, "Close")));
  } catch (err) {
    out.replaceChildren(h("p", { class: "error", id: "ai-summary-error", dataset: { code: err.code || "" } },
      err.code === "ai_not_enabled" ? "Turn the AI assistant on first (sidebar)." : err.message));
  }
}

function clearChips() {
  chipsGeneration += 1;
  clearTimeout(suggestTimer);
  const chips = document.getElementById("ai-replies");
  if (chips) chips.replaceChildren();
}

async function suggest(conversationId) {
  if (!settings || !settings.enabled || !chatApi || chatApi.current() !== conversationId) return;
  const generation = chipsGeneration;
  let answer;
  try {
    answer = await app.api.post(`${base(conversationId)}/smart-replies`, { count: 3 });
  } catch (err) {
    if (err.code === "ai_not_enabled") await loadSettings();
    return; // suggestions are a nicety: no error banner
  }
  // a newer message, or the user's own reply, arrived while this was asked: not for now
  if (generation !== chipsGeneration || chatApi.current() !== conversationId) return;
  const area = panelArea(chatApi);
  if (!area) return;
  suggestedFor.set(conversationId, answer.based_on_seq);
  area.querySelector("#ai-replies").replaceChildren(...(answer.replies || []).map((text) =>
    h("button", { type: "button", class: "chip secondary", onclick: () => sendReply(text) }, text)));
}

function sendReply(text) {
  const ui = chatApi && chatApi.ui();
  if (!ui) return;
  ui.input.value = text;
  ui.input.closest("form").requestSubmit();
  clearChips();
}

function scheduleSuggestions() {
  chipsGeneration += 1;
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(() => {
    const id = chatApi && chatApi.current();
    if (id) suggest(id);
  }, 300);
}

app.on("chat.message", (m) => {
  if (!settings || !settings.enabled || !chatApi || !app.me) return;
  if (m.conversation_id !== chatApi.current()) return;
  if (m.sender_id === app.me.id) clearChips();
  else if (m.message_type === "text" && !m.is_encrypted) scheduleSuggestions();
});

app.addPanel({
  id: "ai",
  mount({ sidebar }) {
    box = h("section", { id: "ai-settings", class: "ai-settings" });
    sidebar.append(box);
    loadSettings();
  },
  unmount() {
    box = null;
    settings = null;
    suggestedFor = new Map();
    clearTimeout(suggestTimer);
  },
});

app.use("chat").then((chat) => {
  chatApi = chat;
  chat.addComposerAction({ id: "ai-summarize", label: "Summarize", run: (id) => summarize(id) });
  chat.addComposerAction({ id: "ai-suggest", label: "Suggest replies", run: (id) => suggest(id) });
});
