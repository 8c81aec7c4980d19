"""Tools in the prompt: what a chat template can take, and the conversation it is given.

Templates differ: some write the tools into the prompt and render past calls and their results
(Qwen, Llama 3.1, Mistral), some render calls but not the tools (DeepSeek R1), some know nothing of
either (SmolLM2's ChatML). What a template can do is found once by rendering probe conversations;
what it cannot, bendi writes itself: a system message describing the tools in the model's call
syntax, past calls as the text the model writes, results as user turns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from bendi.errors import InvalidRequest, TemplateError
from bendi.runtime.template import ChatTemplate, flatten_content
from bendi.runtime.tools.formats import MistralFormat, ToolFormat
from bendi.runtime.tools.spec import Function, ToolChoice

_PROBE = "bendi_probe_fn"
_PROBE_ID = "a1b2c3d4e"  # 9 letters and digits: Mistral's templates accept nothing else
_PROBE_RESULT = "bendi_probe_result"
_PROBE_ARGS = {"bendi_probe_arg": "v"}


@dataclass(frozen=True)
class TemplateTools:
    """What a chat template does with tools."""

    #: the template writes `tools` into the prompt
    renders_tools: bool
    #: assistant `tool_calls` and `tool` results render as the model was trained on
    native_calls: bool
    #: the template needs `function.arguments` as an object (it applies tojson itself)
    object_arguments: bool


def probe(template: ChatTemplate) -> TemplateTools:
    """Find out what `template` does with tools by rendering probe conversations."""
    tool = Function(_PROBE, "probe", {"type": "object", "properties": {"bendi_probe_arg": {"type": "string"}}})
    renders = _renders(template, [{"role": "user", "content": "hi"}], [tool.as_openai()], (_PROBE,))
    for as_object in (True, False):
        args: Any = _PROBE_ARGS if as_object else json.dumps(_PROBE_ARGS)
        conversation: list[dict[str, Any]] = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": _PROBE_ID, "type": "function", "function": {"name": _PROBE, "arguments": args}}]},
            {"role": "tool", "tool_call_id": _PROBE_ID, "name": _PROBE, "content": _PROBE_RESULT},
        ]
        needles = (_PROBE, _PROBE_RESULT, '"bendi_probe_arg": "v"')
        if _renders(template, conversation, [tool.as_openai()], needles):
            return TemplateTools(renders, True, as_object)
    return TemplateTools(renders, False, False)


def _renders(template: ChatTemplate, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
             needles: tuple[str, ...]) -> bool:
    try:
        text = template.render(messages, tools=tools)
    except (TemplateError, InvalidRequest):
        return False
    text = text.replace('"bendi_probe_arg":"v"', '"bendi_probe_arg": "v"')
    return all(n in text for n in needles)


def describe(fmt: ToolFormat, functions: list[Function]) -> str:
    """A system-prompt section that offers `functions` in `fmt`'s call syntax."""
    listing = "\n".join(json.dumps({"name": f.name, "description": f.description,
                                    "parameters": f.parameters}, ensure_ascii=False) for f in functions)
    return ("# Tools\n\nYou may call one or more functions to help with the user's request. "
            f"The functions, as JSON schemas:\n{listing}\n\n"
            f"To call a function, reply with exactly:\n{fmt.example()}\n"
            "with the function's name and its arguments as a JSON object, and nothing else. "
            "When no function helps, answer normally.")


def render(template: ChatTemplate, caps: TemplateTools, fmt: ToolFormat,
           messages: list[dict[str, Any]], functions: list[Function], choice: ToolChoice) -> str:
    """The prompt for a conversation that may hold tool calls and results, with `functions`
    offered (none under tool_choice none). A template that refuses the native shapes (Llama 3.1
    takes one call per turn) gets the conversation with calls written out as text."""
    offer = functions if choice.mode != "none" else []
    tools = [f.as_openai() for f in offer] if (offer and caps.renders_tools) else None
    section = describe(fmt, offer) if (offer and not caps.renders_tools) else None
    # Fallbacks, in order: calls as text (a template may take only one call per turn), the tools
    # section in the first user turn (a template may refuse system messages, as Gemma's does).
    attempts = [(native, in_system) for native in (caps.native_calls, False)
                for in_system in (True, False)]
    failure: TemplateError | None = None
    for native, in_system in dict.fromkeys(attempts):
        if (not native and caps.native_calls and not _has_tool_turns(messages)) or (
                not in_system and section is None):
            continue
        conversation = _conversation(messages, fmt, caps, native)
        if section is not None:
            conversation = _with_section(conversation, section, in_system)
        try:
            return template.render(conversation, tools=tools)
        except TemplateError as exc:
            failure = failure or exc
    assert failure is not None
    raise failure


def _has_tool_turns(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)


def _with_section(messages: list[dict[str, Any]], text: str, in_system: bool) -> list[dict[str, Any]]:
    """`text` added to the system message (made if there is none), or to the first user turn."""
    role = "system" if in_system else "user"
    for i, message in enumerate(messages):
        if message.get("role") == role:
            merged = {**message, "content": f"{text}\n\n{flatten_content(message.get('content'))}".strip()}
            return [*messages[:i], merged, *messages[i + 1:]]
        if message.get("role") != "system":
            break
    return [{"role": role, "content": text}, *messages]


def _conversation(messages: list[dict[str, Any]], fmt: ToolFormat, caps: TemplateTools,
                  native: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for results that do not say
    for i, message in enumerate(messages):
        msg = dict(message)
        calls = msg.pop("tool_calls", None)
        if msg.get("role") == "assistant" and calls:
            normal = [_normal_call(c, i, j, fmt) for j, c in enumerate(calls)]
            for c in normal:
                names[c["id"]] = c["function"]["name"]
            if native:
                for c in normal:
                    if not caps.object_arguments:
                        c["function"]["arguments"] = json.dumps(c["function"]["arguments"], ensure_ascii=False)
                msg["tool_calls"] = normal
            else:
                written = fmt.render([(c["function"]["name"], json.dumps(c["function"]["arguments"],
                                                                         ensure_ascii=False)) for c in normal])
                text = flatten_content(msg.get("content"))
                msg["content"] = f"{text}\n{written}" if text else written
        elif msg.get("role") == "tool":
            call_id = _call_id(msg.get("tool_call_id"), fmt)
            name = msg.get("name") or msg.get("tool_name") or names.get(call_id or "", "")
            if native:
                msg["tool_call_id"] = call_id
                if name:
                    msg["name"] = name
            else:
                result = flatten_content(msg.get("content"))
                msg = {"role": "user", "content": f"<tool_response>\n{result}\n</tool_response>"}
        if not native and out and msg.get("role") == "user" and out[-1].get("role") == "user":
            # results written as user turns next to a user turn: one turn, for templates that
            # insist on alternating roles
            out[-1] = {**out[-1], "content": f"{flatten_content(out[-1].get('content'))}\n\n"
                                             f"{flatten_content(msg.get('content'))}"}
            continue
        out.append(msg)
    return out


def _normal_call(call: Any, i: int, j: int, fmt: ToolFormat) -> dict[str, Any]:
    """An OpenAI (arguments as JSON text) or Ollama (arguments as an object) call, as
    {"id", "type": "function", "function": {"name", "arguments": object}}."""
    where = f"messages[{i}].tool_calls[{j}]"
    if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
        raise InvalidRequest(f"{where} must be {{\"function\": {{\"name\", \"arguments\"}}}}", param="messages")
    fn = call["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"{where}.function.name is missing", param="messages")
    args = fn.get("arguments")
    if args is None or args == "":
        args = {}
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            raise InvalidRequest(f"{where}.function.arguments is not JSON", param="messages") from None
    call_id = _call_id(call.get("id"), fmt) or _call_id(f"call_{i}_{j}", fmt)
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}


def _call_id(value: Any, fmt: ToolFormat) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    if isinstance(fmt, MistralFormat) and not (len(value) == 9 and value.isalnum()):
        # Mistral's templates take only 9 letters and digits; the same id maps the same way in
        # the call and in its result.
        return hashlib.sha256(value.encode()).hexdigest()[:9]
    return value
