"""Chat history for the web console (/conversations): each caller sees and changes only their own
conversations (bendi/conversations.py keeps them in bendi.db)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bendi.conversations import ConversationStore
from bendi.server.body import documented, parse_body
from bendi.server.http import caller

router = APIRouter(prefix="/conversations", tags=["conversations"])


class NewConversation(BaseModel):
    title: str = ""
    model: str = ""
    settings: dict[str, Any] = {}
    messages: list[dict[str, Any]] = []


class ConversationChange(BaseModel):
    title: str | None = None
    model: str | None = None
    settings: dict[str, Any] | None = None
    messages: list[dict[str, Any]] | None = None


def _store(request: Request) -> ConversationStore:
    store: ConversationStore = request.app.state.conversations
    return store


def _owner(request: Request) -> str:
    return caller(request).principal


@router.get("", **documented(None))
async def list_conversations(request: Request) -> Any:
    """The caller's conversations, newest first, without their messages."""
    return {"conversations": await asyncio.to_thread(_store(request).summaries, _owner(request))}


@router.post("", **documented(NewConversation, success=(201,)))
async def create_conversation(request: Request) -> Any:
    body = await parse_body(request, NewConversation)
    created = await asyncio.to_thread(_store(request).create, _owner(request), title=body.title,
                                      model=body.model, settings=body.settings, messages=body.messages)
    return JSONResponse(created, status_code=201)


@router.get("/{conversation_id}", **documented(None, errors=(404,)))
async def get_conversation(request: Request, conversation_id: str) -> Any:
    return await asyncio.to_thread(_store(request).get, _owner(request), conversation_id)


@router.patch("/{conversation_id}", **documented(ConversationChange, errors=(404,)))
async def update_conversation(request: Request, conversation_id: str) -> Any:
    """Change the title, model, settings or (the whole list of) messages."""
    body = await parse_body(request, ConversationChange)
    return await asyncio.to_thread(_store(request).update, _owner(request), conversation_id, title=body.title,
                                   model=body.model, settings=body.settings, messages=body.messages)


@router.delete("/{conversation_id}", **documented(None, errors=(404,)))
async def delete_conversation(request: Request, conversation_id: str) -> Any:
    await asyncio.to_thread(_store(request).delete, _owner(request), conversation_id)
    return {"deleted": conversation_id}


@router.delete("", **documented(None))
async def delete_all_conversations(request: Request) -> Any:
    return {"deleted": await asyncio.to_thread(_store(request).delete_all, _owner(request))}
