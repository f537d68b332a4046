// Drive's web panel: a "File" composer action in chat (upload with a progress bar —
// resumable over tus where the server offers it — then share into the conversation)
// and a renderer for chat messages of type "file" (name, size, download).

import { app, h } from "/static/web/app.js";
import { humanSize, upload } from "./upload.js";

function openForm(conversationId, chat) {
  const ui = chat.ui();
  const existing = document.getElementById("file-form");
  if (existing) existing.remove();
  const input = h("input", { type: "file", id: "file-input", name: "file" });
  const bar = h("progress", { id: "upload-progress", max: 1, value: 0, hidden: true });
  const status = h("span", { id: "upload-status", class: "upload-status" });
  const form = h("form", { id: "file-form", class: "file-form" }, input, bar, status,
    h("button", { type: "button", class: "secondary", onclick: () => form.remove() }, "Close"));
  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    if (!file) return;
    input.disabled = true;
    bar.hidden = false;
    bar.value = 0;
    status.dataset.state = "uploading";
    status.textContent = `${file.name}: 0 %`;
    try {
      const stored = await upload(app.api, file, {
        onProgress: (sent, total) => {
          bar.value = total ? sent / total : 1;
          status.textContent = `${file.name}: ${Math.floor((100 * sent) / (total || 1))} %`;
        },
      });
      status.textContent = `${file.name}: sharing…`;
      await app.api.post(`/v1/drive/files/${stored.id}/shares`, { conversation_id: conversationId });
      status.dataset.state = "done";
      status.textContent = `${file.name}: shared`;
      setTimeout(() => form.remove(), 1500);
    } catch (err) {
      status.dataset.state = "failed";
      status.textContent = `${file.name}: ${err.message}`;
      input.disabled = false;
    }
  });
  ui.input.closest("form").before(form);
}

async function download(fileId, button) {
  button.disabled = true;
  try {
    const link = await app.api.get(`/v1/drive/files/${fileId}/download`);
    // the signed URL answers with Content-Disposition: attachment, so following it
    // saves the file and leaves the page as it is
    const a = h("a", { href: link.url, rel: "noopener", hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
  } catch (err) {
    app.notice(err.message, "error");
  } finally {
    button.disabled = false;
  }
}

function render(message, body) {
  const meta = message.metadata || {};
  const fileId = meta.file_id || message.file_id;
  const el = h("div", { class: "file-card", dataset: { fileId: fileId || "" } },
    h("span", { class: "file-name" }, meta.name || message.content || "file"),
    h("span", { class: "file-size" }, meta.size !== undefined ? ` · ${humanSize(meta.size)}` : ""));
  if (fileId && !message.deleted) {
    const button = h("button", { type: "button", class: "download secondary" }, "Download");
    button.addEventListener("click", () => download(fileId, button));
    el.append(button);
  }
  body.append(el);
}

app.use("chat").then((chat) => {
  chat.registerRenderer("file", render);
  chat.addComposerAction({ id: "attach-file", label: "File", run: (id) => openForm(id, chat) });
});
