// Chat: a model (or a knowledge base as kb:<name>) picker, streaming answers with the reasoning in
// a block that folds away, stop, regenerate, copy, Markdown, cited passages, and the caller's
// conversations kept on the server (/conversations).
//
// Plain models stream from /v1/chat/completions (OpenAI's server-sent events); knowledge bases
// from /kb/<name>/ask (JSON lines: the sources first, then the answer, then its citations).

import {ApiError, api, get, ndjson, request, sse} from "./api.js";
import {button, fill, h, icon} from "./dom.js";
import {t} from "./i18n.js";
import {renderMarkdown} from "./markdown.js";
import {location as sourceLocation, showPassage} from "./passage.js";
import {confirmAction, copyText, toast} from "./ui.js";

const DEFAULTS_KEY = "bendi.chat.defaults";
const MODEL_KEY = "bendi.chat.model";
const KB = "kb:";

const state = {
  models: [],        // chat model names
  kbs: [],           // knowledge bases the caller may read
  conversations: [],
  conv: null,        // {id?, title, model, settings, messages}
  running: null,     // AbortController of the answer being streamed
  live: null,        // the streaming message's elements
};
let view = null;     // the page's elements
let ctx = null;      // the app (navigation, sidebar slot)

function defaults() {
  try { return {temperature: "", max_tokens: "", system: "", answer_model: "", ...JSON.parse(localStorage.getItem(DEFAULTS_KEY) || "{}")}; }
  catch { return {temperature: "", max_tokens: "", system: "", answer_model: ""}; }
}

function newConversation(model) {
  return {id: null, title: "", model: model || pickDefaultModel(), settings: defaults(), messages: []};
}

function pickDefaultModel() {
  const saved = localStorage.getItem(MODEL_KEY);
  const all = [...state.models, ...state.kbs.map((k) => KB + k)];
  if (saved && all.includes(saved)) return saved;
  return state.models[0] || all[0] || "";
}

// -- the sidebar: conversations ---------------------------------------------------------------

export async function refreshConversations() {
  try {
    state.conversations = (await get("/conversations")).conversations;
  } catch {
    state.conversations = [];
  }
  renderSidebar();
}

function renderSidebar() {
  if (!ctx) return;
  const current = state.conv && state.conv.id;
  const list = h("nav", {class: "conv-list", "aria-label": t("chat.history")});
  if (!state.conversations.length) list.append(h("p", {class: "muted small pad", text: t("chat.noHistory")}));
  for (const c of state.conversations) {
    const del = button(t("common.delete"), "trash", async (e) => {
      e.preventDefault();
      e.stopPropagation();
      if (!(await confirmAction(t("chat.deleteConfirm", {title: c.title || t("chat.untitled")})))) return;
      try {
        await api("DELETE", `/conversations/${encodeURIComponent(c.id)}`);
        if (current === c.id) ctx.navigate("#/chat");
        await refreshConversations();
      } catch (err) { toast(err.message, "error"); }
    }, {cls: "btn-ghost btn-xs conv-del", iconOnly: true});
    list.append(h("a", {class: `conv${c.id === current ? " active" : ""}`, href: `#/chat/${encodeURIComponent(c.id)}`,
      title: c.title}, h("span", {class: "conv-title", text: c.title || t("chat.untitled")}), del));
  }
  fill(ctx.slot,
    h("button", {type: "button", class: "btn btn-new", id: "new-chat", onclick: () => ctx.navigate("#/chat", {fresh: true})},
      icon("plus", 16), h("span", {text: t("chat.new")}), h("kbd", {text: "Ctrl ⇧ O"})),
    h("div", {class: "slot-label", text: t("chat.history")}), list);
}

// -- the page ---------------------------------------------------------------------------------

/** Whether the page shows conversation `id` while its answer streams in (nothing to redraw). */
export function chatShowing(id) {
  return !!(state.running && state.conv && state.conv.id === id && view && document.body.contains(view.root));
}

/** Show the chat page; `id`: a saved conversation; `start`: {q, model} to ask right away. */
export async function chatPage(root, app, id, start) {
  ctx = app;
  if (state.running) state.running.abort();
  await loadChoices();
  let conv = newConversation(start && start.model);
  if (id) {
    try {
      const saved = await get(`/conversations/${encodeURIComponent(id)}`);
      conv = {...saved, settings: {...defaults(), ...saved.settings}};
    } catch (err) {
      toast(err.message, "error");
    }
  }
  if (!document.body.contains(root)) return;  // the reader went elsewhere meanwhile
  state.conv = conv;
  build(root);
  renderSidebar();
  if (!state.conversations.length) refreshConversations();
  if (start && start.q) send(start.q);
}

async function loadChoices() {
  const [tags, kbs] = await Promise.allSettled([get("/api/tags"), get("/kb")]);
  // /api/tags also lists each knowledge base as a kb:<name> model (for other clients); here they have their own group
  state.models = tags.status === "fulfilled" ? tags.value.models.map((m) => m.name).filter((n) => !n.startsWith(KB)) : [];
  state.kbs = kbs.status === "fulfilled" ? kbs.value.knowledge_bases.map((k) => k.name) : [];
}

function build(root) {
  const conv = state.conv;
  const picker = h("select", {id: "model", class: "model-picker", "aria-label": t("chat.model"), onchange: (e) => setModel(e.target.value)});
  const models = h("optgroup", {label: t("chat.models")}, state.models.map((m) => h("option", {value: m, text: m})));
  const kbs = h("optgroup", {label: t("chat.knowledgeBases")}, state.kbs.map((k) => h("option", {value: KB + k, text: k})));
  picker.append(models);
  if (state.kbs.length) picker.append(kbs);
  if (conv.model && ![...picker.options].some((o) => o.value === conv.model)) {
    picker.append(h("option", {value: conv.model, text: conv.model}));
  }
  picker.value = conv.model;

  const settingsPanel = buildSettings();
  const messages = h("div", {class: "messages", id: "messages"});
  const scroller = h("div", {class: "chat-scroll"}, messages);
  const input = h("textarea", {id: "prompt", rows: 1, placeholder: t("chat.placeholder"), "aria-label": t("chat.placeholder"),
    onkeydown: onPromptKey, oninput: () => grow(input)});
  const sendBtn = button(t("chat.send"), "send", () => submit(), {cls: "btn-primary btn-send", iconOnly: true});
  sendBtn.id = "send";
  const stopBtn = button(t("chat.stop"), "stop", () => stop(), {cls: "btn-stop", iconOnly: true});
  stopBtn.id = "stop";
  stopBtn.hidden = true;
  const composer = h("div", {class: "composer-wrap"},
    h("div", {class: "composer"}, input, sendBtn, stopBtn),
    h("div", {class: "hint muted", text: t("chat.hint")}));
  const settingsBtn = button(t("chat.settings"), "sliders", () => { settingsPanel.hidden = !settingsPanel.hidden; },
    {cls: "btn-ghost", iconOnly: true});
  settingsBtn.id = "chat-settings";
  const head = h("div", {class: "chat-head"}, picker, h("span", {class: "grow"}), settingsBtn);
  const rootEl = h("section", {class: "chat"}, head, settingsPanel, scroller, composer);
  fill(root, rootEl);
  view = {root: rootEl, picker, messages, scroller, input, sendBtn, stopBtn, settingsPanel};
  renderMessages();
  input.focus();
}

function buildSettings() {
  const s = state.conv.settings;
  const save = () => {
    localStorage.setItem(DEFAULTS_KEY, JSON.stringify(s));
    persist({settings: s});
  };
  const temp = h("input", {type: "range", min: "0", max: "2", step: "0.1", value: s.temperature === "" ? "0.7" : String(s.temperature),
    id: "temperature"});
  const tempOut = h("output", {text: s.temperature === "" ? t("chat.default") : String(s.temperature)});
  temp.addEventListener("input", () => { s.temperature = temp.value; tempOut.textContent = temp.value; });
  temp.addEventListener("change", save);
  const resetTemp = h("button", {type: "button", class: "link", text: t("chat.default"), onclick: () => {
    s.temperature = ""; tempOut.textContent = t("chat.default"); temp.value = "0.7"; save();
  }});
  const system = h("textarea", {id: "system-prompt", rows: 3, value: s.system || "", placeholder: t("chat.systemPlaceholder"),
    onchange: (e) => { s.system = e.target.value; save(); }});
  const maxTokens = h("input", {type: "number", min: "1", step: "1", id: "max-tokens", value: s.max_tokens || "", placeholder: t("chat.default"),
    onchange: (e) => { s.max_tokens = e.target.value; save(); }});
  const answerModel = h("select", {id: "answer-model", onchange: (e) => { s.answer_model = e.target.value; save(); }},
    h("option", {value: "", text: t("chat.default")}), state.models.map((m) => h("option", {value: m, text: m})));
  answerModel.value = s.answer_model || "";
  return h("div", {class: "chat-settings", hidden: true},
    h("div", {class: "field"}, h("label", {for: "system-prompt", text: t("chat.system")}), system),
    h("div", {class: "settings-row"},
      h("div", {class: "field"}, h("label", {for: "temperature"}, t("chat.temperature"), " ", tempOut, " ", resetTemp), temp),
      h("div", {class: "field"}, h("label", {for: "max-tokens", text: t("chat.maxTokens")}), maxTokens),
      h("div", {class: "field"}, h("label", {for: "answer-model", text: t("chat.answerModel")}), answerModel)));
}

function setModel(model) {
  state.conv.model = model;
  localStorage.setItem(MODEL_KEY, model);
  persist({model});
  if (!state.conv.messages.length) renderMessages();
}

async function persist(change) {
  const conv = state.conv;
  if (!conv.id) return;
  try {
    await api("PATCH", `/conversations/${encodeURIComponent(conv.id)}`, change);
  } catch (err) { toast(err.message, "error"); }
}

// -- messages ---------------------------------------------------------------------------------

function renderMessages() {
  const conv = state.conv;
  if (!conv.messages.length) {
    fill(view.messages, welcome());
    return;
  }
  fill(view.messages, conv.messages.map((m, i) => messageEl(m, i)));
  scrollDown(true);
}

function welcome() {
  const kb = state.conv.model.startsWith(KB);
  const examples = kb ? [t("chat.exampleKb1"), t("chat.exampleKb2"), t("chat.exampleKb3")]
    : [t("chat.example1"), t("chat.example2"), t("chat.example3")];
  return h("div", {class: "welcome"},
    h("div", {class: "logo-big", text: "本"}),
    h("h2", {text: kb ? t("chat.welcomeKb", {name: state.conv.model.slice(KB.length)}) : t("chat.welcome")}),
    h("p", {class: "muted", text: state.conv.model ? t("chat.using", {model: state.conv.model}) : t("chat.noModels")}),
    h("div", {class: "examples"}, examples.map((q) => h("button", {type: "button", class: "example", text: q, onclick: () => send(q)}))));
}

function messageEl(m, index) {
  if (m.role === "user") {
    return h("div", {class: "msg user", dataset: {index: String(index)}},
      h("div", {class: "bubble", text: m.content}),
      h("div", {class: "msg-actions"}, button(t("common.copy"), "copy", () => copyText(m.content), {cls: "btn-ghost btn-xs", iconOnly: true})));
  }
  const el = h("div", {class: "msg assistant", dataset: {index: String(index)}});
  const body = h("div", {class: "msg-body"});
  el.append(h("div", {class: "avatar", "aria-hidden": "true", text: "本"}), body);
  const parts = {el, body, reasoning: null, answer: h("div", {class: "answer md"}), sources: h("div", {class: "sources"}),
    error: h("div", {class: "msg-error", hidden: true}), actions: h("div", {class: "msg-actions"})};
  const details = h("details", {class: "reasoning", hidden: !m.reasoning, open: !!(m.reasoning && !m.content && isLive(index))},
    h("summary", {}, icon("brain", 14), h("span", {class: "reasoning-label"})), h("div", {class: "reasoning-text"}));
  parts.reasoning = details;
  body.append(details, parts.answer, parts.sources, parts.error, parts.actions);
  updateMessage(m, index, parts);
  return el;
}

function isLive(index) {
  return !!(state.running && state.live && state.live.index === index);
}

function citeHandler(m) {
  return (n) => {
    const source = (m.sources || [])[n - 1];
    if (!source) return;
    const cited = (m.cited || []).find((c) => c.number === n);
    showPassage({...source, ...(cited || {}), text: source.text}, claimFor(m.content, n) || questionBefore(m));
  };
}

/** The sentence of the answer that cites [n] (what the highlighted passage should support). */
function claimFor(text, n) {
  for (const s of (text || "").split(/(?<=[。！？!?\n])/)) {
    if (new RegExp(`\\[(?:\\d+\\s*[,，、]\\s*)*${n}(?:\\s*[,，、]\\s*\\d+)*\\]`).test(s)) return s.replace(/\[[\d\s,，、]+\]/g, "");
  }
  return "";
}

function questionBefore(m) {
  const msgs = state.conv.messages;
  const i = msgs.indexOf(m);
  for (let j = i - 1; j >= 0; j--) if (msgs[j].role === "user") return msgs[j].content;
  return "";
}

function updateMessage(m, index, parts) {
  const live = isLive(index);
  const mdOpts = {onCite: m.sources && m.sources.length ? citeHandler(m) : null, citeLabel: t("passage.source", {n: ""}).trim(),
    copyLabel: t("common.copy"), onCopy: copyText};
  // reasoning
  if (m.reasoning) {
    parts.reasoning.hidden = false;
    const label = parts.reasoning.querySelector(".reasoning-label");
    label.textContent = live && !m.content ? t("chat.thinking")
      : (m.think_seconds ? t("chat.thought", {s: m.think_seconds}) : t("chat.reasoning"));
    fill(parts.reasoning.querySelector(".reasoning-text"), renderMarkdown(m.reasoning, {}));
    // open while the model thinks (so the reasoning can be read as it comes), folded once the
    // answer starts (also when the answer and the end came in one piece, before a redraw);
    // after that it stays as the reader leaves it
    if (live && !m.content && !parts.reasoning.dataset.autoopened) {
      parts.reasoning.open = true;
      parts.reasoning.dataset.autoopened = "1";
    }
    if (m.content && parts.reasoning.dataset.autoclosed !== "1") {
      parts.reasoning.open = false;
      parts.reasoning.dataset.autoclosed = "1";
    }
  }
  // answer
  if (m.content) {
    fill(parts.answer, renderMarkdown(m.content, mdOpts));
  } else if (live) {
    fill(parts.answer, h("span", {class: "typing", "aria-label": t("chat.waiting")}, h("i"), h("i"), h("i")));
  } else {
    fill(parts.answer);
  }
  if (live && m.content) parts.answer.append(h("span", {class: "caret"}));
  // sources (knowledge bases)
  fill(parts.sources);
  if (m.sources && m.sources.length) {
    const cited = new Set(m.citations || []);
    parts.sources.append(h("div", {class: "sources-label", text: t("chat.sources")}),
      h("div", {class: "source-list"}, m.sources.map((s, k) => h("button", {type: "button",
        class: `source${cited.has(k + 1) ? " cited" : ""}`, onclick: () => citeHandler(m)(k + 1), title: s.document},
      h("span", {class: "source-n", text: String(k + 1)}), h("span", {class: "source-doc", text: s.document}),
      sourceLocation(s) ? h("span", {class: "source-loc muted", text: sourceLocation(s)}) : null))));
  } else if (m.found === false && !live) {
    parts.sources.append(h("div", {class: "muted small", text: t("chat.notFound")}));
  }
  // error
  parts.error.hidden = !m.error;
  if (m.error) fill(parts.error, icon("alert", 16), h("span", {text: m.error}));
  // actions
  fill(parts.actions);
  if (!live) {
    parts.actions.append(button(t("common.copy"), "copy", () => copyText(m.content), {cls: "btn-ghost btn-xs", iconOnly: true}));
    if (index === state.conv.messages.length - 1) {
      const regen = button(t("chat.regenerate"), "refresh", () => regenerate(), {cls: "btn-ghost btn-xs regen", iconOnly: true});
      parts.actions.append(regen);
    }
    if (m.stopped) parts.actions.append(h("span", {class: "tag", text: t("chat.stopped")}));
    if (m.finish === "length") parts.actions.append(h("span", {class: "tag", text: t("chat.truncated")}));
    if (m.grounded === false) parts.actions.append(h("span", {class: "tag warn", text: t("chat.ungrounded")}));
    const meta = [m.answer_model || m.model, m.usage ? t("chat.tokens", {n: m.usage.completion}) : null, m.seconds ? `${m.seconds} s` : null]
      .filter(Boolean).join(" · ");
    if (meta) parts.actions.append(h("span", {class: "meta muted", text: meta}));
  }
}

// -- sending ----------------------------------------------------------------------------------

function onPromptKey(e) {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
    e.preventDefault();
    submit();
  }
}

function grow(el) {
  el.style.height = "auto";
  el.style.height = `${Math.min(el.scrollHeight, 240)}px`;
}

function submit() {
  if (state.running) return;
  const text = view.input.value.trim();
  if (!text) return;
  view.input.value = "";
  grow(view.input);
  send(text);
}

export function stop() {
  if (state.running) state.running.abort();
}

/** Keys that work anywhere on the chat page: Esc stops, Ctrl+Shift+O starts a new chat. */
export function chatKeys(e) {
  if (!view || !document.body.contains(view.root)) return false;
  if (e.key === "Escape" && state.running && !document.querySelector("dialog[open]")) {
    e.preventDefault();
    stop();
    return true;
  }
  if ((e.ctrlKey || e.metaKey) && e.shiftKey && e.key.toLowerCase() === "o") {
    e.preventDefault();
    ctx.navigate("#/chat", {fresh: true});
    return true;
  }
  return false;
}

async function send(text) {
  if (state.running || !state.conv.model) {
    if (!state.conv.model) toast(t("chat.noModels"), "error");
    return;
  }
  const conv = state.conv;
  conv.messages.push({role: "user", content: text});
  if (!conv.id) {
    try {
      const created = await api("POST", "/conversations", {model: conv.model, settings: conv.settings, messages: conv.messages});
      conv.id = created.id;
      conv.title = created.title;
      ctx.navigate(`#/chat/${encodeURIComponent(conv.id)}`, {quiet: true});
      refreshConversations();
    } catch (err) {
      toast(err.message, "error");
    }
  }
  await generate();
}

function regenerate() {
  if (state.running) return;
  const msgs = state.conv.messages;
  while (msgs.length && msgs[msgs.length - 1].role === "assistant") msgs.pop();
  if (!msgs.length) return;
  generate();
}

function history(upTo) {
  const s = state.conv.settings;
  const out = [];
  if (s.system && !state.conv.model.startsWith(KB)) out.push({role: "system", content: s.system});
  for (const m of state.conv.messages.slice(0, upTo)) {
    if (m.role === "assistant" && !m.content) continue;  // failed answers are not history
    out.push({role: m.role, content: m.content});
  }
  return out;
}

function sampling() {
  const s = state.conv.settings;
  const out = {};
  if (s.temperature !== "" && s.temperature !== undefined && s.temperature !== null) out.temperature = Number(s.temperature);
  if (s.max_tokens) out.max_tokens = Number(s.max_tokens);
  return out;
}

async function generate() {
  const conv = state.conv;
  const msg = {role: "assistant", content: "", reasoning: "", model: conv.model};
  const messages = history(conv.messages.length);
  conv.messages.push(msg);
  const index = conv.messages.length - 1;
  const controller = new AbortController();
  state.running = controller;
  state.live = {index};
  renderMessages();
  setRunning(true);
  const el = view.messages.querySelector(`.msg[data-index="${index}"]`);
  const parts = {el, body: el.querySelector(".msg-body"), reasoning: el.querySelector(".reasoning"), answer: el.querySelector(".answer"),
    sources: el.querySelector(".sources"), error: el.querySelector(".msg-error"), actions: el.querySelector(".msg-actions")};
  let frame = 0;
  const redraw = () => {
    if (frame) return;
    frame = requestAnimationFrame(() => { frame = 0; updateMessage(msg, index, parts); scrollDown(); });
  };
  const started = performance.now();
  const thinkEnd = () => {
    if (msg.reasoning && !msg.think_seconds) msg.think_seconds = Math.max(1, Math.round((performance.now() - started) / 1000));
  };
  try {
    if (conv.model.startsWith(KB)) {
      await streamKnowledgeBase(conv, messages, msg, controller.signal, redraw, thinkEnd);
    } else {
      await streamChat(conv, messages, msg, controller.signal, redraw, thinkEnd);
    }
  } catch (err) {
    if (err.name === "AbortError") msg.stopped = true;
    else msg.error = err.message || String(err);
  } finally {
    if (frame) cancelAnimationFrame(frame);
    msg.seconds = Math.round((performance.now() - started) / 100) / 10;
    state.running = null;
    state.live = null;
    setRunning(false);
    if (view && document.body.contains(parts.el)) {
      updateMessage(msg, index, parts);
      // the previous answer loses its regenerate button
      const prev = view.messages.querySelectorAll(".regen");
      prev.forEach((b) => { if (!parts.el.contains(b)) b.remove(); });
    }
    if (conv.id) await persist({messages: conv.messages, model: conv.model});
  }
}

async function streamChat(conv, messages, msg, signal, redraw, thinkEnd) {
  const body = {model: conv.model, messages, stream: true, stream_options: {include_usage: true}, ...sampling()};
  const res = await request("POST", "/v1/chat/completions", body, {signal});
  for await (const ev of sse(res)) {
    if (ev.error) throw new ApiError(ev.error.message || String(ev.error), 500);
    if (ev.usage) msg.usage = {prompt: ev.usage.prompt_tokens, completion: ev.usage.completion_tokens};
    for (const c of ev.choices || []) {
      const d = c.delta || {};
      const reasoning = d.reasoning_content ?? d.reasoning;
      if (reasoning) msg.reasoning += reasoning;
      if (d.content) { thinkEnd(); msg.content += d.content; }
      if (c.finish_reason) msg.finish = c.finish_reason;
    }
    redraw();
  }
}

async function streamKnowledgeBase(conv, messages, msg, signal, redraw, thinkEnd) {
  const name = conv.model.slice(KB.length);
  const body = {messages, stream: true, ...sampling()};
  if (conv.settings.answer_model) body.model = conv.settings.answer_model;
  const res = await request("POST", `/kb/${encodeURIComponent(name)}/ask`, body, {signal});
  for await (const ev of ndjson(res)) {
    if (ev.type === "sources") {
      msg.found = ev.found;
      msg.answer_model = ev.model;
      msg.sources = (ev.sources || []).map((s) => ({document: s.document, page: s.page, page_end: s.page_end, section: s.section,
        text: s.text, fused: s.fused, sheet: s.sheet, rows: s.row_start ? [s.row_start, s.row_end || s.row_start] : undefined}));
    } else if (ev.type === "reasoning") {
      msg.reasoning += ev.text;
    } else if (ev.type === "text") {
      thinkEnd();
      msg.content += ev.text;
    } else if (ev.type === "done") {
      msg.finish = ev.finish_reason;
      msg.citations = ev.citations;
      if (ev.cited_sources) msg.cited = ev.cited_sources;
      if (ev.grounded !== undefined) msg.grounded = ev.grounded;
      if (ev.usage) msg.usage = {prompt: ev.usage.prompt_tokens, completion: ev.usage.completion_tokens};
    } else if (ev.type === "error") {
      throw new ApiError((ev.error && ev.error.message) || t("common.error"), 500);
    }
    redraw();
  }
}

function setRunning(on) {
  if (!view) return;
  view.sendBtn.hidden = on;
  view.stopBtn.hidden = !on;
  view.picker.disabled = on;
  view.root.classList.toggle("running", on);
}

function scrollDown(force = false) {
  const s = view.scroller;
  if (force || s.scrollHeight - s.scrollTop - s.clientHeight < 160) s.scrollTop = s.scrollHeight;
}
