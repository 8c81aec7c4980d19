"""The admin API (/admin/...): users, groups, API keys, knowledge-base grants, quotas, usage and
the audit log, as JSON, for the web console and scripts. Only admins reach it (server/access.py),
every change is recorded in the audit log by the service that makes it, and errors have the OpenAI
error shape. docs/security.md lists every route with an example.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bendi.audit.log import AuditEntry
from bendi.audit.when import parse_duration, parse_time
from bendi.auth.directory import Directory
from bendi.errors import InvalidRequest
from bendi.server.body import documented, parse_body
from bendi.server.http import caller, services

router = APIRouter(prefix="/admin", tags=["admin"])


def _directory(request: Request) -> Directory:
    return services(request).auth.directory


def _since(value: str | None, param: str = "since") -> float | None:
    return parse_time(value, param) if value else None


# -- users ------------------------------------------------------------------------------------

class NewUser(BaseModel):
    name: str
    password: str | None = None
    role: Literal["admin", "member"] = "member"
    groups: list[str] = Field(default_factory=list)


class UserChange(BaseModel):
    role: Literal["admin", "member"] | None = None
    password: str | None = None
    disabled: bool | None = None


@router.get("/users", **documented(None, errors=(404,)))
async def list_users(request: Request) -> Any:
    return {"users": await asyncio.to_thread(_directory(request).users)}


@router.post("/users", **documented(NewUser, success=(201,), errors=(404, 409)))
async def add_user(request: Request) -> Any:
    body = await parse_body(request, NewUser)
    user = await asyncio.to_thread(_directory(request).add_user, body.name, role=body.role,
                                   password=body.password, groups=tuple(body.groups), actor=caller(request))
    return JSONResponse(user, status_code=201)


@router.get("/users/{user}", **documented(None, errors=(404,)))
async def get_user(request: Request, user: str) -> Any:
    return await asyncio.to_thread(_directory(request).user, user)


@router.patch("/users/{user}", **documented(UserChange, errors=(404, 409)))
async def update_user(request: Request, user: str) -> Any:
    body = await parse_body(request, UserChange)
    return await asyncio.to_thread(_directory(request).update_user, user, role=body.role,
                                   password=body.password, disabled=body.disabled, actor=caller(request))


@router.delete("/users/{user}", **documented(None, errors=(404, 409)))
async def remove_user(request: Request, user: str) -> Any:
    await asyncio.to_thread(_directory(request).remove_user, user, actor=caller(request))
    return {"deleted": user}


# -- groups -----------------------------------------------------------------------------------

class NewGroup(BaseModel):
    name: str


class Members(BaseModel):
    users: list[str]


@router.get("/groups", **documented(None, errors=(404,)))
async def list_groups(request: Request) -> Any:
    return {"groups": await asyncio.to_thread(_directory(request).groups)}


@router.post("/groups", **documented(NewGroup, success=(201,), errors=(404, 409)))
async def add_group(request: Request) -> Any:
    body = await parse_body(request, NewGroup)
    group = await asyncio.to_thread(_directory(request).add_group, body.name, actor=caller(request))
    return JSONResponse(group, status_code=201)


@router.delete("/groups/{group}", **documented(None, errors=(404, 409)))
async def remove_group(request: Request, group: str) -> Any:
    await asyncio.to_thread(_directory(request).remove_group, group, actor=caller(request))
    return {"deleted": group}


@router.post("/groups/{group}/members", **documented(Members, errors=(404, 409)))
async def add_members(request: Request, group: str) -> Any:
    body = await parse_body(request, Members)
    return await asyncio.to_thread(_directory(request).set_members, group, tuple(body.users), add=True,
                                   actor=caller(request))


@router.delete("/groups/{group}/members/{user}", **documented(None, errors=(404, 409)))
async def remove_member(request: Request, group: str, user: str) -> Any:
    return await asyncio.to_thread(_directory(request).set_members, group, (user,), add=False,
                                   actor=caller(request))


# -- API keys ---------------------------------------------------------------------------------

class NewKey(BaseModel):
    user: str
    name: str = ""
    models: list[str] | None = None
    knowledge_bases: list[str] | None = None
    routes: list[str] | None = None
    #: "30d", "12h", ...; None: never expires
    expires: str | None = None


@router.get("/keys", **documented(None, errors=(404,)))
async def list_keys(request: Request, user: str | None = None) -> Any:
    return {"keys": await asyncio.to_thread(_directory(request).keys, user=user)}


@router.post("/keys", **documented(NewKey, success=(201,), errors=(404, 409)))
async def create_key(request: Request) -> Any:
    """The new key is in `key`: shown this once, stored only as a hash."""
    body = await parse_body(request, NewKey)
    expires = parse_duration(body.expires, "expires") if body.expires else None
    info, secret = await asyncio.to_thread(
        _directory(request).create_key, body.user, name=body.name,
        models=tuple(body.models) if body.models is not None else None,
        knowledge_bases=tuple(body.knowledge_bases) if body.knowledge_bases is not None else None,
        routes=tuple(body.routes) if body.routes is not None else None, expires_in=expires,
        actor=caller(request))
    return JSONResponse({**info, "key": secret}, status_code=201)


@router.delete("/keys/{key_id}", **documented(None, errors=(404, 409)))
async def revoke_key(request: Request, key_id: str) -> Any:
    return await asyncio.to_thread(_directory(request).revoke_key, key_id, actor=caller(request))


# -- knowledge-base grants --------------------------------------------------------------------

class NewGrant(BaseModel):
    knowledge_base: str
    user: str | None = None
    group: str | None = None
    access: Literal["read", "write"] = "read"


class Owner(BaseModel):
    group: str | None


@router.get("/grants", **documented(None, errors=(404,)))
async def list_grants(request: Request, knowledge_base: str | None = None) -> Any:
    return {"grants": await asyncio.to_thread(_directory(request).grants, knowledge_base)}


@router.post("/grants", **documented(NewGrant, success=(201,), errors=(404, 409)))
async def add_grant(request: Request) -> Any:
    body = await parse_body(request, NewGrant)
    grant = await asyncio.to_thread(_directory(request).grant, body.knowledge_base, user=body.user,
                                    group=body.group, access=body.access, actor=caller(request))
    return JSONResponse(grant, status_code=201)


@router.delete("/grants/{knowledge_base}", **documented(None, errors=(404, 409)))
async def remove_grant(request: Request, knowledge_base: str, user: str | None = None,
                       group: str | None = None) -> Any:
    await asyncio.to_thread(_directory(request).revoke_grant, knowledge_base, user=user, group=group,
                            actor=caller(request))
    return {"deleted": {"knowledge_base": knowledge_base, "user": user, "group": group}}


@router.put("/knowledge-bases/{knowledge_base}/owner", **documented(Owner, errors=(404, 409)))
async def set_owner(request: Request, knowledge_base: str) -> Any:
    """The group the knowledge base belongs to (its members read and write it); null: none."""
    body = await parse_body(request, Owner)
    await asyncio.to_thread(_directory(request).set_owner, knowledge_base, body.group, actor=caller(request))
    return {"knowledge_base": knowledge_base, "group": body.group}


# -- quotas and usage -------------------------------------------------------------------------

class QuotaBody(BaseModel):
    user: str | None = None
    key: str | None = None
    requests_per_minute: int | None = Field(None, ge=0)
    tokens_per_day: int | None = Field(None, ge=0)


@router.get("/quotas", **documented(None, errors=(404,)))
async def list_quotas(request: Request) -> Any:
    return {"quotas": await asyncio.to_thread(_directory(request).quotas)}


@router.put("/quotas", **documented(QuotaBody, errors=(404, 409)))
async def set_quota(request: Request) -> Any:
    body = await parse_body(request, QuotaBody)
    return await asyncio.to_thread(_directory(request).set_quota, user=body.user, key=body.key,
                                   requests_per_minute=body.requests_per_minute,
                                   tokens_per_day=body.tokens_per_day, actor=caller(request))


@router.delete("/quotas", **documented(None, errors=(404, 409)))
async def remove_quota(request: Request, user: str | None = None, key: str | None = None) -> Any:
    await asyncio.to_thread(_directory(request).remove_quota, user=user, key=key, actor=caller(request))
    return {"deleted": {"user": user, "key": key}}


@router.get("/usage", **documented(None, errors=(404,)))
async def usage(request: Request, user: str | None = None, key: str | None = None, since: str | None = None,
                by: str = "user") -> Any:
    """Requests and tokens per user (by=user), per key (by=key) or per day (by=day) since `since`
    (default: today, UTC)."""
    rows = await asyncio.to_thread(services(request).auth.quotas.usage, user=user, key=key,
                                   since=_since(since), by=by)
    return {"usage": rows}


# -- the audit log ----------------------------------------------------------------------------

class AuditSettings(BaseModel):
    record_text: bool


class Prune(BaseModel):
    #: "90d": records older than this are removed (a signed checkpoint keeps the rest verifiable)
    older_than: str


@router.get("/audit", **documented(None, errors=(404,)))
async def audit_records(request: Request, since: str | None = None, until: str | None = None,
                        user: str | None = None, kind: str | None = None, status: str | None = None,
                        knowledge_base: str | None = None, before: int | None = None,
                        limit: int = 100) -> Any:
    """Records newest first; page back with before=<the last seq seen>."""
    if not 1 <= limit <= 1000:
        raise InvalidRequest("limit must be between 1 and 1000", param="limit")
    audit = services(request).audit
    records = await asyncio.to_thread(audit.query, since=_since(since), until=_since(until, "until"), user=user,
                                      kind=kind, status=status, knowledge_base=knowledge_base,
                                      before_seq=before, limit=limit)
    return {"records": records, "next_before": records[-1]["seq"] if len(records) == limit else None}


@router.get("/audit/export", **documented(None, errors=(404,)))
async def audit_export(request: Request, format: str = "jsonl", since: str | None = None,
                       until: str | None = None, user: str | None = None, kind: str | None = None,
                       status: str | None = None, knowledge_base: str | None = None) -> Response:
    """The records as a file (oldest first): format=jsonl (with hashes) or csv; the filters of
    /admin/audit."""
    audit = services(request).audit
    filters = {"user": user, "kind": kind, "status": status, "knowledge_base": knowledge_base}
    text = await asyncio.to_thread(audit.export_text, format, since=_since(since), until=_since(until, "until"),
                                   **filters)
    audit.add(AuditEntry.of(caller(request), "admin", "ok", action="audit.export",
                            detail={"format": format, "since": since, "until": until,
                                    **{k: v for k, v in filters.items() if v is not None}}))
    media = "text/csv" if format == "csv" else "application/x-ndjson"
    return Response(text, media_type=media,
                    headers={"Content-Disposition": f'attachment; filename="bendi-audit.{format}"'})


@router.get("/audit/verify", **documented(None, errors=(404,)))
async def audit_verify(request: Request) -> Any:
    result = await asyncio.to_thread(services(request).audit.verify)
    return {"ok": result.ok, "checked": result.checked, "first": result.first, "last": result.last,
            "bad_seq": result.bad_seq, "problem": result.problem, "summary": result.summary()}


@router.get("/audit/head", **documented(None, errors=(404,)))
async def audit_head(request: Request) -> Any:
    head = await asyncio.to_thread(services(request).audit.head)
    return {"seq": head.seq, "hash": head.digest, "anchor": f"{head.seq}:{head.digest}"}


@router.get("/audit/settings", **documented(None, errors=(404,)))
async def audit_settings(request: Request) -> Any:
    return {"record_text": services(request).audit.wants_text}


@router.put("/audit/settings", **documented(AuditSettings, errors=(404, 409)))
async def set_audit_settings(request: Request) -> Any:
    body = await parse_body(request, AuditSettings)
    await asyncio.to_thread(services(request).audit.set_record_text, body.record_text, caller(request))
    return {"record_text": body.record_text}


@router.post("/audit/prune", **documented(Prune, errors=(404, 409)))
async def audit_prune(request: Request) -> Any:
    body = await parse_body(request, Prune)
    seconds = parse_duration(body.older_than, "older_than")
    removed = await asyncio.to_thread(services(request).audit.prune, seconds, caller(request))
    return {"removed": removed}
