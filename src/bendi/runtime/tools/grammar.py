"""GBNF grammars that make a model write valid tool calls: the call syntax of its family around
each function's arguments, converted from the function's JSON schema by llama-cpp-python's port
of llama.cpp's schema converter."""

from __future__ import annotations

import copy
import logging
from typing import Any

from bendi.runtime.tools.formats import ToolFormat
from bendi.runtime.tools.spec import Function

log = logging.getLogger(__name__)

#: whitespace between the parts of a call; bounded, so that a small model cannot loop on it
WS_RULE = "ws ::= [ \\t\\n]{0,4}"


def tool_grammar(fmt: ToolFormat, functions: list[Function], *, parallel: bool = True,
                 lazy: bool = False) -> str:
    """GBNF for one or more calls of `functions` in `fmt`'s syntax. With `lazy` the grammar
    takes over where the model opened a call, so it starts at any of the format's openers."""
    from llama_cpp.llama_grammar import SchemaConverter

    converter = SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    call_rules: list[str] = []
    for i, function in enumerate(functions):
        args_rule = _arguments_rule(converter, function, f"fn{i}-args")
        call_rules.append(f"call{i} ::= {fmt.call_rule(function, args_rule)}")
    head = fmt.grammar([f"call{i}" for i in range(len(functions))], parallel=parallel, lazy=lazy)
    return "\n".join([head, *call_rules, WS_RULE, converter.format_grammar()]) + "\n"


def _arguments_rule(converter: Any, function: Function, name: str) -> str:
    schema = copy.deepcopy(function.parameters)
    if not any(k in schema for k in ("type", "properties", "$ref", "anyOf", "oneOf", "allOf")):
        schema = {"type": "object"}
    try:
        resolved = converter.resolve_refs(schema, name)
        return str(converter.visit(resolved, name))
    except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions
        # A schema the converter cannot express still gets a JSON object, never a failed request.
        log.warning("tool %s: cannot turn its parameters into a grammar (%s); any JSON object "
                    "is accepted", function.name, exc)
        return str(converter.visit({"type": "object"}, name + "-any"))
