"""Knowledge-base routes (/kb/...): create, documents, search, and answers with citations.

The OpenAI chat against a knowledge base (model "kb:<name>") is in the OpenAI router; both answer
through the generation service. Errors are bendi errors, mapped by class by the app's handlers
(OpenAI error shape: these paths are outside /api/).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bendi.core.collect import Collector, acollect
from bendi.core.generation import DEFAULT_ANSWER_MODEL, Run
from bendi.errors import BendiError, InvalidRequest, UnsupportedMediaType
from bendi.kb.answer import check_answer, citations
from bendi.kb.service import KnowledgeBaseService
from bendi.runtime.types import Done, ReasoningDelta, TextDelta
from bendi.server.access import caller_access, visible
from bendi.server.body import GENERATION_ERRORS, MULTIPART, documented, parse_body
from bendi.server.errors import openai_error_body
from bendi.server.http import caller, ndjson, ndjson_response, services

router = APIRouter(prefix="/kb", tags=["knowledge bases"])


class CreateBody(BaseModel):
    name: str
    embed: str = "multilingual-e5-small"


class SearchBody(BaseModel):
    query: str
    top_k: int | None = Field(None, ge=1, le=100)
    all: bool = False
    lexical_weight: float | None = Field(None, ge=0)
    vector_weight: float | None = Field(None, ge=0)


class AskBody(BaseModel):
    question: str | None = None
    messages: list[dict[str, Any]] | None = None
    model: str = DEFAULT_ANSWER_MODEL
    stream: bool = True
    top_k: int | None = Field(None, ge=1, le=20)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    think: bool | None = None


def _kb(request: Request) -> KnowledgeBaseService:
    return services(request).kb


@router.post("", status_code=201, **documented(CreateBody, errors=(409,)))
async def create_kb(request: Request) -> Any:
    body = await parse_body(request, CreateBody)
    info = await asyncio.to_thread(_kb(request).create, body.name, embed=body.embed)
    return JSONResponse(info, status_code=201)


@router.get("")
async def list_kbs(request: Request) -> Any:
    infos = await asyncio.to_thread(_kb(request).list_all)
    readable = set(visible(request.scope, [i["name"] for i in infos]))  # the others do not exist for the caller
    access = caller_access(request.scope)
    # whether the caller may add and remove documents (the console shows its drop zone then)
    return {"knowledge_bases": [{**i, "writable": access is None or access.can_write(i["name"])}
                                for i in infos if i["name"] in readable]}


@router.get("/{name}", **documented(None, errors=(404,)))
async def get_kb(request: Request, name: str) -> Any:
    return await asyncio.to_thread(_kb(request).info, name)


@router.delete("/{name}", **documented(None, errors=(404,)))
async def delete_kb(request: Request, name: str) -> Any:
    await asyncio.to_thread(_kb(request).remove, name)
    return {"deleted": name}


def document_name(filename: str) -> str:
    """An uploaded file's document name: its path inside a dropped folder when the browser sends
    one (as `bendi kb add FOLDER` names the files it finds), never a path outside it."""
    parts = [p for p in re.split(r"[/\\]+", filename) if p not in ("", ".", "..")]
    return "/".join(parts) or "upload"


@router.post("/{name}/documents", **documented(None, media=MULTIPART, errors=(404,), success=(207,)))
async def upload_documents(request: Request, name: str) -> Any:
    """multipart/form-data with one or more `file` (or `files`) parts; one result per file."""
    kb = _kb(request)
    await asyncio.to_thread(kb.info, name)
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != MULTIPART:
        raise UnsupportedMediaType(f"send the files as {MULTIPART}, not {media or 'no media type'}")
    try:
        form = await request.form()
    except Exception as exc:  # malformed multipart
        raise InvalidRequest(f"expected multipart/form-data with files: {exc}") from None
    uploads = [v for k, v in form.multi_items() if k in ("file", "files") and hasattr(v, "filename")]
    if not uploads:
        raise InvalidRequest("no files: send multipart/form-data with one or more 'file' parts", param="file")
    results = []
    for upload in uploads:
        doc_name = document_name(str(getattr(upload, "filename", "") or ""))
        data = await upload.read()  # type: ignore[union-attr]
        result = await asyncio.to_thread(kb.add_file, name, Path(tempfile.gettempdir()) / doc_name.rsplit("/", 1)[-1],
                                         doc_name=doc_name, data=data)
        results.append(result.to_dict())
    status = 200 if all(r["status"] != "failed" for r in results) else 207
    return JSONResponse({"results": results}, status_code=status)


@router.get("/{name}/documents", **documented(None, errors=(404,)))
async def list_documents(request: Request, name: str) -> Any:
    return await asyncio.to_thread(_kb(request).documents, name)


@router.delete("/{name}/documents/{document:path}", **documented(None, errors=(404,)))
async def delete_document(request: Request, name: str, document: str) -> Any:
    removed = await asyncio.to_thread(_kb(request).remove_document, name, document)
    return {"deleted": removed.name, "chunks": removed.n_chunks}


@router.post("/{name}/search", **documented(SearchBody, errors=(404,)))
async def search_kb(request: Request, name: str) -> Any:
    body = await parse_body(request, SearchBody)
    result = await asyncio.to_thread(_kb(request).search, name, body.query, include_all=body.all,
                                     top_k=body.top_k, lexical_weight=body.lexical_weight,
                                     vector_weight=body.vector_weight)
    return result.to_dict()


def _sources(run: Run) -> list[dict[str, Any]]:
    return [{"number": i, **h.to_dict()} for i, h in enumerate(run.sources, 1)]


@router.post("/{name}/ask", **documented(AskBody, errors=GENERATION_ERRORS))
async def ask_kb(request: Request, name: str) -> Any:
    """Answer with citations. stream=true (default): NDJSON lines {"type": "sources"|"reasoning"|
    "text"|"done"|"error", ...}; stream=false: one JSON object."""
    body = await parse_body(request, AskBody)
    run = await services(request).generation.ask(
        name, caller(request), question=body.question, messages=body.messages, model=body.model,
        options={"temperature": body.temperature}, max_tokens=body.max_tokens, top_k=body.top_k,
        think=body.think)
    if body.stream:
        return ndjson_response(_lines(run), _error_line)
    result = await acollect(run.events)
    return {"question": run.question, "answer": result.text, "reasoning": result.reasoning or None,
            "model": _model(run), "found": bool(run.sources), "sources": _sources(run),
            "citations": citations(result.text, len(run.sources)), **_checked(run, result.text),
            "finish_reason": result.done.finish_reason}


def _model(run: Run) -> str | None:
    return run.model if run.sources else None  # None: nothing was found, no model answered


async def _lines(run: Run) -> AsyncIterator[bytes]:
    yield ndjson({"type": "sources", "question": run.question, "found": bool(run.sources),
                  "model": _model(run), "sources": _sources(run)})
    collector = Collector()
    async for event in run.events:
        collector.add(event)
        if isinstance(event, TextDelta):
            yield ndjson({"type": "text", "text": event.text})
        elif isinstance(event, ReasoningDelta):
            yield ndjson({"type": "reasoning", "text": event.text})
        elif isinstance(event, Done):
            yield ndjson({"type": "done", "finish_reason": event.finish_reason,
                          "citations": citations(collector.text, len(run.sources)),
                          **_checked(run, collector.text),
                          "usage": {"prompt_tokens": event.usage.prompt_tokens,
                                    "completion_tokens": event.usage.completion_tokens}})


def _error_line(exc: BendiError) -> bytes:
    return ndjson({"type": "error", **openai_error_body(exc)})


def _checked(run: Run, text: str) -> dict[str, Any]:
    """Each cited source with its document, page or sheet/rows and quoted sentence, and whether the
    cited sources hold the answer's key facts."""
    if not run.sources:
        return {"cited_sources": [], "grounded": None, "unsupported": []}
    check = check_answer(text, run.question or "", run.sources)
    return {"cited_sources": check["citations"], "grounded": check["grounded"], "unsupported": check["unsupported"]}
