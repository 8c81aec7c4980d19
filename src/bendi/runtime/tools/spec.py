"""What a request offers and asks: the tools (functions with JSON-schema parameters) and the
tool choice, checked once and put into one shape for the parsers, grammars and prompts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from bendi.errors import InvalidRequest

#: OpenAI's rule for function names
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

Mode = Literal["auto", "none", "required", "named"]


@dataclass(frozen=True)
class Function:
    """One callable function: its name, what it does, and the JSON schema of its arguments."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def as_openai(self) -> dict[str, Any]:
        """The tool in OpenAI's shape, which chat templates expect."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolChoice:
    """`auto`: the model may call; `none`: it may not; `required`: it must call at least one
    function; `named`: it must call `name`."""

    mode: Mode = "auto"
    name: str | None = None

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "named")


def parse_tools(tools: list[Any] | None) -> list[Function]:
    """Functions from OpenAI/Ollama `tools`; InvalidRequest names the first bad entry."""
    if not tools:
        return []
    if not isinstance(tools, list):
        raise InvalidRequest("tools must be a list", param="tools")
    out: list[Function] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"{where} must be an object", param="tools")
        kind = tool.get("type", "function")
        if kind != "function":
            raise InvalidRequest(f"{where}: only tools of type 'function' are supported, not {kind!r}",
                                 param="tools")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise InvalidRequest(f"{where}.function must be an object with a name", param="tools")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidRequest(
                f"{where}.function.name must be 1-64 letters, digits, '_', '-', '.' or ':' "
                f"(got {name!r})", param="tools")
        if name in seen:
            raise InvalidRequest(f"{where}: the function name {name!r} is used twice", param="tools")
        seen.add(name)
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise InvalidRequest(f"{where}.function.parameters must be a JSON schema object",
                                 param="tools")
        description = fn.get("description") or ""
        out.append(Function(name, str(description), params))
    return out


def parse_tool_choice(choice: Any, functions: list[Function]) -> ToolChoice:
    """The tool choice in OpenAI's forms ("auto", "none", "required", {"type": "function",
    "function": {"name": ...}}); also the Responses API's {"type": "function", "name": ...}."""
    if choice is None or choice == "":
        return ToolChoice("auto" if functions else "none")
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest(
                f"tool_choice must be 'auto', 'none', 'required' or a named function, not {choice!r}",
                param="tool_choice")
        if choice == "required" and not functions:
            raise InvalidRequest("tool_choice 'required' needs at least one tool in tools",
                                 param="tool_choice")
        return ToolChoice(choice)  # type: ignore[arg-type]
    if isinstance(choice, dict) and choice.get("type", "function") == "function":
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
        if not isinstance(name, str):
            raise InvalidRequest("tool_choice needs function.name", param="tool_choice")
        if name not in {f.name for f in functions}:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not in tools",
                                 param="tool_choice")
        return ToolChoice("named", name)
    raise InvalidRequest("tool_choice must be 'auto', 'none', 'required' or "
                         "{\"type\": \"function\", \"function\": {\"name\": ...}}", param="tool_choice")


def offered(functions: list[Function], choice: ToolChoice) -> list[Function]:
    """The functions the model may call under `choice` (a named choice narrows them to one)."""
    if choice.mode == "none":
        return []
    if choice.mode == "named":
        return [f for f in functions if f.name == choice.name]
    return functions
