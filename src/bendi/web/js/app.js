// The console's frame: who is signed in, the navigation (sidebar on a desktop, a drawer on a
// phone), the pages by address (#/chat, #/kb, #/models, #/admin), the language switch and the
// keys that work everywhere.
//
// Sign-in: GET /auth/session says whether this server needs a login and who the caller is. In
// single-user loopback mode it needs none and the console opens as it is. A server that only has
// an API key (no accounts) gets the key asked once; it is kept in this tab (sessionStorage).

import {ApiError, api, get, onUnauthorized, setCsrf, setKey} from "./api.js";
import {chatKeys, chatPage, chatShowing, refreshConversations, stop} from "./chat.js";
import {button, fill, h, icon} from "./dom.js";
import {lang, setLang, t} from "./i18n.js";
import {kbListPage, kbPage} from "./kb.js";
import {modelsPage} from "./models.js";
import {closePassage} from "./passage.js";
import {toast} from "./ui.js";

const KEY_STORE = "bendi.key";

const session = {
  // {authenticated, user, role, auth_required, ...} from /auth/session; null before it is known
  info: null,
  // true when the server has no accounts (no /auth/session route)
  keyOnly: false,
};

let shell = null;
let pending = null;  // options of the navigation under way ({fresh, model, quiet})

const app = {
  navigate(hash, options = {}) {
    pending = options;
    if (options.quiet) {
      history.replaceState(null, "", hash);
      pending = null;
      highlightNav();
      return;
    }
    if (location.hash === hash) route();
    else location.hash = hash;
  },
  /** Admins, and the single user of a server without accounts. */
  canAdmin() {
    const s = session.info;
    return !s || !s.authenticated ? !(s && s.auth_required) : s.role === "admin";
  },
  get slot() { return shell.slot; },
};

// -- signing in ---------------------------------------------------------------------------------

async function loadSession() {
  try {
    session.info = await get("/auth/session");
    setCsrf(session.info.csrf_token);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 404) throw err;
    session.info = null;  // a server without accounts
    session.keyOnly = true;
  }
}

function needsLogin() {
  const s = session.info;
  return !!(s && s.auth_required && !s.authenticated);
}

function loginPage(message) {
  const error = h("p", {class: "form-error", hidden: !message, text: message || ""});
  const keyMode = session.keyOnly;
  const fields = keyMode
    ? [h("div", {class: "field"}, h("label", {for: "login-key", text: t("login.key")}),
      h("input", {id: "login-key", name: "key", type: "password", required: true, autocomplete: "off"}),
      h("small", {class: "muted", text: t("login.keyHelp")}))]
    : [h("div", {class: "field"}, h("label", {for: "login-user", text: t("login.user")}),
      h("input", {id: "login-user", name: "username", required: true, autocomplete: "username"})),
    h("div", {class: "field"}, h("label", {for: "login-password", text: t("login.password")}),
      h("input", {id: "login-password", name: "password", type: "password", required: true, autocomplete: "current-password"}))];
  const form = h("form", {class: "form login-form", id: "login", onsubmit: async (e) => {
    e.preventDefault();
    error.hidden = true;
    try {
      if (keyMode) {
        setKey(form.elements.key.value.trim());
        await get("/api/tags");
        sessionStorage.setItem(KEY_STORE, form.elements.key.value.trim());
      } else {
        const who = await api("POST", "/auth/login", {username: form.elements.username.value.trim(),
          password: form.elements.password.value});
        session.info = {...who, auth_required: true};
        setCsrf(who.csrf_token);
      }
      start();
    } catch (err) {
      if (keyMode) setKey(null);
      error.hidden = false;
      error.textContent = err.status === 401 ? t("login.failed") : err.message;
    }
  }}, fields, error, button(t("login.submit"), null, null, {cls: "btn-primary btn-block", type: "submit"}));
  fill(document.getElementById("app"), h("main", {class: "login"},
    h("div", {class: "login-card"},
      h("div", {class: "brand brand-big"}, h("span", {class: "logo", text: "本"}), h("span", {text: "bendi"})),
      h("h1", {text: t("login.title")}), form, languageButton())));
  const first = form.querySelector("input");
  if (first) first.focus();
}

async function logout() {
  try { await api("POST", "/auth/logout"); } catch { /* the cookie is gone either way */ }
  sessionStorage.removeItem(KEY_STORE);
  setKey(null);
  setCsrf(null);
  location.hash = "";
  location.reload();
}

// -- the frame ----------------------------------------------------------------------------------

function languageButton() {
  return h("button", {type: "button", class: "btn btn-ghost lang-switch", id: "lang-switch", title: t("nav.languageLabel"),
    "aria-label": t("nav.languageLabel"), onclick: () => {
      setLang(lang() === "zh" ? "en" : "zh");
      if (shell) { buildShell(); route(); } else if (needsLogin() || session.keyOnly) loginPage();
    }}, icon("globe", 16), h("span", {text: t("nav.language")}));
}

function navLink(hash, iconName, label, id) {
  return h("a", {class: "nav-link", href: hash, id, dataset: {nav: hash}}, icon(iconName), h("span", {text: label}));
}

function buildShell() {
  const s = session.info;
  const user = s && s.authenticated
    ? h("div", {class: "who"}, icon("user", 16), h("span", {class: "who-name", text: s.user}),
      s.role ? h("span", {class: "pill", text: s.role}) : null)
    : h("div", {class: "who muted small", text: session.keyOnly && sessionStorage.getItem(KEY_STORE) ? "API key" : t("nav.localMode")});
  const canLogOut = (s && s.authenticated && s.via === "session") || sessionStorage.getItem(KEY_STORE);
  const nav = h("nav", {class: "nav", "aria-label": "bendi"},
    navLink("#/chat", "chat", t("nav.chat"), "nav-chat"),
    navLink("#/kb", "book", t("nav.kb"), "nav-kb"),
    navLink("#/models", "cube", t("nav.models"), "nav-models"),
    app.canAdmin() && s && s.authenticated ? navLink("#/admin", "shield", t("nav.admin"), "nav-admin") : null);
  const slot = h("div", {class: "slot"});
  const sidebar = h("aside", {class: "sidebar", id: "sidebar"},
    h("a", {class: "brand", href: "#/chat"}, h("span", {class: "logo", text: "本"}), h("span", {text: "bendi"})),
    nav, slot,
    h("div", {class: "sidebar-foot"}, user,
      h("div", {class: "foot-actions"}, languageButton(),
        canLogOut ? button(t("nav.logout"), "logout", logout, {cls: "btn-ghost", iconOnly: true}) : null)));
  const scrim = h("div", {class: "scrim", onclick: () => document.body.classList.remove("nav-open")});
  const topbar = h("header", {class: "topbar"},
    button(t("nav.menu"), "menu", () => document.body.classList.toggle("nav-open"), {cls: "btn-ghost", iconOnly: true}),
    h("span", {class: "brand"}, h("span", {class: "logo", text: "本"}), h("span", {text: "bendi"})));
  const main = h("main", {class: "main", id: "main"});
  fill(document.getElementById("app"), h("div", {class: "shell"}, sidebar, scrim, h("div", {class: "content"}, topbar, main)));
  shell = {sidebar, slot, main};
}

function highlightNav() {
  const section = (location.hash.split("/")[1] || "chat");
  for (const link of document.querySelectorAll(".nav-link")) {
    link.classList.toggle("active", link.dataset.nav === `#/${section}`);
  }
}

async function route() {
  const options = pending || {};
  pending = null;
  document.body.classList.remove("nav-open");
  closePassage();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const section = parts[0] || "chat";
  highlightNav();
  if (section !== "chat") {
    stop();
    fill(shell.slot);
  }
  const conversation = options.fresh ? null : parts[1] || null;
  if (section === "chat" && chatShowing(conversation)) return;  // its answer is still streaming in
  // each page gets its own element: a page still loading when the reader has moved on fills an
  // element no longer shown, never the page that replaced it
  const main = h("div", {class: "route"});
  fill(shell.main, main);
  if (section === "kb" && parts[1]) return kbPage(main, app, parts[1], parts[2] === "search" ? "search" : "documents");
  if (section === "kb") return kbListPage(main, app);
  if (section === "models") return modelsPage(main, app);
  if (section === "admin" && app.canAdmin()) {
    const {adminPage} = await import("./admin.js");
    return adminPage(main, app, parts[1] || "users");
  }
  // chat: #/chat or #/chat/<id>; /?q=...&model=... (the old /ui links) asks right away
  const query = new URLSearchParams(location.search);
  let start = options.model ? {model: options.model} : null;
  if (query.get("q")) {
    start = {q: query.get("q"), model: query.get("model") || undefined};
    history.replaceState(null, "", "/#/chat");
  }
  return chatPage(main, app, conversation, start);
}

function keys(e) {
  if (chatKeys(e)) return;
  if (e.key === "Escape") document.body.classList.remove("nav-open");
}

let started = false;

async function start() {
  if (needsLogin()) { loginPage(); return; }
  buildShell();
  if (!started) {
    started = true;
    window.addEventListener("hashchange", () => route());
    document.addEventListener("keydown", keys);
    onUnauthorized(() => {
      if (session.keyOnly) { setKey(null); sessionStorage.removeItem(KEY_STORE); loginPage(t("login.failed")); return; }
      loadSession().then(() => { if (needsLogin()) loginPage(); });
    });
  }
  await route();
  refreshConversations();
}

async function boot() {
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) setKey(key);
  try {
    await loadSession();
  } catch (err) {
    toast(err.message, "error");
  }
  if (session.keyOnly && !key) {
    // a key-only server: ask for the key only if it wants one
    try { await get("/api/tags"); } catch (err) {
      if (err.status === 401) { loginPage(); return; }
    }
  }
  start();
}

boot();
