"""Tool calling: the request's tools and tool choice, each model family's call syntax, the
grammars that keep calls valid, the prompt, and the streaming parser (see session.py)."""

from bendi.runtime.tools.parser import ParsedCall, ToolCallParser
from bendi.runtime.tools.session import GrammarSwitch, ModelTools, ToolSession
from bendi.runtime.tools.spec import Function, ToolChoice, parse_tool_choice, parse_tools

__all__ = [
    "Function", "GrammarSwitch", "ModelTools", "ParsedCall", "ToolCallParser", "ToolChoice",
    "ToolSession", "parse_tool_choice", "parse_tools",
]
