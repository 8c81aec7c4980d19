"""OpenAI's Responses API (/v1/responses): its request shape in, its response and streaming
events out. Generation itself is the same as for chat completions; only the shapes differ.

Supported: `input` as a string or a list of messages, function calls and function call outputs;
`instructions`; `stream` (the typed events); `tools` of type function, `tool_choice`,
`parallel_tool_calls`; `max_output_tokens`, `temperature`, `top_p`; `text.format` (json_object,
json_schema). Not supported (400): `previous_response_id` and `conversation` (bendi stores no
responses: send the whole conversation as `input`), built-in tools (web/file search, computer
use), images and files in the input.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bendi.errors import BendiError, InvalidRequest, UnsupportedParameter
from bendi.runtime.types import Done, Event, ReasoningDelta, TextDelta, ToolCall


class ResponsesRequest(BaseModel):
    """The fields bendi reads; the others are accepted and ignored, as OpenAI-compatible servers do."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[Any] = ""
    instructions: str | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    seed: int | None = None
    text: dict[str, Any] | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    metadata: dict[str, Any] | None = None
    user: str | None = None

    def sampling_overrides(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k,
                "seed": self.seed}


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# -- request -----------------------------------------------------------------------------------

def check_supported(body: ResponsesRequest) -> None:
    if body.previous_response_id or body.conversation:
        param = "previous_response_id" if body.previous_response_id else "conversation"
        raise UnsupportedParameter(
            f"{param} is not supported: bendi keeps no responses; send the whole conversation "
            "as input (messages, function_call and function_call_output items)", param=param)


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Responses tools ({"type": "function", "name", "parameters"}) as chat completion tools."""
    if not tools:
        return None
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else type(tool).__name__
            raise UnsupportedParameter(f"tools[{i}]: only function tools are supported, not {kind!r}",
                                       param="tools")
        if "function" in tool:  # already in the chat shape
            out.append(tool)
            continue
        out.append({"type": "function", "function": {
            "name": tool.get("name"), "description": tool.get("description") or "",
            "parameters": tool.get("parameters") or {"type": "object", "properties": {}}}})
    return out


def response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    """`text.format` as a chat completion response_format."""
    fmt = (text or {}).get("format")
    if not isinstance(fmt, dict) or fmt.get("type", "text") == "text":
        return None
    if fmt.get("type") == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": fmt.get("name", "output"),
                                                       "schema": fmt.get("schema")}}
    return {"type": fmt.get("type")}


def _text_of(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise InvalidRequest(f"{where}.content must be a string or a list of parts", param="input")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            texts.append(str(part.get("text", "")))
        elif kind == "refusal":
            texts.append(str(part.get("refusal", "")))
        else:
            raise UnsupportedParameter(f"{where}.content[{j}]: only text parts are supported, not {kind!r}",
                                       param="input")
    return "".join(texts)


def to_messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    """Instructions and input items as chat messages."""
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else body.input
    for i, item in enumerate(items):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be an object", param="input")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequest(f"{where}.role must be user, system, developer or assistant",
                                     param="input")
            messages.append({"role": "system" if role == "developer" else role,
                             "content": _text_of(item.get("content"), where)})
        elif kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"),
                             "content": output if isinstance(output, str) else _text_of(output, where)})
        elif kind == "reasoning":
            continue  # the model's earlier reasoning is not fed back, as chat templates drop it
        else:
            raise UnsupportedParameter(f"{where}: input items of type {kind!r} are not supported",
                                       param="input")
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest("input is empty: give a string or at least one message", param="input")
    return messages


# -- response ----------------------------------------------------------------------------------

def usage(done: Done) -> dict[str, Any]:
    u = done.usage
    return {"input_tokens": u.prompt_tokens, "input_tokens_details": {"cached_tokens": u.cached_tokens},
            "output_tokens": u.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.total_tokens}


class ResponseBuilder:
    """Builds the response object, and its streaming events, from one generation's events."""

    def __init__(self, body: ResponsesRequest, model: str) -> None:
        self.body = body
        self.model = model
        self.id = _new_id("resp")
        self.created = int(time.time())
        self.output: list[dict[str, Any]] = []
        self.done: Done | None = None
        self._seq = 0
        self._open: dict[str, Any] | None = None  # the reasoning or message item being streamed

    # -- the whole response ----------------------------------------------------------------------

    def response(self, status: str = "completed") -> dict[str, Any]:
        incomplete = None
        if self.done is not None and self.done.finish_reason == "length":
            status, incomplete = "incomplete", {"reason": "max_output_tokens"}
        b = self.body
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "model": self.model, "output": self.output, "error": None,
            "incomplete_details": incomplete, "instructions": b.instructions,
            "max_output_tokens": b.max_output_tokens, "metadata": b.metadata or {},
            "parallel_tool_calls": b.parallel_tool_calls,
            "temperature": b.temperature, "top_p": b.top_p,
            "tool_choice": b.tool_choice if b.tool_choice is not None else "auto",
            "tools": b.tools or [], "text": b.text or {"format": {"type": "text"}},
            "previous_response_id": None, "reasoning": None, "store": False, "truncation": "disabled",
            "user": b.user,
            "usage": usage(self.done) if self.done is not None else None,
        }

    def collect(self, text: str, reasoning: str, calls: list[ToolCall], done: Done) -> dict[str, Any]:
        """The response for a finished, non-streamed generation."""
        if reasoning:
            self.output.append(self._reasoning_item(reasoning))
        if text or not calls:
            self.output.append(self._message_item(text))
        self.output.extend(self._call_item(c) for c in calls)
        self.done = done
        return self.response()

    def _reasoning_item(self, text: str) -> dict[str, Any]:
        return {"type": "reasoning", "id": _new_id("rs"), "summary": [],
                "content": [{"type": "reasoning_text", "text": text}], "status": "completed"}

    def _message_item(self, text: str, status: str = "completed") -> dict[str, Any]:
        return {"type": "message", "id": _new_id("msg"), "status": status, "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []}

    def _call_item(self, call: ToolCall) -> dict[str, Any]:
        return {"type": "function_call", "id": _new_id("fc"), "call_id": call.id, "name": call.name,
                "arguments": call.arguments, "status": "completed"}

    # -- streaming -------------------------------------------------------------------------------

    def _event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **data}
        self._seq += 1
        return f"event: {kind}\ndata: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    def error_event(self, exc: BendiError) -> bytes:
        """The event that ends a stream which failed after it started."""
        return self._event("error", code=exc.code, message=exc.message, param=exc.param)

    async def stream(self, events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
        """The Responses API's server-sent events for a generation."""
        yield self._event("response.created", response=self.response("in_progress"))
        yield self._event("response.in_progress", response=self.response("in_progress"))
        try:
            async for event in events:
                if isinstance(event, ReasoningDelta):
                    for chunk in self._open_item("reasoning"):
                        yield chunk
                    assert self._open is not None
                    self._open["text"] += event.text
                    yield self._event("response.reasoning_text.delta", item_id=self._open["item"]["id"],
                                      output_index=self._open["index"], content_index=0, delta=event.text)
                elif isinstance(event, TextDelta):
                    if not event.text:
                        continue
                    for chunk in self._open_item("message"):
                        yield chunk
                    assert self._open is not None
                    self._open["text"] += event.text
                    yield self._event("response.output_text.delta", item_id=self._open["item"]["id"],
                                      output_index=self._open["index"], content_index=0,
                                      delta=event.text, logprobs=[])
                elif isinstance(event, ToolCall):
                    for chunk in self._close_item():
                        yield chunk
                    for chunk in self._call_events(event):
                        yield chunk
                elif isinstance(event, Done):
                    for chunk in self._close_item():
                        yield chunk
                    self.done = event
                    final = self.response()
                    kind = "response.incomplete" if final["status"] == "incomplete" else "response.completed"
                    yield self._event(kind, response=final)
        except BendiError as exc:
            yield self._event("error", code=exc.code, message=exc.message, param=exc.param)

    def _open_item(self, kind: str) -> list[bytes]:
        if self._open is not None and self._open["kind"] == kind:
            return []
        out = self._close_item()
        index = len(self.output)
        if kind == "reasoning":
            item = {"type": "reasoning", "id": _new_id("rs"), "summary": [], "content": [], "status": "in_progress"}
        else:
            item = self._message_item("", status="in_progress")
        self.output.append(item)
        self._open = {"kind": kind, "item": item, "index": index, "text": ""}
        out.append(self._event("response.output_item.added", output_index=index, item=item))
        part = ({"type": "reasoning_text", "text": ""} if kind == "reasoning"
                else {"type": "output_text", "text": "", "annotations": []})
        out.append(self._event("response.content_part.added", item_id=item["id"], output_index=index,
                               content_index=0, part=part))
        return out

    def _close_item(self) -> list[bytes]:
        if self._open is None:
            return []
        opened, self._open = self._open, None
        item, index, text = opened["item"], opened["index"], opened["text"]
        if opened["kind"] == "reasoning":
            part = {"type": "reasoning_text", "text": text}
            done = [self._event("response.reasoning_text.done", item_id=item["id"], output_index=index,
                                content_index=0, text=text)]
        else:
            part = {"type": "output_text", "text": text, "annotations": []}
            done = [self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                content_index=0, text=text, logprobs=[])]
        item["content"] = [part]
        item["status"] = "completed"
        done.append(self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                content_index=0, part=part))
        done.append(self._event("response.output_item.done", output_index=index, item=item))
        return done

    def _call_events(self, call: ToolCall) -> list[bytes]:
        item = self._call_item(call)
        index = len(self.output)
        self.output.append(item)
        started = {**item, "arguments": "", "status": "in_progress"}
        return [
            self._event("response.output_item.added", output_index=index, item=started),
            self._event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                        delta=call.arguments),
            self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                        arguments=call.arguments),
            self._event("response.output_item.done", output_index=index, item=item),
        ]
