// Small pieces every page uses: notices, dialogs, tabs, formatting of sizes and times, copying.

import {button, fill, h, icon} from "./dom.js";
import {lang, t} from "./i18n.js";

/** A short notice at the bottom of the screen. kind: "ok" | "error" | "" */
export function toast(message, kind = "") {
  let box = document.getElementById("toasts");
  if (!box) {
    box = h("div", {id: "toasts", role: "status", "aria-live": "polite"});
    document.body.append(box);
  }
  const note = h("div", {class: `toast ${kind}`}, icon(kind === "error" ? "alert" : "check", 16), h("span", {text: message}));
  box.append(note);
  setTimeout(() => note.remove(), kind === "error" ? 6000 : 2500);
}

/** A modal dialog; resolves to what `build(close)` passes to close (undefined when dismissed). */
export function dialog(title, build, {wide = false} = {}) {
  return new Promise((resolve) => {
    const dlg = h("dialog", {class: `modal${wide ? " wide" : ""}`});
    let result;
    const close = (value) => { result = value; dlg.close(); };
    dlg.addEventListener("close", () => { dlg.remove(); resolve(result); });
    dlg.addEventListener("click", (e) => { if (e.target === dlg) close(); });
    const head = h("div", {class: "modal-head"}, h("h2", {text: title}),
      button(t("common.close"), "x", () => close(), {cls: "btn-ghost", iconOnly: true}));
    dlg.append(head, h("div", {class: "modal-body"}, build(close)));
    document.body.append(dlg);
    dlg.showModal();
    const focus = dlg.querySelector("input, textarea, select, .btn-primary");
    if (focus) focus.focus();
  });
}

/** Ask before doing something that cannot be undone; resolves true to go ahead. */
export function confirmAction(message, {ok = t("common.delete"), danger = true} = {}) {
  return dialog(t("common.confirm"), (close) => [
    h("p", {text: message}),
    h("div", {class: "actions"},
      button(t("common.cancel"), null, () => close(false), {cls: "btn-ghost"}),
      button(ok, null, () => close(true), {cls: danger ? "btn-danger" : "btn-primary"})),
  ]).then(Boolean);
}

/** A form in a dialog: fields [{name, label, type, value, options, required, placeholder, help}];
 * resolves to {name: value} or undefined. `submit(values)` may throw to keep the dialog open. */
export function formDialog(title, fields, {ok = t("common.save"), submit} = {}) {
  return dialog(title, (close) => {
    const error = h("p", {class: "form-error", hidden: true});
    const form = h("form", {class: "form", onsubmit: async (e) => {
      e.preventDefault();
      const values = {};
      for (const f of fields) {
        const el = form.elements[f.name];
        if (f.type === "checkbox") values[f.name] = el.checked;
        else if (f.type === "multi") values[f.name] = [...el.selectedOptions].map((o) => o.value);
        else values[f.name] = el.value.trim();
      }
      try {
        const out = submit ? await submit(values) : values;
        close(out ?? values);  // an empty answer (Ollama's /api/copy sends none) still means done
      } catch (err) {
        error.hidden = false;
        error.textContent = err.message;
      }
    }}, fields.map(field), error,
    h("div", {class: "actions"}, button(t("common.cancel"), null, () => close(), {cls: "btn-ghost"}),
      button(ok, null, null, {cls: "btn-primary", type: "submit"})));
    return form;
  });
}

function field(f) {
  let input;
  if (f.type === "select" || f.type === "multi") {
    input = h("select", {name: f.name, id: `f-${f.name}`, multiple: f.type === "multi"},
      (f.options || []).map((o) => {
        const [value, label] = Array.isArray(o) ? o : [o, o];
        const selected = Array.isArray(f.value) ? f.value.includes(value) : value === f.value;
        return h("option", {value, selected, text: label});
      }));
  } else if (f.type === "textarea") {
    input = h("textarea", {name: f.name, id: `f-${f.name}`, rows: 4, placeholder: f.placeholder, value: f.value || ""});
  } else if (f.type === "checkbox") {
    return h("label", {class: "check"}, h("input", {type: "checkbox", name: f.name, checked: !!f.value}), h("span", {text: f.label}));
  } else {
    input = h("input", {name: f.name, id: `f-${f.name}`, type: f.type || "text", value: f.value ?? "",
      placeholder: f.placeholder, required: f.required, autocomplete: f.autocomplete || "off"});
  }
  return h("div", {class: "field"}, h("label", {for: `f-${f.name}`, text: f.label}), input,
    f.help ? h("small", {class: "muted", text: f.help}) : null);
}

/** Tabs: [{id, label}], the selected id, and a callback; returns the tab bar. */
export function tabs(items, selected, onSelect) {
  const bar = h("div", {class: "tabs", role: "tablist"});
  for (const item of items) {
    bar.append(h("button", {type: "button", role: "tab", class: "tab", "aria-selected": String(item.id === selected),
      dataset: {tab: item.id}, onclick: () => onSelect(item.id), text: item.label}));
  }
  return bar;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function number(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString(lang() === "zh" ? "zh-CN" : "en");
}

/** A date and time (seconds since 1970) in the page's language. */
export function when(seconds) {
  if (!seconds) return "–";
  return new Date(seconds * 1000).toLocaleString(lang() === "zh" ? "zh-CN" : "en", {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit"});
}

/** "3 minutes" style durations from seconds. */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return t("models.forever");
  const fmt = new Intl.RelativeTimeFormat(lang() === "zh" ? "zh-CN" : "en", {numeric: "always"});
  if (seconds < 90) return fmt.format(Math.round(seconds), "second");
  if (seconds < 5400) return fmt.format(Math.round(seconds / 60), "minute");
  if (seconds < 2 * 86400) return fmt.format(Math.round(seconds / 3600), "hour");
  return fmt.format(Math.round(seconds / 86400), "day");
}

/** Copy text; works on plain-http LAN addresses too, where navigator.clipboard is missing. */
export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
    } else {
      const area = h("textarea", {value: text, readonly: true, class: "offscreen"});
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    toast(t("common.copied"), "ok");
  } catch {
    toast(t("common.copyFailed"), "error");
  }
}

/** A page header: title, optional subtitle, actions on the right. */
export function pageHead(title, subtitle, ...actions) {
  return h("div", {class: "page-head"},
    h("div", {}, h("h1", {text: title}), subtitle ? h("p", {class: "muted", text: subtitle}) : null),
    h("div", {class: "page-actions"}, actions));
}

export function emptyState(iconName, title, text, ...actions) {
  return h("div", {class: "empty"}, icon(iconName, 32), h("h3", {text: title}), text ? h("p", {class: "muted", text}) : null, actions);
}

/** Show "loading", then what `load()` builds, or the error, inside `el`. */
export async function loading(el, load) {
  fill(el, h("div", {class: "loading"}, h("span", {class: "spinner"}), h("span", {text: t("common.loading")})));
  try {
    fill(el, await load());
  } catch (err) {
    fill(el, h("div", {class: "notice error"}, icon("alert", 16), h("span", {text: err.message})));
  }
}

/** A progress bar; set(fraction) with null for "working, unknown how far". */
export function progressBar() {
  const fillEl = h("div", {class: "bar-fill"});
  const bar = h("div", {class: "bar", role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100"}, fillEl);
  bar.set = (fraction) => {
    bar.classList.toggle("indeterminate", fraction === null);
    if (fraction !== null) {
      const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
      fillEl.style.width = `${pct}%`;
      bar.setAttribute("aria-valuenow", String(pct));
    }
  };
  return bar;
}
