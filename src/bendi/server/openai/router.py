"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bendi.core.collect import acollect
from bendi.core.generation import DEFAULT_ANSWER_MODEL, Run, knowledge_base_of
from bendi.errors import InvalidRequest
from bendi.server.access import usable
from bendi.server.body import GENERATION_ERRORS, documented, parse_body
from bendi.server.http import caller, services, sse_response
from bendi.server.openai import serving
from bendi.server.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

router = APIRouter(prefix="/v1")


@router.post("/chat/completions", **documented(ChatCompletionRequest, errors=GENERATION_ERRORS))
async def chat_completions(request: Request) -> Any:
    body = await parse_body(request, ChatCompletionRequest)
    kb_name = body.knowledge_base or knowledge_base_of(body.model)
    if kb_name is not None:
        return await _knowledge_base_chat(request, body, kb_name)
    run = await services(request).generation.start(serving.to_chat_request(body), caller(request))
    return await _chat_answer(run, body)


async def _knowledge_base_chat(request: Request, body: ChatCompletionRequest, kb_name: str) -> Any:
    """Model "kb:<name>" (or knowledge_base=<name>): retrieval, then the answer in OpenAI's shape
    with the sources in an extra top-level "sources" field. The chat model is `body.model`
    unless that is the "kb:" alias, then the bundled model."""
    chat = serving.to_chat_request(body)
    run = await services(request).generation.ask(
        kb_name, caller(request), messages=chat.messages,
        model=DEFAULT_ANSWER_MODEL if knowledge_base_of(body.model) else body.model,
        options=chat.options, max_tokens=chat.max_tokens)
    if not run.sources:
        run.model = body.model  # no model answered: name the one asked for
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
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("input must be a string or a list of strings (token ids are not accepted)",
                             param="input")
    if body.dimensions is not None:
        raise InvalidRequest("dimensions cannot be changed for this model", param="dimensions")
    result = await services(request).generation.embed(body.model, [str(t) for t in texts], caller(request))
    return JSONResponse(serving.embedding_response(result.model, result.vectors, result.tokens,
                                                   body.encoding_format))


@router.get("/models")
async def list_models(request: Request) -> Any:
    records = services(request).store.list()
    allowed = set(usable(request.scope, [str(r.name) for r in records]))
    records = [r for r in records if str(r.name) in allowed]
    return {"object": "list", "data": [
        {"id": str(r.name), "object": "model", "created": int(r.modified), "owned_by": "bendi"}
        for r in records
    ]}


@router.get("/models/{model:path}", **documented(None, errors=(404,)))
async def get_model(request: Request, model: str) -> Any:
    r = services(request).store.get(model)
    return {"id": str(r.name), "object": "model", "created": int(r.modified), "owned_by": "bendi"}
