"""Talking to a vLLM server: one bendi request as an OpenAI request, and vLLM's server-sent events
back as bendi's events, one at a time as they arrive (nothing waits for the whole answer).

vLLM's reasoning parser puts the thinking in `reasoning_content` (`reasoning` in newer versions),
its tool parser puts calls in `tool_calls`, streamed as fragments per index; they become
ReasoningDelta and ToolCall events, so the dialects above cannot tell the engines apart.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from bendi.errors import BendiError, EngineError, InvalidRequest, ServerBusy
from bendi.runtime.types import (
    ChatRequest,
    Done,
    Event,
    FinishReason,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCall,
    Usage,
)

_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                                    "abort": "cancelled", "error": "error"}


def request_body(request: ChatRequest, served_name: str) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of the OpenAI request for `request` (always streamed)."""
    s = request.sampling
    body: dict[str, Any] = {
        "model": served_name,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": s.temperature,
        "top_p": s.top_p,
        # vLLM: -1 (or 0 in newer versions) turns top-k off, as 0 does in bendi
        "top_k": s.top_k if s.top_k > 0 else -1,
        "min_p": s.min_p,
        "repetition_penalty": s.repeat_penalty,
        "presence_penalty": s.presence_penalty,
        "frequency_penalty": s.frequency_penalty,
    }
    if s.seed is not None:
        body["seed"] = s.seed
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.stop:
        body["stop"] = list(request.stop)
    if request.response_format is not None:
        body["response_format"] = request.response_format
    if request.messages is not None:
        body["messages"] = request.messages
        if request.logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = request.logprobs
        if request.tools:
            body["tools"] = request.tools
            if request.tool_choice is not None:
                body["tool_choice"] = request.tool_choice
            if not request.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        return "/v1/chat/completions", body
    body["prompt"] = request.prompt or ""
    if request.logprobs is not None:
        body["logprobs"] = request.logprobs
    return "/v1/completions", body


@dataclass
class StreamState:
    """What one streamed answer has accumulated: tool-call fragments, usage, timings."""

    started: float = field(default_factory=time.perf_counter)
    first: float | None = None
    finish: FinishReason | None = None
    usage: Usage | None = None
    #: index -> [id, name, argument fragments]
    calls: dict[int, list[Any]] = field(default_factory=dict)

    def mark(self) -> None:
        if self.first is None:
            self.first = time.perf_counter()


def events_of_chunk(chunk: dict[str, Any], state: StreamState, think: bool | None) -> list[Event]:
    """bendi events for one parsed `data:` line of vLLM's stream (chat or completions)."""
    if "error" in chunk:
        err = chunk["error"]
        raise EngineError(f"vLLM: {err.get('message', err) if isinstance(err, dict) else err}")
    if chunk.get("usage"):
        u = chunk["usage"]
        cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        state.usage = Usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0),
                            int(cached))
    out: list[Event] = []
    for choice in chunk.get("choices") or []:
        delta = choice.get("delta")
        if delta is None:  # /v1/completions
            text = choice.get("text") or ""
            if text:
                state.mark()
                out.append(TextDelta(text, _completion_logprobs(choice.get("logprobs"))))
        else:
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                state.mark()
                if think is not False:
                    out.append(ReasoningDelta(reasoning))
            if delta.get("content"):
                state.mark()
                out.append(TextDelta(delta["content"], _chat_logprobs(choice.get("logprobs"))))
            for call in delta.get("tool_calls") or []:
                state.mark()
                slot = state.calls.setdefault(int(call.get("index", 0)), [None, None, []])
                fn = call.get("function") or {}
                slot[0] = call.get("id") or slot[0]
                slot[1] = fn.get("name") or slot[1]
                if fn.get("arguments"):
                    slot[2].append(fn["arguments"])
        if choice.get("finish_reason"):
            state.finish = _FINISH.get(choice["finish_reason"], "stop")
    return out


def closing_events(state: StreamState) -> list[Event]:
    """The tool calls (whole, in index order) and the Done that end a stream."""
    out: list[Event] = []
    for index in sorted(state.calls):
        call_id, name, parts = state.calls[index]
        out.append(ToolCall(call_id or f"call_{index}", name or "", "".join(parts) or "{}", index))
    finish = state.finish or "stop"
    if state.calls and finish == "stop":
        finish = "tool_calls"
    end = time.perf_counter()
    first = state.first or end
    usage = state.usage or Usage()
    out.append(Done(finish, usage, ttft=first - state.started, prompt_seconds=first - state.started,
                    decode_seconds=end - first, total_seconds=end - state.started))
    return out


async def stream_events(client: httpx.AsyncClient, base_url: str, request: ChatRequest,
                        served_name: str) -> AsyncIterator[Event]:
    """Send `request` to the vLLM server at `base_url` and yield its events as they arrive."""
    path, body = request_body(request, served_name)
    state = StreamState()
    async with client.stream("POST", base_url + path, json=body) as response:
        if response.status_code != 200:
            raise error_from_response(response.status_code, await response.aread())
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            for event in events_of_chunk(json.loads(data), state, request.think):
                yield event
    for event in closing_events(state):
        yield event


def error_from_response(status: int, content: bytes) -> BendiError:
    """A bendi error for a vLLM error answer, by status; vLLM's own message is kept."""
    message = content.decode("utf-8", errors="replace")[:500]
    try:
        data = json.loads(content)
        err = data.get("error", data) if isinstance(data, dict) else {}
        if isinstance(err, dict) and err.get("message"):
            message = str(err["message"])
    except ValueError:
        pass
    if status in (400, 422):
        return InvalidRequest(message)
    if status in (429, 503):
        return ServerBusy(f"vLLM is busy: {message}")
    return EngineError(f"vLLM answered {status}: {message}")


def _chat_logprobs(data: dict[str, Any] | None) -> list[TokenLogprob] | None:
    if not data or not data.get("content"):
        return None
    return [TokenLogprob(t["token"], float(t["logprob"]), list(t.get("bytes") or t["token"].encode()),
                         [(a["token"], float(a["logprob"]), list(a.get("bytes") or a["token"].encode()))
                          for a in t.get("top_logprobs") or []])
            for t in data["content"]]


def _completion_logprobs(data: dict[str, Any] | None) -> list[TokenLogprob] | None:
    if not data or not data.get("tokens"):
        return None
    tops = data.get("top_logprobs") or [None] * len(data["tokens"])
    out = []
    for token, logprob, top in zip(data["tokens"], data.get("token_logprobs") or [], tops, strict=False):
        alts = [(t, float(lp), list(t.encode())) for t, lp in (top or {}).items()]
        out.append(TokenLogprob(token, float(logprob or 0.0), list(token.encode()), alts))
    return out
