// Drive uploads from the browser, DOM-free: resumable (tus 1.0, local back end) or one
// presigned PUT (any back end), both with progress. The file's SHA-256 is declared so
// the server verifies what it stored.
//
//   const file = await upload(app.api, blob, { onProgress: (sent, total) => ... });

const CHUNK = 4 * 1024 * 1024; // bytes per tus PATCH
const MAX_RETRIES = 6;
const HASH_LIMIT = 512 * 1024 * 1024; // larger files are not hashed in the browser
const IDLE_MS = 10000; // a request that moves no byte for this long is given up (dead network)

function b64(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

async function sha256(blob) {
  if (blob.size > HASH_LIMIT) return null;
  const digest = await crypto.subtle.digest("SHA-256", await blob.arrayBuffer());
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// One XHR (fetch has no upload progress). Resolves {status, header(name), text}.
// A request that makes no progress for IDLE_MS is aborted: a network that silently
// loses packets would otherwise leave it pending for ever.
function xhr(method, url, { headers = {}, body = null, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    const req = new XMLHttpRequest();
    let idle = null;
    const stalled = () => {
      clearTimeout(idle);
      idle = setTimeout(() => {
        req.abort();
        reject(new Error("timed out"));
      }, IDLE_MS);
    };
    req.open(method, url);
    for (const [name, value] of Object.entries(headers)) req.setRequestHeader(name, value);
    req.upload.onprogress = (e) => {
      stalled();
      if (onProgress) onProgress(e.loaded);
    };
    req.onprogress = stalled;
    req.onload = () => {
      clearTimeout(idle);
      resolve({ status: req.status, header: (n) => req.getResponseHeader(n), text: req.responseText });
    };
    req.onerror = () => {
      clearTimeout(idle);
      reject(new Error("network error"));
    };
    stalled();
    req.send(body);
  });
}

function problem(resp) {
  try {
    const body = JSON.parse(resp.text);
    return new Error(body.detail || body.title || `HTTP ${resp.status}`);
  } catch {
    return new Error(`HTTP ${resp.status}`);
  }
}

export async function tusAvailable() {
  try {
    const resp = await fetch("/v1/drive/uploads", { method: "OPTIONS", credentials: "omit" });
    return resp.ok && Boolean(resp.headers.get("Tus-Version"));
  } catch {
    return false;
  }
}

// tus: create, then PATCH chunk by chunk; after a failure ask the server (HEAD) where
// it stands and go on from there, with backoff.
async function tusUpload(api, blob, name, type, digest, onProgress) {
  const auth = () => ({ Authorization: `Bearer ${api.access}`, "Tus-Resumable": "1.0.0" });
  const meta = [`filename ${b64(name)}`, `filetype ${b64(type)}`];
  if (digest) meta.push(`sha256 ${b64(digest)}`);
  const created = await xhr("POST", "/v1/drive/uploads", {
    headers: { ...auth(), "Upload-Length": String(blob.size), "Upload-Metadata": meta.join(",") } });
  if (created.status !== 201) throw problem(created);
  const where = new URL(created.header("Location"), window.location.href);
  const id = where.pathname.split("/").pop();
  const url = `/v1/drive/uploads/${id}`;
  let offset = 0;
  let failures = 0;
  while (offset < blob.size) {
    const end = Math.min(blob.size, offset + CHUNK);
    try {
      const resp = await xhr("PATCH", url, {
        headers: { ...auth(), "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" },
        body: blob.slice(offset, end),
        onProgress: (loaded) => onProgress(offset + loaded, blob.size),
      });
      if (resp.status === 204) {
        offset = Number(resp.header("Upload-Offset"));
        failures = 0;
        onProgress(offset, blob.size);
        continue;
      }
      if (resp.status !== 409 && resp.status !== 423 && resp.status < 500) throw problem(resp);
    } catch (err) {
      if (!/network|timed out/.test(err.message)) throw err;
    }
    failures += 1;
    if (failures > MAX_RETRIES) throw new Error("the upload keeps failing; try again later");
    await sleep(Math.min(8000, 500 * 2 ** failures));
    const head = await xhr("HEAD", url, { headers: auth() }).catch(() => null);
    if (head && head.status === 200) offset = Number(head.header("Upload-Offset"));
  }
  return api.get(`/v1/drive/files/${id}`);
}

// Presigned: reserve, PUT the bytes to the signed URL, complete (the server verifies).
async function signedUpload(api, blob, name, type, digest, onProgress) {
  const reservation = await api.post("/v1/drive/files", {
    name, size: blob.size, content_type: type, ...(digest ? { sha256: digest } : {}) });
  const put = await xhr("PUT", reservation.upload_url, {
    headers: { "Content-Type": type }, body: blob, onProgress: (loaded) => onProgress(loaded, blob.size) });
  if (put.status >= 300) throw problem(put);
  onProgress(blob.size, blob.size);
  return api.post(`/v1/drive/files/${reservation.file.id}/complete`);
}

export async function upload(api, blob, { name = blob.name || "file", onProgress = () => {} } = {}) {
  const type = blob.type || "application/octet-stream";
  const digest = await sha256(blob);
  if (await tusAvailable()) return tusUpload(api, blob, name, type, digest, onProgress);
  return signedUpload(api, blob, name, type, digest, onProgress);
}

export function humanSize(bytes) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let n = Number(bytes) || 0;
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}
