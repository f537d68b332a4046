// Boot: after every module script of the page ran (panels registered), show the
// view the page was served for.

import { app } from "./app.js";
import { showResetPassword, showSignIn, showVerifyEmail } from "./auth.js";
import "./admin.js";

function boot() {
  app.on("signed-out", () => showSignIn());
  if (app.page === "verify-email") return showVerifyEmail();
  if (app.page === "reset-password") return showResetPassword();
  return showSignIn();
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
