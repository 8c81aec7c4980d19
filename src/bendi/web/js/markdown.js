// A small Markdown renderer that builds DOM nodes: every piece of text becomes a text node, so an
// answer containing <script> or <img onerror> shows those characters and runs nothing. It covers
// what chat answers use: paragraphs with line breaks, headings, lists (nested), block quotes,
// fenced code with a copy button, tables, rules, inline code, bold, italic, strikethrough, links
// (web addresses only) and the knowledge base's citations [1] / [1, 2] as buttons.
// An unclosed code fence (an answer still streaming) renders as code so far.

import {h, icon, safeHref} from "./dom.js";
import {highlight} from "./highlight.js";

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$/;

/** Render `text` into a DocumentFragment. opts: {onCite(n, el), copyLabel, onCopy(text)} */
export function renderMarkdown(text, opts = {}) {
  const frag = document.createDocumentFragment();
  frag.append(...blocks(String(text || "").replace(/\r\n?/g, "\n").split("\n"), opts));
  return frag;
}

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
}

function blocks(lines, opts) {
  const out = [];
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i++; continue; }
    let m;
    if ((m = FENCE.exec(line))) {
      const fence = m[1];
      const code = [];
      i++;
      while (i < lines.length && !new RegExp(`^ {0,3}${fence[0]}{${fence.length},}\\s*$`).test(lines[i])) code.push(lines[i++]);
      i++;  // the closing fence (or past the end while streaming)
      out.push(codeBlock(code.join("\n"), m[2], opts));
      continue;
    }
    if ((m = HEADING.exec(line)) && m[1]) {
      out.push(h(`h${Math.min(m[1].length + 2, 6)}`, {class: "md-h"}, inline(m[2] || "", opts)));
      i++;
      continue;
    }
    if (RULE.test(line)) { out.push(h("hr")); i++; continue; }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && lines[i].trim() && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
        inner.push(lines[i].replace(QUOTE, ""));
        i++;
      }
      out.push(h("blockquote", {}, blocks(inner, opts)));
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
      const rule = lines[i + 1];
      const rows = [line];
      i += 2;
      while (i < lines.length && lines[i].includes("|") && lines[i].trim()) rows.push(lines[i++]);
      out.push(table(rows, rule, opts));
      continue;
    }
    if (ITEM.test(line)) {
      const [node, next] = list(lines, i, opts);
      out.push(node);
      i = next;
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && (para.length === 0 || !startsBlock(lines[i]))) para.push(lines[i++].trim());
    out.push(h("p", {}, inline(para.join("\n"), opts)));
  }
  return out;
}

function list(lines, start, opts) {
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const node = h(ordered ? "ol" : "ul");
  if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
  let i = start;
  let loose = false;
  while (i < lines.length) {
    const m = ITEM.exec(lines[i]);
    if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
    const offset = m[1].length + m[2].length + 1;
    const body = [m[3]];
    i++;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        // a blank line ends the item unless more of it (indented) or another item follows
        let j = i + 1;
        while (j < lines.length && !lines[j].trim()) j++;
        if (j < lines.length && (lines[j].search(/\S/) >= offset || sameList(lines[j], indent, ordered))) {
          if (sameList(lines[j], indent, ordered)) loose = true;
          body.push("");
          i = j;
          if (sameList(lines[j], indent, ordered)) break;
          continue;
        }
        break;
      }
      const lead = line.search(/\S/);
      if (lead <= indent && ITEM.test(line)) break;  // the next item (or a list further out)
      if (lead < offset && startsBlock(line) && !ITEM.test(line)) break;
      body.push(lead >= offset ? line.slice(offset) : line.trim());
      i++;
    }
    const content = blocks(body, opts);
    const li = h("li");
    if (!loose && content.length && content[0].tagName === "P") {
      li.append(...content[0].childNodes, ...content.slice(1));
    } else {
      li.append(...content);
    }
    node.append(li);
  }
  return [node, i];
}

function sameList(line, indent, ordered) {
  const m = ITEM.exec(line);
  return !!m && m[1].length === indent && /\d/.test(m[2]) === ordered;
}

function cells(row) {
  let text = row.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  return text.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
}

function table(rows, rule, opts) {
  const aligns = cells(rule).map((c) => (c.startsWith(":") && c.endsWith(":") ? "center" : c.endsWith(":") ? "right" : ""));
  const head = h("thead", {}, h("tr", {}, cells(rows[0]).map((c, k) => h("th", {class: aligns[k] ? `al-${aligns[k]}` : undefined}, inline(c, opts)))));
  const body = h("tbody", {}, rows.slice(1).map((r) => h("tr", {}, cells(r).map((c, k) => h("td", {class: aligns[k] ? `al-${aligns[k]}` : undefined}, inline(c, opts))))));
  return h("div", {class: "md-table"}, h("table", {}, head, body));
}

function codeBlock(code, lang, opts) {
  const pre = h("pre", {}, h("code", {}, highlight(code, lang)));
  const copy = h("button", {type: "button", class: "btn btn-ghost btn-xs", title: opts.copyLabel || "Copy",
    "aria-label": opts.copyLabel || "Copy", onclick: () => opts.onCopy && opts.onCopy(code)}, icon("copy", 14));
  return h("div", {class: "codeblock"}, h("div", {class: "codeblock-bar"}, h("span", {text: lang || "text"}), copy), pre);
}

// -- inline --------------------------------------------------------------------------------------

const CODE = /(`+)([\s\S]*?[^`])\1(?!`)/y;
const STRONG = /(\*\*|__)(?=\S)([\s\S]*?\S)\1/y;
const STRIKE = /~~(?=\S)([\s\S]*?\S)~~/y;
const EM = /([*_])(?=[^\s*_])([\s\S]*?[^\s*_])\1(?![*_\w])/y;
const LINK = /\[([^\]\n]+)\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"\n]*")?\s*\)/y;
const CITE = /\[(\d{1,3}(?:\s*[,，、]\s*\d{1,3})*)\]/y;
const URL = /https?:\/\/[^\s<>()[\]{}"'，。、；：！？）》]+[^\s<>()[\]{}"'.,;:!?，。、；：！？）》]/y;
const ESCAPABLE = "\\`*_{}[]()#+-.!~|>";

function at(re, text, i) {
  re.lastIndex = i;
  return re.exec(text);
}

export function inline(text, opts) {
  const out = [];
  let buf = "";
  const flush = () => { if (buf) { out.push(buf); buf = ""; } };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    let m = null;
    if (c === "\\" && ESCAPABLE.includes(text[i + 1] || "x")) { buf += text[i + 1]; i += 2; continue; }
    if (c === "\n") { flush(); out.push(h("br")); i++; continue; }
    if (c === "`" && (m = at(CODE, text, i))) {
      flush(); out.push(h("code", {class: "md-code", text: m[2].replace(/^ (.*) $/, "$1")}));
    } else if ((c === "*" || c === "_") && (m = at(STRONG, text, i)) && !(c === "_" && intraword(text, i, m[0].length))) {
      flush(); out.push(h("strong", {}, inline(m[2], opts)));
    } else if ((c === "*" || c === "_") && (m = at(EM, text, i)) && !(c === "_" && /\w/.test(text[i - 1] || ""))) {
      flush(); out.push(h("em", {}, inline(m[2], opts)));
    } else if (c === "~" && (m = at(STRIKE, text, i))) {
      flush(); out.push(h("del", {}, inline(m[1], opts)));
    } else if (c === "[" && (m = at(LINK, text, i))) {
      flush(); out.push(h("a", {href: safeHref(m[2]), target: "_blank", rel: "noopener noreferrer"}, inline(m[1], opts)));
    } else if (c === "[" && opts.onCite && (m = at(CITE, text, i))) {
      flush(); out.push(citeChips(m[1], opts));
    } else if (c === "h" && !/\w/.test(text[i - 1] || "") && (m = at(URL, text, i))) {
      flush(); out.push(h("a", {href: safeHref(m[0]), target: "_blank", rel: "noopener noreferrer", text: m[0]}));
    }
    if (m) { i += m[0].length; continue; }
    buf += c;
    i++;
  }
  flush();
  return out;
}

/** `_` inside a word (snake_case, __init__, window.__x) is not emphasis. */
function intraword(text, i, length) {
  return /\w/.test(text[i - 1] || "") || /\w/.test(text[i + length] || "");
}

function citeChips(numbers, opts) {
  const span = h("span", {class: "cites"});
  for (const part of numbers.split(/\s*[,，、]\s*/)) {
    const n = parseInt(part, 10);
    span.append(h("button", {type: "button", class: "cite", dataset: {n: String(n)}, text: String(n),
      title: (opts.citeLabel || "Source") + " " + n, onclick: (e) => opts.onCite(n, e.currentTarget)}));
  }
  return span;
}
