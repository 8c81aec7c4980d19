"""Per-sequence sampling: a llama.cpp sampler chain built from a request, and log-probabilities."""

from __future__ import annotations

import os
from typing import Any

import llama_cpp
import numpy as np

from bendi.errors import InvalidRequest
from bendi.runtime.grammar import grammar_for_response_format
from bendi.runtime.llama.vocab import Vocab
from bendi.runtime.types import ChatRequest, TokenLogprob


def make_sampler(vocab: Vocab, request: ChatRequest, prompt: list[int], n_ctx_seq: int,
                 grammar: str | None = None, primed: Any = None) -> Any:
    """The sampler chain for one request: grammar (`grammar`, else the response format's; or a
    grammar sampler already `primed`), penalties (primed with the prompt), then greedy or
    top-k/top-p/min-p/temperature with the request's seed. Free it with `free_sampler`."""
    s = request.sampling
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    grammar = grammar or grammar_for_response_format(request.response_format)
    if primed is not None:
        add(chain, primed)
    elif grammar is not None:
        g = llama_cpp.llama_sampler_init_grammar(vocab.ptr, grammar.encode(), b"root")
        if not g:
            llama_cpp.llama_sampler_free(chain)
            raise InvalidRequest("the response format could not be turned into a grammar",
                                 param="response_format")
        add(chain, g)
    if s.repeat_penalty != 1.0 or s.presence_penalty or s.frequency_penalty:
        last_n = s.repeat_last_n if s.repeat_last_n >= 0 else n_ctx_seq
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


def sample(sampler: Any, ctx: Any, batch_index: int) -> int:
    """The next token from the logits at `batch_index` of the last decode."""
    return int(llama_cpp.llama_sampler_sample(sampler, ctx, batch_index))


def free_sampler(sampler: Any) -> None:
    llama_cpp.llama_sampler_free(sampler)


def token_logprobs(ctx: Any, batch_index: int, vocab: Vocab, token: int, top_k: int) -> list[TokenLogprob]:
    """The chosen token's log-probability and the `top_k` most likely alternatives."""
    ptr = llama_cpp.llama_get_logits_ith(ctx, batch_index)
    logits = np.ctypeslib.as_array(ptr, shape=(vocab.n_tokens,)).astype(np.float64)
    m = logits.max()
    logz = m + np.log(np.exp(logits - m).sum())
    top: list[tuple[str, float, list[int]]] = []
    k = int(top_k or 0)
    if k > 0:
        for t in np.argpartition(-logits, k)[:k][np.argsort(-logits[np.argpartition(-logits, k)[:k]])]:
            b = vocab.token_bytes(int(t))
            top.append((b.decode("utf-8", "replace"), float(logits[t] - logz), list(b)))
    b = vocab.token_bytes(token)
    return [TokenLogprob(b.decode("utf-8", "replace"), float(logits[token] - logz), list(b), top)]
