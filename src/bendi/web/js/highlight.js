// Code colouring for answers: comments, strings, numbers and keywords of the languages people
// paste most (Python, JavaScript/TypeScript, shell, SQL, C-like, Go, Rust, Java). A lexer of a few
// regular expressions, not a parser: it colours, it never changes the text, and every token is a
// text node in a <span>.

import {h} from "./dom.js";

const KEYWORDS = new Set((
  "and as assert async await break case catch class const continue def del do elif else enum except export " +
  "extends false final finally fn for from func function go if impl import in interface is lambda let loop " +
  "match mod mut new nil none not null or package pass pub raise return self static struct super switch " +
  "this throw true try type typeof use var void where while with yield " +
  "select insert update delete into values where join left right inner outer on group by order having limit " +
  "create table drop alter index primary key foreign references not default union distinct case when then end " +
  "echo fi then done esac local export readonly int float double char bool string long short unsigned " +
  "private protected public void"
).split(" "));

// one alternation, tried at each position: the first group that matches names the token
const TOKEN = new RegExp([
  String.raw`(\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$)|--[^\n]*)`,  // 1: C-like and SQL comments
  String.raw`(#[^\n]*)`,  // 2: hash comments
  String.raw`("""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?|\`(?:[^\`\\]|\\.)*\`?)`,  // 3: strings
  String.raw`(\b(?:0x[\da-fA-F_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?)\b)`,  // 4: numbers
  String.raw`([A-Za-z_][\w]*)`,  // 5: words
].join("|"), "g");

const HASH_COMMENTS = /^(py|python|sh|bash|shell|zsh|yaml|yml|toml|ruby|rb|r|perl|dockerfile|makefile|conf|ini)$/i;
const DASH_COMMENTS = /^(sql|lua|haskell|hs)$/i;

/** Highlighted nodes for `code` in language `lang` (a hint; unknown languages still colour). */
export function highlight(code, lang) {
  if (code.length > 50000) return [code];  // a huge paste: plain text, fast
  const hash = HASH_COMMENTS.test(lang || "");
  const dash = DASH_COMMENTS.test(lang || "");
  const out = [];
  let last = 0;
  let plain = "";
  TOKEN.lastIndex = 0;
  for (let m; (m = TOKEN.exec(code));) {
    let cls = null;
    if (m[1] && (!m[1].startsWith("--") || dash)) cls = "tok-comment";
    else if (m[2] && hash) cls = "tok-comment";
    else if (m[3]) cls = "tok-string";
    else if (m[4]) cls = "tok-number";
    else if (m[5] && KEYWORDS.has(m[5].toLowerCase()) && (m[5] === m[5].toLowerCase() || /sql/i.test(lang || ""))) cls = "tok-keyword";
    if (!cls) {
      // not a token here: let the next search start one character on (a '#' in C, '--' in Python)
      if (m[1] || m[2]) TOKEN.lastIndex = m.index + 1;
      continue;
    }
    plain += code.slice(last, m.index);
    if (plain) { out.push(plain); plain = ""; }
    out.push(h("span", {class: cls, text: m[0]}));
    last = m.index + m[0].length;
  }
  plain += code.slice(last);
  if (plain) out.push(plain);
  return out;
}
