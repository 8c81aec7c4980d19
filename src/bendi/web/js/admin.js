// Administration (admins only; the server refuses everyone else on /admin/...): users, groups,
// API keys (created and shown once, revoked), knowledge-base grants, quotas and usage, and the
// audit log with filters and export. Loaded only when an admin opens it.

import {api, get} from "./api.js";
import {button, fill, h, icon} from "./dom.js";
import {t} from "./i18n.js";
import {confirmAction, copyText, dialog, emptyState, formDialog, loading, number, pageHead, tabs, toast, when} from "./ui.js";

const TABS = ["users", "groups", "keys", "grants", "quotas", "audit"];
const enc = encodeURIComponent;

/** #/admin/<tab> */
export async function adminPage(root, app, tab) {
  if (!TABS.includes(tab)) tab = "users";
  const body = h("div", {class: "page-body", id: `admin-${tab}`});
  fill(root, h("section", {class: "page"}, pageHead(t("admin.title"), t("admin.subtitle")),
    tabs(TABS.map((id) => ({id, label: t(`admin.${id}`)})), tab, (id) => app.navigate(`#/admin/${id}`)), body));
  const pages = {users, groups, keys, grants, quotas, audit};
  const refresh = () => loading(body, () => pages[tab](refresh));
  await refresh();
}

function table(id, head, rows) {
  return h("div", {class: "table-wrap"}, h("table", {class: "table", id},
    h("thead", {}, h("tr", {}, head.map((c) => h("th", {text: c})))), h("tbody", {}, rows)));
}

function toolbar(...items) {
  return h("div", {class: "toolbar"}, items);
}

async function act(fn, refresh, done) {
  try {
    await fn();
    if (done) toast(done, "ok");
    refresh();
  } catch (err) { toast(err.message, "error"); }
}

const small = (label, iconName, fn) => button(label, iconName, fn, {cls: "btn-ghost btn-xs", iconOnly: true});

// -- users --------------------------------------------------------------------------------------

async function users(refresh) {
  const [{users: list}, {groups: all}] = await Promise.all([get("/admin/users"), get("/admin/groups")]);
  const add = button(t("admin.addUser"), "plus", async () => {
    const made = await formDialog(t("admin.addUser"), [
      {name: "name", label: t("admin.userName"), required: true, autocomplete: "off"},
      {name: "password", label: t("login.password"), type: "password", required: true, autocomplete: "new-password"},
      {name: "role", label: t("admin.role"), type: "select", value: "member", options: [["member", t("admin.member")], ["admin", t("admin.admin")]]},
      ...(all.length ? [{name: "groups", label: t("admin.groups"), type: "multi", options: all.map((g) => g.name)}] : []),
    ], {ok: t("common.create"), submit: (v) => api("POST", "/admin/users", {name: v.name, password: v.password, role: v.role, groups: v.groups || []})});
    if (made) { toast(t("admin.userAdded", {name: made.name}), "ok"); refresh(); }
  }, {cls: "btn-primary"});
  add.id = "add-user";
  const rows = list.map((u) => h("tr", {dataset: {user: u.name}},
    h("td", {class: "strong", text: u.name}),
    h("td", {}, h("span", {class: `pill${u.role === "admin" ? " good" : ""}`, text: t(`admin.${u.role}`)})),
    h("td", {text: u.groups.join(", ") || "–"}),
    h("td", {class: "num", text: number(u.keys)}),
    h("td", {}, u.disabled ? h("span", {class: "pill bad", text: t("admin.disabled")}) : h("span", {class: "muted", text: t("admin.active")})),
    h("td", {class: "hide-sm", text: when(u.created_at)}),
    h("td", {class: "row-actions"},
      small(t("admin.resetPassword"), "key", async () => {
        const v = await formDialog(t("admin.resetPassword"), [{name: "password", label: t("login.password"), type: "password", required: true}],
          {submit: (x) => api("PATCH", `/admin/users/${enc(u.name)}`, {password: x.password})});
        if (v) toast(t("admin.saved"), "ok");
      }),
      small(u.disabled ? t("admin.enable") : t("admin.disable"), u.disabled ? "check" : "x",
        () => act(() => api("PATCH", `/admin/users/${enc(u.name)}`, {disabled: !u.disabled}), refresh)),
      small(t("common.delete"), "trash", async () => {
        if (await confirmAction(t("admin.deleteUser", {name: u.name}))) act(() => api("DELETE", `/admin/users/${enc(u.name)}`), refresh);
      }))));
  return [toolbar(add), list.length ? table("users", [t("admin.userName"), t("admin.role"), t("admin.groups"), t("admin.keys"),
    t("admin.status"), t("admin.created"), ""], rows) : emptyState("user", t("admin.noUsers"))];
}

// -- groups -------------------------------------------------------------------------------------

async function groups(refresh) {
  const [{groups: list}, {users: people}] = await Promise.all([get("/admin/groups"), get("/admin/users")]);
  const add = button(t("admin.addGroup"), "plus", async () => {
    const made = await formDialog(t("admin.addGroup"), [{name: "name", label: t("admin.groupName"), required: true}],
      {ok: t("common.create"), submit: (v) => api("POST", "/admin/groups", {name: v.name})});
    if (made) refresh();
  }, {cls: "btn-primary"});
  const rows = list.map((g) => h("tr", {},
    h("td", {class: "strong", text: g.name}),
    h("td", {}, g.members.length ? g.members.map((m) => h("span", {class: "chip"}, h("span", {text: m}),
      h("button", {type: "button", class: "chip-x", "aria-label": t("common.remove"), title: t("common.remove"),
        onclick: () => act(() => api("DELETE", `/admin/groups/${enc(g.name)}/members/${enc(m)}`), refresh)}, icon("x", 12)))) : "–"),
    h("td", {class: "row-actions"},
      small(t("admin.addMembers"), "plus", async () => {
        const v = await formDialog(t("admin.addMembers"), [{name: "users", label: t("admin.users"), type: "multi",
          options: people.map((p) => p.name).filter((n) => !g.members.includes(n))}],
        {submit: (x) => api("POST", `/admin/groups/${enc(g.name)}/members`, {users: x.users})});
        if (v) refresh();
      }),
      small(t("common.delete"), "trash", async () => {
        if (await confirmAction(t("admin.deleteGroup", {name: g.name}))) act(() => api("DELETE", `/admin/groups/${enc(g.name)}`), refresh);
      }))));
  return [toolbar(add), list.length ? table("groups", [t("admin.groupName"), t("admin.members"), ""], rows) : emptyState("user", t("admin.noGroups"))];
}

// -- keys ---------------------------------------------------------------------------------------

async function keys(refresh) {
  const [{keys: list}, {users: people}] = await Promise.all([get("/admin/keys"), get("/admin/users")]);
  const add = button(t("admin.addKey"), "key", async () => {
    const made = await formDialog(t("admin.addKey"), [
      {name: "user", label: t("admin.userName"), type: "select", options: people.map((p) => p.name), value: people[0] && people[0].name},
      {name: "name", label: t("admin.keyName"), placeholder: "laptop"},
      {name: "routes", label: t("admin.routes"), type: "multi", options: ["chat", "embeddings", "kb", "admin"], value: ["chat", "embeddings", "kb"]},
      {name: "models", label: t("admin.models"), placeholder: t("admin.allHelp")},
      {name: "knowledge_bases", label: t("admin.kbs"), placeholder: t("admin.allHelp")},
      {name: "expires", label: t("admin.expires"), placeholder: "30d"},
    ], {ok: t("common.create"), submit: (v) => api("POST", "/admin/keys", {user: v.user, name: v.name, routes: v.routes,
      models: list_(v.models), knowledge_bases: list_(v.knowledge_bases), expires: v.expires || null})});
    if (made) {
      await dialog(t("admin.keyCreated"), (close) => [
        h("p", {text: t("admin.keyOnce")}),
        h("div", {class: "secret"}, h("code", {id: "new-key", text: made.key}),
          button(t("common.copy"), "copy", () => copyText(made.key), {cls: "btn-secondary"})),
        h("div", {class: "actions"}, button(t("common.close"), null, () => close(), {cls: "btn-primary"}))]);
      refresh();
    }
  }, {cls: "btn-primary"});
  const rows = list.map((k) => h("tr", {dataset: {key: k.id}},
    h("td", {}, h("code", {text: `${k.prefix}…`})),
    h("td", {class: "strong", text: k.user}),
    h("td", {text: k.name || "–"}),
    h("td", {class: "hide-sm", text: [k.routes.join(", "), k.models ? k.models.join(", ") : null, k.knowledge_bases ? `kb: ${k.knowledge_bases.join(", ")}` : null].filter(Boolean).join(" · ")}),
    h("td", {}, h("span", {class: `pill${k.status === "active" ? " good" : " bad"}`, text: k.status})),
    h("td", {class: "hide-sm", text: k.last_used ? when(k.last_used) : "–"}),
    h("td", {class: "row-actions"}, k.status === "active" ? small(t("admin.revoke"), "x", async () => {
      if (await confirmAction(t("admin.revokeConfirm", {key: k.prefix}), {ok: t("admin.revoke")})) act(() => api("DELETE", `/admin/keys/${enc(k.id)}`), refresh);
    }) : null)));
  return [toolbar(add), list.length ? table("keys", [t("admin.key"), t("admin.userName"), t("admin.keyName"), t("admin.scope"),
    t("admin.status"), t("admin.lastUsed"), ""], rows) : emptyState("key", t("admin.noKeys"))];
}

function list_(text) {
  const items = (text || "").split(/[,，\s]+/).filter(Boolean);
  return items.length ? items : null;
}

// -- grants -------------------------------------------------------------------------------------

async function grants(refresh) {
  const [{grants: list}, {users: people}, {groups: teams}, {knowledge_bases: kbs}] = await Promise.all([
    get("/admin/grants"), get("/admin/users"), get("/admin/groups"), get("/kb")]);
  const add = button(t("admin.addGrant"), "plus", async () => {
    const who = [...people.map((p) => [`user:${p.name}`, `${t("admin.user")}: ${p.name}`]), ...teams.map((g) => [`group:${g.name}`, `${t("admin.group")}: ${g.name}`])];
    const made = await formDialog(t("admin.addGrant"), [
      {name: "knowledge_base", label: t("nav.kb"), type: "select", options: kbs.map((k) => k.name)},
      {name: "who", label: t("admin.who"), type: "select", options: who},
      {name: "access", label: t("admin.access"), type: "select", value: "read", options: [["read", t("admin.read")], ["write", t("admin.write")]]},
    ], {ok: t("admin.grant"), submit: (v) => {
      const [kind, name] = [v.who.slice(0, v.who.indexOf(":")), v.who.slice(v.who.indexOf(":") + 1)];
      return api("POST", "/admin/grants", {knowledge_base: v.knowledge_base, access: v.access, [kind]: name});
    }});
    if (made) refresh();
  }, {cls: "btn-primary"});
  add.id = "add-grant";
  const rows = list.map((g) => h("tr", {},
    h("td", {class: "strong", text: g.knowledge_base}),
    h("td", {text: g.user ? `${t("admin.user")}: ${g.user}` : `${t("admin.group")}: ${g.group}`}),
    h("td", {}, h("span", {class: "pill", text: t(`admin.${g.access}`)})),
    h("td", {class: "row-actions"}, small(t("common.remove"), "trash", () => {
      const q = g.user ? `user=${enc(g.user)}` : `group=${enc(g.group)}`;
      act(() => api("DELETE", `/admin/grants/${enc(g.knowledge_base)}?${q}`), refresh);
    }))));
  return [toolbar(add), h("p", {class: "muted small", text: t("admin.grantsHelp")}),
    list.length ? table("grants", [t("nav.kb"), t("admin.who"), t("admin.access"), ""], rows) : emptyState("book", t("admin.noGrants"))];
}

// -- quotas and usage ---------------------------------------------------------------------------

async function quotas(refresh) {
  const [{quotas: list}, {usage}, {users: people}] = await Promise.all([get("/admin/quotas"), get("/admin/usage?by=user"), get("/admin/users")]);
  const add = button(t("admin.setQuota"), "sliders", async () => {
    const made = await formDialog(t("admin.setQuota"), [
      {name: "user", label: t("admin.userName"), type: "select", options: people.map((p) => p.name)},
      {name: "requests_per_minute", label: t("admin.rpm"), type: "number"},
      {name: "tokens_per_day", label: t("admin.tpd"), type: "number"},
    ], {submit: (v) => api("PUT", "/admin/quotas", {user: v.user, requests_per_minute: v.requests_per_minute ? Number(v.requests_per_minute) : null,
      tokens_per_day: v.tokens_per_day ? Number(v.tokens_per_day) : null})});
    if (made) refresh();
  }, {cls: "btn-primary"});
  const qrows = list.map((q) => h("tr", {},
    h("td", {class: "strong", text: `${q.kind === "key" ? "bk_" : ""}${q.subject}`}),
    h("td", {class: "num", text: q.requests_per_minute ?? "–"}),
    h("td", {class: "num", text: q.tokens_per_day !== null ? number(q.tokens_per_day) : "–"}),
    h("td", {class: "row-actions"}, small(t("common.remove"), "trash",
      () => act(() => api("DELETE", `/admin/quotas?${q.kind}=${enc(q.subject)}`), refresh)))));
  const urows = usage.map((u) => h("tr", {},
    h("td", {class: "strong", text: u.user || "–"}),
    h("td", {class: "num", text: number(u.requests)}),
    h("td", {class: "num", text: number(u.prompt_tokens)}),
    h("td", {class: "num", text: number(u.completion_tokens)})));
  return [toolbar(add),
    list.length ? table("quotas", [t("admin.subject"), t("admin.rpm"), t("admin.tpd"), ""], qrows) : h("p", {class: "muted", text: t("admin.noQuotas")}),
    h("h2", {class: "section-title", text: t("admin.usageToday")}),
    usage.length ? table("usage", [t("admin.userName"), t("admin.requests"), t("admin.promptTokens"), t("admin.outputTokens")], urows)
      : h("p", {class: "muted", text: t("admin.noUsage")})];
}

// -- the audit log ------------------------------------------------------------------------------

async function audit() {
  const filters = {since: "", user: "", kind: "", status: "", knowledge_base: ""};
  const out = h("div");
  const inputs = Object.keys(filters).map((name) => h("input", {name, placeholder: t(`admin.f_${name}`), "aria-label": t(`admin.f_${name}`),
    class: "filter", onchange: (e) => { filters[name] = e.target.value.trim(); load(); }}));
  const query = (extra = {}) => new URLSearchParams(Object.entries({...filters, ...extra}).filter(([, v]) => v !== "" && v !== null)).toString();
  // the export takes the filters shown at the moment of the click
  const exportLink = (format) => h("a", {class: "btn btn-ghost", href: `/admin/audit/export?${query({format})}`, download: `bendi-audit.${format}`,
    dataset: {format}, onclick: (e) => { e.currentTarget.href = `/admin/audit/export?${query({format})}`; }},
  icon("download", 16), h("span", {text: format.toUpperCase()}));
  const verify = button(t("admin.verify"), "shield", async () => {
    try {
      const r = await get("/admin/audit/verify");
      toast(r.summary, r.ok ? "ok" : "error");
    } catch (err) { toast(err.message, "error"); }
  }, {cls: "btn-ghost"});
  let before = null;
  const tbody = h("tbody");
  const more = button(t("admin.more"), null, () => load(true), {cls: "btn-ghost"});
  async function load(append = false) {
    if (!append) { before = null; fill(tbody); }
    for (const a of out.querySelectorAll("a[data-format]")) a.href = `/admin/audit/export?${query({format: a.dataset.format})}`;
    try {
      const r = await get(`/admin/audit?${query({before, limit: 100})}`);
      for (const rec of r.records) {
        tbody.append(h("tr", {},
          h("td", {class: "num", text: rec.seq}),
          h("td", {text: when(rec.ts / 1e6)}),
          h("td", {text: rec.user || "–"}),
          h("td", {text: rec.action || rec.kind}),
          h("td", {class: "hide-sm", text: [rec.model, rec.knowledge_base && `kb:${rec.knowledge_base}`].filter(Boolean).join(" ") || rec.route || ""}),
          h("td", {}, h("span", {class: `pill${rec.status === "ok" ? " good" : " bad"}`, text: rec.status})),
          h("td", {class: "num hide-sm", text: rec.prompt_tokens + rec.completion_tokens ? number(rec.prompt_tokens + rec.completion_tokens) : ""})));
      }
      before = r.next_before;
      more.hidden = !before;
    } catch (err) { toast(err.message, "error"); }
  }
  fill(out, h("div", {class: "filters"}, inputs), toolbar(exportLink("csv"), exportLink("jsonl"), verify),
    h("div", {class: "table-wrap"}, h("table", {class: "table", id: "audit"},
      h("thead", {}, h("tr", {}, ["#", t("admin.time"), t("admin.userName"), t("admin.action"), t("admin.target"), t("admin.status"), t("admin.tokens")]
        .map((c, k) => h("th", {class: [4, 6].includes(k) ? "hide-sm" : undefined, text: c})))), tbody)), more);
  await load();
  return out;
}
