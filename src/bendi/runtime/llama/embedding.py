"""Embeddings: a second llama.cpp context of the same model, created on first use, mean-pooled."""

from __future__ import annotations

import threading
from typing import Any

import llama_cpp
import numpy as np

from bendi.errors import ContextLengthExceeded, EngineError, InvalidRequest, ServerBusy
from bendi.runtime.llama.vocab import Vocab


class EmbeddingContext:
    """Mean-pooled, L2-normalised embeddings of one model; one call at a time.

    Every input is tokenized and measured before anything is decoded: llama.cpp aborts the whole
    process (GGML_ASSERT) when a batch holds more tokens than the context's n_batch or n_ubatch,
    and it pads n_ctx beyond what was asked, so the limit is the smallest of the three.
    `cancel()` ends a running call between two inputs, so unloading never waits for a long list.
    """

    def __init__(self, model: Any, vocab: Vocab, n_ctx: int, n_embd: int, threads: int) -> None:
        self._model = model
        self._vocab = vocab
        self._n_ctx = max(1, n_ctx)
        self._n_embd = n_embd
        self._threads = threads
        self._ctx: Any = None
        self._lock = threading.Lock()
        self._cancelled = threading.Event()

    @property
    def max_tokens(self) -> int:
        """The longest input, in tokens, one decode can take."""
        if self._ctx is None:
            return self._n_ctx
        return int(min(self._n_ctx, llama_cpp.llama_n_ctx(self._ctx), llama_cpp.llama_n_batch(self._ctx),
                       llama_cpp.llama_n_ubatch(self._ctx)))

    def _context(self) -> Any:
        if self._ctx is None:
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_ctx = self._n_ctx
            cparams.n_batch = self._n_ctx
            cparams.n_ubatch = self._n_ctx
            cparams.n_seq_max = 1
            cparams.embeddings = True
            cparams.pooling_type = llama_cpp.LLAMA_POOLING_TYPE_MEAN
            cparams.n_threads = self._threads
            cparams.n_threads_batch = self._threads
            ctx = llama_cpp.llama_init_from_model(self._model, cparams)
            if not ctx:
                raise EngineError("llama.cpp could not create an embedding context")
            self._ctx = ctx
        return self._ctx

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """One vector per text and the number of tokens read."""
        with self._lock:
            if self._cancelled.is_set():
                raise ServerBusy("the model was unloaded; retry the request")
            ctx = self._context()
            limit = self.max_tokens
            inputs = [self._vocab.tokenize(text, add_special=True, parse_special=False) for text in texts]
            for i, tokens in enumerate(inputs):
                param = "input" if len(inputs) == 1 else f"input.{i}"
                if not tokens:
                    raise InvalidRequest("cannot embed an empty string", param=param)
                if len(tokens) > limit:
                    raise ContextLengthExceeded(
                        f"input {i} is {len(tokens)} tokens; this model embeds at most {limit} tokens at "
                        "a time (load it with a larger context, or split the text)",
                        param=param,
                    )
            batch = llama_cpp.llama_batch_init(limit, 0, 1)
            out: list[list[float]] = []
            try:
                for tokens in inputs:
                    if self._cancelled.is_set():
                        raise ServerBusy("the model was unloaded while embedding; retry the request")
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
                    if not ptr:
                        raise EngineError("llama.cpp returned no embedding")
                    vec = np.ctypeslib.as_array(ptr, shape=(self._n_embd,)).astype(np.float64)
                    norm = float(np.linalg.norm(vec)) or 1.0
                    out.append((vec / norm).tolist())
            finally:
                llama_cpp.llama_batch_free(batch)
            return out, sum(len(t) for t in inputs)

    def cancel(self) -> None:
        """End a running `embed` at its next input and refuse new ones (the model is unloading)."""
        self._cancelled.set()

    def close(self) -> None:
        """Free the context, after the call in progress (if any) has ended."""
        self.cancel()
        with self._lock:
            if self._ctx is not None:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
