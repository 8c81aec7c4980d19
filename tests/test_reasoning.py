"""The DeepSeek-R1 reasoning split, on token streams built by hand."""

from __future__ import annotations

import pytest

from bendi.runtime.reasoning import CONTENT, REASONING, ReasoningSplitter, prompt_opens_think
from bendi.runtime.stops import StopMatcher


def run(pieces: list[str], in_reasoning: bool = False) -> tuple[str, str]:
    splitter = ReasoningSplitter(in_reasoning=in_reasoning)
    parts = [p for piece in pieces for p in splitter.feed(piece)] + splitter.flush()
    reasoning = "".join(t for k, t in parts if k == REASONING)
    content = "".join(t for k, t in parts if k == CONTENT)
    return reasoning, content


def test_explicit_tags() -> None:
    assert run(["<think>", "\nI should add.", "\n</think>", "\n\n", "4"]) == ("I should add.\n", "4")


@pytest.mark.parametrize("split", [1, 2, 3, 5])
def test_tags_split_across_tokens(split: int) -> None:
    text = "<think>\nplan it</think>\n\nThe answer is 42."
    pieces = [text[i : i + split] for i in range(0, len(text), split)]
    assert run(pieces) == ("plan it", "The answer is 42.")


def test_missing_open_tag_when_template_opened_the_block() -> None:
    # R1 distills often start straight with the reasoning because the prompt ends in <think>\n.
    assert run(["Okay, so", " the user", " asks.</th", "ink>\n\nParis."], in_reasoning=True) == (
        "Okay, so the user asks.",
        "Paris.",
    )


def test_repeated_open_tag_after_template_opened_block() -> None:
    assert run(["<think>", "\nhmm", "</think>", "ok"], in_reasoning=True) == ("hmm", "ok")


def test_no_reasoning_is_plain_content() -> None:
    assert run(["Hello", " <b>world</b>"]) == ("", "Hello <b>world</b>")


def test_content_starting_with_angle_bracket_is_not_swallowed() -> None:
    assert run(["<", "html>"]) == ("", "<html>")


def test_unterminated_reasoning_is_reported_as_reasoning() -> None:
    assert run(["<think>still thinking</th"]) == ("still thinking</th", "")


def test_close_tag_inside_answer_is_kept() -> None:
    assert run(["<think>a</think>b", " then </think> literal"]) == ("a", "b then </think> literal")


def test_prompt_opens_think() -> None:
    assert prompt_opens_think("<｜User｜>hi<｜Assistant｜><think>\n")
    assert not prompt_opens_think("<|im_start|>assistant\n")


@pytest.mark.parametrize("split", [1, 2, 4])
def test_stop_sequence_split_across_pieces(split: int) -> None:
    text = "one two STOP three"
    matcher = StopMatcher(["STOP"])
    out = "".join(matcher.feed(text[i : i + split]) for i in range(0, len(text), split))
    out += matcher.flush()
    assert out == "one two "
    assert matcher.stopped


def test_stop_prefix_that_is_not_a_stop_is_released() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("ST") == ""
    assert matcher.feed("AR") == "STAR"
    assert matcher.flush() == ""
    assert not matcher.stopped
