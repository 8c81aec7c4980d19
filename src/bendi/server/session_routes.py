"""Login for browsers (/auth/...): a session cookie for the web console.

The cookie is HttpOnly (scripts cannot read it), SameSite=Strict (other sites' pages do not send
it) and Secure when the request came over HTTPS. Every cookie-authenticated request that changes
something must also send the session's CSRF token in `X-CSRF-Token` (server/access.py checks it);
the console gets the token from the login answer or from GET /auth/session.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bendi.auth.principal import Principal
from bendi.auth.service import SESSION_SECONDS
from bendi.server.access import SESSION_COOKIE, caller_access
from bendi.server.body import documented, parse_body
from bendi.server.http import caller, services

router = APIRouter(prefix="/auth", tags=["login"])


class LoginBody(BaseModel):
    username: str
    password: str


def _who(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        return {"authenticated": False}
    return {"authenticated": True, "user": principal.name, "role": principal.role,
            "groups": sorted(principal.groups), "via": principal.via, "key_id": principal.key_id,
            "routes": sorted(principal.families)}


def _set_cookie(request: Request, response: JSONResponse, value: str, max_age: int) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


@router.post("/login", **documented(LoginBody, errors=(429,)))
async def login(request: Request) -> Any:
    """{"username", "password"} -> the session cookie, and the CSRF token to send with changes."""
    body = await parse_body(request, LoginBody)
    token, session = await asyncio.to_thread(services(request).auth.login, body.username, body.password,
                                             caller(request))
    response = JSONResponse({**_who(session.principal), "csrf_token": session.csrf,
                             "expires_at": session.expires_at})
    _set_cookie(request, response, token, SESSION_SECONDS)
    return response


@router.get("/session", **documented(None))
async def session(request: Request) -> Any:
    """Who the caller is (and whether the server needs a login at all); the CSRF token of a
    cookie session."""
    svc = services(request)
    loopback = bool(getattr(request.app.state, "loopback", True))
    out = {**_who(caller_access(request.scope)), "auth_required": svc.auth.required(loopback)}
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and out["authenticated"] and out["via"] == "session":
        live = await asyncio.to_thread(svc.auth.session, cookie)
        if live is not None:
            out["csrf_token"] = live.csrf
            out["expires_at"] = live.expires_at
    return out


@router.post("/logout", **documented(None))
async def logout(request: Request) -> Any:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await asyncio.to_thread(services(request).auth.logout, cookie, caller(request))
    response = JSONResponse({"authenticated": False})
    _set_cookie(request, response, "", 0)
    return response
