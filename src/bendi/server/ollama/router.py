"""Ollama-compatible routes under /api."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from bendi import __version__
from bendi.core.collect import acollect
from bendi.core.generation import DEFAULT_ANSWER_MODEL, knowledge_base_of
from bendi.errors import InvalidRequest, UnsupportedParameter
from bendi.runtime.manager import parse_keep_alive
from bendi.server.access import usable, visible
from bendi.server.body import GENERATION_ERRORS, documented, parse_body
from bendi.server.http import NDJSON_MEDIA, caller, ndjson, ndjson_response, services
from bendi.server.ollama import protocol as p
from bendi.server.ollama import serving

router = APIRouter(prefix="/api")

#: Desktop clients gate features on the Ollama version they see; this is the API level bendi speaks.
OLLAMA_API_VERSION = "0.12.0"


def _keep_alive(request: Request, value: Any) -> float:
    return parse_keep_alive(value, services(request).settings.keep_alive)


@router.post("/chat", **documented(p.ChatRequest, errors=GENERATION_ERRORS))
async def chat(request: Request) -> Any:
    body = await parse_body(request, p.ChatRequest)
    generation = services(request).generation
    body.model = generation.model_or_default(body.model)
    keep_alive = _keep_alive(request, body.keep_alive)
    kb_name = knowledge_base_of(body.model)
    if kb_name is not None and body.messages:  # a "kb:<name>" model from /api/tags
        chat = serving.to_chat_request(body)
        run = await generation.ask(kb_name, caller(request), messages=chat.messages, model=DEFAULT_ANSWER_MODEL,
                                   options=chat.options, max_tokens=chat.max_tokens, think=chat.think)
        run.model = body.model
    elif not body.messages:  # Ollama: an empty chat loads (or with keep_alive 0 unloads) the model
        return await _load_or_unload(request, body.model, keep_alive, body.options.num_ctx, chat=True)
    else:
        run = await generation.start(serving.to_chat_request(body), caller(request), keep_alive=keep_alive)
    if body.stream:
        return ndjson_response(serving.stream(run, chat=True), serving.error_event)
    return JSONResponse(serving.chat_response(run, await acollect(run.events)))


@router.post("/generate", **documented(p.GenerateRequest, errors=GENERATION_ERRORS))
async def generate(request: Request) -> Any:
    body = await parse_body(request, p.GenerateRequest)
    body.model = services(request).generation.model_or_default(body.model)
    keep_alive = _keep_alive(request, body.keep_alive)
    if not body.prompt:
        return await _load_or_unload(request, body.model, keep_alive, body.options.num_ctx, chat=False)
    run = await services(request).generation.start(serving.to_generate_request(body), caller(request),
                                                   keep_alive=keep_alive)
    if body.stream:
        return ndjson_response(serving.stream(run, chat=False), serving.error_event)
    return JSONResponse(serving.generate_response(run, await acollect(run.events)))


async def _load_or_unload(request: Request, model: str, keep_alive: float, ctx: int | None, chat: bool) -> Any:
    generation = services(request).generation
    if keep_alive == 0:
        name = await generation.aunload(model)
        reason = "unload"
    else:
        name = (await generation.aload(model, ctx=ctx, keep_alive=keep_alive)).name
        reason = "load"
    body: dict[str, Any] = {"model": name, "created_at": serving.now_iso(), "done": True, "done_reason": reason}
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    return body


@router.post("/embed", **documented(p.EmbedRequest, errors=GENERATION_ERRORS))
async def embed(request: Request) -> Any:
    body = await parse_body(request, p.EmbedRequest)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    started = time.perf_counter()
    result = await services(request).generation.embed(body.model, texts, caller(request),
                                                       keep_alive=_keep_alive(request, body.keep_alive))
    return {"model": result.model, "embeddings": result.vectors,
            "total_duration": int((time.perf_counter() - started) * serving.NS),
            "load_duration": 0, "prompt_eval_count": result.tokens}


@router.post("/embeddings", **documented(p.EmbeddingsRequest, errors=GENERATION_ERRORS))
async def embeddings(request: Request) -> Any:
    body = await parse_body(request, p.EmbeddingsRequest)
    result = await services(request).generation.embed(body.model, [body.prompt], caller(request),
                                                       keep_alive=_keep_alive(request, body.keep_alive))
    return {"embedding": result.vectors[0]}


@router.get("/tags")
async def tags(request: Request) -> Any:
    """Installed models, then each knowledge base as a `kb:<name>` model (Open WebUI and other
    pickers list what this answers); only what the caller may use."""
    svc = services(request)
    records = svc.store.list()
    allowed = set(usable(request.scope, [str(r.name) for r in records]))
    kbs = await asyncio.to_thread(svc.kb.list_all)
    readable = set(visible(request.scope, [kb["name"] for kb in kbs]))
    return {"models": [serving.tag_entry(r) for r in records if str(r.name) in allowed]
            + [serving.kb_tag_entry(kb) for kb in kbs if kb["name"] in readable]}


@router.post("/show", **documented(p.ModelRequest, errors=(404, 422)))
async def show(request: Request) -> Any:
    body = await parse_body(request, p.ModelRequest)
    record = services(request).store.get(body.target())
    facts = record.facts()
    params = "\n".join(f"{k:<16}{v}" for k, v in facts["parameters"].items())
    capabilities = ["completion"]
    if facts["chat_template"] and "<think>" in facts["chat_template"]:
        capabilities.append("thinking")
    return {
        "license": facts["license"] or "",
        "modelfile": serving.modelfile(record.name, facts),
        "parameters": params,
        "template": facts["chat_template"] or "",
        "system": facts["system"] or "",
        "details": serving.model_details(record),
        "model_info": {**facts["metadata"], "general.parameter_count": facts["parameter_count"]},
        "capabilities": capabilities,
        "modified_at": serving.iso(record.modified),
    }


@router.get("/ps")
async def ps(request: Request) -> Any:
    models = []
    for item in services(request).models.loaded():
        entry = serving.tag_entry(item.record)
        entry.update({"expires_at": serving.expires_iso(item.expires_at), "size_vram": 0,
                      "context_length": item.ctx, "size": serving.memory_in_use(item)})
        entry.pop("modified_at", None)
        models.append(entry)
    return {"models": models}


@router.delete("/delete", **documented(p.ModelRequest, errors=(404,)))
async def delete(request: Request) -> Response:
    body = await parse_body(request, p.ModelRequest)
    record = services(request).store.get(body.target())
    await asyncio.to_thread(services(request).models.unload, str(record.name))
    services(request).store.remove(str(record.name))
    return Response(status_code=200)


@router.post("/copy", **documented(p.CopyRequest, errors=(404, 409)))
async def copy(request: Request) -> Response:
    body = await parse_body(request, p.CopyRequest)
    services(request).store.copy(body.source, body.destination)
    return Response(status_code=200)


@router.post("/create", **documented(p.CreateRequest, errors=(404, 409, 422)))
async def create(request: Request) -> Any:
    """Ollama's create from an installed model (`from`), re-quantized (`quantize`) and/or with
    other defaults. Creating from uploaded files or adapters needs `bendi import` instead."""
    body = await parse_body(request, p.CreateRequest)
    name = body.target()
    if body.files or body.adapters:
        raise UnsupportedParameter(
            "creating from uploaded files or adapters is not supported; copy the GGUF here and "
            "run `bendi import FILE --name NAME`, then create from it with `from`",
            param="files",
        )
    if not body.from_:
        raise InvalidRequest("`from` (the installed model to start from) is required", param="from")
    record = await asyncio.to_thread(
        services(request).create_model, name, body.from_, quantize=body.quantize,
        system=body.system, template=body.template, parameters=body.parameters,
    )
    steps = ([f"quantizing {body.from_} to {body.quantize.upper()}"] if body.quantize else []) + [
        f"using {record.digest}", "writing manifest", "success",
    ]
    if not body.stream:
        return {"status": "success"}
    return StreamingResponse((ndjson({"status": s}) for s in steps), media_type=NDJSON_MEDIA)


@router.post("/pull", **documented(p.PullRequest, errors=(501,)))
async def pull(request: Request) -> Any:
    """Pull from the sources configured in BENDI_HOME/sources.toml (see docs/models.md)."""
    from bendi.server.ollama.pull import pull_response

    body = await parse_body(request, p.PullRequest)
    return await pull_response(services(request), body.target(), stream=body.stream)


@router.get("/version")
async def version() -> Any:
    return {"version": OLLAMA_API_VERSION, "bendi": __version__}
