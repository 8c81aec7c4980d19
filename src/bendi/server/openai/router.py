"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bendi.core.collect import acollect
from bendi.core.generation import DEFAULT_ANSWER_MODEL, Run, knowledge_base_of
from bendi.errors import InvalidRequest
from bendi.kb.embed import BUNDLED_LISTING
from bendi.runtime.types import ChatRequest
from bendi.server.access import usable, visible
from bendi.server.body import GENERATION_ERRORS, documented, parse_body
from bendi.server.http import (
    SSE_HEADERS,
    SSE_MEDIA,
    caller,
    ending_with_error,
    services,
    sse_response,
)
from bendi.server.openai import responses as rs
from bendi.server.openai import serving
from bendi.server.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

router = APIRouter(prefix="/v1")


@router.post("/chat/completions", **documented(ChatCompletionRequest, errors=GENERATION_ERRORS))
async def chat_completions(request: Request) -> Any:
    body = await parse_body(request, ChatCompletionRequest)
    body.model = services(request).generation.model_or_default(body.model)
    kb_name = body.knowledge_base or knowledge_base_of(body.model or "")
    if kb_name is not None:
        return await _knowledge_base_chat(request, body, kb_name)
    run = await services(request).generation.start(serving.to_chat_request(body), caller(request))
    return await _chat_answer(run, body)


async def _knowledge_base_chat(request: Request, body: ChatCompletionRequest, kb_name: str) -> Any:
    """Model "kb:<name>" (or knowledge_base=<name>): retrieval, then the answer in OpenAI's shape
    with the sources in an extra top-level "sources" field. The chat model is `body.model`
    unless that is the "kb:" alias, then the bundled model."""
    chat = serving.to_chat_request(body)
    asked = chat.model
    run = await services(request).generation.ask(
        kb_name, caller(request), messages=chat.messages,
        model=DEFAULT_ANSWER_MODEL if knowledge_base_of(asked) else asked,
        options=chat.options, max_tokens=chat.max_tokens)
    if knowledge_base_of(asked) or not run.sources:
        run.model = asked  # answered as the model the client picked ("kb:<name>")
    extra = {"sources": [{"number": i, **h.to_dict()} for i, h in enumerate(run.sources, 1)]}
    return await _chat_answer(run, body, extra)


async def _chat_answer(run: Run, body: ChatCompletionRequest, extra: dict[str, Any] | None = None) -> Any:
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(serving.chat_stream(run, include_usage, extra), serving.error_event)
    return JSONResponse(serving.chat_response(run, await acollect(run.events), extra))


@router.post("/completions", **documented(CompletionRequest, errors=GENERATION_ERRORS))
async def completions(request: Request) -> Any:
    body = await parse_body(request, CompletionRequest)
    body.model = services(request).generation.model_or_default(body.model)
    req = serving.to_completion_request(body)
    run = await services(request).generation.start(req, caller(request))
    echo = req.prompt if body.echo else None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return sse_response(serving.completion_stream(run, include_usage, echo), serving.error_event)
    return JSONResponse(serving.completion_response(run, await acollect(run.events), echo))


@router.post("/embeddings", **documented(EmbeddingRequest, errors=GENERATION_ERRORS))
async def embeddings(request: Request) -> Any:
    body = await parse_body(request, EmbeddingRequest)
    body.model = services(request).generation.model_or_default(body.model)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("input must be a string or a list of strings (token ids are not accepted)",
                             param="input")
    if body.dimensions is not None:
        raise InvalidRequest("dimensions cannot be changed for this model", param="dimensions")
    result = await services(request).generation.embed(str(body.model), [str(t) for t in texts], caller(request))
    return JSONResponse(serving.embedding_response(result.model, result.vectors, result.tokens,
                                                   body.encoding_format))


@router.get("/models")
async def list_models(request: Request) -> Any:
    """Installed models, then each knowledge base as a `kb:<name>` model, then the bundled
    embedder under each of its names (clients pick models from this list); only what the
    caller's credential may use."""
    svc = services(request)
    records = svc.store.list()
    allowed = set(usable(request.scope, [str(r.name) for r in records]))
    data = [{"id": str(r.name), "object": "model", "created": int(r.modified), "owned_by": "bendi"}
            for r in records if str(r.name) in allowed]
    kbs = await asyncio.to_thread(svc.kb.list_all)
    readable = set(visible(request.scope, [kb["name"] for kb in kbs]))
    data += [{"id": f"kb:{kb['name']}", "object": "model", "created": int(kb["created_at"]),
              "owned_by": "bendi-kb"} for kb in kbs if kb["name"] in readable]
    aliases = [name for names in BUNDLED_LISTING.values() for name in names]
    data += [{"id": name, "object": "model", "created": 0, "owned_by": "bendi-embeddings"}
             for name in usable(request.scope, aliases)]
    return {"object": "list", "data": data}


@router.post("/responses", **documented(rs.ResponsesRequest, errors=GENERATION_ERRORS))
async def responses(request: Request) -> Any:
    """OpenAI's Responses API over the same generation as chat completions."""
    body = await parse_body(request, rs.ResponsesRequest)
    rs.check_supported(body)
    generation = services(request).generation
    body.model = generation.model_or_default(body.model)
    chat = ChatRequest(
        model=body.model, messages=rs.to_messages(body), options=body.sampling_overrides(),
        max_tokens=body.max_output_tokens, response_format=rs.response_format(body.text),
        tools=rs.chat_tools(body.tools), tool_choice=body.tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
    )
    run = await generation.start(chat, caller(request))
    builder = rs.ResponseBuilder(body, run.model)
    if body.stream:
        return StreamingResponse(ending_with_error(builder.stream(run.events), builder.error_event),
                                 media_type=SSE_MEDIA, headers=SSE_HEADERS)
    result = await acollect(run.events)
    return JSONResponse(builder.collect(result.text, result.reasoning, result.tool_calls, result.done))


@router.get("/models/{model:path}", **documented(None, errors=(404,)))
async def get_model(request: Request, model: str) -> Any:
    r = services(request).store.get(model)
    return {"id": str(r.name), "object": "model", "created": int(r.modified), "owned_by": "bendi"}
