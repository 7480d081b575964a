// api.js — the REST client: bearer token, JSON calls, upload with progress,
// binary volumes and authenticated downloads. Every failure is an ApiError
// whose message is the server's {"error"} text (or a description of what
// went wrong when there is no such body).

const TOKEN_KEY = "ctlens.token";

/** An API failure: HTTP status (0 for a network error), code and message. */
export class ApiError extends Error {
  constructor(status, message, code = "", retryAfter = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The stored bearer token ("" when none). */
export function getToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

/** Stores (or, for "", removes) the bearer token. */
export function setToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage disabled: the token lives only in the input field */
  }
}

function authHeaders() {
  const t = getToken();
  return t ? { Authorization: "Bearer " + t } : {};
}

/** Builds an ApiError from a status, a response body text and Retry-After. */
function errorFrom(status, statusText, body, retryAfter, what) {
  let msg = "";
  let code = "";
  try {
    const j = JSON.parse(body);
    if (j && typeof j.error === "string") {
      msg = j.error;
      code = j.code || "";
    }
  } catch {
    msg = (body || "").trim().slice(0, 300);
  }
  if (!msg) msg = statusText || "request failed";
  let text = `${what}: ${msg} (HTTP ${status}${code ? ", " + code : ""})`;
  if (status === 401) text += " — enter the API token at the top of the page.";
  if (status === 403) text += " — the API token was refused.";
  if (retryAfter) text += ` — the server is busy; retry after ${retryAfter} s.`;
  return new ApiError(status, text, code, retryAfter);
}

async function request(url, what, init = {}) {
  let res;
  try {
    res = await fetch(url, { ...init, headers: { ...authHeaders(), ...(init.headers || {}) } });
  } catch (e) {
    throw new ApiError(0, `${what}: cannot reach the server (${e.message})`);
  }
  if (!res.ok) {
    const body = await res.text().catch(() => "");
    throw errorFrom(res.status, res.statusText, body, res.headers.get("Retry-After") || "", what);
  }
  return res;
}

/** GET url and decode JSON; what names the call in error messages. */
export async function getJSON(url, what) {
  const res = await request(url, what);
  try {
    return await res.json();
  } catch (e) {
    throw new ApiError(res.status, `${what}: the server sent invalid JSON (${e.message})`);
  }
}

/** GET url as an ArrayBuffer, returning {buffer, headers}. */
export async function getBinary(url, what) {
  const res = await request(url, what);
  return { buffer: await res.arrayBuffer(), headers: res.headers };
}

/**
 * POST /api/v1/studies with the files (one `file` part each, named by their
 * path inside a chosen folder) and the form fields; onProgress(fraction) is
 * called as the body is sent. Resolves to the 202 body.
 */
export function uploadStudy(files, fields, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined && v !== "") form.append(k, v);
    }
    for (const f of files) form.append("file", f, f.webkitRelativePath || f.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/studies");
    for (const [k, v] of Object.entries(authHeaders())) xhr.setRequestHeader(k, v);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable && e.total > 0) onProgress(e.loaded / e.total);
    };
    xhr.onerror = () => reject(new ApiError(0, "upload: the connection failed (server unreachable or upload refused)"));
    xhr.onabort = () => reject(new ApiError(0, "upload: aborted"));
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        onProgress(1);
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch (e) {
          reject(new ApiError(xhr.status, `upload: the server sent invalid JSON (${e.message})`));
        }
        return;
      }
      reject(errorFrom(xhr.status, xhr.statusText, xhr.responseText,
        xhr.getResponseHeader("Retry-After") || "", "upload"));
    };
    xhr.send(form);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls the job at statusUrl until it is done (resolves to the job) or
 * failed (rejects with the job's error); onUpdate(job) sees every state.
 */
export async function pollJob(statusUrl, onUpdate, intervalMs = 500) {
  for (;;) {
    const job = await getJSON(statusUrl, "job status");
    onUpdate(job);
    if (job.state === "done") return job;
    if (job.state === "failed") {
      throw new ApiError(200, `analysis failed at stage "${job.stage || "?"}": ${job.error || "no reason given"}`);
    }
    await sleep(intervalMs);
    intervalMs = Math.min(intervalMs * 1.25, 3000);
  }
}

/** Fetches url with the token and saves the body as filename. */
export async function download(url, filename, what) {
  const res = await request(url, what);
  const blob = await res.blob();
  const href = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = href;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10000);
}
