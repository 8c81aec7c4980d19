"""Per-sequence sampling: a llama.cpp sampler chain built from a request, and log-probabilities."""

from __future__ import annotations

import inspect
import math
import os
from typing import Any

import llama_cpp
import numpy as np

from bendi.errors import EngineError, InvalidRequest
from bendi.runtime.grammar import grammar_for_response_format
from bendi.runtime.llama.vocab import Vocab
from bendi.runtime.types import ChatRequest, SamplingParams, TokenLogprob

#: what a C float holds; larger values would arrive in llama.cpp as infinity
_FLOAT_MAX = 3.0e38


def check_sampling(s: SamplingParams) -> None:
    """Refuse sampling values llama.cpp cannot take (InvalidRequest naming the field): of the wrong
    type (a model's stored defaults are not validated by any request model), not finite, beyond a
    C float, or negative where only a magnitude makes sense. Integers beyond what their
    C type holds are clamped where they are used (a top_k above the vocabulary is no limit)."""
    floats = {"temperature": s.temperature, "top_p": s.top_p, "min_p": s.min_p,
              "repeat_penalty": s.repeat_penalty, "presence_penalty": s.presence_penalty,
              "frequency_penalty": s.frequency_penalty}
    for name in ("top_k", "repeat_last_n", "seed"):
        value = getattr(s, name)
        if not (value is None and name == "seed") and (isinstance(value, bool) or not isinstance(value, int)):
            raise InvalidRequest(f"{name} must be an integer, not {value!r}", param=name)
    for name, value in floats.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidRequest(f"{name} must be a number, not {value!r}", param=name)
        if not math.isfinite(value) or abs(value) > _FLOAT_MAX:
            raise InvalidRequest(f"{name} must be a finite number, not {value}", param=name)
    for name in ("temperature", "top_p", "min_p"):
        if floats[name] < 0:
            raise InvalidRequest(f"{name} must not be negative", param=name)
    if s.repeat_penalty <= 0:
        raise InvalidRequest("repeat_penalty must be greater than 0 (1 turns it off)", param="repeat_penalty")


def make_sampler(vocab: Vocab, request: ChatRequest, prompt: list[int], n_ctx_seq: int,
                 grammar: str | None = None, primed: Any = None) -> Any:
    """The sampler chain for one request: grammar (`grammar`, else the response format's; or a
    grammar sampler already `primed`), penalties (primed with the prompt), then greedy or
    top-k/top-p/min-p/temperature with the request's seed. Free it with `free_sampler`."""
    s = request.sampling
    check_sampling(s)
    grammar = grammar or grammar_for_response_format(request.response_format)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    try:
        if primed is not None:
            add(chain, primed)
        elif grammar is not None:
            g = llama_cpp.llama_sampler_init_grammar(vocab.ptr, grammar.encode(), b"root")
            if not g:
                raise InvalidRequest("the response format could not be turned into a grammar",
                                     param="response_format")
            add(chain, g)
        if s.repeat_penalty != 1.0 or s.presence_penalty or s.frequency_penalty:
            # -1 (Ollama) means the whole context; no window is longer than the context
            last_n = n_ctx_seq if s.repeat_last_n < 0 else min(s.repeat_last_n, n_ctx_seq)
            pen = init_penalties(vocab, last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty)
            add(chain, pen)
            for tok in prompt[-last_n:] if last_n else []:
                llama_cpp.llama_sampler_accept(pen, tok)
        if s.temperature <= 0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if 0 < s.top_k < vocab.n_tokens:
            add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        if 0 < s.top_p < 1:
            add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        if s.min_p > 0:
            add(chain, llama_cpp.llama_sampler_init_min_p(min(s.min_p, 1.0), 1))
        add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little")
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    except BaseException:
        llama_cpp.llama_sampler_free(chain)
        raise
    return chain


def init_penalties(vocab: Vocab, last_n: int, repeat: float, frequency: float, presence: float) -> Any:
    """llama.cpp's penalties sampler, whatever the installed binding's arity.

    Its C signature changed across llama.cpp versions and llama-cpp-python releases: 9 arguments
    (vocabulary size, EOS and newline ids, ..., penalize_nl, ignore_eos), then 4 (last_n and the
    three penalties), and llama-cpp-python 0.3.36 ships 5 (the vocabulary size first). Calling it
    with the wrong count was a TypeError on every request that set a penalty.
    """
    fn = llama_cpp.llama_sampler_init_penalties
    arity = len(getattr(fn, "argtypes", None) or ()) or len(inspect.signature(fn).parameters)
    if arity == 4:
        return fn(last_n, repeat, frequency, presence)
    if arity == 5:
        return fn(vocab.n_tokens, last_n, repeat, frequency, presence)
    if arity == 9:
        nl = vocab.tokenize("\n", parse_special=False)
        return fn(vocab.n_tokens, llama_cpp.llama_vocab_eos(vocab.ptr), nl[0] if nl else -1, last_n,
                  repeat, frequency, presence, False, False)
    raise EngineError(f"llama_sampler_init_penalties takes {arity} arguments, which bendi does not know")


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
