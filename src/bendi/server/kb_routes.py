"""Knowledge-base routes (/kb/...) and the OpenAI chat against a knowledge base (model "kb:<name>").

Errors are bendi errors, mapped by class by the app's handlers (OpenAI error shape: these paths
are outside /api/).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from bendi.errors import BendiError, InvalidRequest
from bendi.kb.answer import citations
from bendi.kb.service import AsyncAnswer, KnowledgeBaseService
from bendi.runtime.types import Done, ReasoningDelta, SamplingParams, TextDelta
from bendi.server.body import parse_body
from bendi.server.errors import openai_error_body

router = APIRouter(prefix="/kb", tags=["knowledge bases"])

DEFAULT_MODEL = "smollm2:135m"


class CreateBody(BaseModel):
    name: str
    embed: str = "all-minilm"


class SearchBody(BaseModel):
    query: str
    top_k: int | None = Field(None, ge=1, le=100)
    all: bool = False
    lexical_weight: float | None = Field(None, ge=0)
    vector_weight: float | None = Field(None, ge=0)


class AskBody(BaseModel):
    question: str | None = None
    messages: list[dict[str, Any]] | None = None
    model: str = DEFAULT_MODEL
    stream: bool = True
    top_k: int | None = Field(None, ge=1, le=20)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    think: bool | None = None


def _kb(request: Request) -> KnowledgeBaseService:
    return request.app.state.services.kb  # type: ignore[no-any-return]


@router.post("")
async def create_kb(request: Request) -> Any:
    body = await parse_body(request, CreateBody)
    info = await asyncio.to_thread(_kb(request).create, body.name, embed=body.embed)
    return JSONResponse(info, status_code=201)


@router.get("")
async def list_kbs(request: Request) -> Any:
    return {"knowledge_bases": await asyncio.to_thread(_kb(request).list_all)}


@router.get("/{name}")
async def get_kb(request: Request, name: str) -> Any:
    return await asyncio.to_thread(_kb(request).info, name)


@router.delete("/{name}")
async def delete_kb(request: Request, name: str) -> Any:
    await asyncio.to_thread(_kb(request).remove, name)
    return {"deleted": name}


@router.post("/{name}/documents")
async def upload_documents(request: Request, name: str) -> Any:
    """multipart/form-data with one or more `file` (or `files`) parts; one result per file."""
    kb = _kb(request)
    await asyncio.to_thread(kb.info, name)
    try:
        form = await request.form()
    except Exception as exc:  # malformed multipart
        raise InvalidRequest(f"expected multipart/form-data with files: {exc}") from None
    uploads = [v for k, v in form.multi_items() if k in ("file", "files") and hasattr(v, "filename")]
    if not uploads:
        raise InvalidRequest("no files: send multipart/form-data with one or more 'file' parts", param="file")
    results = []
    for upload in uploads:
        filename = Path(str(getattr(upload, "filename", "") or "upload")).name
        data = await upload.read()  # type: ignore[union-attr]
        result = await asyncio.to_thread(kb.add_file, name, Path(tempfile.gettempdir()) / filename,
                                         doc_name=filename, data=data)
        results.append(result.to_dict())
    status = 200 if all(r["status"] != "failed" for r in results) else 207
    return JSONResponse({"results": results}, status_code=status)


@router.get("/{name}/documents")
async def list_documents(request: Request, name: str) -> Any:
    return await asyncio.to_thread(_kb(request).documents, name)


@router.delete("/{name}/documents/{document:path}")
async def delete_document(request: Request, name: str, document: str) -> Any:
    removed = await asyncio.to_thread(_kb(request).remove_document, name, document)
    return {"deleted": removed.name, "chunks": removed.n_chunks}


@router.post("/{name}/search")
async def search_kb(request: Request, name: str) -> Any:
    body = await parse_body(request, SearchBody)
    result = await asyncio.to_thread(_kb(request).search, name, body.query, include_all=body.all,
                                     top_k=body.top_k, lexical_weight=body.lexical_weight,
                                     vector_weight=body.vector_weight)
    return result.to_dict()


def _sources(answer: AsyncAnswer) -> list[dict[str, Any]]:
    return [{"number": i, **h.to_dict()} for i, h in enumerate(answer.sources, 1)]


@router.post("/{name}/ask")
async def ask_kb(request: Request, name: str) -> Any:
    """Answer with citations. stream=true (default): NDJSON lines {"type": "sources"|"reasoning"|
    "text"|"done"|"error", ...}; stream=false: one JSON object."""
    body = await parse_body(request, AskBody)
    sampling = SamplingParams(temperature=body.temperature) if body.temperature is not None else None
    answer = await _kb(request).aanswer(name, body.question, messages=body.messages, model=body.model,
                                        sampling=sampling, max_tokens=body.max_tokens, top_k=body.top_k,
                                        think=body.think)
    if body.stream:
        return StreamingResponse(_ndjson(answer), media_type="application/x-ndjson")
    text: list[str] = []
    reasoning: list[str] = []
    done: Done | None = None
    async for event in answer.events:
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, Done):
            done = event
    full = "".join(text)
    return {"question": answer.question, "answer": full, "reasoning": "".join(reasoning) or None,
            "model": answer.model, "found": bool(answer.sources), "sources": _sources(answer),
            "citations": citations(full, len(answer.sources)),
            "finish_reason": done.finish_reason if done else None}


async def _ndjson(answer: AsyncAnswer) -> AsyncIterator[bytes]:
    def line(obj: dict[str, Any]) -> bytes:
        return (json.dumps(obj, ensure_ascii=False) + "\n").encode()

    yield line({"type": "sources", "question": answer.question, "found": bool(answer.sources),
                "model": answer.model, "sources": _sources(answer)})
    text: list[str] = []
    try:
        async for event in answer.events:
            if isinstance(event, TextDelta):
                text.append(event.text)
                yield line({"type": "text", "text": event.text})
            elif isinstance(event, ReasoningDelta):
                yield line({"type": "reasoning", "text": event.text})
            elif isinstance(event, Done):
                yield line({"type": "done", "finish_reason": event.finish_reason,
                            "citations": citations("".join(text), len(answer.sources)),
                            "usage": {"prompt_tokens": event.usage.prompt_tokens,
                                      "completion_tokens": event.usage.completion_tokens}})
    except BendiError as exc:
        yield line({"type": "error", **openai_error_body(exc)})


async def openai_kb_chat(request: Request, body: Any, name: str) -> Any:
    """POST /v1/chat/completions with model "kb:<name>" (or knowledge_base=<name>): retrieval, then
    the answer in OpenAI's shape, with the sources in an extra top-level "sources" field. The chat
    model is `body.model` unless that is the "kb:" alias, then the bundled model."""
    from bendi.server.generation import Run, collect, sampling_for
    from bendi.server.openai import serving

    state = request.app.state
    kb: KnowledgeBaseService = state.services.kb
    chat_model = DEFAULT_MODEL if body.model.startswith("kb:") else body.model
    messages = [m.model_dump(exclude_none=True) for m in body.messages]
    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    sampling = None
    if state.services.store.exists(chat_model):
        sampling = sampling_for(state.services.store.get(chat_model).parameters, body.sampling_overrides())
    answer = await kb.aanswer(name, None, messages=messages, model=chat_model, sampling=sampling,
                              max_tokens=max_tokens)
    extra = {"sources": _sources(answer)}
    if answer.model is None:
        return await _not_found_response(answer, body, extra)
    run = Run(answer.loaded, 0.0, answer.events)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(serving.chat_stream(run, include_usage, extra), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return JSONResponse(serving.chat_response(run, await collect(run.events), extra))


async def _not_found_response(answer: AsyncAnswer, body: Any, extra: dict[str, Any]) -> Any:
    """The explicit not-found answer in OpenAI's shape; no model was loaded or called."""
    text = ""
    async for event in answer.events:
        if isinstance(event, TextDelta):
            text += event.text
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "created": int(time.time()), "model": body.model}
    if not body.stream:
        return JSONResponse({**base, "object": "chat.completion", **extra,
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                          "logprobs": None, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}})

    async def events() -> AsyncIterator[bytes]:
        def sse(obj: Any) -> bytes:
            return f"data: {obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)}\n\n".encode()

        chunk = {**base, "object": "chat.completion.chunk"}
        yield sse({**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]})
        yield sse({**chunk, "choices": [], **extra})
        yield sse({**chunk, "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None,
                                         "finish_reason": None}]})
        yield sse({**chunk, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")
