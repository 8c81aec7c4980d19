"""The llama.cpp engine: one model, one context with several sequence slots, continuous batching.

A single scheduler thread owns the llama context. Each step it puts one token of every running
sequence, plus prompt chunks of newly admitted ones, into one `llama_decode`, then samples every
sequence that produced logits with that sequence's own sampler chain. Requests join between steps
and leave (finished, stopped, cancelled) at once, freeing their slot and KV cells.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import ctypes
import logging
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from bendi.errors import (
    BendiError,
    ContextLengthExceeded,
    EngineError,
    InvalidModelFile,
    InvalidRequest,
    ServerBusy,
    TemplateError,
)
from bendi.runtime.reasoning import CONTENT, ReasoningSplitter, prompt_opens_think
from bendi.runtime.stops import StopMatcher
from bendi.runtime.template import ChatTemplate, flatten_content
from bendi.runtime.threads import ThreadTuner
from bendi.runtime.types import (
    ChatRequest,
    Done,
    Event,
    ReasoningDelta,
    TextDelta,
    TokenLogprob,
    Usage,
)

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_backend_init()
            if not os.environ.get("BENDI_LLAMA_LOG"):
                _silence_llama_log()
            _backend_ready = True


@llama_cpp.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if level == 2:  # GGML_LOG_LEVEL_ERROR
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def _silence_llama_log() -> None:
    llama_cpp.llama_log_set(_quiet_log, ctypes.c_void_p())


def default_threads() -> int:
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except Exception:  # noqa: BLE001 - psutil may not know this platform
        return max(1, os.cpu_count() or 1)


@dataclass
class LoadOptions:
    """How to load a model into the llama.cpp engine."""

    ctx: int = 4096  # context per sequence slot
    slots: int = 8
    batch_tokens: int = 512
    threads: int | None = None
    gpu_layers: int = 0
    queue_size: int = 64
    #: None lets llama.cpp decide (flash attention where the backend has it); False/True force it
    flash_attn: bool | None = None
    #: reuse a slot's KV cells when a new prompt starts with the tokens it already holds
    prompt_cache: bool = True
    template: str | None = None  # overrides the GGUF chat template
    system: str | None = None  # default system prompt
    parameters: dict[str, Any] = field(default_factory=dict)  # default sampling parameters


class _Stream:
    """The handle a caller holds for one submitted request."""

    def __init__(self, sink: Callable[[Event | BaseException], None]) -> None:
        self._sink = sink
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Seq:
    request: ChatRequest
    stream: _Stream
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

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.tokens)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class LlamaModel:
    """A GGUF model loaded into llama.cpp, serving many concurrent requests."""

    engine_name = "llama.cpp"

    def __init__(self, path: str | Path, options: LoadOptions | None = None, name: str = "") -> None:
        _init_backend()
        self.path = Path(path)
        self.name = name or self.path.stem
        self.options = options or LoadOptions()
        opts = self.options
        self.threads = opts.threads or default_threads()

        mparams = llama_cpp.llama_model_default_params()
        mparams.n_gpu_layers = opts.gpu_layers
        model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            raise InvalidModelFile(f"llama.cpp could not load {self.path} (corrupt or unsupported)")
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_ctx_train = llama_cpp.llama_model_n_ctx_train(model)
        self.n_embd = llama_cpp.llama_model_n_embd(model)
        self.slots = max(1, opts.slots)
        self.n_ctx_seq = min(opts.ctx, self.n_ctx_train) if self.n_ctx_train > 0 else opts.ctx

        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx_seq * self.slots
        cparams.n_batch = max(opts.batch_tokens, self.slots)
        cparams.n_ubatch = cparams.n_batch
        cparams.n_seq_max = self.slots
        cparams.n_threads = self.threads
        cparams.n_threads_batch = self.threads
        cparams.kv_unified = False  # each slot owns n_ctx_seq cells: no slot can starve another
        cparams.no_perf = True
        if opts.flash_attn is not None:
            cparams.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
                if opts.flash_attn
                else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise EngineError(f"llama.cpp could not create a context of {cparams.n_ctx} tokens")
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.n_batch = int(cparams.n_batch)
        # Threads are tuned from step times unless the user fixed the count (see threads.py).
        self._tuner = ThreadTuner(self.threads) if opts.threads is None else None
        self._threads_now = self.threads
        self._batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self._embed_ctx: Any = None
        self._embed_lock = threading.Lock()

        self.bos_token = self._special_text(llama_cpp.llama_vocab_bos(self._vocab))
        self.eos_token = self._special_text(llama_cpp.llama_vocab_eos(self._vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        source = opts.template or self._gguf_template()
        self.template = (
            ChatTemplate(source, bos_token=self.bos_token, eos_token=self.eos_token)
            if source
            else None
        )

        self._pending: collections.deque[_Seq] = collections.deque()
        self._running: list[_Seq] = []
        # Free slots. A finished request leaves its KV cells in its slot;
        # `_slot_tokens` says what they hold, so a request that starts with the same tokens (the
        # next turn of a chat, a shared system prompt) reuses them instead of recomputing.
        self._free_slots = list(range(self.slots))
        self._slot_tokens: list[list[int]] = [[] for _ in range(self.slots)]
        self._cond = threading.Condition()
        self._closing = False
        self._abort: BendiError | None = None
        self.stats = {"steps": 0, "tokens_in": 0, "tokens_out": 0, "requests": 0}
        self._thread = threading.Thread(target=self._loop, name=f"bendi-{self.name}", daemon=True)
        self._thread.start()

    # -- text --------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        return list(buf[:n])

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        return buf.raw[:n]

    def detokenize(self, tokens: list[int]) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", "replace")

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.token_bytes(token, special=True).decode("utf-8", "replace")

    def _gguf_template(self) -> str | None:
        ptr = llama_cpp.llama_model_chat_template(self._model, None)
        return ptr.decode("utf-8") if ptr else None

    def render_prompt(self, request: ChatRequest) -> str:
        """The prompt text for a request: the chat template applied, or the raw prompt."""
        if request.prompt is not None:
            return request.prompt
        if self.template is None:
            raise TemplateError(
                f"model {self.name} has no chat template in its GGUF metadata and none is "
                "configured; import it with --template FILE or use the completions API"
            )
        messages = []
        for m in request.messages or []:
            msg = dict(m)
            msg["content"] = flatten_content(msg.get("content"))
            messages.append(msg)
        system = self.options.system
        if system and request.use_default_system and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        return self.template.render(messages, tools=request.tools)

    def prompt_tokens(self, prompt: str) -> list[int]:
        tokens = self.tokenize(prompt, add_special=False, parse_special=True)
        if self.add_bos and self.bos_token and not prompt.startswith(self.bos_token):
            tokens.insert(0, llama_cpp.llama_vocab_bos(self._vocab))
        return tokens

    # -- submitting ---------------------------------------------------------------------------

    def submit(self, request: ChatRequest, sink: Callable[[Event | BaseException], None]) -> _Stream:
        """Queue a request; events go to `sink` from the scheduler thread. Raises bendi errors
        (bad template, prompt too long, queue full) before anything is queued."""
        prompt = self.render_prompt(request)
        tokens = self.prompt_tokens(prompt)
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="messages")
        if len(tokens) >= self.n_ctx_seq:
            raise ContextLengthExceeded(
                f"the prompt is {len(tokens)} tokens but the context is {self.n_ctx_seq} tokens; "
                "shorten the conversation or load the model with a larger context",
                param="messages",
            )
        room = self.n_ctx_seq - len(tokens)
        max_tokens = room if request.max_tokens is None else min(request.max_tokens, room)
        if request.max_tokens is not None and request.max_tokens < 0:
            raise InvalidRequest("max_tokens must not be negative", param="max_tokens")
        stream = _Stream(sink)
        think_open = request.prompt is None and prompt_opens_think(prompt)
        splitter = ReasoningSplitter(in_reasoning=think_open) if request.prompt is None else None
        seq = _Seq(
            request=request,
            stream=stream,
            tokens=tokens,
            max_tokens=max_tokens,
            sampler=self._make_sampler(request, tokens),
            splitter=splitter,
            stops=StopMatcher(list(request.stop)),
            decoder=codecs.getincrementaldecoder("utf-8")(errors="replace"),
        )
        with self._cond:
            if self._closing:
                llama_cpp.llama_sampler_free(seq.sampler)
                raise ServerBusy(f"model {self.name} is unloading; retry the request")
            waiting = len(self._pending) + len(self._running) - self.slots
            if waiting >= self.options.queue_size:
                llama_cpp.llama_sampler_free(seq.sampler)
                raise ServerBusy(
                    f"model {self.name} is busy: {self.slots} requests running and "
                    f"{max(waiting, 0)} waiting; retry shortly"
                )
            self._pending.append(seq)
            self.stats["requests"] += 1
            self._cond.notify()
        return stream

    def generate(self, request: ChatRequest) -> Generator[Event, None, None]:
        """Run a request and yield its events (blocking). Closing the iterator cancels it."""
        q: queue.SimpleQueue[Event | BaseException] = queue.SimpleQueue()
        stream = self.submit(request, q.put)
        try:
            while True:
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Done):
                    return
        finally:
            stream.cancel()

    async def agenerate(self, request: ChatRequest) -> AsyncIterator[Event]:
        """Async form of `generate`; cancelling the consumer cancels the sequence."""
        loop = asyncio.get_running_loop()
        # Events land in a plain deque; the event loop is woken at most once per batch of them,
        # not once per token: with many streams, per-token wake-ups cost CPU that the decode needs.
        items: collections.deque[Event | BaseException] = collections.deque()
        ready = asyncio.Event()
        wake_pending = threading.Event()

        def wake() -> None:
            wake_pending.clear()
            ready.set()

        def sink(item: Event | BaseException) -> None:
            items.append(item)
            if not wake_pending.is_set():
                wake_pending.set()
                loop.call_soon_threadsafe(wake)

        stream = self.submit(request, sink)
        try:
            while True:
                while items:
                    item = items.popleft()
                    if isinstance(item, BaseException):
                        raise item
                    yield item
                    if isinstance(item, Done):
                        return
                ready.clear()
                if not items:
                    await ready.wait()
        finally:
            stream.cancel()

    @property
    def busy(self) -> int:
        with self._cond:
            return len(self._running) + len(self._pending)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._pending)

    # -- sampling -----------------------------------------------------------------------------

    def _make_sampler(self, request: ChatRequest, prompt: list[int]) -> Any:
        s = request.sampling
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        grammar = self._grammar_for(request)
        if grammar is not None:
            g = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
            if not g:
                llama_cpp.llama_sampler_free(chain)
                raise InvalidRequest("the response format could not be turned into a grammar",
                                     param="response_format")
            add(chain, g)
        if s.repeat_penalty != 1.0 or s.presence_penalty or s.frequency_penalty:
            last_n = s.repeat_last_n if s.repeat_last_n >= 0 else self.n_ctx_seq
            pen = llama_cpp.llama_sampler_init_penalties(
                last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty
            )
            add(chain, pen)
            for tok in prompt[-last_n:] if last_n else []:
                llama_cpp.llama_sampler_accept(pen, tok)
        if s.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if s.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        if 0 < s.top_p < 1:
            add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p > 0:
            add(chain, llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little")
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _grammar_for(self, request: ChatRequest) -> str | None:
        from bendi.runtime.grammar import grammar_for_response_format

        return grammar_for_response_format(request.response_format)

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
                llama_cpp.llama_sampler_free(seq.sampler)
                continue
            self._take_slot(seq)
            seq.t_start = time.perf_counter()
            self._running.append(seq)

    def _take_slot(self, seq: _Seq) -> None:
        """Give `seq` the free slot whose cached tokens share the longest prefix with its prompt."""
        def score(slot: int) -> tuple[int, int, int]:
            # Most reused tokens first; among equals, the slot whose cached tokens are worth least
            # (a conversation kept for its next turn is worth keeping), then the lowest id, which
            # keeps running slots consecutive (see _step).
            reuse = _common_prefix(self._slot_tokens[slot], seq.tokens) if self.options.prompt_cache else 0
            return (-reuse, len(self._slot_tokens[slot]) - reuse, slot)

        best = min(self._free_slots, key=score)
        best_len = -score(best)[0]
        self._free_slots.remove(best)
        reuse = min(best_len, len(seq.tokens) - 1)  # the last prompt token must be decoded for logits
        if reuse < len(self._slot_tokens[best]) and not llama_cpp.llama_memory_seq_rm(
            self._mem, best, reuse, -1
        ):
            llama_cpp.llama_memory_seq_rm(self._mem, best, -1, -1)
            reuse = 0
        del self._slot_tokens[best][reuse:]
        seq.slot = best
        seq.prefilled = seq.n_past = seq.cached = reuse

    def abort(self, error: BendiError) -> None:
        """End every running and waiting request with `error` (used when shutting down)."""
        with self._cond:
            self._abort = error
            self._cond.notify_all()

    def _step(self) -> None:
        if self._abort is not None:
            error, self._abort = self._abort, None
            for seq in list(self._running):
                self._finish(seq, "error", error=error)
            with self._cond:
                waiting, self._pending = list(self._pending), collections.deque()
            for seq in waiting:
                llama_cpp.llama_sampler_free(seq.sampler)
                seq.stream._sink(error)
            return
        for seq in [s for s in self._running if s.stream.cancelled.is_set()]:
            self._finish(seq, "cancelled")
        if not self._running:
            return
        batch = self._batch
        # What goes into this step: one token of every generating sequence, then prompt chunks,
        # oldest first, within what is left of the batch.
        parts: list[tuple[_Seq, list[int], int, bool]] = []  # sequence, tokens, position, decode?
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
                parts.append((seq, seq.tokens[seq.prefilled : seq.prefilled + take], seq.prefilled, False))
                budget -= take
        # In slot order: with one KV stream per slot, llama.cpp computes a batch as one graph per
        # run of consecutive sequence ids (llama_batch_allocr::split_equal, sequential), so 8
        # sequences in admission order such as 3,0,1,2,4,5,6,7 took two passes over the weights
        # and 0,2,4,6,1,3,5,7 four.
        parts.sort(key=lambda part: part[0].slot)
        n = 0
        for seq, tokens, pos, decode in parts:
            for i, token in enumerate(tokens):
                logits = decode or pos + i == len(seq.tokens) - 1
                self._batch_add(n, token, pos + i, seq.slot, logits)
                if logits:
                    seq.batch_index = n
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
            if seq.batch_index < 0:
                continue
            if seq.generated == 0:
                seq.t_prefill_done = now
            token = llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, seq.batch_index)
            logprobs = self._logprobs(seq, token) if seq.request.logprobs is not None else None
            self._accept(seq, token, logprobs)

    def _batch_add(self, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        b = self._batch
        b.token[i] = token
        b.pos[i] = pos
        b.n_seq_id[i] = 1
        b.seq_id[i][0] = seq_id
        b.logits[i] = logits

    def _accept(self, seq: _Seq, token: int, logprobs: list[TokenLogprob] | None) -> None:
        seq.generated += 1
        self.stats["tokens_out"] += 1
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, "stop")
            return
        seq.last_token = token
        text = seq.decoder.decode(self.token_bytes(token))
        self._emit(seq, seq.stops.feed(text), logprobs)
        if seq.stops.stopped:
            self._finish(seq, "stop")
        elif seq.generated >= seq.max_tokens:
            self._finish(seq, "length")

    def _emit(self, seq: _Seq, text: str, logprobs: list[TokenLogprob] | None) -> None:
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
                sink(TextDelta(piece, None if sent_logprobs else logprobs))
                sent_logprobs = True
            elif seq.request.think is not False:
                sink(ReasoningDelta(piece))

    def _finish(self, seq: _Seq, reason: str, error: BendiError | None = None) -> None:
        if seq in self._running:
            self._running.remove(seq)
        if error is not None:  # the cells may hold a half-done step: forget them
            llama_cpp.llama_memory_seq_rm(self._mem, seq.slot, -1, -1)
            self._slot_tokens[seq.slot].clear()
        llama_cpp.llama_sampler_free(seq.sampler)
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
                        sink(TextDelta(piece))
                    elif seq.request.think is not False:
                        sink(ReasoningDelta(piece))
        end = time.perf_counter()
        prefill_end = seq.t_prefill_done or end
        completion = seq.generated - (1 if reason == "stop" and not seq.stops.stopped else 0)
        sink(
            Done(
                finish_reason=reason,  # type: ignore[arg-type]
                usage=Usage(len(seq.tokens), max(completion, 0), seq.cached),
                ttft=(seq.t_first or end) - seq.t_submit,
                prompt_seconds=prefill_end - (seq.t_start or seq.t_submit),
                decode_seconds=end - prefill_end,
                total_seconds=end - seq.t_submit,
            )
        )

    def _logprobs(self, seq: _Seq, token: int) -> list[TokenLogprob]:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, seq.batch_index)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        m = logits.max()
        logz = m + np.log(np.exp(logits - m).sum())
        top: list[tuple[str, float, list[int]]] = []
        k = int(seq.request.logprobs or 0)
        if k > 0:
            for t in np.argpartition(-logits, k)[:k][np.argsort(-logits[np.argpartition(-logits, k)[:k]])]:
                b = self.token_bytes(int(t))
                top.append((b.decode("utf-8", "replace"), float(logits[t] - logz), list(b)))
        b = self.token_bytes(token)
        return [TokenLogprob(b.decode("utf-8", "replace"), float(logits[token] - logz), list(b), top)]

    # -- embeddings ---------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalised embeddings and the number of tokens read."""
        with self._embed_lock:
            if self._embed_ctx is None:
                cparams = llama_cpp.llama_context_default_params()
                cparams.n_ctx = min(self.n_ctx_seq, 8192)
                cparams.n_batch = cparams.n_ctx
                cparams.n_ubatch = cparams.n_ctx
                cparams.n_seq_max = 1
                cparams.embeddings = True
                cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
                cparams.n_threads = self.threads
                cparams.n_threads_batch = self.threads
                ctx = llama_cpp.llama_init_from_model(self._model, cparams)
                if not ctx:
                    raise EngineError("llama.cpp could not create an embedding context")
                self._embed_ctx = ctx
            ctx = self._embed_ctx
            n_ctx = llama_cpp.llama_n_ctx(ctx)
            batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
            out: list[list[float]] = []
            total = 0
            try:
                for text in texts:
                    tokens = self.tokenize(text, add_special=True, parse_special=False)
                    if len(tokens) > n_ctx:
                        raise ContextLengthExceeded(
                            f"input is {len(tokens)} tokens; the embedding context is {n_ctx}",
                            param="input",
                        )
                    if not tokens:
                        raise InvalidRequest("cannot embed an empty string", param="input")
                    total += len(tokens)
                    for i, tok in enumerate(tokens):
                        batch.token[i] = tok
                        batch.pos[i] = i
                        batch.n_seq_id[i] = 1
                        batch.seq_id[i][0] = 0
                        batch.logits[i] = True
                    batch.n_tokens = len(tokens)
                    llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
                    if llama_cpp.llama_decode(ctx, batch) != 0:
                        raise EngineError("llama_decode failed while embedding")
                    ptr = llama_cpp.llama_get_embeddings_seq(ctx, 0)
                    vec = np.ctypeslib.as_array(ptr, shape=(self.n_embd,)).astype(np.float64)
                    norm = float(np.linalg.norm(vec)) or 1.0
                    out.append((vec / norm).tolist())
            finally:
                llama_cpp.llama_batch_free(batch)
            return out, total

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests, let running ones end (or cancel them after `timeout`), free memory."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            for seq in self._pending:
                seq.stream._sink(ServerBusy(f"model {self.name} was unloaded before the request ran"))
                llama_cpp.llama_sampler_free(seq.sampler)
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
        if self._embed_ctx is not None:
            llama_cpp.llama_free(self._embed_ctx)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    def __enter__(self) -> LlamaModel:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.close()
