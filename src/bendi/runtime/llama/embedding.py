"""Embeddings: a second llama.cpp context of the same model, created on first use, mean-pooled."""

from __future__ import annotations

import threading
from typing import Any

import llama_cpp
import numpy as np

from bendi.errors import ContextLengthExceeded, EngineError, InvalidRequest
from bendi.runtime.llama.vocab import Vocab


class EmbeddingContext:
    """Mean-pooled, L2-normalised embeddings of one model; one call at a time."""

    def __init__(self, model: Any, vocab: Vocab, n_ctx: int, n_embd: int, threads: int) -> None:
        self._model = model
        self._vocab = vocab
        self._n_ctx = n_ctx
        self._n_embd = n_embd
        self._threads = threads
        self._ctx: Any = None
        self._lock = threading.Lock()

    def _context(self) -> Any:
        if self._ctx is None:
            cparams = llama_cpp.llama_context_default_params()
            cparams.n_ctx = self._n_ctx
            cparams.n_batch = cparams.n_ctx
            cparams.n_ubatch = cparams.n_ctx
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
            ctx = self._context()
            n_ctx = llama_cpp.llama_n_ctx(ctx)
            batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
            out: list[list[float]] = []
            total = 0
            try:
                for text in texts:
                    tokens = self._vocab.tokenize(text, add_special=True, parse_special=False)
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
                    vec = np.ctypeslib.as_array(ptr, shape=(self._n_embd,)).astype(np.float64)
                    norm = float(np.linalg.norm(vec)) or 1.0
                    out.append((vec / norm).tolist())
            finally:
                llama_cpp.llama_batch_free(batch)
            return out, total

    def close(self) -> None:
        with self._lock:
            if self._ctx is not None:
                llama_cpp.llama_free(self._ctx)
                self._ctx = None
