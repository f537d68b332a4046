// The directory's web panel: the signed-in user's profile in the sidebar — change the
// display name (PATCH /v1/users/me) or delete the account (DELETE /v1/users/me with
// the password; the session ends with it).

import { app, h } from "/static/web/app.js";

function mount({ sidebar }) {
  const name = h("input", { type: "text", name: "display_name", value: app.me.display_name, required: true, maxlength: 200 });
  const result = h("span", { class: "hint", id: "profile-result" });
  const form = h("form", { id: "profile-form", onsubmit: async (e) => {
    e.preventDefault();
    try {
      const profile = await app.api.patch("/v1/users/me", { display_name: name.value });
      app.me.display_name = profile.display_name;
      app.rememberName(app.me.id, profile.display_name);
      app.renderTopbar();
      name.value = profile.display_name;
      result.textContent = "saved";
    } catch (err) {
      result.textContent = err.message;
    }
  } }, h("label", {}, "Display name ", name), h("button", { type: "submit", class: "secondary" }, "Save"), result);

  const password = h("input", { type: "password", name: "password", placeholder: "your password", autocomplete: "current-password", required: true });
  const deleteResult = h("span", { class: "error", id: "delete-account-result" });
  const remove = h("form", { id: "delete-account", hidden: true, onsubmit: async (e) => {
    e.preventDefault();
    // the socket would be closed by the server with the session and try a refresh
    app.socket.stop();
    try {
      await app.api.request("DELETE", "/v1/users/me", { password: password.value }, { retry: false });
    } catch (err) {
      deleteResult.textContent = err.message;
      app.socket.start();
      return;
    }
    app.api.clear(); // the account and its sessions are gone
  } }, password, h("button", { type: "submit" }, "Delete my account for good"), deleteResult);
  const show = h("button", { type: "button", id: "show-delete-account", class: "secondary", onclick: () => {
    remove.hidden = false;
    show.hidden = true;
    password.focus();
  } }, "Delete account…");
  sidebar.append(h("details", { id: "profile", class: "profile" }, h("summary", {}, "Profile"), form, show, remove));
}

app.addPanel({ id: "profile", mount });
