"""The batching scheduler: one thread owns a llama context and runs continuous batching.

Each step it puts one token of every running sequence, plus prompt chunks of newly admitted ones,
into one `llama_decode`, then samples every sequence that produced logits with that sequence's own
sampler chain. Requests join between steps and leave (finished, stopped, cancelled) at once,
freeing their slot and KV cells.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import llama_cpp

from bendi.errors import BendiError, EngineError, ServerBusy
from bendi.runtime.llama.sampling import free_sampler, make_sampler, sample, token_logprobs
from bendi.runtime.llama.vocab import Vocab
from bendi.runtime.reasoning import CONTENT, ReasoningSplitter
from bendi.runtime.repetition import RepetitionGuard
from bendi.runtime.stops import StopMatcher
from bendi.runtime.threads import ThreadTuner
from bendi.runtime.tools import GrammarSwitch, ParsedCall, ToolSession
from bendi.runtime.tools.constrain import grammar_sampler, prime
from bendi.runtime.types import (
    ChatRequest,
    Done,
    Event,
    PromptLogprobs,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    ToolCall,
    Usage,
)

log = logging.getLogger(__name__)

#: prompt tokens per step for a request that scores its prompt (one row of logits each)
PROMPT_SCORE_CHUNK = 64


class Stream:
    """The handle a caller holds for one submitted request."""

    def __init__(self, sink: Callable[[Event | BaseException], None]) -> None:
        self._sink = sink
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class Sequence:
    """One request inside the scheduler: its prompt, sampler, slot and progress."""

    request: ChatRequest
    stream: Stream
    tokens: list[int]
    max_tokens: int
    sampler: Any
    splitter: ReasoningSplitter | None
    stops: StopMatcher
    decoder: Any
    slot: int = -1
    prefilled: int = 0  # prompt tokens already in the KV cache
    cached: int = 0  # of those, how many were reused from the slot's previous request
    n_past: int = 0
    last_token: int = -1
    generated: int = 0
    batch_index: int = -1
    t_submit: float = field(default_factory=time.perf_counter)
    t_start: float = 0.0
    t_first: float = 0.0
    t_prefill_done: float = 0.0
    #: the request's tool calling (None: no tools offered)
    tools: ToolSession | None = None
    #: ids of special tokens whose text the tool-call parser must see
    tool_tokens: frozenset[int] = frozenset()
    repeats: RepetitionGuard = field(default_factory=RepetitionGuard)
    #: scores of the prompt's tokens so far (request.prompt_logprobs), and the (batch index,
    #: position) of each prompt token of the current step whose logits score the next one
    prompt_scores: list[TokenLogprob] = field(default_factory=list)
    prompt_at: list[tuple[int, int]] = field(default_factory=list)
    #: the answer's token ids (request.return_context)
    output: list[int] = field(default_factory=list)

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.tokens)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Scheduler:
    """Continuous batching over `slots` sequence slots of one llama context."""

    def __init__(self, *, name: str, ctx: Any, vocab: Vocab, slots: int, n_batch: int,
                 queue_size: int, prompt_cache: bool, tuner: ThreadTuner | None, threads: int) -> None:
        self.name = name
        self.slots = slots
        self.n_batch = n_batch
        self.queue_size = queue_size
        self.prompt_cache = prompt_cache
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._vocab = vocab
        # Threads are tuned from step times unless the user fixed the count (see threads.py).
        self._tuner = tuner
        self._threads_now = threads
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._pending: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []
        # Free slots. A finished request leaves its KV cells in its slot;
        # `_slot_tokens` says what they hold, so a request that starts with the same tokens (the
        # next turn of a chat, a shared system prompt) reuses them instead of recomputing.
        self._free_slots = list(range(slots))
        self._slot_tokens: list[list[int]] = [[] for _ in range(slots)]
        self._cond = threading.Condition()
        self._closing = False
        self._abort: BendiError | None = None
        self.stats = {"steps": 0, "tokens_in": 0, "tokens_out": 0, "requests": 0}
        self._thread = threading.Thread(target=self._loop, name=f"bendi-{name}", daemon=True)
        self._thread.start()

    # -- what callers use ---------------------------------------------------------------------

    def enqueue(self, seq: Sequence) -> None:
        """Queue a prepared sequence; ServerBusy when unloading or the queue is full."""
        with self._cond:
            if self._closing:
                free_sampler(seq.sampler)
                raise ServerBusy(f"model {self.name} is unloading; retry the request")
            waiting = len(self._pending) + len(self._running) - self.slots
            if waiting >= self.queue_size:
                free_sampler(seq.sampler)
                raise ServerBusy(
                    f"model {self.name} is busy: {self.slots} requests running and "
                    f"{max(waiting, 0)} waiting; retry shortly"
                )
            self._pending.append(seq)
            self.stats["requests"] += 1
            self._cond.notify()

    @property
    def busy(self) -> int:
        with self._cond:
            return len(self._running) + len(self._pending)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._pending)

    def abort(self, error: BendiError) -> None:
        """End every running and waiting request with `error` (used when shutting down)."""
        with self._cond:
            self._abort = error
            self._cond.notify_all()

    def close(self, timeout: float) -> None:
        """Stop taking requests, let running ones end (or cancel them after `timeout`)."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            for seq in self._pending:
                seq.stream._sink(ServerBusy(f"model {self.name} was unloaded before the request ran"))
                free_sampler(seq.sampler)
            self._pending.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.05)
        if self._thread.is_alive():
            for seq in list(self._running):
                seq.stream.cancel()
            self._thread.join()
        llama_cpp.llama_batch_free(self._batch)

    # -- the scheduler thread -----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._closing or self._pending or self._running or self._abort):
                    self._cond.wait()
                if self._closing and not self._running and not self._pending:
                    return
                if self._abort is not None and not self._running and not self._pending:
                    self._abort = None
                    continue
                self._admit()
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 - the thread must survive and report
                log.exception("engine step failed")
                for seq in list(self._running):
                    self._finish(seq, "error", error=EngineError(f"generation failed: {exc}"))

    def _admit(self) -> None:
        while self._pending and self._free_slots:
            seq = self._pending.popleft()
            if seq.stream.cancelled.is_set():
                free_sampler(seq.sampler)
                continue
            self._take_slot(seq)
            seq.t_start = time.perf_counter()
            self._running.append(seq)

    def _take_slot(self, seq: Sequence) -> None:
        """Give `seq` the free slot whose cached tokens share the longest prefix with its prompt."""
        def score(slot: int) -> tuple[int, int, int]:
            # Most reused tokens first; among equals, the slot whose cached tokens are worth least
            # (a conversation kept for its next turn is worth keeping), then the lowest id, which
            # keeps running slots consecutive (see _step).
            reuse = _common_prefix(self._slot_tokens[slot], seq.tokens) if self.prompt_cache else 0
            return (-reuse, len(self._slot_tokens[slot]) - reuse, slot)

        best = min(self._free_slots, key=score)
        best_len = -score(best)[0]
        self._free_slots.remove(best)
        reuse = min(best_len, len(seq.tokens) - 1)  # the last prompt token must be decoded for logits
        if seq.request.prompt_logprobs:
            reuse = 0  # every prompt token is scored, so every one is computed
        if reuse < len(self._slot_tokens[best]) and not llama_cpp.llama_memory_seq_rm(
            self._mem, best, reuse, -1
        ):
            llama_cpp.llama_memory_seq_rm(self._mem, best, -1, -1)
            reuse = 0
        del self._slot_tokens[best][reuse:]
        seq.slot = best
        seq.prefilled = seq.n_past = seq.cached = reuse

    def _step(self) -> None:
        if self._abort is not None:
            error, self._abort = self._abort, None
            for seq in list(self._running):
                self._finish(seq, "error", error=error)
            with self._cond:
                waiting, self._pending = list(self._pending), collections.deque()
            for seq in waiting:
                free_sampler(seq.sampler)
                seq.stream._sink(error)
            return
        for seq in [s for s in self._running if s.stream.cancelled.is_set()]:
            self._finish(seq, "cancelled")
        if not self._running:
            return
        batch = self._batch
        # What goes into this step: one token of every generating sequence, then prompt chunks,
        # oldest first, within what is left of the batch.
        parts: list[tuple[Sequence, list[int], int, bool]] = []  # sequence, tokens, position, decode?
        budget = self.n_batch
        for seq in self._running:
            seq.batch_index = -1
            if not seq.prefilling:
                parts.append((seq, [seq.last_token], seq.n_past, True))
                budget -= 1
        n_decode = len(parts)
        for seq in self._running:
            if seq.prefilling and budget > 0:
                take = min(len(seq.tokens) - seq.prefilled, budget)
                if seq.request.prompt_logprobs:
                    # each scored token needs a row of logits: bound the step's logits buffer
                    take = min(take, PROMPT_SCORE_CHUNK)
                parts.append((seq, seq.tokens[seq.prefilled : seq.prefilled + take], seq.prefilled, False))
                budget -= take
        # In slot order: with one KV stream per slot, llama.cpp computes a batch as one graph per
        # run of consecutive sequence ids (llama_batch_allocr::split_equal, sequential), so 8
        # sequences in admission order such as 3,0,1,2,4,5,6,7 took two passes over the weights
        # and 0,2,4,6,1,3,5,7 four.
        parts.sort(key=lambda part: part[0].slot)
        n = 0
        for seq, tokens, pos, decode in parts:
            scored = not decode and seq.request.prompt_logprobs
            for i, token in enumerate(tokens):
                last = decode or pos + i == len(seq.tokens) - 1
                self._batch_add(n, token, pos + i, seq.slot, last or scored)
                if last:
                    seq.batch_index = n
                elif scored:
                    seq.prompt_at.append((n, pos + i))
                n += 1
            self._slot_tokens[seq.slot].extend(tokens)
            if decode:
                seq.n_past += 1
            else:
                seq.prefilled += len(tokens)
                seq.n_past = seq.prefilled
        batch.n_tokens = n
        # Decode-only steps are tuned by their number of sequences; steps with prompt tokens
        # follow the largest decode step (see threads.py).
        decode_only = n == n_decode
        if self._tuner is not None:
            threads = self._tuner.choose(n) if decode_only else self._tuner.for_large_steps()
            if threads != self._threads_now:
                llama_cpp.llama_set_n_threads(self._ctx, threads, threads)
                self._threads_now = threads
        started = time.perf_counter()
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if self._tuner is not None and decode_only:
            self._tuner.record(self._threads_now, n, time.perf_counter() - started)
        self.stats["steps"] += 1
        if rc != 0:
            raise EngineError(f"llama_decode returned {rc}")
        now = time.perf_counter()
        for seq in list(self._running):
            if seq.prompt_at:
                self._score_prompt(seq)
            if seq.batch_index < 0:
                continue
            if seq.generated == 0:
                seq.t_prefill_done = now
                if seq.request.prompt_logprobs:
                    seq.stream._sink(PromptLogprobs(
                        self._vocab.token_bytes(seq.tokens[0]).decode("utf-8", "replace"),
                        seq.prompt_scores))
                if seq.max_tokens <= 0:  # the prompt only (scored, or a cache warm-up)
                    self._finish(seq, "length")
                    continue
            token = sample(seq.sampler, self._ctx, seq.batch_index)
            logprobs = (
                token_logprobs(self._ctx, seq.batch_index, self._vocab, token, seq.request.logprobs)
                if seq.request.logprobs is not None
                else None
            )
            self._accept(seq, token, logprobs)

    def _score_prompt(self, seq: Sequence) -> None:
        """Score each prompt token by the logits of the one before it."""
        k = seq.request.logprobs or 0
        for index, pos in seq.prompt_at:
            seq.prompt_scores += token_logprobs(self._ctx, index, self._vocab, seq.tokens[pos + 1], k)
        seq.prompt_at.clear()

    def _batch_add(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def _accept(self, seq: Sequence, token: int, logprobs: list[TokenLogprob] | None) -> None:
        seq.generated += 1
        self.stats["tokens_out"] += 1
        if self._vocab.is_end(token):
            self._finish(seq, "stop")
            return
        seq.last_token = token
        if seq.request.return_context:
            seq.output.append(token)
        text = seq.decoder.decode(self._vocab.token_bytes(token, token in seq.tool_tokens))
        self._emit(seq, seq.stops.feed(text), logprobs)
        if seq.tools is not None and (switch := seq.tools.after_token(text)) is not None:
            self._switch_grammar(seq, switch)
        if seq.stops.stopped or (seq.tools is not None and seq.tools.over):
            self._finish(seq, "stop")
        elif seq.repeats.feed(token):
            log.info("%s: stopped a generation repeating itself (a %d-token block over %d tokens)",
                     self.name, *(seq.repeats.found or (0, 0)))
            self._finish(seq, "stop")
        elif seq.generated >= seq.max_tokens:
            self._finish(seq, "length")

    def _emit(self, seq: Sequence, text: str, logprobs: list[TokenLogprob] | None) -> None:
        if not text and not logprobs:
            return
        if not seq.t_first:
            seq.t_first = time.perf_counter()
        sink = seq.stream._sink
        if seq.splitter is None:
            sink(TextDelta(text, logprobs))
            return
        parts = seq.splitter.feed(text)
        sent_logprobs = False
        for kind, piece in parts:
            if kind == CONTENT:
                self._content(seq, piece, None if sent_logprobs else logprobs)
                sent_logprobs = True
            elif seq.request.think is not False:
                sink(ReasoningDelta(piece))

    def _content(self, seq: Sequence, text: str, logprobs: list[TokenLogprob] | None) -> None:
        """Answer text to the client, through the tool-call parser when tools are offered."""
        sink = seq.stream._sink
        if seq.tools is None:
            sink(TextDelta(text, logprobs))
            return
        for piece in seq.tools.feed(text):
            sink(_tool_event(piece) if isinstance(piece, ParsedCall) else TextDelta(piece, logprobs))

    def _switch_grammar(self, seq: Sequence, switch: GrammarSwitch) -> None:
        """Constrain the rest of `seq` with the tool-call grammar, primed with the call so far."""
        g = grammar_sampler(self._vocab.ptr, switch.grammar)
        if g is None:
            log.warning("the tool-call grammar did not parse; the call is not constrained")
            return
        if not prime(g, self._vocab.tokenize(switch.prime, parse_special=True)):
            free_sampler(g)
            log.debug("the model opened a call the grammar cannot continue: %r", switch.prime)
            return
        old, seq.sampler = seq.sampler, make_sampler(self._vocab, seq.request, seq.tokens,
                                                     len(seq.tokens) + seq.max_tokens, primed=g)
        free_sampler(old)

    def _finish(self, seq: Sequence, reason: str, error: BendiError | None = None) -> None:
        if seq in self._running:
            self._running.remove(seq)
        if error is not None:  # the cells may hold a half-done step: forget them
            llama_cpp.llama_memory_seq_rm(self._mem, seq.slot, -1, -1)
            self._slot_tokens[seq.slot].clear()
        free_sampler(seq.sampler)
        with self._cond:
            self._free_slots.append(seq.slot)
        self.stats["tokens_in"] += seq.prefilled - seq.cached
        sink = seq.stream._sink
        if error is not None:
            sink(error)
            return
        if reason != "cancelled":
            # Bytes of a character cut off by max_tokens are dropped, not shown as U+FFFD.
            self._emit(seq, seq.stops.flush(), None)
            if seq.splitter is not None:
                for kind, piece in seq.splitter.flush():
                    if kind == CONTENT:
                        self._content(seq, piece, None)
                    elif seq.request.think is not False:
                        sink(ReasoningDelta(piece))
            if seq.tools is not None:
                for rest in seq.tools.flush():
                    sink(_tool_event(rest) if isinstance(rest, ParsedCall) else TextDelta(rest))
        end = time.perf_counter()
        prefill_end = seq.t_prefill_done or end
        completion = seq.generated - (1 if reason == "stop" and not seq.stops.stopped else 0)
        if seq.tools is not None:
            reason = seq.tools.finish_reason(reason)
        sink(
            Done(
                finish_reason=reason,  # type: ignore[arg-type]
                usage=Usage(len(seq.tokens), max(completion, 0), seq.cached),
                ttft=(seq.t_first or end) - seq.t_submit,
                prompt_seconds=prefill_end - (seq.t_start or seq.t_submit),
                decode_seconds=end - prefill_end,
                total_seconds=end - seq.t_submit,
                context=seq.tokens + seq.output if seq.request.return_context else None,
            )
        )


def _tool_event(call: ParsedCall) -> ToolCall:
    return ToolCall(call.id, call.name, call.arguments, call.index)
