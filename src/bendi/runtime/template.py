"""Chat templates: the Jinja template from the model's GGUF metadata, rendered the way
Hugging Face transformers renders it (sandboxed, trim_blocks, lstrip_blocks)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bendi.errors import InvalidRequest, TemplateError


class _GenerationTag(jinja2.ext.Extension):
    """Transformers' `{% generation %}` marker; it changes nothing when rendering."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, **kw: Any) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, **kw)


def _raise(message: str) -> None:
    raise TemplateError(f"chat template refused the conversation: {message}")


class ChatTemplate:
    """A compiled chat template and the special tokens it may refer to."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_GenerationTag, jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the model's chat template does not compile: {exc}") from exc
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        """Render a conversation into the prompt text the model was trained on."""
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise InvalidRequest(f"messages[{i}] needs a 'role'", param="messages")
        try:
            return self._template.render(
                messages=messages,
                tools=tools,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                raise_exception=_raise,
                strftime_now=lambda fmt: datetime.now().strftime(fmt),
                **extra,
            )
        except TemplateError:
            raise
        except (jinja2.TemplateError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise TemplateError(f"rendering the chat template failed: {exc}") from exc


def flatten_content(content: Any) -> str:
    """OpenAI content may be a list of parts; templates expect a string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                texts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                texts.append(part)
            else:
                raise InvalidRequest("only text content parts are supported", param="messages")
        return "".join(texts)
    raise InvalidRequest("message content must be a string or a list of parts", param="messages")
