// Polls' web panel: a "Poll" composer action and a renderer for chat messages of
// type "poll" that shows live results (poll.updated / poll.closed events).

import { app, h } from "/static/web/app.js";

const cards = new Map(); // poll id → Set of mounted card elements
const polls = new Map(); // poll id → latest poll view
const mine = new Map(); // poll id → my option ids (events carry no viewer)
const drafts = new Map(); // poll id → options ticked but not yet sent (survive re-renders)

function remember(poll) {
  const known = polls.get(poll.id);
  if (known && known.version > poll.version) return;
  polls.set(poll.id, poll);
  if (Array.isArray(poll.my_votes) && poll.my_votes.length) mine.set(poll.id, poll.my_votes);
  for (const el of cards.get(poll.id) || []) if (el.isConnected) draw(el, poll);
}

function draw(el, poll) {
  const voted = new Set(mine.get(poll.id) || []);
  const chosen = drafts.get(poll.id) || voted;
  const closed = poll.status === "closed";
  const kind = poll.allow_multiple ? "checkbox" : "radio";
  const error = h("span", { class: "error" });
  const form = h("form", { class: "poll-vote",
    onchange: () => drafts.set(poll.id, new Set([...form.querySelectorAll("input:checked")].map((i) => i.value))),
    onsubmit: async (e) => {
      e.preventDefault();
      const ids = [...form.querySelectorAll("input:checked")].map((i) => i.value);
      if (!ids.length) {
        error.textContent = "choose an option first";
        return;
      }
      try {
        const updated = await app.api.post(`/v1/polls/${poll.id}/votes`, { option_ids: ids });
        mine.set(poll.id, ids);
        drafts.delete(poll.id);
        remember(updated);
      } catch (err) {
        error.textContent = err.message;
      }
    } });
  for (const option of poll.options) {
    form.append(h("label", { class: "poll-option", dataset: { optionId: option.id } },
      h("input", { type: kind, name: `poll-${poll.id}`, value: option.id, checked: chosen.has(option.id), disabled: closed }),
      h("span", { class: "option-text" }, option.text),
      h("span", { class: "votes", dataset: { votes: String(option.votes ?? "") } }, option.votes === null ? "" : `${option.votes} vote${option.votes === 1 ? "" : "s"}`)));
  }
  if (!closed) form.append(h("button", { type: "submit", class: "vote" }, voted.size ? "Change vote" : "Vote"), error);
  const controls = [];
  if (!closed && poll.creator_id === app.me.id) {
    controls.push(h("button", { type: "button", class: "close-poll secondary", onclick: () => {
      app.api.post(`/v1/polls/${poll.id}/close`).then(remember).catch((err) => app.notice(err.message, "error"));
    } }, "Close poll"));
  }
  el.replaceChildren(
    h("strong", { class: "question" }, poll.question),
    h("span", { class: "poll-status", dataset: { status: poll.status } }, closed ? " (closed)" : ` · ${poll.voter_count} voter${poll.voter_count === 1 ? "" : "s"}`),
    form, ...controls);
}

function render(message, body) {
  const pollId = message.metadata && message.metadata.poll_id;
  const el = h("div", { class: "poll", dataset: { pollId: pollId || "" } }, h("strong", {}, message.content));
  body.append(el);
  if (!pollId) return;
  if (!cards.has(pollId)) cards.set(pollId, new Set());
  const set = cards.get(pollId);
  for (const old of set) if (!old.isConnected) set.delete(old);
  set.add(el);
  if (polls.has(pollId)) draw(el, polls.get(pollId));
  else app.api.get(`/v1/polls/${pollId}`).then(remember).catch(() => {});
}

function openForm(conversationId, chat) {
  const ui = chat.ui();
  const existing = document.getElementById("poll-form");
  if (existing) existing.remove();
  const question = h("input", { type: "text", name: "question", placeholder: "question", required: true });
  const options = h("textarea", { name: "options", rows: 3, placeholder: "one option per line", required: true });
  const multiple = h("input", { type: "checkbox", name: "allow_multiple" });
  const error = h("p", { class: "error" });
  const form = h("form", { id: "poll-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const poll = await app.api.post(`/v1/conversations/${conversationId}/polls`, {
        question: question.value,
        options: options.value.split("\n").map((o) => o.trim()).filter(Boolean),
        allow_multiple: multiple.checked,
      });
      remember(poll);
      form.remove();
    } catch (err) {
      error.textContent = err.message;
    }
  } }, question, options, h("label", {}, multiple, " several choices"),
  h("button", { type: "submit", id: "create-poll" }, "Create poll"),
  h("button", { type: "button", class: "secondary", onclick: () => form.remove() }, "Cancel"), error);
  ui.input.closest("form").before(form);
  question.focus();
}

app.on("poll.created", remember);
app.on("poll.updated", remember);
app.on("poll.closed", remember);

app.use("chat").then((chat) => {
  chat.registerRenderer("poll", render);
  chat.addComposerAction({ id: "new-poll", label: "Poll", run: (id) => openForm(id, chat) });
});
