// Talking to the server: JSON in and out from the same origin, the login cookie sent by the
// browser (HttpOnly: this page never sees it), and the CSRF token the login answer gave, sent
// with every request that changes something. Errors in either dialect become ApiError.

let csrfToken = null;
let apiKey = null;
const listeners = {unauthorized: []};

export function setCsrf(token) { csrfToken = token || null; }

/** The API key of a server without accounts (asked once, kept in the tab by app.js). */
export function setKey(key) { apiKey = key || null; }

/** Called with the error when the server says the caller must log in (again). */
export function onUnauthorized(fn) { listeners.unauthorized.push(fn); }

export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

function headers(method, json) {
  const out = {Accept: "application/json"};
  if (json) out["Content-Type"] = "application/json";
  if (csrfToken && !["GET", "HEAD"].includes(method)) out["X-CSRF-Token"] = csrfToken;
  if (apiKey) out.Authorization = `Bearer ${apiKey}`;
  return out;
}

/** The message of an error body in any of the shapes bendi sends. */
export function errorMessage(body, fallback) {
  if (!body) return fallback;
  if (typeof body.error === "string") return body.error;  // Ollama
  if (body.error && body.error.message) return body.error.message;  // OpenAI, bendi
  if (typeof body.detail === "string") return body.detail;
  return fallback;
}

async function failure(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const err = new ApiError(errorMessage(body, `${res.status} ${res.statusText}`), res.status,
    body && body.error && body.error.code);
  if (res.status === 401) listeners.unauthorized.forEach((fn) => fn(err));
  return err;
}

/** fetch() with the console's headers; throws ApiError unless the status is 2xx. */
export async function request(method, path, body, {signal} = {}) {
  const json = body !== undefined;
  const res = await fetch(path, {method, headers: headers(method, json), credentials: "same-origin", signal,
    body: json ? JSON.stringify(body) : undefined});
  if (!res.ok) throw await failure(res);
  return res;
}

/** A JSON request; resolves to the parsed answer (null when there is none). */
export async function api(method, path, body, options) {
  const res = await request(method, path, body, options);
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

export const get = (path, options) => api("GET", path, undefined, options);

async function* lines(res, separator) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    let cut;
    while ((cut = buffer.indexOf(separator)) >= 0) {
      const line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + separator.length);
      if (line.trim()) yield line;
    }
  }
  if (buffer.trim()) yield buffer;
}

/** The JSON events of an OpenAI-style server-sent event stream (until [DONE]). */
export async function* sse(res) {
  for await (const frame of lines(res, "\n\n")) {
    const data = frame.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
    if (!data) continue;
    if (data === "[DONE]") return;
    yield JSON.parse(data);
  }
}

/** The objects of a newline-delimited JSON stream (Ollama style, /kb/.../ask). */
export async function* ndjson(res) {
  for await (const line of lines(res, "\n")) yield JSON.parse(line);
}

/**
 * Upload one file as multipart/form-data; `progress(sent, total)` as it goes. Resolves to
 * {status, body} whatever the status (the caller shows per-file results), rejects on a network
 * failure or abort. fetch() cannot report upload progress; XMLHttpRequest can.
 */
export function upload(path, file, progress, {name, signal} = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    if (csrfToken) xhr.setRequestHeader("X-CSRF-Token", csrfToken);
    if (apiKey) xhr.setRequestHeader("Authorization", `Bearer ${apiKey}`);
    xhr.upload.onprogress = (e) => progress && progress(e.loaded, e.lengthComputable ? e.total : file.size);
    xhr.upload.onload = () => progress && progress(file.size, file.size, true);
    xhr.onload = () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 401) listeners.unauthorized.forEach((fn) => fn(new ApiError(errorMessage(body, "401"), 401)));
      resolve({status: xhr.status, body});
    };
    xhr.onerror = () => reject(new ApiError("network error", 0));
    xhr.onabort = () => reject(new DOMException("aborted", "AbortError"));
    if (signal) signal.addEventListener("abort", () => xhr.abort());
    const form = new FormData();
    form.append("file", file, name || file.name);
    xhr.send(form);
  });
}
