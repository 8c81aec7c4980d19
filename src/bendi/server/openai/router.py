"""OpenAI-compatible routes: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from bendi.errors import InvalidRequest
from bendi.server.body import parse_body
from bendi.server.generation import acquire, collect, start
from bendi.server.openai import serving
from bendi.server.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

router = APIRouter(prefix="/v1")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _state(request: Request) -> Any:
    return request.app.state


@router.post("/chat/completions")
async def chat_completions(request: Request) -> Any:
    state = _state(request)
    body = await parse_body(request, ChatCompletionRequest)
    kb_name = body.knowledge_base or (body.model[3:] if body.model.startswith("kb:") else None)
    if kb_name is not None:
        return await state.kb_chat(request, body, kb_name)
    record = state.services.store.get(body.model)
    chat = serving.to_chat_request(body, record.parameters)
    run = await start(state.services, state.metrics, chat)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(serving.chat_stream(run, include_usage), media_type="text/event-stream",
                                 headers=SSE_HEADERS)
    return JSONResponse(serving.chat_response(run, await collect(run.events)))


@router.post("/completions")
async def completions(request: Request) -> Any:
    state = _state(request)
    body = await parse_body(request, CompletionRequest)
    record = state.services.store.get(body.model)
    req = serving.to_completion_request(body, record.parameters)
    run = await start(state.services, state.metrics, req)
    echo = req.prompt if body.echo else None
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(serving.completion_stream(run, include_usage, echo),
                                 media_type="text/event-stream", headers=SSE_HEADERS)
    return JSONResponse(serving.completion_response(run, await collect(run.events), echo))


@router.post("/embeddings")
async def embeddings(request: Request) -> Any:
    state = _state(request)
    body = await parse_body(request, EmbeddingRequest)
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("input must be a string or a list of strings (token ids are not accepted)",
                             param="input")
    if body.dimensions is not None:
        raise InvalidRequest("dimensions cannot be changed for this model", param="dimensions")
    vectors, tokens, name = await embed_texts(state, body.model, [str(t) for t in texts])
    return JSONResponse(serving.embedding_response(name, vectors, tokens, body.encoding_format))


async def embed_texts(state: Any, model: str, texts: list[str],
                      keep_alive: float | None = None) -> tuple[list[list[float]], int, str]:
    """Embeddings from the bundled embedding model or a GGUF model in the store."""
    embedder = state.embedder_for(model)
    if embedder is not None:
        vectors, tokens = await asyncio.to_thread(embedder, texts)
        return vectors, tokens, model
    loaded, _ = await acquire(state.services, model, keep_alive=keep_alive)
    try:
        vectors, tokens = await asyncio.to_thread(loaded.model.embed, texts)
    finally:
        state.services.models.release(loaded, keep_alive)
    return vectors, tokens, loaded.name


@router.get("/models")
async def list_models(request: Request) -> Any:
    records = _state(request).services.store.list()
    return {"object": "list", "data": [
        {"id": str(r.name), "object": "model", "created": int(r.modified), "owned_by": "bendi"}
        for r in records
    ]}


@router.get("/models/{model:path}")
async def get_model(request: Request, model: str) -> Any:
    r = _state(request).services.store.get(model)
    return {"id": str(r.name), "object": "model", "created": int(r.modified), "owned_by": "bendi"}
