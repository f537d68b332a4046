// REST client and the session's tokens. Tokens live in this module's memory only:
// never in localStorage, sessionStorage or cookies (nothing a page script or a
// cross-site request could reuse). A reload signs the user out, by design.

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.code = (problem && problem.code) || (status === 0 ? "network_error" : "");
    this.problem = problem || {};
  }
}

const REQUEST_TIMEOUT_MS = 15000;

export class Session {
  constructor() {
    this.access = null;
    this.refreshToken = null;
    this.timer = null;
    this.refreshing = null;
    this.listeners = new Set();
  }

  get signedIn() {
    return this.access !== null;
  }

  onChange(fn) {
    this.listeners.add(fn);
  }

  set(pair) {
    this.access = pair.access_token;
    this.refreshToken = pair.refresh_token;
    clearTimeout(this.timer);
    // rotate before the access token expires; a failed rotation signs out
    const seconds = Math.max(5, Number(pair.expires_in || 60) * 0.8);
    this.timer = setTimeout(() => this.refresh(), seconds * 1000);
  }

  clear() {
    const was = this.signedIn;
    this.access = null;
    this.refreshToken = null;
    clearTimeout(this.timer);
    if (was) for (const fn of this.listeners) fn(false);
  }

  // Exchange the refresh token for a new pair (the old one stops working).
  // Concurrent callers share one exchange. Resolves true when signed in afterwards.
  refresh() {
    if (!this.refreshToken) return Promise.resolve(false);
    if (!this.refreshing) {
      const token = this.refreshToken;
      this.refreshing = this.request("POST", "/v1/auth/refresh", { refresh_token: token }, { auth: false })
        .then((pair) => {
          if (this.refreshToken === token) this.set(pair);
          return true;
        })
        .catch((err) => {
          if (err.status === 401 || err.status === 400) this.clear();
          else if (this.refreshToken === token) {
            // unreachable server: try again soon, while the token may still be valid
            clearTimeout(this.timer);
            this.timer = setTimeout(() => this.refresh(), 5000);
          }
          return false;
        })
        .finally(() => {
          this.refreshing = null;
        });
    }
    return this.refreshing;
  }

  async request(method, path, body, { headers = {}, auth = true, retry = true } = {}) {
    const init = { method, headers: { Accept: "application/json", ...headers }, credentials: "omit", cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    if (auth && this.access) init.headers.Authorization = `Bearer ${this.access}`;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    init.signal = abort.signal;
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, { code: "network_error", detail: "the server cannot be reached" });
    } finally {
      clearTimeout(timer);
    }
    if (resp.status === 401 && auth && retry && this.refreshToken) {
      if (await this.refresh()) return this.request(method, path, body, { headers, auth, retry: false });
    }
    if (resp.status === 204) return null;
    const text = await resp.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!resp.ok) throw new ApiError(resp.status, data);
    return data;
  }

  get(path) { return this.request("GET", path); }
  post(path, body, opts) { return this.request("POST", path, body === undefined ? {} : body, opts); }
  patch(path, body) { return this.request("PATCH", path, body); }
  put(path, body) { return this.request("PUT", path, body); }
  delete(path) { return this.request("DELETE", path); }
}
