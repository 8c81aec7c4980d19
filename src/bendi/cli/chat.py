"""`bendi run`: one-shot or interactive chat in the terminal."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

import click

from bendi.chats import ChatStore, SavedChat
from bendi.cli.common import services
from bendi.core.context import RequestContext
from bendi.core.generation import GenerationService
from bendi.errors import BendiError, InvalidRequest
from bendi.runtime.manager import Loaded
from bendi.runtime.types import ChatRequest, Done, ReasoningDelta, TextDelta

HELP = """Commands:
  /set system <text>        set the system prompt
  /set temperature <value>  also top_p, top_k, min_p, repeat_penalty, seed, max_tokens
  /show                     show the current settings
  /save <name>              save the conversation (model, system prompt, settings, messages)
  /load <name>              continue a saved conversation
  /clear                    forget the conversation
  /bye                      leave (Ctrl-D works too)
Start and end a message with \"\"\" to write several lines. Ctrl-C stops the current answer."""

#: what starts and ends a message of several lines (as in Ollama)
MULTILINE = '"""'


_SETTABLE: dict[str, type] = {
    "temperature": float, "top_p": float, "top_k": int, "min_p": float,
    "repeat_penalty": float, "seed": int, "max_tokens": int,
}


class ChatSession:
    """A conversation with one model: history, settings, and streaming to the terminal."""

    def __init__(self, generation: GenerationService, loaded: Loaded, options: dict[str, Any],
                 system: str | None, hide_thinking: bool, stats: bool, chats: ChatStore | None = None) -> None:
        self.generation = generation
        self.loaded = loaded
        #: what the user set (command line, /set); the model's defaults fill in the rest
        self.options = {k: v for k, v in options.items() if v is not None}
        self.system = system
        self.hide_thinking = hide_thinking
        self.stats = stats
        self.chats = chats
        self.history: list[dict[str, Any]] = []
        self.context = RequestContext.local("cli run")

    def request(self) -> ChatRequest:
        messages = list(self.history)
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        return ChatRequest(
            model=self.loaded.name,
            messages=messages,
            options={k: v for k, v in self.options.items() if k != "max_tokens"},
            max_tokens=self.options.get("max_tokens"),
            think=False if self.hide_thinking else None,
            num_ctx=self.loaded.ctx,
        )

    def ask(self, prompt: str) -> str:
        """Send one user turn and stream the answer; the turn is kept only if it completes."""
        self.history.append({"role": "user", "content": prompt})
        answer: list[str] = []
        thinking = False
        done: Done | None = None
        try:
            events = self.generation.generate(self.request(), self.context).events
        except BendiError:
            self.history.pop()
            raise
        except KeyboardInterrupt:  # Ctrl-C before the answer started: nothing to keep
            self.history.pop()
            click.echo(click.style("\n[stopped]", dim=True))
            return ""
        try:
            for event in events:
                if isinstance(event, ReasoningDelta):
                    if not thinking:
                        click.echo(click.style("Thinking...", dim=True))
                        thinking = True
                    click.echo(click.style(event.text, dim=True), nl=False)
                elif isinstance(event, TextDelta):
                    if thinking:
                        click.echo(click.style("\n...done thinking.\n", dim=True))
                        thinking = False
                    answer.append(event.text)
                    click.echo(event.text, nl=False)
                elif isinstance(event, Done):
                    done = event
        except KeyboardInterrupt:
            events.close()  # type: ignore[attr-defined]
            click.echo(click.style("\n[stopped]", dim=True))
        except BendiError:
            self.history.pop()
            raise
        finally:
            events.close()  # type: ignore[attr-defined]
        click.echo("")
        text = "".join(answer)
        self.history.append({"role": "assistant", "content": text})
        if done is not None and done.finish_reason == "length":
            click.echo(click.style(
                f"[stopped at the token limit: {done.usage.completion_tokens} tokens; "
                "/set max_tokens N allows more]", dim=True), err=True)
        if self.stats and done is not None:
            tps = done.usage.completion_tokens / done.decode_seconds if done.decode_seconds else 0.0
            click.echo(click.style(
                f"prompt {done.usage.prompt_tokens} tokens in {done.prompt_seconds:.2f}s, "
                f"{done.usage.completion_tokens} tokens at {tps:.1f} tokens/s, "
                f"first token {done.ttft:.2f}s, finish {done.finish_reason}", dim=True), err=True)
        return text

    def command(self, line: str) -> bool:
        """Handle a /command; False means leave."""
        parts = line.split(maxsplit=2)
        head = parts[0].lower()
        if head in ("/bye", "/exit", "/quit"):
            return False
        if head == "/clear":
            self.history.clear()
            click.echo("Cleared the conversation.")
        elif head in ("/?", "/help"):
            click.echo(HELP)
        elif head == "/show":
            click.echo(f"model: {self.loaded.name}  context: {self.loaded.ctx}")
            click.echo(f"system: {self.system or '(model default)'}")
            shown = {**self.loaded.record.parameters, **self.options}
            click.echo("options: " + (" ".join(f"{k}={v}" for k, v in shown.items()) or "(defaults)"))
        elif head == "/set" and len(parts) >= 2:
            self._set(parts[1].lower(), parts[2] if len(parts) > 2 else "")
        elif head in ("/save", "/load") and len(parts) == 2 and self.chats is not None:
            self._save(parts[1]) if head == "/save" else self._load(parts[1])
        elif head in ("/save", "/load"):
            click.echo(f"Usage: {head} <name>")
        else:
            click.echo(f"Unknown command {line!r}. Type /? for help.")
        return True

    def _save(self, name: str) -> None:
        assert self.chats is not None
        self.chats.save(SavedChat(name, self.loaded.name, self.system, self.options, self.history))
        click.echo(f"Saved the conversation as {name} ({len(self.history)} messages).")

    def _load(self, name: str) -> None:
        assert self.chats is not None
        chat = self.chats.load(name)
        self.system, self.history = chat.system, list(chat.messages)
        self.options = {**self.options, **chat.options}
        note = "" if chat.model == self.loaded.name else f" (saved with {chat.model}; continuing with {self.loaded.name})"
        click.echo(f"Loaded {name}: {len(self.history)} messages{note}.")
        for message in self.history[-2:]:
            who = ">>> " if message.get("role") == "user" else ""
            click.echo(click.style(f"{who}{message.get('content', '')}", dim=True))

    def _set(self, key: str, value: str) -> None:
        if key == "system":
            self.system = value or None
            click.echo("Set system prompt." if value else "Cleared system prompt.")
            return
        if key not in _SETTABLE:
            click.echo(f"Cannot set {key!r}. Settable: system, {', '.join(_SETTABLE)}")
            return
        try:
            self.options[key] = _SETTABLE[key](value)
        except ValueError:
            click.echo(f"{key} needs a {_SETTABLE[key].__name__}, got {value!r}")
            return
        click.echo(f"Set {key} to {self.options[key]}.")


def read_message(read: Callable[[str], str] = input) -> str:
    """One message from the terminal: a line, or several between lines that start and end with
    \"\"\". EOFError and KeyboardInterrupt pass through."""
    line = read(">>> ")
    if not line.lstrip().startswith(MULTILINE):
        return line
    text = line.lstrip()[len(MULTILINE):]
    if text.rstrip().endswith(MULTILINE):  # \"\"\"one line\"\"\"
        return text.rstrip()[:-len(MULTILINE)]
    lines = [text] if text else []
    while True:
        more = read("... ")
        if more.rstrip().endswith(MULTILINE):
            lines.append(more.rstrip()[:-len(MULTILINE)])
            return "\n".join(lines).strip("\n")
        lines.append(more)


def interactive(session: ChatSession) -> None:
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - line editing and history for input()
    click.echo(click.style(f"Chatting with {session.loaded.name}. /? for help, /bye to leave.", dim=True))
    while True:
        try:
            line = read_message()
        except EOFError:
            click.echo("")
            return
        except KeyboardInterrupt:
            click.echo("\nUse Ctrl-D or /bye to leave.")
            continue
        line = line.strip()
        if not line:
            continue
        try:
            if line.startswith("/") and "\n" not in line:
                if not session.command(line):
                    return
                continue
            session.ask(line)
        except BendiError as exc:
            click.echo(click.style(f"Error: {exc.message}", fg="red"), err=True)


@click.command("run")
@click.argument("model")
@click.argument("prompt", required=False)
@click.option("--system", help="System prompt (default: the model's own, if it has one).")
@click.option("--temperature", type=float, help="Randomness: 0 always picks the likeliest token.")
@click.option("--top-p", type=float, help="Sample from the likeliest tokens covering this probability.")
@click.option("--top-k", type=int, help="Sample from this many likeliest tokens (0: all).")
@click.option("--min-p", type=float, help="Drop tokens less likely than this fraction of the best one.")
@click.option("--repeat-penalty", type=float, help="Penalty for repeating recent tokens (1: none).")
@click.option("--seed", type=int, help="Random seed, for answers that repeat.")
@click.option("--max-tokens", type=int, help="Stop after this many tokens.")
@click.option("--ctx", "ctx_len", type=int, help="Context length (tokens); default from the planner.")
@click.option("--hide-thinking", is_flag=True, help="Do not print the model's reasoning.")
@click.option("--stats", is_flag=True, help="Print token counts and speed after each answer.")
@click.option("--force", is_flag=True, help="Load even if the planner says it will not fit.")
@click.option("--interactive", "-i", "interactive_mode", is_flag=True,
              help="Chat interactively even when stdin is not a terminal.")
@click.pass_context
def run(ctx: click.Context, model: str, prompt: str | None, system: str | None, temperature: float | None,
        top_p: float | None, top_k: int | None, min_p: float | None, repeat_penalty: float | None,
        seed: int | None, max_tokens: int | None, ctx_len: int | None, hide_thinking: bool,
        stats: bool, force: bool, interactive_mode: bool) -> None:
    """Chat with MODEL: answer PROMPT (or stdin) and exit, or start an interactive chat."""
    if ctx_len is not None and ctx_len < 16:
        raise InvalidRequest("--ctx must be at least 16 tokens")
    if prompt is None and not interactive_mode and not sys.stdin.isatty():
        prompt = sys.stdin.read().strip() or None
    # one conversation: no need for batch slots
    generation = services(ctx, slots=1, force=True if force else None).generation
    loaded = generation.load(model, ctx=ctx_len)  # fail here, before the chat starts
    options = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "min_p": min_p,
               "repeat_penalty": repeat_penalty, "seed": seed, "max_tokens": max_tokens}
    settings = ctx.find_root().obj
    session = ChatSession(generation, loaded, options, system, hide_thinking, stats, ChatStore(settings.db_path))
    if prompt is not None:
        session.ask(prompt)
        return
    interactive(session)


def register(group: click.Group) -> None:
    group.add_command(run)
