"""Tool calling as an engine sees it: one `ModelTools` per loaded model (its call format and what
its template can do), one `ToolSession` per request (the grammar to start with, the grammar to
switch to when the model opens a call, the parser).

How the output is constrained:
- `required` or a named function: the grammar applies from the first token, so even a tiny model
  writes a valid call. A reasoning model whose prompt opened a think block reasons freely first;
  the grammar takes over at `</think>`.
- `auto`: the model writes freely; when it opens a call (the parser sees an opener), the engine
  switches the sequence to the call grammar, primed with the text of the call so far, so a call
  the model starts is completed validly.
- `none`: no tools in the prompt, no parsing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bendi.runtime.template import ChatTemplate
from bendi.runtime.tools.formats import ToolFormat, detect_format
from bendi.runtime.tools.grammar import tool_grammar
from bendi.runtime.tools.parser import ParsedCall, Piece, ToolCallParser
from bendi.runtime.tools.prompt import TemplateTools, probe, render
from bendi.runtime.tools.spec import Function, ToolChoice, offered, parse_tool_choice, parse_tools

THINK_CLOSE = "</think>"


@dataclass
class GrammarSwitch:
    """Constrain the rest of a sequence with `grammar`, which must first accept `prime` (the text
    the model already wrote from where the grammar starts)."""

    grammar: str
    prime: str


class ModelTools:
    """A loaded model's tool calling: its format and its template's abilities (probed once)."""

    def __init__(self, template: ChatTemplate | None) -> None:
        self.template = template
        self.format: ToolFormat = detect_format(template.source if template else None)
        self._caps: TemplateTools | None = None

    @property
    def caps(self) -> TemplateTools:
        if self._caps is None:
            assert self.template is not None
            self._caps = probe(self.template)
        return self._caps

    def render(self, messages: list[dict[str, Any]], tools: list[Any] | None, tool_choice: Any) -> str:
        """The prompt for `messages` with `tools` offered under `tool_choice`."""
        assert self.template is not None
        functions = parse_tools(tools)
        choice = parse_tool_choice(tool_choice, functions)
        has_tool_turns = any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
        if not functions and not has_tool_turns:
            return self.template.render(messages)
        return render(self.template, self.caps, self.format, messages, functions, choice)

    def session(self, tools: list[Any] | None, tool_choice: Any, *, think_open: bool = False,
                parallel: bool = True) -> ToolSession | None:
        """The per-request state, or None when the request offers no tools (or tool_choice none)."""
        functions = parse_tools(tools)
        choice = parse_tool_choice(tool_choice, functions)
        callable_ = offered(functions, choice)
        if not callable_:
            return None
        return ToolSession(self.format, callable_, choice, think_open=think_open, parallel=parallel)


class ToolSession:
    """One request's tool calls: grammars for the engine and the parser of the answer."""

    def __init__(self, fmt: ToolFormat, functions: list[Function], choice: ToolChoice, *,
                 think_open: bool = False, parallel: bool = True) -> None:
        self.format = fmt
        self.choice = choice
        self.parser = ToolCallParser(fmt, functions)
        self._functions = functions
        self._parallel = parallel
        self._await_think = choice.forced and think_open
        self._think_tail = ""
        self._switched = False
        #: the grammar to apply from the first token (None: start free)
        self.grammar: str | None = None
        if choice.forced and not think_open:
            self.grammar = tool_grammar(fmt, functions, parallel=parallel and choice.mode == "required")
            self._switched = True

    @property
    def preserved(self) -> tuple[str, ...]:
        """Special tokens whose text the engine must put in the output."""
        return self.format.preserved

    @property
    def calls(self) -> list[ParsedCall]:
        return self.parser.calls

    def feed(self, text: str) -> list[Piece]:
        """Answer text in; text pieces and complete calls out."""
        return self.parser.feed(text)

    def flush(self) -> list[Piece]:
        return self.parser.flush()

    def after_token(self, raw: str) -> GrammarSwitch | None:
        """Called with the raw text of every sampled token (after `feed` saw its answer part):
        the grammar to switch to now, if any."""
        if self._switched:
            return None
        if self._await_think:
            seen = self._think_tail + raw
            at = seen.find(THINK_CLOSE)
            if at < 0:
                self._think_tail = seen[-(len(THINK_CLOSE) - 1):]
                return None
            self._switched = True
            grammar = tool_grammar(self.format, self._functions,
                                   parallel=self._parallel and self.choice.mode == "required")
            return GrammarSwitch(grammar, seen[at + len(THINK_CLOSE):])
        opened = self.parser.take_opened()
        if opened is None:
            return None
        self._switched = True
        return GrammarSwitch(tool_grammar(self.format, self._functions, parallel=self._parallel,
                                          lazy=True), opened)

    @property
    def over(self) -> bool:
        """The model started repeating a call it made: end the answer here."""
        return self.parser.repeated

    def finish_reason(self, reason: str) -> str:
        """`tool_calls` when the answer ended by itself after making calls."""
        return "tool_calls" if self.parser.calls and reason == "stop" else reason
