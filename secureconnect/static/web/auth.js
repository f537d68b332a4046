// Sign-in, sign-up and the pages the server's mails link to. Passwords go to the
// REST API only; the tokens it answers with stay in memory (api.js).

import { app, clear, h } from "./app.js";
import { formData } from "./dom.js";

function root() {
  return clear(document.getElementById("root"));
}

function field(label, name, type = "text", extra = {}) {
  return h("label", {}, label, h("input", { name, type, required: true, ...extra }));
}

function errorLine(form) {
  let el = form.querySelector(".error");
  if (!el) {
    el = h("p", { class: "error", role: "alert" });
    form.append(el);
  }
  return el;
}

function submitting(form, work) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    errorLine(form).textContent = "";
    try {
      await work(formData(form));
    } catch (err) {
      errorLine(form).textContent = err.message || String(err);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

async function login(email, password) {
  const pair = await app.api.post("/v1/auth/login", { email, password }, { auth: false });
  await app.signedIn(pair);
}

export function showSignIn() {
  const form = submitting(
    h("form", { id: "sign-in", class: "card" },
      h("h1", {}, "Sign in"),
      field("Email", "email", "email", { autocomplete: "username" }),
      field("Password", "password", "password", { autocomplete: "current-password" }),
      h("button", { type: "submit" }, "Sign in"),
      h("p", {},
        h("a", { href: "#sign-up", id: "to-sign-up", onclick: (e) => { e.preventDefault(); showSignUp(); } }, "Create an account"),
        " · ",
        h("a", { href: "#forgot", id: "to-forgot", onclick: (e) => { e.preventDefault(); showForgot(); } }, "Forgot password?"))),
    (data) => login(data.email, data.password));
  root().append(form);
}

export function showSignUp() {
  const form = submitting(
    h("form", { id: "sign-up", class: "card" },
      h("h1", {}, "Create an account"),
      field("Display name", "display_name", "text", { autocomplete: "nickname", maxlength: 200 }),
      field("Email", "email", "email", { autocomplete: "username" }),
      field("Password", "password", "password", { autocomplete: "new-password", minlength: 8 }),
      h("button", { type: "submit" }, "Sign up"),
      h("p", {}, h("a", { href: "#sign-in", onclick: (e) => { e.preventDefault(); showSignIn(); } }, "I have an account"))),
    async (data) => {
      await app.api.post("/v1/auth/register", data, { auth: false });
      app.notice("Account created: a verification link is on its way to your inbox.");
      await login(data.email, data.password);
    });
  root().append(form);
}

export function showForgot() {
  const form = submitting(
    h("form", { id: "forgot", class: "card" },
      h("h1", {}, "Reset your password"),
      field("Email", "email", "email"),
      h("button", { type: "submit" }, "Mail me a link"),
      h("p", {}, h("a", { href: "#sign-in", onclick: (e) => { e.preventDefault(); showSignIn(); } }, "Back to sign in"))),
    async (data) => {
      await app.api.post("/v1/auth/password-reset", data, { auth: false });
      form.replaceChildren(h("p", { id: "forgot-done" }, "If that address has an account, a reset link is on its way."));
    });
  root().append(form);
}

// The mailed links carry ?token=; it is taken out of the address bar at once.
function takeToken() {
  const params = new URLSearchParams(location.search);
  const token = params.get("token") || "";
  history.replaceState(null, "", location.pathname);
  return token;
}

export async function showVerifyEmail() {
  const token = takeToken();
  const box = h("section", { id: "verify-email", class: "card" }, h("h1", {}, "Email verification"));
  root().append(box);
  const line = h("p", { id: "verify-result" }, "Checking the link…");
  box.append(line, h("p", {}, h("a", { href: "/" }, "Open the client")));
  if (!token) {
    line.textContent = "This link has no token.";
    return;
  }
  try {
    const user = await app.api.post("/v1/auth/verify-email", { token }, { auth: false });
    line.textContent = `Thank you, ${user.display_name}: ${user.email} is verified.`;
    line.dataset.ok = "true";
  } catch (err) {
    line.textContent = `The link did not work: ${err.message}`;
    line.dataset.ok = "false";
  }
}

export function showResetPassword() {
  const token = takeToken();
  const form = submitting(
    h("form", { id: "reset-password", class: "card" },
      h("h1", {}, "Choose a new password"),
      field("New password", "new_password", "password", { autocomplete: "new-password", minlength: 8 }),
      h("button", { type: "submit" }, "Set password")),
    async (data) => {
      await app.api.post("/v1/auth/password-reset/confirm", { token, new_password: data.new_password }, { auth: false });
      form.replaceChildren(h("p", { id: "reset-done" }, "Your password is changed; every other session has ended."),
        h("p", {}, h("a", { href: "/" }, "Sign in")));
    });
  root().append(form);
}
