// Models: what is installed (size, quantization, context, and the planner's verdict for this
// machine), what is loaded now (memory, when it unloads), pulling with progress (/api/pull),
// importing a GGUF file that lies on the server, copy, remove, and the catalog's plan table.

import {api, get, ndjson, request} from "./api.js";
import {button, fill, h, icon} from "./dom.js";
import {t} from "./i18n.js";
import {bytes, confirmAction, duration, emptyState, formDialog, loading, number, pageHead, progressBar, toast} from "./ui.js";

/** #/models */
export async function modelsPage(root, app) {
  const body = h("div", {class: "page-body"});
  const pulls = h("div", {class: "uploads", id: "pulls"});
  const admin = app.canAdmin();
  const refresh = () => loading(body, () => report(app, refresh));
  const actions = admin ? [
    button(t("models.pull"), "download", () => pullDialog(pulls, refresh), {cls: "btn-primary"}),
    button(t("models.import"), "upload", () => importDialog(refresh), {cls: "btn-secondary"}),
  ] : [];
  fill(root, h("section", {class: "page"},
    pageHead(t("models.title"), t("models.subtitle"), ...actions,
      button(t("common.refresh"), "refresh", refresh, {cls: "btn-ghost", iconOnly: true})),
    pulls, body));
  await refresh();
}

async function report(app, refresh) {
  const r = await get("/models");
  const hw = r.hardware;
  const gpus = hw.gpus.length ? ` · ${hw.gpus.map((g) => `${g.name} ${bytes(g.memory)}`).join(", ")}` : "";
  return [
    h("div", {class: "machine muted", id: "machine"}, icon("cube", 16),
      h("span", {text: t("models.machine", {ram: bytes(hw.ram), bw: `${bytes(hw.cpu_bandwidth)}/s`, gpus})}),
      h("span", {class: "pill", text: t("models.slots", {n: r.slots})})),
    h("h2", {class: "section-title", text: t("models.installed")}),
    r.installed.length ? installedTable(r.installed, app, refresh) : emptyState("cube", t("models.noneInstalled")),
    h("h2", {class: "section-title", text: t("models.loaded")}),
    r.loaded.length ? loadedTable(r.loaded) : h("p", {class: "muted", text: t("models.noneLoaded")}),
    h("h2", {class: "section-title", text: t("models.plan")}),
    planTable(r.catalog),
  ];
}

/** The planner's verdict in the reader's language, from its facts (the server's words otherwise). */
function verdictText(plan) {
  const f = plan.verdict_facts || {};
  const where = {cpu: () => t("plan.cpu"), gpu: () => t("plan.gpu"), split: () => t("plan.split", {n: f.gpu_layers}),
    vllm: () => t("plan.vllm", {layout: f.layout || "", q: f.quantization})}[f.target];
  const k = `${Math.floor((f.ctx || 0) / 1024)}k`;
  const words = {
    no_fit: () => t("plan.noFit", {need: bytes(f.memory), have: bytes(f.have)}),
    quantization: () => t(f.short_context ? "plan.quantCtx" : "plan.quant", {q: f.quantization, k, where: where()}),
    context: () => t("plan.context", {k, where: where()}),
    comfortable: () => t("plan.comfortable", {where: where()}),
    tight: () => t("plan.tight", {need: bytes(f.memory), have: bytes(f.budget), where: where()}),
  }[f.kind];
  return words && (where || f.kind === "no_fit") ? words() : plan.verdict;
}

function verdictPill(plan) {
  if (!plan) return h("span", {class: "muted", text: "–"});
  const kind = (plan.verdict_facts || {}).kind;
  const cls = !plan.fits ? "pill bad" : kind === "comfortable" ? "pill good" : "pill warn";
  const text = verdictText(plan);
  return h("span", {class: cls, title: text, text, dataset: {kind: kind || ""}});
}

function table(id, head, rows, numeric = []) {
  return h("div", {class: "table-wrap"}, h("table", {class: "table", id},
    h("thead", {}, h("tr", {}, head.map(([label, hide], k) => h("th", {class: [numeric.includes(k) ? "num" : "", hide ? "hide-sm" : ""].join(" ").trim() || undefined, text: label})))),
    h("tbody", {}, rows)));
}

function installedTable(models, app, refresh) {
  const admin = app.canAdmin();
  const rows = models.map((m) => h("tr", {dataset: {model: m.name}},
    h("td", {class: "strong", text: m.name}),
    h("td", {class: "hide-sm", text: m.parameter_size || "–"}),
    h("td", {text: m.quantization || "–"}),
    h("td", {class: "num", text: bytes(m.size)}),
    h("td", {class: "num hide-sm", text: m.context_length ? number(m.context_length) : "–"}),
    h("td", {}, verdictPill(m.plan)),
    h("td", {class: "row-actions"},
      button(t("nav.chat"), "chat", () => app.navigate("#/chat", {fresh: true, model: m.name}), {cls: "btn-ghost btn-xs", iconOnly: true}),
      admin ? button(t("models.copy"), "copy", () => copyModel(m.name, refresh), {cls: "btn-ghost btn-xs", iconOnly: true}) : null,
      admin ? button(t("models.remove"), "trash", () => removeModel(m.name, refresh), {cls: "btn-ghost btn-xs", iconOnly: true}) : null)));
  return table("installed", [[t("models.name")], [t("models.params"), true], [t("models.quant")], [t("models.size")],
    [t("models.context"), true], [t("models.verdict")], [""]], rows, [3, 4]);
}

function loadedTable(loaded) {
  const rows = loaded.map((m) => h("tr", {},
    h("td", {class: "strong", text: m.name}),
    h("td", {class: "num", text: bytes(m.memory)}),
    h("td", {class: "num hide-sm", text: `${number(m.context_length)} × ${m.slots}`}),
    h("td", {text: m.expires_in === null ? t("models.forever") : duration(m.expires_in)})));
  return table("loaded", [[t("models.name")], [t("models.memory")], [t("models.context"), true], [t("models.expires")]], rows, [1, 2]);
}

function planTable(plans) {
  const rows = plans.map((p) => {
    const rec = p.recommended || {};
    return h("tr", {},
      h("td", {class: "strong", text: p.model}),
      h("td", {}, verdictPill(p)),
      h("td", {text: rec.quantization ? `${rec.quantization} · ${rec.engine}` : "–"}),
      h("td", {class: "num hide-sm", text: rec.memory ? bytes(rec.memory) : "–"}),
      h("td", {class: "num hide-sm", text: rec.ctx ? number(rec.ctx) : "–"}),
      h("td", {class: "num", text: rec.tokens_per_second ? `${rec.tokens_per_second} tok/s` : "–"}));
  });
  return table("plan", [[t("models.name")], [t("models.verdict")], [t("models.recommended")], [t("models.memory"), true],
    [t("models.context"), true], [t("models.speed")]], rows, [3, 4, 5]);
}

async function copyModel(name, refresh) {
  const done = await formDialog(t("models.copy"), [{name: "destination", label: t("models.copyTo"), value: `${name}-copy`, required: true}],
    {ok: t("models.copy"), submit: (v) => api("POST", "/api/copy", {source: name, destination: v.destination})});
  if (done) { toast(t("models.copied", {name: done.destination}), "ok"); refresh(); }
}

async function removeModel(name, refresh) {
  if (!(await confirmAction(t("models.removeConfirm", {name})))) return;
  try {
    await api("DELETE", "/api/delete", {model: name});
    refresh();
  } catch (err) { toast(err.message, "error"); }
}

async function importDialog(refresh) {
  const made = await formDialog(t("models.import"), [
    {name: "path", label: t("models.path"), required: true, placeholder: "/srv/models/model.gguf"},
    {name: "name", label: t("models.name"), required: true, placeholder: "my-model:7b"},
  ], {ok: t("models.import"), submit: (v) => api("POST", "/models/import", v)});
  if (made) { toast(t("models.imported", {name: made.name}), "ok"); refresh(); }
}

async function pullDialog(container, refresh) {
  const values = await formDialog(t("models.pull"), [{name: "model", label: t("models.pullName"), required: true}], {ok: t("models.pull")});
  if (values && values.model) pull(values.model, container, refresh);
}

/** /api/pull's progress lines ({status, total, completed}) as a bar and a status line. */
async function pull(name, container, refresh) {
  const bar = progressBar();
  bar.set(null);
  const status = h("span", {class: "upload-status muted", text: "…"});
  const row = h("div", {class: "upload", dataset: {pull: name}}, icon("download", 16),
    h("div", {class: "upload-main"}, h("div", {class: "upload-line"}, h("span", {class: "upload-name", text: t("models.pulling", {name})})), bar), status);
  container.prepend(row);
  try {
    const res = await request("POST", "/api/pull", {model: name, stream: true});
    for await (const ev of ndjson(res)) {
      if (ev.error) throw new Error(ev.error);
      if (ev.total) {
        bar.set(ev.completed / ev.total);
        status.textContent = `${ev.status || ""} · ${bytes(ev.completed || 0)} / ${bytes(ev.total)}`;
      } else {
        bar.set(null);
        status.textContent = ev.status || "";
      }
      if (ev.status === "success") {
        bar.set(1);
        bar.classList.add("done");
        status.className = "upload-status ok-text";
        status.textContent = t("models.pulled", {name});
      }
    }
    refresh();
  } catch (err) {
    bar.set(1);
    bar.classList.add("failed");
    status.className = "upload-status error-text";
    status.textContent = err.message;
  }
}
