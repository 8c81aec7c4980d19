"""Ollama request shapes (unknown fields are accepted and ignored, as Ollama does)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

#: a duration ("5m", "1h30m", "-1") or seconds; strict, so that `true` is not one second
KeepAlive = StrictStr | StrictInt | StrictFloat | None


class _Base(BaseModel):
    model_config = ConfigDict(extra="allow")


class Options(_Base):
    num_ctx: int | None = Field(None, ge=16)
    num_predict: int | None = None
    temperature: float | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    stop: list[str] | str | None = None
    repeat_penalty: float | None = Field(None, gt=0)
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def sampling_overrides(self) -> dict[str, Any]:
        return {
            "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
            "min_p": self.min_p, "seed": self.seed, "repeat_penalty": self.repeat_penalty,
            "repeat_last_n": self.repeat_last_n, "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty,
        }

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def max_tokens(self) -> int | None:
        # Ollama: -1 means no limit (until the context is full), -2 fill the context.
        if self.num_predict is None or self.num_predict < 0:
            return None
        return self.num_predict


class Message(_Base):
    role: str
    content: str | None = ""
    thinking: str | None = None
    images: list[Any] | None = None
    tool_calls: list[Any] | None = None


class _Generation(_Base):
    model: str = ""  # "": the server's default model
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options = Options()
    keep_alive: KeepAlive = None
    think: bool | str | None = None


class ChatRequest(_Generation):
    messages: list[Message] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Generation):
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool = False
    images: list[Any] | None = None


class EmbedRequest(_Base):
    model: str
    input: str | list[str]
    truncate: bool = True
    options: Options = Options()
    keep_alive: KeepAlive = None


class EmbeddingsRequest(_Base):
    model: str
    prompt: str
    options: Options = Options()
    keep_alive: KeepAlive = None


class ModelRequest(_Base):
    model: str | None = None
    name: str | None = None  # older clients send "name"

    def target(self) -> str:
        from bendi.errors import InvalidRequest

        value = self.model or self.name
        if not value:
            raise InvalidRequest("model is required", param="model")
        return value


class CreateRequest(ModelRequest):
    from_: str | None = Field(None, alias="from")
    quantize: str | None = None
    system: str | None = None
    template: str | None = None
    parameters: dict[str, Any] | None = None
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    stream: bool = True


class CopyRequest(_Base):
    source: str
    destination: str


class PullRequest(ModelRequest):
    insecure: bool = False
    stream: bool = True
