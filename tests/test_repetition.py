"""Stopping degenerate repetition (clients that send no token limit, Open WebUI's tasks)."""

from __future__ import annotations

import itertools

import pytest

from bendi.runtime.repetition import RepetitionGuard
from bendi.runtime.types import ChatRequest, Done, SamplingParams, TextDelta


def first_loop(tokens: list[int], guard: RepetitionGuard | None = None) -> int | None:
    """How many tokens the guard took before it declared a loop (None: it never did)."""
    guard = guard or RepetitionGuard()
    for i, token in enumerate(tokens, 1):
        if guard.feed(token):
            return i
    return None


def test_text_that_does_not_repeat_goes_on() -> None:
    assert first_loop(list(range(5000))) is None
    # a table: rows that share their rule and most cells, but not all of them
    rows = [[7, 8, 9, i, 8, 9, i * 3 % 11, 10] for i in range(200)]
    assert first_loop([t for row in rows for t in row]) is None


@pytest.mark.parametrize("period", [1, 3, 17, 96])
def test_a_block_repeated_is_a_loop(period: int) -> None:
    block = list(range(1000, 1000 + period))
    prefix = list(range(50))
    found = first_loop(prefix + list(itertools.islice(itertools.cycle(block), 2000)))
    guard = RepetitionGuard()
    # found once the repeated tail spans min_span tokens and holds min_repeats copies
    span = max(guard.min_span, guard.min_repeats * period)
    assert found == len(prefix) + span


def test_a_block_longer_than_the_window_is_not_a_loop() -> None:
    block = list(range(1000, 1200))  # 200 tokens: a repeated paragraph, not a stuck model
    assert first_loop(block * 3) is None


def test_a_looping_generation_ends_before_its_limit(smollm: object) -> None:
    """A grammar that admits only one item again and again makes the real model loop: the
    generation ends there ("stop") instead of running to max_tokens."""
    schema = {"type": "array", "items": {"const": "la"}, "minItems": 150}
    request = ChatRequest(model="m", messages=[{"role": "user", "content": "Sing."}], max_tokens=400,
                          sampling=SamplingParams(temperature=0),
                          response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    events = list(smollm.generate(request))  # type: ignore[attr-defined]
    done = events[-1]
    assert isinstance(done, Done)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert done.finish_reason == "stop" and done.usage.completion_tokens < 400
    assert text.count('"la"') >= 4
