"""The served OpenAPI document (/openapi.json), completed from what the routes say about themselves.

Routes parse their bodies themselves (server/body.py), so FastAPI sees no request body and would
document none: a client generator or a fuzzer would have nothing to send. Each route says what it
takes with `documented` (its request model's schema, or no body); this module moves the models'
schemas into the components, adds what every route may answer (401 with a key, 403 from the
cross-site rules, 400 for a bad name in the path or query) and every body brings (400 malformed or
invalid, 413 too large, 415 not of the route's media type), gives each error the dialect's shape,
and drops FastAPI's 422 (bendi answers validation errors with 400).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from bendi.server.body import JSON
from bendi.server.errors import is_ollama_path

ERROR_SCHEMAS: dict[str, Any] = {
    "OpenAIError": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"],
                                 "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                                "param": {"type": ["string", "null"]},
                                                "code": {"type": ["string", "null"]}}}},
    },
    "OllamaError": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
}

COMMON = {
    400: "Malformed JSON, a field of the wrong type or out of range, text that is not Unicode",
    401: "Missing or wrong API key (when the server has one)",
    403: "Refused: a foreign Host (DNS rebinding) or a web page's Origin",
    413: "The body is larger than BENDI_MAX_REQUEST_BYTES",
    415: "The body is not of the media type the route takes",
}


def install_openapi(app: FastAPI) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="bendi: OpenAI- and Ollama-compatible API and knowledge bases. "
                                  "Request bodies are described from the models the routes parse.")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(ERROR_SCHEMAS)
    for path, operations in doc.get("paths", {}).items():
        for operation in operations.values():
            for name, schema in operation.pop("x-bendi-schemas", {}).items():
                if schemas.setdefault(name, schema) != schema:
                    raise ValueError(f"two request models are both called {name} in the API document")
            _complete(path, operation)
    return doc


def _complete(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if "Validation Error" in str(responses.get("422", {}).get("description", "")):
        del responses["422"]  # FastAPI's: bendi answers validation errors with 400
    statuses = {401, 403}
    if "{" in path or operation.get("parameters"):  # a bad name or query value
        statuses.add(400)
    if "requestBody" in operation:
        statuses |= {400, 413, 415}
    for code in statuses:
        responses.setdefault(str(code), {"description": COMMON[code]})
    error = {"$ref": "#/components/schemas/" + ("OllamaError" if is_ollama_path(path) else "OpenAIError")}
    for status, response in responses.items():
        if str(status).isdigit() and int(status) >= 400:
            response.setdefault("content", {JSON: {"schema": error}})
