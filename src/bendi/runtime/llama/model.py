"""The llama.cpp engine's loaded model: one model, one context with several sequence slots.

The model owns the llama.cpp handles; the scheduler (scheduler.py) runs continuous batching over
the context from its own thread; embeddings use a second context (embedding.py).
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from pathlib import Path

import llama_cpp

from bendi.errors import (
    BendiError,
    ContextLengthExceeded,
    EngineError,
    InvalidModelFile,
    InvalidRequest,
    ServerBusy,
    TemplateError,
)
from bendi.runtime.engine import Capabilities, LoadOptions
from bendi.runtime.llama.backend import default_threads, init_backend
from bendi.runtime.llama.build import apply_amx_guard, apply_placement, place_model
from bendi.runtime.llama.embedding import EmbeddingContext
from bendi.runtime.llama.sampling import make_sampler
from bendi.runtime.llama.scheduler import Scheduler, Sequence, Stream
from bendi.runtime.llama.vocab import Vocab, gguf_template
from bendi.runtime.reasoning import ReasoningSplitter, prompt_opens_think
from bendi.runtime.stops import StopMatcher
from bendi.runtime.template import ChatTemplate, flatten_content
from bendi.runtime.threads import ThreadTuner
from bendi.runtime.tools import ModelTools
from bendi.runtime.tools.constrain import special_ids
from bendi.runtime.types import ChatRequest, Done, Event

log = logging.getLogger(__name__)


class LlamaModel:
    """A GGUF model loaded into llama.cpp, serving many concurrent requests."""

    engine_name = "llama.cpp"
    capabilities = Capabilities(embeddings=True, grammar=True, logprobs=True, tool_calls=True)

    def __init__(self, path: str | Path, options: LoadOptions | None = None, name: str = "") -> None:
        init_backend()
        self.path = Path(path)
        self.name = name or self.path.stem
        self.options = options or LoadOptions()
        opts = self.options
        self.threads = opts.threads or default_threads()

        mparams = llama_cpp.llama_model_default_params()
        #: where the layers go: as `bendi plan` places the model here, or opts.gpu_layers by hand
        self.placement = place_model(self.path, opts.ctx, max(1, opts.slots), opts.gpu_layers)
        self._tensor_split = apply_placement(mparams, self.placement)  # llama.cpp keeps the pointer
        apply_amx_guard(mparams)
        if self.placement.offloads:
            log.info("%s: %s", self.name, self.placement.describe())
        model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not model:
            raise InvalidModelFile(f"llama.cpp could not load {self.path} (corrupt or unsupported)")
        self._model = model
        self.vocab = Vocab(model)
        self.n_vocab = self.vocab.n_tokens
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
        self.n_batch = int(cparams.n_batch)
        self._embedding = EmbeddingContext(model, self.vocab, min(self.n_ctx_seq, 8192), self.n_embd,
                                           self.threads)

        self.bos_token = self.vocab.bos_token
        self.eos_token = self.vocab.eos_token
        self.add_bos = self.vocab.add_bos
        source = opts.template or gguf_template(model)
        self.template = (
            ChatTemplate(source, bos_token=self.bos_token, eos_token=self.eos_token)
            if source
            else None
        )
        self._users = _Users(self.name)
        self.tools = ModelTools(self.template)
        self._tool_tokens: dict[tuple[str, ...], frozenset[int]] = {}
        self._closed = False
        self._close_lock = threading.Lock()
        self._scheduler = Scheduler(
            name=self.name, ctx=ctx, vocab=self.vocab, slots=self.slots, n_batch=self.n_batch,
            queue_size=opts.queue_size, prompt_cache=opts.prompt_cache,
            tuner=ThreadTuner(self.threads) if opts.threads is None else None, threads=self.threads,
        )
        self.stats = self._scheduler.stats

    # -- text --------------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        with self._users.inside():
            return self.vocab.tokenize(text, add_special=add_special, parse_special=parse_special)

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        return self.vocab.token_bytes(token, special)

    def detokenize(self, tokens: list[int]) -> str:
        return self.vocab.detokenize(tokens)

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
        return self.tools.render(messages, request.tools, request.tool_choice)

    def _special_ids(self, texts: tuple[str, ...]) -> frozenset[int]:
        ids = self._tool_tokens.get(texts)
        if ids is None:
            ids = self._tool_tokens[texts] = special_ids(
                lambda t: self.tokenize(t, parse_special=True), texts)
        return ids

    def prompt_tokens(self, prompt: str) -> list[int]:
        return self.vocab.prompt_tokens(prompt)

    def _context_tokens(self, context: list[int]) -> list[int]:
        """An earlier exchange's token ids (Ollama's `context`), checked: an id outside the
        vocabulary would make llama.cpp read out of bounds."""
        n = self.vocab.n_tokens
        bad = next((t for t in context if not isinstance(t, int) or not 0 <= t < n), None)
        if bad is not None:
            raise InvalidRequest(f"context holds {bad!r}, which is not a token id of this model "
                                 f"(0-{n - 1}); send back the context an earlier answer returned",
                                 param="context")
        return list(context)

    # -- submitting ---------------------------------------------------------------------------

    def submit(self, request: ChatRequest, sink: Callable[[Event | BaseException], None]) -> Stream:
        """Queue a request; events go to `sink` from the scheduler thread. Raises bendi errors
        (bad template, prompt too long, queue full, model unloading) before anything is queued."""
        with self._users.inside():
            return self._submit(request, sink)

    def _submit(self, request: ChatRequest, sink: Callable[[Event | BaseException], None]) -> Stream:
        prompt = self.render_prompt(request)
        tokens = self.prompt_tokens(prompt)
        if request.context:
            tokens = self._context_tokens(request.context) + tokens
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
        stream = Stream(sink)
        think_open = request.prompt is None and prompt_opens_think(prompt)
        splitter = ReasoningSplitter(in_reasoning=think_open) if request.prompt is None else None
        tools = (self.tools.session(request.tools, request.tool_choice, think_open=think_open,
                                    parallel=request.parallel_tool_calls)
                 if request.prompt is None else None)
        seq = Sequence(
            request=request,
            stream=stream,
            tokens=tokens,
            max_tokens=max_tokens,
            sampler=make_sampler(self.vocab, request, tokens, self.n_ctx_seq,
                                 tools.grammar if tools else None),
            splitter=splitter,
            stops=StopMatcher(list(request.stop)),
            decoder=codecs.getincrementaldecoder("utf-8")(errors="replace"),
            tools=tools,
            tool_tokens=self._special_ids(tools.preserved) if tools else frozenset(),
        )
        self._scheduler.enqueue(seq)
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

    async def agenerate(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
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
        """Requests running or waiting, embeddings included."""
        return self._scheduler.busy + self._users.count

    @property
    def queued(self) -> int:
        return self._scheduler.queued

    def abort(self, error: BendiError) -> None:
        """End every running and waiting request with `error` (used when shutting down)."""
        self._scheduler.abort(error)

    # -- embeddings ---------------------------------------------------------------------------

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Mean-pooled, L2-normalised embeddings and the number of tokens read."""
        with self._users.inside():
            return self._embedding.embed(texts)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self, timeout: float = 10.0) -> None:
        """Stop taking requests, let running ones end (or cancel them after `timeout`), free memory.

        Nothing is freed while a caller is still inside the model: new calls are refused, a running
        embedding stops at its next input, and the handles go only after the last caller has left.
        """
        if not self._users.close(on_close=self._embedding.cancel):
            return
        self._scheduler.close(timeout)
        self._embedding.close()
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    def __enter__(self) -> LlamaModel:
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.close()


class _Users:
    """Who is inside a model's llama.cpp handles right now (tokenizing, submitting, embedding).

    `close` refuses newcomers and waits for the ones inside to leave, so no handle is freed under
    a running call: the keep-alive reaper once unloaded a model in the middle of an embedding.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition()
        self._count = 0
        self._closed = False

    @property
    def count(self) -> int:
        with self._cond:
            return self._count

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        with self._cond:
            if self._closed:
                raise ServerBusy(f"model {self._name} is unloading; retry the request")
            self._count += 1
        try:
            yield
        finally:
            with self._cond:
                self._count -= 1
                self._cond.notify_all()

    def close(self, on_close: Callable[[], None]) -> bool:
        """Refuse newcomers, call `on_close` (to cut long calls short), wait until nobody is inside.
        False when the model was already closed."""
        with self._cond:
            if self._closed:
                return False
            self._closed = True
        on_close()
        with self._cond:
            while self._count:
                self._cond.wait()
        return True
