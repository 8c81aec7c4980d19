"""The llama.cpp side of tool grammars: a grammar sampler primed with text the model already
wrote, and the token ids of special tokens a call format needs to see in the output.

Priming checks every token against the grammar before accepting it: llama.cpp's grammar throws a
C++ exception when it accepts a token it cannot match, which would abort the whole process from
inside ctypes. A prime the grammar rejects means the model opened a call in a shape the grammar
does not allow; the sequence then goes on without it, and the parser decides.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import Any

import llama_cpp


def grammar_sampler(vocab: Any, grammar: str) -> Any | None:
    """A llama.cpp grammar sampler for `grammar` (root rule `root`); None if it does not parse."""
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    return sampler or None


def accepts(sampler: Any, token: int) -> bool:
    """Whether the grammar in `sampler` can take `token` next (checked without accepting it)."""
    data = (llama_cpp.llama_token_data * 1)()
    data[0].id = token  # type: ignore[assignment]
    data[0].logit = 0.0
    data[0].p = 0.0
    candidates = llama_cpp.llama_token_data_array(data=data, size=1, selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
    return not math.isinf(data[0].logit)


def prime(sampler: Any, tokens: list[int]) -> bool:
    """Feed `tokens` to the grammar one by one, each checked first; False at the first it rejects."""
    for token in tokens:
        if not accepts(sampler, token):
            return False
        llama_cpp.llama_sampler_accept(sampler, token)
    return True


def special_ids(tokenize: Callable[[str], list[int]], texts: tuple[str, ...]) -> frozenset[int]:
    """Ids of the texts that are single (special) tokens in this vocabulary."""
    ids = set()
    for text in texts:
        tokens = tokenize(text)
        if len(tokens) == 1:
            ids.add(tokens[0])
    return frozenset(ids)
