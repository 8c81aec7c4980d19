"""Structured output: response formats become GBNF grammars for llama.cpp's grammar sampler.

The JSON-schema-to-GBNF conversion is llama-cpp-python's port of llama.cpp's converter.
"""

from __future__ import annotations

import json
from typing import Any

from bendi.errors import InvalidRequest


def grammar_for_response_format(fmt: dict[str, Any] | None) -> str | None:
    """GBNF for an OpenAI-style response_format; None for plain text."""
    if not fmt:
        return None
    if not isinstance(fmt, dict):
        raise InvalidRequest("response_format must be an object", param="response_format")
    kind = fmt.get("type", "text")
    if kind == "text":
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if kind == "json_object":
        schema = fmt.get("schema")
        return _convert(schema, json_schema_to_gbnf) if schema else JSON_GBNF
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "response_format json_schema needs json_schema.schema (an object)",
                param="response_format",
            )
        return _convert(schema, json_schema_to_gbnf)
    raise InvalidRequest(
        f"response_format type {kind!r} is not supported (text, json_object, json_schema)",
        param="response_format",
    )


def _convert(schema: Any, convert: Any) -> str:
    try:
        return str(convert(json.dumps(schema)))
    except Exception as exc:  # noqa: BLE001 - the converter raises plain exceptions
        raise InvalidRequest(f"cannot enforce this JSON schema: {exc}", param="response_format") from exc
