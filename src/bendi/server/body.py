"""Request bodies: the one place request text enters bendi, and how each route's body is documented.

`parse_body` turns a JSON body into a request model or a 400/415 in the route's dialect: bodies
that a web page's form can forge are refused (text/plain, multipart), numbers must be finite,
nesting is bounded, and every string (keys included) must be Unicode text the tokenizer and the
embedder can encode: a lone UTF-16 surrogate ("\\ud800" is valid JSON) used to end in a 500 deep
inside tokenization. `documented` says on a route what body it takes; server/openapi.py completes
the served OpenAPI document from that, and the cross-site tests read it.
"""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from bendi.errors import InvalidRequest, UnsupportedMediaType
from bendi.server.errors import validation_error

M = TypeVar("M", bound=BaseModel)

JSON = "application/json"
MULTIPART = "multipart/form-data"
#: deeper request bodies are refused: nothing bendi reads nests this far, and the JSON parser, the
#: template engine and the serializers all recurse
MAX_DEPTH = 64


#: how the OpenAPI document describes the statuses a route names (server/openapi.py adds the
#: dialect's error shape to each)
STATUS_TEXT = {
    201: "Created",
    207: "Some files failed (each result says why)",
    404: "No such model, knowledge base or document",
    409: "The name is taken",
    422: "The model or document cannot be used (no chat template, unreadable file)",
    429: "Refused by a quota or rate limit (Retry-After)",
    501: "Not available offline",
    503: "Busy or unloading; retry (Retry-After)",
    507: "The model does not fit in memory",
}
#: what every route that loads a model may answer
GENERATION_ERRORS = (404, 422, 429, 503, 507)


def documented(model: type[BaseModel] | None, *, media: str = JSON, errors: tuple[int, ...] = (),
               success: tuple[int, ...] = ()) -> dict[str, Any]:
    """Keyword arguments for a route decorator that document the body the route parses (`model`,
    JSON; `media` for another type; None: no body) and the statuses it answers besides 200 and
    the ones every route and body bring (server/openapi.py). Every state-changing route says
    what it takes, so the cross-site tests can read the rule for each from the route table."""
    extra: dict[str, Any] = {"x-bendi-body": media if model is not None or media != JSON else "none"}
    if model is not None:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        defs = schema.pop("$defs", {})
        extra["x-bendi-schemas"] = {model.__name__: schema, **defs}
        extra["requestBody"] = {"required": True, "content": {media: {
            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}
    elif media == MULTIPART:
        extra["requestBody"] = {"required": True, "content": {media: {"schema": {
            "type": "object", "required": ["file"],
            "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"}}},
        }}}}
    extra["responses"] = {str(s): {"description": STATUS_TEXT.get(s, "OK")} for s in (*success, *errors)}
    return {"openapi_extra": extra}


def check_json_media(content_type: str | None) -> None:
    """415 unless the body may be JSON. Accepted: application/json and `+json` types, no type, and
    application/x-www-form-urlencoded (what `curl -d` sends, as Ollama's examples do: a form cannot
    encode JSON that way). Refused: text/plain and multipart/form-data, which a form on any web page
    can post here without the browser asking first."""
    if not content_type:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media in (JSON, "application/x-www-form-urlencoded") or (
            media.startswith("application/") and media.endswith("+json")):
        return
    raise UnsupportedMediaType(f"the request body must be JSON (Content-Type: {JSON}), not {media}")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise InvalidRequest(f"the number {text[:40]} is too large")
    return value


def _no_constant(name: str) -> Any:
    raise InvalidRequest(f"{name} is not a JSON number")


def check_text(data: Any) -> None:
    """InvalidRequest naming the field when a string (or key) is not Unicode text that encodes
    to UTF-8, or when the body nests deeper than MAX_DEPTH. Iterative: bodies may be deep."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise InvalidRequest(f"the request body nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, str):
            _check_string(value, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_string(key, path)
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, str(i))) for i, item in enumerate(value))


def _check_string(text: str, path: tuple[str, ...]) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = ".".join(path) or "body"
        bad = text[exc.start]
        raise InvalidRequest(
            f"{where}: contains an unpaired surrogate (\\u{ord(bad):04x}), which is not Unicode text; "
            "send text as UTF-8", param=where) from None


async def parse_body(request: Request, model: type[M]) -> M:
    """Parse the JSON body into `model`: 415 for a body that is not JSON, 400 (naming the field
    where there is one) for malformed JSON, wrong types, numbers out of range and invalid text."""
    check_json_media(request.headers.get("content-type"))
    raw = await request.body()
    if not raw.strip():
        raise InvalidRequest("the request body is empty; send a JSON object")
    try:
        data = json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"malformed JSON in the request body: {exc}") from None
    except RecursionError:
        raise InvalidRequest(f"the request body nests deeper than {MAX_DEPTH} levels") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    check_text(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors()) from None
