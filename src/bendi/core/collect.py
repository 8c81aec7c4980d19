"""One collector for a whole answer: text, reasoning, tool calls, log-probabilities, the Done."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from bendi.errors import EngineError
from bendi.runtime.types import (
    Done,
    Event,
    PromptLogprobs,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCall,
)


@dataclass
class Collected:
    """A whole answer."""

    text: str
    reasoning: str
    done: Done
    logprobs: list[TokenLogprob] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: the prompt's scores, when the request asked for them
    prompt: PromptLogprobs | None = None


class Collector:
    """Accumulates events as they pass (streamed or not)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self.logprobs: list[TokenLogprob] = []
        self.tool_calls: list[ToolCall] = []
        self.done: Done | None = None
        self.prompt: PromptLogprobs | None = None

    def add(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
            if event.logprobs:
                self.logprobs.extend(event.logprobs)
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
        elif isinstance(event, ToolCall):
            self.tool_calls.append(event)
        elif isinstance(event, PromptLogprobs):
            self.prompt = event
        elif isinstance(event, Done):
            self.done = event

    @property
    def text(self) -> str:
        return "".join(self._text)

    def result(self) -> Collected:
        if self.done is None:
            raise EngineError("the engine ended the request without a result")
        return Collected(self.text, "".join(self._reasoning), self.done, self.logprobs, self.tool_calls,
                         self.prompt)


def collect(events: Iterable[Event]) -> Collected:
    collector = Collector()
    for event in events:
        collector.add(event)
    return collector.result()


async def acollect(events: AsyncIterator[Event]) -> Collected:
    collector = Collector()
    async for event in events:
        collector.add(event)
    return collector.result()
