"""How each model family writes a tool call, chosen from the model's chat template.

Every format knows the strings that open a call in the model's output, how to read a finished
call region, the GBNF that makes a model write a valid one, how to write a past call back into
the conversation when the template cannot, and how to describe the tools in a system prompt when
the template does not. The families (tokens as in the models' own chat templates):

- hermes: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen 2.5/3, Hermes, many
  fine-tunes); also the generic format for templates that know no tools at all.
- llama3: a bare `{"name": ..., "parameters": {...}}` answer, or after `<|python_tag|>`.
- deepseek_v3: `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME` + a fenced
  JSON block + `<｜tool▁call▁end｜>` ... `<｜tool▁calls▁end｜>` (DeepSeek V3 and R1, the R1 distills).
- deepseek_v31: `<｜tool▁call▁begin｜>NAME<｜tool▁sep｜>{...}<｜tool▁call▁end｜>` (V3.1 and later).
- mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}, "id": ...}]`, or the newer
  `[TOOL_CALLS]NAME[ARGS]{...}`.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field
from typing import Any

from bendi.runtime.tools.jsonscan import INCOMPLETE, INVALID, loads, skip_ws, value_end
from bendi.runtime.tools.spec import Function


@dataclass
class RawCall:
    """A call as the model wrote it: arguments may still be JSON text or an object."""

    name: Any
    arguments: Any
    id: str | None = None


@dataclass
class Scan:
    """What a format read from the start of a call region."""

    consumed: int
    calls: list[RawCall] = field(default_factory=list)
    invalid: bool = False


def gbnf_literal(text: str) -> str:
    """A GBNF string literal."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def object_rule(function: Function, args_key: str, args_rule: str) -> str:
    """GBNF for `{"name": "<function>", "<args_key>": <arguments>}`, spaces allowed between."""
    return (f'"{{" ws {gbnf_literal(json.dumps("name"))} ws ":" ws {gbnf_literal(json.dumps(function.name))} '
            f'ws "," ws {gbnf_literal(json.dumps(args_key))} ws ":" ws {args_rule} ws "}}"')


def _call_dict(obj: Any, args_keys: tuple[str, ...] = ("arguments", "parameters")) -> RawCall | None:
    """{"name": ..., "arguments"|"parameters": ...} (optionally wrapped as {"function": {...}})."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("function"), dict):
        obj = {**obj["function"], "id": obj.get("id")}
    if "name" not in obj:
        return None
    for key in args_keys:
        if key in obj:
            return RawCall(obj["name"], obj[key], obj.get("id"))
    return RawCall(obj["name"], {}, obj.get("id"))


def _args_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


class ToolFormat:
    """Base: a format recognised by the strings that open a call region."""

    name = "base"
    #: strings that open a call region anywhere in the answer
    openers: tuple[str, ...] = ()
    #: strings that open one only at the start of the answer (or right after another call)
    leading_openers: tuple[str, ...] = ()
    #: characters allowed between two calls, besides whitespace
    separators = ""
    #: special tokens whose text must appear in the output for the parser to see them
    preserved: tuple[str, ...] = ()
    #: the longest region worth waiting for before the model is taken to be writing prose
    max_region = 64_000

    def scan(self, region: str, final: bool) -> Scan | None:
        """Read calls from `region`, which starts with an opener; None: wait for more text."""
        raise NotImplementedError

    def grammar(self, calls: list[str], *, parallel: bool, lazy: bool) -> str:
        """The GBNF root (and helper rules) given one rule name per offered call, each of which
        writes that function's `{"name"...}`-free argument object; `lazy`: the grammar starts
        where the model opened a call, so it must accept every opener."""
        raise NotImplementedError

    def call_rule(self, function: Function, args_rule: str) -> str:
        """The GBNF body of one call of `function` whose arguments follow `args_rule`."""
        raise NotImplementedError

    def render(self, calls: list[tuple[str, str]]) -> str:
        """(name, arguments JSON) calls as the model writes them, for templates that cannot."""
        raise NotImplementedError

    def example(self) -> str:
        return self.render([("FUNCTION_NAME", '{"ARGUMENT": "VALUE"}')])

    def new_id(self) -> str:
        return "call_" + secrets.token_hex(12)


class HermesFormat(ToolFormat):
    name = "hermes"
    OPEN, CLOSE = "<tool_call>", "</tool_call>"
    openers = (OPEN,)

    def __init__(self, name: str = "hermes") -> None:
        self.name = name

    def scan(self, region: str, final: bool) -> Scan | None:
        end = region.find(self.CLOSE)
        if end < 0:
            if not final:
                return None
            body, consumed = region[len(self.OPEN):], len(region)
        else:
            body, consumed = region[len(self.OPEN):end], end + len(self.CLOSE)
        try:
            call = _call_dict(loads(body.strip()))
        except ValueError:
            call = None
        return Scan(consumed, [call]) if call else Scan(consumed, invalid=True)

    def call_rule(self, function: Function, args_rule: str) -> str:
        return f"{gbnf_literal(self.OPEN)} ws {object_rule(function, 'arguments', args_rule)} ws " \
               f"{gbnf_literal(self.CLOSE)}"

    def grammar(self, calls: list[str], *, parallel: bool, lazy: bool) -> str:
        more = ' ( ws call )*' if parallel else ""
        return f"root ::= ws call{more} ws\ncall ::= {' | '.join(calls)}"

    def render(self, calls: list[tuple[str, str]]) -> str:
        return "\n".join(f'{self.OPEN}\n{{"name": {json.dumps(n, ensure_ascii=False)}, "arguments": {a}}}\n'
                         f'{self.CLOSE}' for n, a in calls)


class Llama3Format(ToolFormat):
    name = "llama3"
    PYTHON_TAG = "<|python_tag|>"
    openers = (PYTHON_TAG,)
    leading_openers = ("{",)
    separators = ";"
    preserved = (PYTHON_TAG,)

    def scan(self, region: str, final: bool) -> Scan | None:
        start = 0
        if region.startswith(self.PYTHON_TAG):
            start = skip_ws(region, len(self.PYTHON_TAG))
            if start >= len(region):
                return Scan(len(region), invalid=True) if final else None
        end = value_end(region, start)
        if end == INCOMPLETE:
            return Scan(len(region), invalid=True) if final else None
        if end == INVALID or region[start] != "{":
            return Scan(max(end, len(region)) if end == INVALID else end, invalid=True)
        try:
            call = _call_dict(loads(region[start:end]), ("parameters", "arguments"))
        except ValueError:
            call = None
        return Scan(end, [call]) if call else Scan(end, invalid=True)

    def call_rule(self, function: Function, args_rule: str) -> str:
        return object_rule(function, "parameters", args_rule)

    def grammar(self, calls: list[str], *, parallel: bool, lazy: bool) -> str:
        tag = f"{gbnf_literal(self.PYTHON_TAG)}? " if lazy else ""
        more = ' ( ws ";" ws call )*' if parallel else ""
        return f"root ::= ws {tag}call{more} ws\ncall ::= {' | '.join(calls)}"

    def render(self, calls: list[tuple[str, str]]) -> str:
        return "; ".join(f'{{"name": {json.dumps(n, ensure_ascii=False)}, "parameters": {a}}}' for n, a in calls)


class DeepSeekFormat(ToolFormat):
    """V3/R1 (`type<sep>name` + fenced JSON) and, with `v31`, V3.1 (`name<sep>json`)."""

    CALLS_BEGIN, CALLS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
    CALL_BEGIN, CALL_END, SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
    openers = (CALLS_BEGIN, CALL_BEGIN, CALLS_END)
    preserved = (CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP)
    _FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*(?:```)?\s*$", re.S)

    def __init__(self, v31: bool = False) -> None:
        self.v31 = v31
        self.name = "deepseek_v31" if v31 else "deepseek_v3"

    def scan(self, region: str, final: bool) -> Scan | None:
        for marker in (self.CALLS_BEGIN, self.CALLS_END):
            if region.startswith(marker):
                return Scan(len(marker))
        end = region.find(self.CALL_END)
        if end < 0:
            if not final:
                return None
            body, consumed = region[len(self.CALL_BEGIN):], len(region)
        else:
            body, consumed = region[len(self.CALL_BEGIN):end], end + len(self.CALL_END)
        left, sep, right = body.partition(self.SEP)
        if not sep:
            return Scan(consumed, invalid=True)
        if right.lstrip().startswith("{"):  # V3.1: the name before the separator
            name, args = left.strip(), right.strip()
        else:  # V3/R1: the type before it, then the name on its own line and a fenced block
            name, _, rest = right.partition("\n")
            match = self._FENCE.match(rest)
            name, args = name.strip(), (match.group(1) if match else rest).strip()
        return Scan(consumed, [RawCall(name, args)]) if name else Scan(consumed, invalid=True)

    def call_rule(self, function: Function, args_rule: str) -> str:
        if self.v31:
            return f"{gbnf_literal(self.CALL_BEGIN + function.name + self.SEP)} {args_rule} " \
                   f"{gbnf_literal(self.CALL_END)}"
        return (f"{gbnf_literal(self.CALL_BEGIN + 'function' + self.SEP + function.name)} "
                f'"\\n```json\\n" {args_rule} "\\n```" {gbnf_literal(self.CALL_END)}')

    def grammar(self, calls: list[str], *, parallel: bool, lazy: bool) -> str:
        begin = gbnf_literal(self.CALLS_BEGIN) + ("?" if lazy else "")
        more = ' ( "\\n"? call )*' if parallel else ""
        return (f"root ::= ws {begin} call{more} {gbnf_literal(self.CALLS_END)}? ws\n"
                f"call ::= {' | '.join(calls)}")

    def render(self, calls: list[tuple[str, str]]) -> str:
        parts = []
        for n, a in calls:
            if self.v31:
                parts.append(f"{self.CALL_BEGIN}{n}{self.SEP}{a}{self.CALL_END}")
            else:
                parts.append(f"{self.CALL_BEGIN}function{self.SEP}{n}\n```json\n{a}\n```{self.CALL_END}")
        return self.CALLS_BEGIN + "\n".join(parts) + self.CALLS_END


class MistralFormat(ToolFormat):
    """`[TOOL_CALLS]` then a JSON list of calls, or (newer templates, `args_tag`) NAME[ARGS]{...}."""

    name = "mistral"
    OPEN, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
    openers = (OPEN,)
    preserved = (OPEN, ARGS, CALL_ID)
    _ID_CHARS = string.ascii_letters + string.digits

    def __init__(self, args_tag: bool = False) -> None:
        self.args_tag = args_tag

    def scan(self, region: str, final: bool) -> Scan | None:
        i = skip_ws(region, len(self.OPEN))
        if i >= len(region):
            return Scan(len(region), invalid=True) if final else None
        if region[i] in "[{":
            end = value_end(region, i)
            if end == INCOMPLETE:
                return Scan(len(region), invalid=True) if final else None
            if end == INVALID:
                return Scan(len(region), invalid=True)
            try:
                value = loads(region[i:end])
            except ValueError:
                return Scan(end, invalid=True)
            items = value if isinstance(value, list) else [value]
            calls = [_call_dict(item) for item in items]
            if not calls or any(c is None for c in calls):
                return Scan(end, invalid=True)
            return Scan(end, [c for c in calls if c is not None])
        args_at = region.find(self.ARGS, i)
        if args_at < 0:
            if final or len(region) - i > 200:
                return Scan(len(region), invalid=True)
            return None
        name, _, call_id = region[i:args_at].partition(self.CALL_ID)
        j = skip_ws(region, args_at + len(self.ARGS))
        end = value_end(region, j)
        if end == INCOMPLETE:
            return Scan(len(region), invalid=True) if final else None
        if end == INVALID:
            return Scan(len(region), invalid=True)
        return Scan(end, [RawCall(name.strip(), region[j:end], call_id.strip() or None)])

    def call_rule(self, function: Function, args_rule: str) -> str:
        if self.args_tag:
            return f"{gbnf_literal(self.OPEN + function.name + self.ARGS)} {args_rule}"
        return object_rule(function, "arguments", args_rule)

    def grammar(self, calls: list[str], *, parallel: bool, lazy: bool) -> str:
        if self.args_tag:
            more = " call*" if parallel else ""
            return f"root ::= ws call{more} ws\ncall ::= {' | '.join(calls)}"
        more = ' ( ws "," ws call )*' if parallel else ""
        return (f'root ::= ws {gbnf_literal(self.OPEN)} ws "[" ws call{more} ws "]" ws\n'
                f"call ::= {' | '.join(calls)}")

    def render(self, calls: list[tuple[str, str]]) -> str:
        if self.args_tag:
            return "".join(f"{self.OPEN}{n}{self.ARGS}{a}" for n, a in calls)
        items = ", ".join(f'{{"name": {json.dumps(n, ensure_ascii=False)}, "arguments": {a}}}' for n, a in calls)
        return f"{self.OPEN}[{items}]"

    def new_id(self) -> str:
        # Mistral's templates refuse ids that are not 9 letters or digits.
        return "".join(secrets.choice(self._ID_CHARS) for _ in range(9))


_DEEPSEEK_V3 = re.compile(r"tool▁call▁begin｜>'\s*\+\s*tool\[")


def detect_format(template: str | None) -> ToolFormat:
    """The tool-call format of the model whose chat template is `template`."""
    source = template or ""
    if "tool▁call▁begin" in source:
        typed = _DEEPSEEK_V3.search(source)
        v31 = typed is None or "['type']" not in source[typed.start():typed.start() + 60]
        return DeepSeekFormat(v31=v31)
    if "[TOOL_CALLS]" in source:
        return MistralFormat(args_tag="[ARGS]" in source)
    if "<tool_call>" in source:
        return HermesFormat()
    if "<|start_header_id|>" in source and ("ipython" in source or "python_tag" in source
                                             or '"parameters"' in source):
        return Llama3Format()
    return HermesFormat("generic")
