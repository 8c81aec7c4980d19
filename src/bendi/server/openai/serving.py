"""OpenAI dialect: translate requests to the internal shape and events back to OpenAI JSON."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from bendi.core.collect import Collected
from bendi.core.generation import Run, RunInfo
from bendi.errors import BendiError, UnsupportedParameter
from bendi.runtime.types import (
    ChatRequest,
    Done,
    PromptLogprobs,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCall,
)
from bendi.server.errors import openai_error_body
from bendi.server.http import sse
from bendi.server.openai.protocol import ChatCompletionRequest, CompletionRequest

FINISH = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "cancelled": "stop",
          "error": "stop"}


def _check_n(n: int) -> None:
    if n != 1:
        raise UnsupportedParameter("n > 1 is not supported; send separate requests", param="n")


def error_event(exc: BendiError) -> bytes:
    """The event that ends a stream which failed after it started."""
    return sse(openai_error_body(exc))


def to_chat_request(body: ChatCompletionRequest) -> ChatRequest:
    _check_n(body.n)
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    return ChatRequest(
        model=body.model or "",
        messages=[m.model_dump(exclude_none=True) for m in body.messages],
        options=body.sampling_overrides(),
        max_tokens=max_tokens,
        stop=body.stop_list(),
        response_format=body.response_format,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
        tools=body.tools,
        tool_choice=body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
    )


def to_completion_request(body: CompletionRequest) -> ChatRequest:
    _check_n(body.n)
    if body.suffix:
        raise UnsupportedParameter("suffix (fill-in-the-middle) is not supported", param="suffix")
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise UnsupportedParameter("prompt must be a string or a list of one string", param="prompt")
        prompt = prompt[0]
    return ChatRequest(
        model=body.model or "",
        prompt=prompt,
        options=body.sampling_overrides(),
        max_tokens=body.max_tokens,
        stop=body.stop_list(),
        response_format=body.response_format,
        logprobs=body.logprobs,
        # the echoed prompt is scored too, as the legacy API does (prompt scoring relies on it)
        prompt_logprobs=body.echo and body.logprobs is not None,
    )


def _usage(done: Done) -> dict[str, Any]:
    u = done.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cached_tokens}}


def _chat_logprobs(items: list[TokenLogprob]) -> dict[str, Any]:
    return {"content": [
        {"token": i.token, "logprob": i.logprob, "bytes": i.bytes,
         "top_logprobs": [{"token": t, "logprob": lp, "bytes": b} for t, lp, b in i.top]}
        for i in items
    ]}


def _fingerprint(run: RunInfo) -> dict[str, Any]:
    return {"system_fingerprint": f"bendi-{run.fingerprint[7:19]}"} if run.fingerprint else {}


def tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def chat_response(run: RunInfo, result: Collected, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant",
                               "content": result.text if (result.text or not result.tool_calls) else None}
    if result.tool_calls:
        message["tool_calls"] = [tool_call_json(c) for c in result.tool_calls]
    if result.reasoning:
        message["reasoning_content"] = result.reasoning
        message["reasoning"] = result.reasoning
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "logprobs": _chat_logprobs(result.logprobs) if result.logprobs else None,
        "finish_reason": FINISH[result.done.finish_reason],
    }
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": run.model,
        **_fingerprint(run),
        "choices": [choice],
        "usage": _usage(result.done),
    }
    body.update(extra or {})
    return body


async def chat_stream(run: Run, include_usage: bool, extra: dict[str, Any] | None = None) -> AsyncIterator[bytes]:
    """Chat completion chunks (the error event and [DONE] are added by the HTTP toolkit)."""
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": run.model,
            **_fingerprint(run)}

    # With include_usage every chunk but the last says "usage": null (the API reference's shape).
    usage_null = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs,
                                         "finish_reason": finish}], **usage_null})

    first = {"role": "assistant", "content": ""}
    yield chunk(first)
    if extra:
        yield sse({**base, "choices": [], **extra, **usage_null})
    async for event in run.events:
        if isinstance(event, TextDelta):
            lp = _chat_logprobs(event.logprobs) if event.logprobs else None
            yield chunk({"content": event.text}, logprobs=lp)
        elif isinstance(event, ReasoningDelta):
            yield chunk({"reasoning_content": event.text, "reasoning": event.text})
        elif isinstance(event, ToolCall):
            # a call is reported once complete and valid: its name first, then its arguments
            yield chunk({"tool_calls": [{"index": event.index, "id": event.id, "type": "function",
                                         "function": {"name": event.name, "arguments": ""}}]})
            yield chunk({"tool_calls": [{"index": event.index, "function": {"arguments": event.arguments}}]})
        elif isinstance(event, Done):
            yield chunk({}, FINISH[event.finish_reason])
            if include_usage:
                yield sse({**base, "choices": [], "usage": _usage(event)})


def _completion_logprobs(items: list[TokenLogprob], start: int = 0,
                         prompt: PromptLogprobs | None = None) -> dict[str, Any]:
    """The legacy `logprobs` object; `start` is where the items' text begins in the choice's text
    (after an echoed prompt). With `prompt`, the echoed prompt's tokens come first, the first of
    them unscored (null), as OpenAI reports them."""
    tokens: list[str] = []
    scores: list[float | None] = []
    tops: list[dict[str, float] | None] = []
    offsets: list[int] = []

    def add(token: str, score: float | None, top: dict[str, float] | None, at: int) -> int:
        tokens.append(token)
        scores.append(score)
        tops.append(top)
        offsets.append(at)
        return at + len(token)

    if prompt is not None:
        at = add(prompt.first, None, None, 0)
        for i in prompt.rest:
            at = add(i.token, i.logprob, {t: lp for t, lp, _ in i.top}, at)
    at = start
    for i in items:
        at = add(i.token, i.logprob, {t: lp for t, lp, _ in i.top}, at)
    return {"tokens": tokens, "token_logprobs": scores, "top_logprobs": tops, "text_offset": offsets}


def completion_response(run: RunInfo, result: Collected, echo_prompt: str | None) -> dict[str, Any]:
    text = (echo_prompt or "") + result.text
    logprobs = None
    if result.prompt is not None or result.logprobs:
        prompt = result.prompt if echo_prompt is not None else None
        logprobs = _completion_logprobs(result.logprobs, len(echo_prompt or ""), prompt)
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": run.model,
        "choices": [{
            "index": 0, "text": text,
            "logprobs": logprobs,
            "finish_reason": FINISH[result.done.finish_reason],
        }],
        "usage": _usage(result.done),
    }


async def completion_stream(run: Run, include_usage: bool, echo_prompt: str | None) -> AsyncIterator[bytes]:
    """Completion chunks (the error event and [DONE] are added by the HTTP toolkit)."""
    base: dict[str, Any] = {"id": f"cmpl-{uuid.uuid4().hex[:24]}", "object": "text_completion",
                            "created": int(time.time()), "model": run.model}
    if include_usage:
        base["usage"] = None  # on every chunk but the last

    def text_chunk(text: str, logprobs: dict[str, Any] | None) -> bytes:
        return sse({**base, "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": None}]})

    echo = echo_prompt or None  # sent before anything else, with the prompt's scores if they come
    offset = len(echo_prompt or "")  # text_offset counts from the start of the choice's text
    async for event in run.events:
        if isinstance(event, PromptLogprobs):
            if echo is not None:
                yield text_chunk(echo, _completion_logprobs([], prompt=event))
                echo = None
            continue
        if echo is not None:
            yield text_chunk(echo, None)
            echo = None
        if isinstance(event, TextDelta):
            lp = _completion_logprobs(event.logprobs, start=offset) if event.logprobs else None
            offset += len(event.text)
            yield text_chunk(event.text, lp)
        elif isinstance(event, Done):
            yield sse({**base, "choices": [{"index": 0, "text": "", "logprobs": None,
                                            "finish_reason": FINISH[event.finish_reason]}]})
            if include_usage:
                yield sse({**base, "choices": [], "usage": _usage(event)})


def embedding_response(model: str, vectors: list[list[float]], tokens: int, encoding: str) -> dict[str, Any]:
    data = []
    for i, vec in enumerate(vectors):
        value: Any = vec
        if encoding == "base64":
            value = base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

