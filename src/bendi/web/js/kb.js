// Knowledge bases: the list, creating one, and one knowledge base's documents (upload files or
// whole folders by drag and drop, each with its progress bar and result), removing documents,
// and a search box that shows the ranked passages with their scores.

import {api, get, upload} from "./api.js";
import {button, fill, h, icon} from "./dom.js";
import {t} from "./i18n.js";
import {location as sourceLocation, showPassage} from "./passage.js";
import {bytes, confirmAction, emptyState, formDialog, loading, number, pageHead, progressBar, tabs, toast, when} from "./ui.js";

/** #/kb */
export async function kbListPage(root, app) {
  const body = h("div", {class: "page-body"});
  const create = app.canAdmin() ? button(t("kb.create"), "plus", () => createKb(app), {cls: "btn-primary"}) : null;
  fill(root, h("section", {class: "page"}, pageHead(t("kb.title"), t("kb.subtitle"), create), body));
  await loading(body, async () => {
    const {knowledge_bases: kbs} = await get("/kb");
    if (!kbs.length) return emptyState("book", t("kb.none"), app.canAdmin() ? t("kb.noneHint") : t("kb.noneMember"), create && create.cloneNode(true));
    return h("div", {class: "cards"}, kbs.map((kb) => h("a", {class: "card kb-card", href: `#/kb/${encodeURIComponent(kb.name)}`},
      h("div", {class: "card-title"}, icon("book", 18), h("span", {text: kb.name})),
      h("div", {class: "card-stats"},
        stat(t("kb.documents"), number(kb.documents)), stat(t("kb.chunks"), number(kb.chunks))),
      h("div", {class: "muted small", text: `${t("kb.embedder")}: ${kb.embed} · ${when(kb.created_at)}`}))));
  });
  // the empty state's copy of the button needs its handler
  const again = body.querySelector(".empty .btn-primary");
  if (again) again.onclick = () => createKb(app);
}

function stat(label, value) {
  return h("div", {class: "stat"}, h("div", {class: "stat-value", text: value}), h("div", {class: "stat-label muted", text: label}));
}

async function createKb(app) {
  const made = await formDialog(t("kb.create"), [
    {name: "name", label: t("kb.name"), required: true, placeholder: "safety-manuals", help: t("kb.nameHelp")},
  ], {ok: t("common.create"), submit: (v) => api("POST", "/kb", {name: v.name})});
  if (made) app.navigate(`#/kb/${encodeURIComponent(made.name)}`);
}

/** #/kb/<name>[/search] */
export async function kbPage(root, app, name, tab = "documents") {
  const head = h("div");
  const tabBody = h("div", {class: "page-body"});
  const page = h("section", {class: "page"}, head, tabBody);
  fill(root, page);
  let info;
  let writable = app.canAdmin();
  try {
    const [one, all] = await Promise.all([get(`/kb/${encodeURIComponent(name)}`), get("/kb")]);
    info = one;
    const listed = all.knowledge_bases.find((k) => k.name === name);
    if (listed && listed.writable !== undefined) writable = listed.writable;
  } catch (err) {
    fill(tabBody, h("div", {class: "notice error"}, icon("alert", 16), h("span", {text: err.message})));
    return;
  }
  const ask = button(t("kb.ask"), "chat", () => app.navigate("#/chat", {fresh: true, model: `kb:${name}`}), {cls: "btn-primary"});
  const remove = app.canAdmin() ? button(t("kb.delete"), "trash", async () => {
    if (!(await confirmAction(t("kb.deleteConfirm", {name})))) return;
    try {
      await api("DELETE", `/kb/${encodeURIComponent(name)}`);
      app.navigate("#/kb");
    } catch (err) { toast(err.message, "error"); }
  }, {cls: "btn-ghost"}) : null;
  const summary = h("div", {class: "kb-summary muted"});
  const vectors = h("div", {class: "vectors", hidden: true});
  const showInfo = (i) => {
    fill(summary, `${number(i.documents)} ${t("kb.documents")} · ${number(i.chunks)} ${t("kb.chunks")} · ${t("kb.embedder")}: ${i.embed}`);
    showVectors(vectors, i.vectors);
  };
  fill(head, pageHead(name, null, ask, remove), summary, vectors,
    tabs([{id: "documents", label: t("kb.documentsTab")}, {id: "search", label: t("kb.searchTab")}], tab,
      (id) => app.navigate(`#/kb/${encodeURIComponent(name)}${id === "search" ? "/search" : ""}`)));
  showInfo(info);
  const refreshInfo = async () => {
    try { showInfo(await get(`/kb/${encodeURIComponent(name)}`)); } catch { /* the list shows the error */ }
  };
  if (tab === "search") searchTab(tabBody, name);
  else documentsTab(tabBody, name, writable, refreshInfo);
  pollVectors(page, name, info, showInfo);
}

/** Chunks still waiting for their vectors (embedded in the background by the server). */
function showVectors(el, v) {
  if (!v || !v.pending) { el.hidden = true; return; }
  const total = v.done + v.pending;
  const bar = progressBar();
  bar.set(total ? v.done / total : null);
  fill(el, h("span", {class: "small", text: t("kb.vectors", {done: number(v.done), total: number(total)})}), bar,
    v.error ? h("span", {class: "small error-text", text: v.error}) : null);
  el.hidden = false;
}

function pollVectors(page, name, info, show) {
  if (!info.vectors || !info.vectors.pending) return;
  const timer = setInterval(async () => {
    if (!document.body.contains(page)) { clearInterval(timer); return; }
    try {
      const now = await get(`/kb/${encodeURIComponent(name)}`);
      show(now);
      if (!now.vectors || !now.vectors.pending) clearInterval(timer);
    } catch { clearInterval(timer); }
  }, 1500);
}

// -- documents and uploads --------------------------------------------------------------------

function documentsTab(el, name, canWrite, refreshInfo) {
  const list = h("div", {class: "doc-list"});
  const uploads = h("div", {class: "uploads", id: "uploads"});
  const fileInput = h("input", {type: "file", multiple: true, hidden: true, id: "file-input",
    onchange: (e) => { queueFiles(name, [...e.target.files].map((f) => ({file: f, path: f.name})), uploads, refresh); e.target.value = ""; }});
  const folderInput = h("input", {type: "file", multiple: true, hidden: true, webkitdirectory: true, id: "folder-input",
    onchange: (e) => { queueFiles(name, [...e.target.files].map((f) => ({file: f, path: insideFolder(f.webkitRelativePath || f.name)}))
      .filter((f) => !hidden(f.path)), uploads, refresh); e.target.value = ""; }});
  const drop = h("div", {class: "dropzone", id: "dropzone", tabindex: "0"},
    icon("upload", 28),
    h("div", {class: "drop-title", text: t("kb.dropTitle")}),
    h("div", {class: "muted small", text: t("kb.dropFormats")}),
    h("div", {class: "drop-actions"},
      button(t("kb.chooseFiles"), "file", () => fileInput.click(), {cls: "btn-secondary"}),
      button(t("kb.chooseFolder"), "folder", () => folderInput.click(), {cls: "btn-ghost"})),
    fileInput, folderInput);
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    queueFiles(name, await droppedFiles(e.dataTransfer), uploads, refresh);
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); } });
  fill(el, canWrite ? drop : null, uploads, list);
  const refresh = async () => {
    await loading(list, () => documentTable(name, canWrite, refresh));
    refreshInfo();
  };
  refresh();
}

/** A file's name inside the folder it was chosen with (the folder's own name left out), as
 * `bendi kb add FOLDER` names it: a folder added again, from either, finds the same documents. */
function insideFolder(path) {
  const cut = path.indexOf("/");
  return cut >= 0 ? path.slice(cut + 1) : path;
}

const hidden = (path) => path.split("/").some((part) => part.startsWith("."));

/** Files from a drop: folders are walked (webkitGetAsEntry), each file named by its path inside
 * the dropped folder. */
async function droppedFiles(transfer) {
  const entries = [...transfer.items].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null)).filter(Boolean);
  if (!entries.length) return [...transfer.files].map((f) => ({file: f, path: f.name}));
  const out = [];
  const walk = async (entry, prefix, top) => {
    if (entry.isFile) {
      const file = await new Promise((res, rej) => entry.file(res, rej));
      out.push({file, path: prefix + file.name});
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const child of batch) await walk(child, top ? "" : `${prefix}${entry.name}/`, false);
      }
    }
  };
  for (const entry of entries) await walk(entry, "", true);
  return out.filter((f) => !hidden(f.path));
}

const queue = [];
let uploading = false;

function queueFiles(name, files, container, refresh) {
  for (const {file, path} of files) {
    const bar = progressBar();
    const status = h("span", {class: "upload-status muted", text: t("kb.waiting")});
    const row = h("div", {class: "upload", dataset: {file: path}},
      icon("file", 16), h("div", {class: "upload-main"},
        h("div", {class: "upload-line"}, h("span", {class: "upload-name", text: path}), h("span", {class: "muted small", text: bytes(file.size)})),
        bar), status);
    container.prepend(row);
    queue.push({name, file, path, bar, status, row, refresh});
  }
  pump();
}

// One file at a time: the server reads, chunks and indexes each file with the CPU the answers
// also need, so a folder of 200 files does not become 200 requests at once.
async function pump() {
  if (uploading) return;
  uploading = true;
  while (queue.length) {
    const job = queue.shift();
    job.status.textContent = t("kb.uploading");
    try {
      const {status, body} = await upload(`/kb/${encodeURIComponent(job.name)}/documents`, job.file, (sent, total, done) => {
        job.bar.set(done ? null : total ? sent / total : null);
        if (done) job.status.textContent = t("kb.processing");
      }, {name: job.path});
      const result = body && body.results ? body.results[0] : null;
      if (result) showResult(job, result);
      else showResult(job, {status: "failed", error: (body && (body.error && (body.error.message || body.error))) || `HTTP ${status}`});
    } catch (err) {
      showResult(job, {status: "failed", error: err.message});
    }
    await job.refresh();
  }
  uploading = false;
}

function showResult(job, result) {
  const ok = result.status !== "failed";
  job.bar.set(1);
  job.bar.classList.add(ok ? "done" : "failed");
  job.row.classList.add(`result-${result.status}`);
  job.row.dataset.status = result.status;
  const text = {
    added: t("kb.added", {chunks: number(result.chunks)}),
    updated: t("kb.updated", {chunks: number(result.chunks)}),
    unchanged: t("kb.unchanged"),
    failed: t("kb.failed", {error: result.error || ""}),
  }[result.status] || result.status;
  fill(job.status, icon(ok ? "check" : "alert", 14), h("span", {text}));
  job.status.className = `upload-status ${ok ? "ok-text" : "error-text"}`;
  if (result.warnings && result.warnings.length) job.status.title = result.warnings.join("\n");
}

async function documentTable(name, canWrite, refresh) {
  const {documents, failures} = await get(`/kb/${encodeURIComponent(name)}/documents`);
  if (!documents.length && !(failures && failures.length)) return emptyState("file", t("kb.noDocs"), canWrite ? t("kb.noDocsHint") : null);
  const rows = documents.map((d) => h("tr", {},
    h("td", {}, h("span", {class: "doc-name-cell"}, icon("file", 14), h("span", {text: d.name, title: d.title || d.name}))),
    h("td", {class: "hide-sm", text: (d.format || "").toUpperCase()}),
    h("td", {class: "num hide-sm", text: d.pages ? number(d.pages) : "–"}),
    h("td", {class: "num", text: number(d.n_chunks)}),
    h("td", {class: "num hide-sm", text: bytes(d.size)}),
    h("td", {class: "hide-sm", text: when(d.added_at)}),
    h("td", {class: "row-actions"}, canWrite ? button(t("common.remove"), "trash", async () => {
      if (!(await confirmAction(t("kb.removeDocConfirm", {name: d.name})))) return;
      try {
        await api("DELETE", `/kb/${encodeURIComponent(name)}/documents/${encodeURIComponent(d.name)}`);
        toast(t("kb.removed", {name: d.name}), "ok");
        refresh();
      } catch (err) { toast(err.message, "error"); }
    }, {cls: "btn-ghost btn-xs", iconOnly: true}) : null)));
  const out = [h("div", {class: "table-wrap"}, h("table", {class: "table", id: "documents"},
    h("thead", {}, h("tr", {}, [t("kb.docName"), t("kb.format"), t("kb.pages"), t("kb.passages"), t("kb.size"), t("kb.addedAt"), ""]
      .map((c, k) => h("th", {class: [1, 2, 4, 5].includes(k) ? "hide-sm" : undefined, text: c})))),
    h("tbody", {}, rows)))];
  if (failures && failures.length) {
    out.push(h("h3", {class: "section-title", text: t("kb.failures")}),
      h("ul", {class: "failures"}, failures.map((f) => h("li", {}, h("strong", {text: f.name || f.document || ""}), " — ",
        h("span", {class: "error-text", text: f.error || f.reason || ""})))));
  }
  return out;
}

// -- search -----------------------------------------------------------------------------------

function searchTab(el, name) {
  const results = h("div", {class: "results", id: "search-results"});
  const input = h("input", {type: "search", id: "kb-query", placeholder: t("kb.searchPlaceholder"), "aria-label": t("kb.searchPlaceholder")});
  const all = h("input", {type: "checkbox", id: "kb-all"});
  const run = async () => {
    const query = input.value.trim();
    if (!query) return;
    await loading(results, async () => {
      const res = await api("POST", `/kb/${encodeURIComponent(name)}/search`, {query, all: all.checked});
      if (!res.results.length) return emptyState("search", t("kb.noResults"), all.checked ? null : t("kb.noResultsHint"));
      return [h("div", {class: "muted small", text: t("kb.searchStats", {n: res.results.length, ms: res.ms, legs: res.legs.join(" + ")})}),
        res.results.map((r, k) => resultCard(r, k + 1, query))];
    });
  };
  const form = h("form", {class: "search-form", onsubmit: (e) => { e.preventDefault(); run(); }},
    h("div", {class: "search-box"}, icon("search", 16), input),
    h("label", {class: "check"}, all, h("span", {text: t("kb.showAll")})),
    button(t("kb.search"), null, null, {cls: "btn-primary", type: "submit"}));
  fill(el, form, results);
  input.focus();
}

function resultCard(r, rank, query) {
  const scores = [[t("kb.fused"), r.fused.toFixed(3)], [t("kb.lexical"), r.lexical !== null ? r.lexical.toFixed(2) : "–"],
    [t("kb.vector"), r.vector !== null && r.vector !== undefined ? r.vector.toFixed(2) : "–"]];
  return h("article", {class: `result${r.relevant ? "" : " below"}`, onclick: () => showPassage({...r, number: rank}, query)},
    h("div", {class: "result-head"}, h("span", {class: "rank", text: `#${rank}`}), h("span", {class: "result-doc", text: r.document}),
      sourceLocation(r) ? h("span", {class: "muted small", text: sourceLocation(r)}) : null,
      r.relevant ? null : h("span", {class: "tag", text: t("kb.belowThreshold")})),
    h("p", {class: "result-text", text: r.text.length > 360 ? `${r.text.slice(0, 360)}…` : r.text}),
    h("div", {class: "scores"}, scores.map(([k, v]) => h("span", {class: "pill", text: `${k} ${v}`}))));
}
