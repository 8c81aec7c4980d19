"""Ollama dialect: translate requests to the internal shape and events back to Ollama JSON."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from bendi.core.collect import Collected
from bendi.core.generation import Run, RunInfo
from bendi.errors import BendiError, InvalidRequest, UnsupportedParameter
from bendi.runtime.types import ChatRequest, Done, ReasoningDelta, TextDelta, ToolCall
from bendi.server.errors import ollama_error_body
from bendi.server.http import ndjson
from bendi.server.ollama import protocol as p
from bendi.store import ModelRecord

NS = 1_000_000_000


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "format", "schema": fmt}}
    raise InvalidRequest(f"format must be 'json' or a JSON schema object, not {fmt!r}", param="format")


def _think(value: bool | str | None) -> bool:
    # Reasoning goes to message.thinking only when asked for; otherwise it is dropped, never
    # left in the answer. Ollama also accepts effort levels ("low", "high") for some models.
    if isinstance(value, str):
        return value.lower() not in ("false", "none", "")
    return bool(value)


def error_event(exc: BendiError) -> bytes:
    """The line that ends a stream which failed after it started."""
    return ndjson(ollama_error_body(exc))


def to_chat_request(body: p.ChatRequest) -> ChatRequest:
    messages = []
    for m in body.messages:
        if m.images:
            raise UnsupportedParameter("images are not supported by this model", param="images")
        msg: dict[str, Any] = {"role": m.role, "content": m.content or ""}
        if m.tool_calls:
            msg["tool_calls"] = m.tool_calls
        name = (m.model_extra or {}).get("tool_name") or (m.model_extra or {}).get("name")
        if m.role == "tool" and isinstance(name, str):
            msg["name"] = name
        messages.append(msg)
    if not messages:
        raise InvalidRequest("messages must not be empty", param="messages")
    return ChatRequest(
        model=body.model,
        messages=messages,
        options=body.options.sampling_overrides(),
        max_tokens=body.options.max_tokens(),
        stop=body.options.stop_list(),
        response_format=response_format(body.format),
        think=_think(body.think),
        tools=body.tools,
        # not in Ollama's API: a bendi extension, so Ollama clients can force a call too
        tool_choice=(body.model_extra or {}).get("tool_choice"),
        num_ctx=body.options.num_ctx,
    )


def to_generate_request(body: p.GenerateRequest) -> ChatRequest:
    if body.images:
        raise UnsupportedParameter("images are not supported by this model", param="images")
    if body.suffix:
        raise UnsupportedParameter("suffix (fill-in-the-middle) is not supported", param="suffix")
    if body.template:
        raise UnsupportedParameter(
            "a per-request template is not supported; import the model with --template", param="template")
    common: dict[str, Any] = {
        "model": body.model,
        "options": body.options.sampling_overrides(),
        "max_tokens": body.options.max_tokens(),
        "stop": body.options.stop_list(),
        "response_format": response_format(body.format),
        "think": _think(body.think),
        "num_ctx": body.options.num_ctx,
        # an earlier answer's `context` continues that exchange; a templated answer returns its own
        "context": body.context or None,
        "return_context": not body.raw,
    }
    if body.raw:
        return ChatRequest(prompt=body.prompt, **common)
    messages = [{"role": "user", "content": body.prompt}]
    if body.system:
        messages.insert(0, {"role": "system", "content": body.system})
    return ChatRequest(messages=messages, **common)


def _stats(run: RunInfo, done: Done) -> dict[str, Any]:
    context = {"context": done.context} if done.context is not None else {}
    return {
        **context,
        "done_reason": "stop" if done.finish_reason in ("stop", "cancelled", "tool_calls") else done.finish_reason,
        "total_duration": int((done.total_seconds + run.load_seconds) * NS),
        "load_duration": int(run.load_seconds * NS),
        "prompt_eval_count": done.usage.prompt_tokens,
        "prompt_eval_duration": int(done.prompt_seconds * NS),
        "eval_count": done.usage.completion_tokens,
        "eval_duration": int(done.decode_seconds * NS),
    }


def tool_calls_json(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Ollama's tool calls: arguments as an object, not JSON text."""
    return [{"function": {"index": c.index, "name": c.name, "arguments": json.loads(c.arguments)}}
            for c in calls]


def chat_response(run: RunInfo, result: Collected) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.reasoning:
        message["thinking"] = result.reasoning
    if result.tool_calls:
        message["tool_calls"] = tool_calls_json(result.tool_calls)
    return {"model": run.model, "created_at": now_iso(), "message": message, "done": True,
            **_stats(run, result.done)}


def generate_response(run: RunInfo, result: Collected) -> dict[str, Any]:
    body: dict[str, Any] = {"model": run.model, "created_at": now_iso(), "response": result.text,
                            "done": True, **_stats(run, result.done)}
    if result.reasoning:
        body["thinking"] = result.reasoning
    return body


async def stream(run: Run, chat: bool) -> AsyncIterator[bytes]:
    """Ollama's stream: one line per delta, then the last line with the statistics (a failure's
    error line is added by the HTTP toolkit)."""
    name = run.model
    async for event in run.events:
        if isinstance(event, TextDelta | ReasoningDelta):
            key = "content" if isinstance(event, TextDelta) else "thinking"
            if chat:
                part: dict[str, Any] = {"message": {"role": "assistant", "content": "", key: event.text}}
            else:
                part = {"response": event.text if key == "content" else ""}
                if key == "thinking":
                    part["thinking"] = event.text
            yield ndjson({"model": name, "created_at": now_iso(), **part, "done": False})
        elif isinstance(event, ToolCall) and chat:
            # as Ollama streams them: each complete call in a chunk of its own
            message = {"role": "assistant", "content": "", "tool_calls": tool_calls_json([event])}
            yield ndjson({"model": name, "created_at": now_iso(), "message": message, "done": False})
        elif isinstance(event, Done):
            last: dict[str, Any] = (
                {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
            )
            yield ndjson({"model": name, "created_at": now_iso(), **last, "done": True,
                          **_stats(run, event)})


def modelfile(name: Any, facts: dict[str, Any]) -> str:
    """The model as an Ollama Modelfile: file, template, system prompt, parameters."""
    lines = [f"# Modelfile of {name} (bendi)", f"FROM {facts['path']}"]
    if facts.get("chat_template"):
        lines.append(f'TEMPLATE """{facts["chat_template"]}"""')
    if facts.get("system"):
        lines.append(f'SYSTEM """{facts["system"]}"""')
    for key, value in (facts.get("parameters") or {}).items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"PARAMETER {key} {json.dumps(item) if isinstance(item, str) else item}")
    if facts.get("license"):
        lines.append(f'LICENSE """{facts["license"]}"""')
    return "\n".join(lines) + "\n"


def memory_in_use(item: Any) -> int:
    """Bytes a loaded model holds: weights, the KV cache of all its slots at their context, and
    llama.cpp's buffers, from the planner's memory model (checked against measured RSS)."""
    try:
        from bendi.planner.guard import describe

        return int(describe(item.record, item.ctx, getattr(item.model, "slots", 1)).total)
    except Exception:  # noqa: BLE001 - a model the planner cannot describe still shows its file size
        return int(item.record.size)


def kb_tag_entry(kb: dict[str, Any]) -> dict[str, Any]:
    """A knowledge base in /api/tags: answers come from a chat model over its documents."""
    name = f"kb:{kb['name']}"
    return {"name": name, "model": name, "modified_at": iso(kb["created_at"]),
            "size": kb.get("bytes", 0), "digest": hashlib.sha256(name.encode()).hexdigest(),
            "details": {"parent_model": "", "format": "bendi-kb", "family": "knowledge-base",
                        "families": ["knowledge-base"], "parameter_size": "", "quantization_level": ""}}


def model_details(record: ModelRecord) -> dict[str, Any]:
    d = record.details
    family = d.get("family") or "unknown"
    return {
        "parent_model": "",
        "format": d.get("format", "gguf"),
        "family": family,
        "families": [family],
        "parameter_size": d.get("parameter_size", ""),
        "quantization_level": d.get("quantization_level", ""),
    }


def tag_entry(record: ModelRecord) -> dict[str, Any]:
    return {
        "name": str(record.name),
        "model": str(record.name),
        "modified_at": iso(record.modified),
        "size": record.size,
        "digest": record.digest.split(":", 1)[-1],
        "details": model_details(record),
    }


def expires_iso(expires_at: float | None) -> str:
    if expires_at is None:
        return iso(time.time() + 100 * 365 * 86400)
    return iso(time.time() + (expires_at - time.monotonic()))
