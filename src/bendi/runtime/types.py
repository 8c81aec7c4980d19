"""The one internal request shape and the one stream of events out of the runtime.

A generation yields text deltas, reasoning deltas and tool calls, then exactly one Done (usage,
finish reason, timings); an error ends the stream by raising a bendi error instead. The OpenAI and
Ollama dialects only translate to and from these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


@dataclass
class SamplingParams:
    """Per-request sampling; temperature 0 means greedy."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> SamplingParams:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__ and v is not None}
        return cls(**known)


@dataclass
class ChatRequest:
    """A generation request. Exactly one of `messages` (chat) or `prompt` (raw text) is set."""

    model: str
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    #: {"type": "json_object"} or {"type": "json_schema", "json_schema": {"schema": ...}}
    response_format: dict[str, Any] | None = None
    #: number of top alternatives per token to report; None turns log-probabilities off
    logprobs: int | None = None
    #: None: reasoning is split off and reported; False: reasoning is split off and dropped
    think: bool | None = None
    tools: list[dict[str, Any]] | None = None
    #: "auto", "none", "required" or {"type": "function", "function": {"name": ...}}; None: auto
    tool_choice: str | dict[str, Any] | None = None
    #: False: at most one tool call in the answer (OpenAI's parallel_tool_calls)
    parallel_tool_calls: bool = True
    #: prepend the model's default system prompt when the messages carry none (the generation
    #: service does, when it applies the model's defaults)
    use_default_system: bool = True
    #: context length wanted for this request's model (Ollama num_ctx); None: model default
    num_ctx: int | None = None
    #: score the prompt's own tokens (completions with `echo` and `logprobs`): a PromptLogprobs
    #: event comes before the answer, and the prompt is computed in full (no cached prefix)
    prompt_logprobs: bool = False
    #: token ids put before the prompt's (Ollama's `context`: an earlier exchange, continued)
    context: list[int] | None = None
    #: report the ids of the prompt's and the answer's tokens in `Done.context` (Ollama `context`)
    return_context: bool = False
    #: sampling values the caller set (None: not set); the generation service lays them over the
    #: model's default parameters into `sampling` (engines read only `sampling`)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: prompt tokens whose KV cells were reused from an earlier request (not recomputed)
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: list[tuple[str, float, list[int]]] = field(default_factory=list)


@dataclass
class TextDelta:
    text: str
    logprobs: list[TokenLogprob] | None = None


@dataclass
class PromptLogprobs:
    """How likely the model found each token of the prompt (ChatRequest.prompt_logprobs), sent
    before any answer text. Nothing predicts the first token, so it comes as text only."""

    first: str
    #: one entry per prompt token after the first
    rest: list[TokenLogprob]


@dataclass
class ReasoningDelta:
    text: str


@dataclass
class ToolCall:
    """One tool call the model made; `arguments` is JSON text. Parallel calls differ in `index`."""

    id: str
    name: str
    arguments: str
    index: int = 0


@dataclass
class Done:
    finish_reason: FinishReason
    usage: Usage
    #: seconds: time to first token, prompt processing, generation
    ttft: float = 0.0
    prompt_seconds: float = 0.0
    decode_seconds: float = 0.0
    total_seconds: float = 0.0
    #: the prompt's and the answer's token ids, when the request set `return_context`
    context: list[int] | None = None


Event = TextDelta | ReasoningDelta | ToolCall | PromptLogprobs | Done
