// The cited passage: a side panel with the document, its page (or sheet and rows) and section,
// and the passage with the sentence that supports the answer highlighted. The server says which
// sentence when it knows (`quote`); otherwise the sentence sharing most words with the claim is
// chosen here the same simple way (character bigrams, so it works on Chinese).

import {button, fill, h, icon} from "./dom.js";
import {t} from "./i18n.js";

let panel = null;

function ensurePanel() {
  if (panel) return panel;
  panel = h("aside", {id: "passage", class: "drawer", "aria-label": t("passage.title"), hidden: true});
  document.body.append(panel);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !panel.hidden) closePassage(); });
  return panel;
}

export function closePassage() {
  if (panel) panel.hidden = true;
}

const SENTENCE = /[^。！？；!?;\n]+[。！？；!?;]*/g;

function grams(text) {
  const clean = text.toLowerCase().replace(/[\s\p{P}]+/gu, "");
  const out = new Set();
  for (let i = 0; i < clean.length - 1; i++) out.add(clean.slice(i, i + 2));
  return out;
}

const NUMBER = /\d+(?:\.\d+)?%?/g;

/** The sentence of `text` that shares most bigrams with `claim` (its length discounted); a
 * number of the claim (1.5%, 30) found in a sentence counts most, as it is what people ask about. */
export function bestSentence(text, claim) {
  const want = grams(claim || "");
  const numbers = new Set((claim || "").match(NUMBER) || []);
  let best = "";
  let bestScore = -1;
  for (const m of text.matchAll(SENTENCE)) {
    const sentence = m[0].trim();
    if (!sentence) continue;
    const have = grams(sentence);
    let shared = 0;
    for (const g of have) if (want.has(g)) shared++;
    for (const n of sentence.match(NUMBER) || []) if (numbers.has(n)) shared += 4;
    const score = shared / Math.sqrt(have.size || 1);
    if (score > bestScore) { best = sentence; bestScore = score; }
  }
  return best;
}

/** Where a source is: "manual.pdf · p. 3 · § Brakes" (built from the fields, in the page's language). */
export function location(source) {
  const parts = [];
  if (source.sheet) parts.push(t("passage.sheet", {sheet: source.sheet}));
  if (source.rows) parts.push(t("passage.rows", {from: source.rows[0], to: source.rows[1]}));
  if (source.page !== null && source.page !== undefined) {
    const end = source.page_end && source.page_end !== source.page ? `–${source.page_end}` : "";
    parts.push(t("passage.page", {page: `${source.page}${end}`}));
  }
  if (source.section && !source.sheet) parts.push(`§ ${source.section}`);
  return parts.join(" · ");
}

/** Open the panel on `source` ({number, document, text, page, section, quote, ...}); `claim` is
 * the answer's sentence (or the question) the quote should support. */
export function showPassage(source, claim) {
  const el = ensurePanel();
  const text = source.text || "";
  const quote = (source.quote && text.includes(source.quote)) ? source.quote : bestSentence(text, claim || "");
  const at = quote ? text.indexOf(quote) : -1;
  const body = h("div", {class: "passage-text"});
  if (at >= 0) {
    body.append(text.slice(0, at), h("mark", {class: "quote", text: quote}), text.slice(at + quote.length));
  } else {
    body.append(text);
  }
  fill(el,
    h("div", {class: "drawer-head"},
      h("div", {}, h("div", {class: "eyebrow", text: source.number ? t("passage.source", {n: source.number}) : t("passage.title")}),
        h("h2", {class: "doc-name"}, icon("file", 16), h("span", {text: source.document || ""}))),
      button(t("common.close"), "x", closePassage, {cls: "btn-ghost", iconOnly: true})),
    h("div", {class: "passage-meta"},
      location(source) ? h("span", {class: "pill", text: location(source)}) : null,
      source.fused !== undefined ? h("span", {class: "pill muted", text: `${t("kb.score")} ${Number(source.fused).toFixed(3)}`}) : null),
    body);
  el.hidden = false;
  const mark = body.querySelector("mark");
  if (mark) mark.scrollIntoView({block: "center"});
}
