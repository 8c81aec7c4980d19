"""The observer hook: every generation and embedding is admitted before it starts and recorded
exactly once after it ends.

`Observers.admit` runs every observer's check; one that raises a bendi error (RateLimited,
PermissionDenied, ...) refuses the request before any model is loaded. `Observers.record` hands
every observer one `GenerationRecord` when the request is over, whether it finished, failed, was
cancelled by its client, or was refused. A failing observer is logged; it never breaks a response.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bendi.core.collect import Collector
from bendi.core.context import RequestContext
from bendi.errors import BendiError
from bendi.runtime.types import Done, Event

log = logging.getLogger(__name__)

Kind = Literal["chat", "completion", "embedding"]
Status = Literal["ok", "error", "cancelled", "refused"]


@dataclass
class Admission:
    """What is about to run, for the check before it starts."""

    context: RequestContext
    kind: Kind
    #: the model that will answer (its full name); None for a knowledge-base answer found empty
    model: str | None
    knowledge_base: str | None = None


@dataclass
class GenerationRecord:
    """One finished request: who, what, how much, how long, how it ended."""

    context: RequestContext
    kind: Kind
    model: str | None
    knowledge_base: str | None
    status: Status
    #: the error it ended with (status "error" or "refused")
    error: BendiError | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    #: documents a knowledge-base answer cited
    documents: list[str] = field(default_factory=list)
    #: seconds from the start of the request (admission) to its end, loading included
    latency: float = 0.0
    load_seconds: float = 0.0
    #: the engine's own report: time to first token, prompt and decode seconds (None if not done)
    done: Done | None = None
    #: the messages or prompt, and the answer text, when an observer asked for text
    prompt: Any = None
    answer: str | None = None


class Observer(Protocol):
    @property
    def wants_text(self) -> bool:
        """Whether records should carry the prompt and the answer text."""
        ...

    def admit(self, admission: Admission) -> None:
        """Raise a bendi error to refuse the request."""
        ...

    def record(self, record: GenerationRecord) -> None: ...


class Observers:
    """The observers attached to a generation service."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    @property
    def wants_text(self) -> bool:
        return any(o.wants_text for o in self._observers)

    def admit(self, admission: Admission) -> None:
        for observer in list(self._observers):
            observer.admit(admission)

    def record(self, record: GenerationRecord) -> None:
        for observer in list(self._observers):
            try:
                observer.record(record)
            except Exception:  # noqa: BLE001 - a broken observer must not break the response
                log.exception("observer %r failed to record a request", observer)


class Tracker:
    """The observation of one request: admitted when created, recorded exactly once.

    Run the request inside `with tracker.observing():` and pass its events to `event`; however
    the block ends (finished, an error, the client went away) one record goes to the observers.
    """

    def __init__(self, observers: Observers, context: RequestContext, kind: Kind, model: str | None, *,
                 knowledge_base: str | None = None, prompt: Any = None,
                 documents: Callable[[str], list[str]] | None = None) -> None:
        self.observers = observers
        self.context = context
        self.kind: Kind = kind
        self.model = model
        self.knowledge_base = knowledge_base
        self.load_seconds = 0.0
        self.prompt_tokens = 0
        self.collector = Collector()
        self._prompt = prompt
        #: text of the answer -> the documents it cites (knowledge-base answers)
        self.documents = documents
        self._started = time.perf_counter()
        self._recorded = False
        try:
            observers.admit(Admission(context, kind, model, knowledge_base))
        except BendiError as exc:
            self.finish("refused", exc)
            raise

    def event(self, event: Event) -> None:
        self.collector.add(event)

    @contextlib.contextmanager
    def observing(self) -> Iterator[None]:
        """Record how the request inside the block ends, whatever the way."""
        try:
            with self.failing():
                yield
        finally:
            # a clean end, or GeneratorExit/CancelledError: the client stopped reading
            self.finish("ok" if self.collector.done is not None or self.kind == "embedding" else "cancelled")

    @contextlib.contextmanager
    def failing(self) -> Iterator[None]:
        """Record an error that ends the request inside the block; a clean exit records nothing."""
        try:
            yield
        except BendiError as exc:
            self.finish("error", exc)
            raise
        except Exception as exc:
            self.finish("error", BendiError(f"internal error: {type(exc).__name__}: {exc}"))
            raise

    def finish(self, status: Status, error: BendiError | None = None) -> None:
        if self._recorded:
            return
        self._recorded = True
        done = self.collector.done
        text = self.collector.text if (self.documents is not None or self.observers.wants_text) else None
        self.observers.record(GenerationRecord(
            context=self.context, kind=self.kind, model=self.model, knowledge_base=self.knowledge_base,
            status=status, error=error, finish_reason=done.finish_reason if done else None,
            prompt_tokens=done.usage.prompt_tokens if done else self.prompt_tokens,
            completion_tokens=done.usage.completion_tokens if done else 0,
            cached_tokens=done.usage.cached_tokens if done else 0,
            documents=self.documents(text or "") if self.documents is not None and done else [],
            latency=time.perf_counter() - self._started, load_seconds=self.load_seconds, done=done,
            prompt=self._prompt if self.observers.wants_text else None,
            answer=text if self.observers.wants_text else None,
        ))
