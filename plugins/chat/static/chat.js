// Chat's web panel: conversation list, conversation view, composer.
//
// Delivery rules this file keeps:
//  * every message is shown once: the timeline is keyed by message id, and a send
//    carries a client_id (the idempotency key) that is reused for every retry;
//  * no gap: each conversation remembers the highest seq it has; a live event that
//    skips a seq, a reconnect and a `resync` all trigger a catch-up from history
//    (newest first, paged by cursor, until the remembered seq is reached);
//  * message text is inserted as text nodes only (h() in the shell).
//
// Other panels extend chat through `await app.use("chat")`:
//   registerRenderer(message_type, (message, element) => void)
//   addComposerAction({ id, label, run(conversationId) })

import { app, clear, h } from "/static/web/app.js";
import { time } from "/static/web/dom.js";
import { conversationPath, Outbox, Timeline } from "./delivery.js";

// An event handler whose failure is shown to the user instead of escaping as an
// unhandled rejection.
const safely = (fn) => (...args) =>
  Promise.resolve().then(() => fn(...args)).catch((err) => app.notice(err.message || String(err), "error"));
const TYPING_REPEAT_MS = 3000;

const conversations = new Map(); // id → conversation (list fields + details)
const timelines = new Map(); // id → Timeline
const renderers = new Map();
const composerActions = [];
const typingNow = new Map(); // conversation id → Map(user id → expiry ms)
const outbox = new Outbox(app.socket, { delivered: (m) => received(m), changed: () => renderMessages() });
let current = null;
let ui = null;
let lastTypingSent = 0;

function timeline(id) {
  if (!timelines.has(id)) timelines.set(id, new Timeline(id));
  return timelines.get(id);
}

const path = conversationPath;
const pageSize = () => app.config.history_page || 50;

// -- conversations ------------------------------------------------------------------

async function loadConversations() {
  const { conversations: found } = await app.api.get("/v1/conversations");
  const seen = new Set();
  for (const c of found) {
    seen.add(c.id);
    conversations.set(c.id, { ...(conversations.get(c.id) || {}), ...c });
  }
  for (const id of [...conversations.keys()]) if (!seen.has(id)) conversations.delete(id);
  renderList();
  await Promise.all(found.slice(0, 50).map((c) => loadDetails(c.id).catch(() => {})));
  renderList();
}

async function loadDetails(id) {
  const details = await app.api.get(path(id));
  const conv = { ...(conversations.get(id) || {}), ...details };
  conv.reads = Object.fromEntries(details.participants.map((p) => [p.user_id, p.last_read_seq]));
  conv.online = Object.fromEntries(details.participants.map((p) => [p.user_id, p.online]));
  conversations.set(id, conv);
  if (!conv.preview && conv.last_seq > 0) {
    const { messages } = await app.api.get(path(id, "/messages?limit=1"));
    if (messages.length) conv.preview = messages[0];
  }
  conv.title = await titleOf(conv);
  return conv;
}

async function titleOf(conv) {
  if (conv.type === "group") return conv.name || "Group";
  const other = (conv.participants || []).find((p) => p.user_id !== app.me.id);
  return other ? app.userName(other.user_id) : "Direct conversation";
}

function activity(conv) {
  return conv.last_message_at || conv.created_at || "";
}

function previewText(message) {
  if (!message) return "";
  if (message.deleted) return "message deleted";
  return message.message_type === "text" ? message.content : `[${message.message_type}] ${message.content || ""}`;
}

function renderList() {
  if (!ui) return;
  const sorted = [...conversations.values()].sort((a, b) => activity(b).localeCompare(activity(a)));
  ui.list.replaceChildren(...sorted.map((c) => h("li", {
    class: `conversation${c.id === current ? " active" : ""}`,
    dataset: { id: c.id, type: c.type },
    onclick: safely(() => open(c.id)),
  },
  h("span", { class: "title" }, c.title || (c.type === "group" ? c.name || "Group" : "…")),
  c.unread_count > 0 ? h("span", { class: "unread", dataset: { count: String(c.unread_count) } }, String(c.unread_count)) : null,
  h("span", { class: "preview" }, previewText(c.preview)))));
  if (!sorted.length) ui.list.append(h("li", { class: "empty" }, "No conversations yet."));
}

async function findUser(email) {
  let found;
  try {
    found = await app.api.get(`/v1/users?email=${encodeURIComponent(email.trim())}`);
  } catch (err) {
    if (err.status === 404 || err.status === 405) throw new Error("this server has no user directory (GET /v1/users?email=)");
    throw err;
  }
  if (!found.users.length) throw new Error(`nobody has the address ${email.trim()}`);
  const user = found.users[0];
  app.rememberName(user.id, user.display_name);
  return user;
}

async function startDirect(email) {
  const user = await findUser(email);
  const conv = await app.api.post("/v1/conversations", { type: "direct", participant_ids: [user.id] });
  conversations.set(conv.id, { ...(conversations.get(conv.id) || {}), ...conv });
  await loadDetails(conv.id);
  renderList();
  await open(conv.id);
}

async function createGroup(name, emails) {
  const ids = [];
  for (const email of emails.split(",").map((e) => e.trim()).filter(Boolean)) ids.push((await findUser(email)).id);
  const conv = await app.api.post("/v1/conversations", { type: "group", name, participant_ids: ids });
  conversations.set(conv.id, { ...conv });
  await loadDetails(conv.id);
  renderList();
  await open(conv.id);
}

// -- the open conversation --------------------------------------------------------------

async function open(id) {
  if (current !== id) {
    elements.clear();
    if (ui) ui.members.hidden = true;
  }
  current = id;
  const conv = conversations.get(id) || (await loadDetails(id));
  renderList();
  renderHeader(conv);
  const tl = timeline(id);
  if (!tl.loaded) await tl.loadOlder(app.api, pageSize());
  else await tl.catchUp(app.api, pageSize());
  renderMessages({ stick: true });
  markRead();
  ui.input.focus();
}

function renderHeader(conv) {
  const others = (conv.participants || []).filter((p) => p.user_id !== app.me.id);
  const online = others.some((p) => conv.online && conv.online[p.user_id]);
  clear(ui.header).append(
    h("h2", { id: "conversation-title" }, conv.title || ""),
    conv.type === "direct" ? h("span", { id: "presence", dataset: { online: String(online) } }, online ? "online" : "offline") : null,
    h("button", { type: "button", id: "show-members", class: "secondary", onclick: safely(() => renderMembers(conv)) }, `Members (${(conv.participants || []).length})`),
    h("button", { type: "button", id: "leave", class: "secondary", onclick: safely(() => leave(conv.id)) }, "Leave"));
}

async function renderMembers(conv) {
  const fresh = await loadDetails(conv.id);
  const mine = fresh.participants.find((p) => p.user_id === app.me.id);
  const canManage = fresh.type === "group" && mine && ["owner", "admin"].includes(mine.role);
  const rows = await Promise.all(fresh.participants.map(async (p) => h("li", { class: "member", dataset: { id: p.user_id, online: String(!!fresh.online[p.user_id]) } },
    h("span", { class: "name" }, await app.userName(p.user_id)), ` (${p.role}) `,
    h("span", { class: "presence" }, fresh.online[p.user_id] ? "online" : "offline"),
    canManage && p.user_id !== app.me.id ? h("button", { type: "button", class: "remove-member secondary", onclick: safely(async () => {
      await app.api.delete(path(fresh.id, `/participants/${encodeURIComponent(p.user_id)}`));
      await renderMembers(fresh);
    }) }, "Remove") : null)));
  // a re-render (someone joined or left) keeps what is being typed
  const typed = ui.members.querySelector("#add-member input");
  const input = h("input", { type: "email", name: "email", placeholder: "email address", required: true, value: typed ? typed.value : "" });
  const error = h("p", { class: "error" });
  clear(ui.members).append(h("ul", { id: "member-list" }, rows),
    canManage ? h("form", { id: "add-member", onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      try {
        const user = await findUser(input.value);
        await app.api.post(path(fresh.id, "/participants"), { user_id: user.id });
        renderMembers(fresh);
      } catch (err) {
        error.textContent = err.message;
      }
    } }, input, h("button", { type: "submit" }, "Add"), error) : null);
  ui.members.hidden = false;
}

async function leave(id) {
  await app.api.delete(path(id, `/participants/${encodeURIComponent(app.me.id)}`));
  forget(id);
}

function forget(id) {
  conversations.delete(id);
  elements.clear();
  timelines.delete(id);
  if (current === id) {
    current = null;
    clear(ui.header);
    clear(ui.messages);
    ui.members.hidden = true;
  }
  renderList();
}

function receiptFor(conv, message) {
  if (message.sender_id !== app.me.id || !conv || !conv.reads) return null;
  const read = Object.entries(conv.reads).some(([uid, seq]) => uid !== app.me.id && seq >= message.seq);
  return h("span", { class: "receipt", dataset: { state: read ? "read" : "sent" } }, read ? "read" : "sent");
}

function messageElement(conv, m) {
  const mine = m.sender_id === app.me.id;
  const el = h("li", { class: `message${mine ? " mine" : ""}${m.deleted ? " deleted" : ""}`, dataset: { id: m.id, seq: String(m.seq), type: m.message_type } });
  const sender = h("span", { class: "sender" }, "");
  app.userName(m.sender_id).then((name) => (sender.textContent = name));
  const body = h("span", { class: "content" });
  if (m.deleted) body.textContent = "message deleted";
  else if (renderers.has(m.message_type)) renderers.get(m.message_type)(m, body);
  else body.textContent = m.content;
  el.append(sender, body, h("span", { class: "time" }, time(m.created_at)),
    m.edited_at && !m.deleted ? h("span", { class: "edited" }, "(edited)") : null, receiptFor(conv, m));
  if (mine && !m.deleted && m.message_type === "text") {
    el.append(h("span", { class: "actions" },
      h("button", { type: "button", class: "edit secondary", onclick: () => editInPlace(m, el, body) }, "Edit"),
      h("button", { type: "button", class: "delete secondary", onclick: safely(() => removeMessage(m)) }, "Delete")));
  }
  return el;
}

function pendingElement(entry) {
  return h("li", { class: `message mine pending${entry.state === "failed" ? " failed" : ""}`, dataset: { clientId: entry.client_id } },
    h("span", { class: "sender" }, app.me.display_name),
    h("span", { class: "content" }, entry.content),
    h("span", { class: "receipt", dataset: { state: entry.state } }, entry.state === "failed" ? `not sent: ${entry.error}` : "sending…"));
}

// Keyed update: an unchanged message keeps its element (and an open editor its focus).
const elements = new Map(); // message id or client id → {sig, el}

function cached(key, sig, make) {
  const hit = elements.get(key);
  if (hit && hit.sig === sig) return hit.el;
  const el = make();
  elements.set(key, { sig, el });
  return el;
}

function signature(conv, m) {
  const receipt = receiptFor(conv, m);
  return JSON.stringify([m.content, m.edited_at, m.deleted, receipt && receipt.dataset.state, polled(m)]);
}

function polled(m) {
  return renderers.has(m.message_type) ? m.message_type : "";
}

function renderMessages({ stick = false, keepOffset = false } = {}) {
  if (!ui || !current) return;
  const box = ui.scroller;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  const fromBottom = box.scrollHeight - box.scrollTop;
  const tl = timeline(current);
  const conv = conversations.get(current);
  const delivered = new Set();
  for (const m of tl.byId.values()) if (m.metadata && m.metadata.client_id) delivered.add(m.metadata.client_id);
  const wanted = tl.sorted().map((m) => cached(m.id, signature(conv, m), () => messageElement(conv, m)));
  for (const entry of outbox.pending(current)) {
    if (delivered.has(entry.client_id)) continue;
    wanted.push(cached(entry.client_id, `${entry.state}:${entry.error}`, () => pendingElement(entry)));
  }
  ui.older.hidden = tl.complete;
  const list = ui.messages;
  wanted.forEach((el, i) => {
    if (list.children[i] !== el) list.insertBefore(el, list.children[i] || null);
  });
  while (list.children.length > wanted.length) list.lastElementChild.remove();
  if (keepOffset) box.scrollTop = box.scrollHeight - fromBottom;
  else if (stick || atBottom) box.scrollTop = box.scrollHeight;
}

function editInPlace(m, el, body) {
  const input = h("input", { type: "text", class: "edit-input", value: m.content });
  const form = h("form", { class: "edit-form", onsubmit: safely(async (e) => {
    e.preventDefault();
    received(await app.api.patch(path(m.conversation_id, `/messages/${m.id}`), { content: input.value }));
  }) }, input, h("button", { type: "submit" }, "Save"));
  body.replaceWith(form);
  input.focus();
}

async function removeMessage(m) {
  received(await app.api.delete(path(m.conversation_id, `/messages/${m.id}`)));
}

// -- sending: an outbox retried over reconnects with the same client_id -------------

function send(conversationId, content) {
  outbox.add(conversationId, content);
  renderMessages({ stick: true });
  sendTyping("stop");
  outbox.flush();
}

function sendTyping(state) {
  if (!current || !app.socket.connected) return;
  const now = Date.now();
  if (state === "start" && now - lastTypingSent < TYPING_REPEAT_MS) return;
  lastTypingSent = state === "start" ? now : 0;
  app.socket.request("chat.typing", { conversation_id: current, state }).catch(() => {});
}

let readTimer = null;
function markRead() {
  clearTimeout(readTimer);
  readTimer = setTimeout(async () => {
    if (!current || document.visibilityState === "hidden") return;
    const conv = conversations.get(current);
    const newest = timeline(current).sorted().pop();
    if (!conv || !newest) return;
    if ((conv.reads || {})[app.me.id] >= newest.seq && !conv.unread_count) return;
    try {
      await app.api.post(path(current, "/read"), { message_id: newest.id });
      conv.unread_count = 0;
      conv.reads = { ...(conv.reads || {}), [app.me.id]: newest.seq };
      renderList();
    } catch {
      /* retried with the next message */
    }
  }, 150);
}

// -- live events ------------------------------------------------------------------------

function received(message) {
  const tl = timeline(message.conversation_id);
  const isNew = !tl.byId.has(message.id);
  const gap = tl.loaded && message.seq > tl.maxSeq + 1;
  tl.add(message);
  const conv = conversations.get(message.conversation_id);
  if (!conv) {
    loadConversations().catch(() => {});
    return;
  }
  if (!conv.preview || message.seq >= conv.preview.seq) conv.preview = message;
  if (isNew && message.seq > (conv.last_seq || 0)) {
    if (message.sender_id !== app.me.id && message.conversation_id !== current) {
      conv.unread_count = (conv.unread_count || 0) + 1;
    }
    conv.last_seq = message.seq;
    conv.last_message_at = message.created_at;
  }
  renderList();
  if (gap) tl.catchUp(app.api, pageSize()).then(() => renderMessages()).catch(() => {});
  if (message.conversation_id === current) {
    renderMessages();
    if (message.sender_id !== app.me.id) markRead();
  }
}

function onTyping(data) {
  if (data.user_id === app.me.id) return;
  if (!typingNow.has(data.conversation_id)) typingNow.set(data.conversation_id, new Map());
  const who = typingNow.get(data.conversation_id);
  if (data.state === "start") who.set(data.user_id, Date.now() + (data.expires_in || 6) * 1000);
  else who.delete(data.user_id);
  renderTyping();
}

async function renderTyping() {
  if (!ui) return;
  const who = typingNow.get(current) || new Map();
  const now = Date.now();
  for (const [uid, until] of who) if (until < now) who.delete(uid);
  const names = await Promise.all([...who.keys()].map((uid) => app.userName(uid)));
  ui.typing.textContent = names.length ? `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…` : "";
  ui.typing.dataset.active = String(names.length > 0);
}

function onRead(data) {
  const conv = conversations.get(data.conversation_id);
  if (!conv) return;
  conv.reads = { ...(conv.reads || {}), [data.user_id]: Math.max(data.seq, (conv.reads || {})[data.user_id] || 0) };
  if (data.conversation_id === current) renderMessages();
}

function onPresence(data) {
  const conv = conversations.get(data.conversation_id);
  if (!conv) return;
  conv.online = { ...(conv.online || {}), [data.user_id]: data.status === "online" };
  if (data.conversation_id === current) renderHeader(conv);
}

async function onMembership(data) {
  if (data.user_id === app.me.id && data.type === "removed") {
    forget(data.conversation_id);
    return;
  }
  if (!conversations.has(data.conversation_id)) {
    await loadConversations();
    return;
  }
  const conv = await loadDetails(data.conversation_id);
  if (data.conversation_id === current) {
    renderHeader(conv);
    if (!ui.members.hidden) renderMembers(conv);
  }
  renderList();
}

// After a reconnect or a resync: refresh the list, catch up every loaded timeline,
// then send what waited in the outbox (same client_ids: no duplicates).
async function resume() {
  try {
    await loadConversations();
    await Promise.all([...timelines.values()].map((tl) => tl.catchUp(app.api, pageSize())));
  } catch {
    return; // the next reconnect tries again
  }
  renderMessages();
  markRead();
  outbox.flush();
}

// -- mount --------------------------------------------------------------------------------

function mount({ sidebar, main }) {
  const directInput = h("input", { type: "email", name: "email", placeholder: "their exact email", required: true });
  const groupName = h("input", { type: "text", name: "name", placeholder: "group name", required: true, maxlength: 200 });
  const groupEmails = h("input", { type: "text", name: "emails", placeholder: "emails, comma separated" });
  const sideError = h("p", { class: "error", id: "sidebar-error" });
  const guard = (work) => async (e) => {
    e.preventDefault();
    sideError.textContent = "";
    try {
      await work();
      e.target.reset();
    } catch (err) {
      sideError.textContent = err.message;
    }
  };
  const list = h("ul", { id: "conversation-list" });
  sidebar.append(
    h("form", { id: "new-direct", onsubmit: guard(() => startDirect(directInput.value)) }, h("label", {}, "Message someone", directInput), h("button", { type: "submit" }, "Start")),
    h("form", { id: "new-group", onsubmit: guard(() => createGroup(groupName.value, groupEmails.value)) }, h("label", {}, "New group", groupName, groupEmails), h("button", { type: "submit" }, "Create")),
    sideError, list);

  const input = h("textarea", { id: "composer-input", rows: 2, placeholder: "Write a message", maxlength: 4000,
    oninput: () => sendTyping("start"),
    onkeydown: (e) => {
      if (e.key === "Enter" && !e.shiftKey) {
        e.preventDefault();
        composer.requestSubmit();
      }
    } });
  const actions = h("span", { class: "composer-actions" });
  const composer = h("form", { id: "composer", onsubmit: (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text || !current) return;
    input.value = "";
    send(current, text);
  } }, input, h("button", { type: "submit", id: "send" }, "Send"), actions);
  for (const action of composerActions) actions.append(actionButton(action));
  const older = h("button", { type: "button", id: "load-older", class: "secondary", hidden: true, onclick: safely(async () => {
    await timeline(current).loadOlder(app.api, pageSize());
    renderMessages({ keepOffset: true });
  }) }, "Load older messages");
  const messages = h("ul", { id: "messages" });
  const scroller = h("div", { id: "message-scroller" }, older, messages);
  const header = h("header", { id: "conversation-header" });
  const members = h("div", { id: "members", hidden: true });
  const typing = h("p", { id: "typing", "aria-live": "polite" });
  main.append(h("div", { id: "chat" }, header, members, scroller, typing, composer));
  ui = { list, header, members, messages, scroller, older, input, typing, actions };
  renderList();
  loadConversations().catch((err) => app.notice(err.message, "error"));
  typingTimer = setInterval(renderTyping, 1000);
}

let typingTimer = null;

function actionButton(action) {
  return h("button", { type: "button", class: "secondary", id: action.id, onclick: () => current && action.run(current) }, action.label);
}

function unmount() {
  clearInterval(typingTimer);
  ui = null;
  current = null;
  conversations.clear();
  timelines.clear();
  typingNow.clear();
  elements.clear();
  outbox.clear();
}

app.on("chat.message", received);
app.on("chat.message_updated", received);
app.on("chat.message_deleted", received);
app.on("chat.typing", onTyping);
app.on("chat.read", onRead);
app.on("presence.update", onPresence);
app.on("conversation.participant_added", (d) => onMembership({ ...d, type: "added" }));
app.on("conversation.participant_removed", (d) => onMembership({ ...d, type: "removed" }));
app.on("conversation.updated", (d) => onMembership({ ...d, conversation_id: d.conversation_id || d.id }));
app.on("open", () => resume());
app.on("resync", () => resume());

app.addPanel({ id: "chat", mount, unmount });

app.provide("chat", {
  registerRenderer(type, render) {
    renderers.set(type, render);
  },
  addComposerAction(action) {
    composerActions.push(action);
    if (ui) ui.actions.append(actionButton(action));
  },
  current: () => current,
  ui: () => ui,
});
