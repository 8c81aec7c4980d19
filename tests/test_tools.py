"""Tool calling below the dialects: formats from real chat templates, the streaming parser on
each family's answers, prompts through the real templates, and the grammars in llama.cpp."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import pytest

from bendi.errors import InvalidRequest
from bendi.runtime.reasoning import CONTENT, REASONING, ReasoningSplitter
from bendi.runtime.template import ChatTemplate
from bendi.runtime.tools import ModelTools, ParsedCall, parse_tool_choice, parse_tools
from bendi.runtime.tools.formats import detect_format
from bendi.runtime.tools.grammar import tool_grammar
from bendi.runtime.tools.prompt import probe
from bendi.runtime.tools.spec import Function

FIXTURES = Path(__file__).parent / "fixtures"
TEMPLATES = FIXTURES / "templates"
CASES = json.loads((FIXTURES / "tool_outputs.json").read_text(encoding="utf-8"))["cases"]

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "get_current_temperature", "description": "Current temperature at a location.",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["location"]}}},
    {"type": "function", "function": {
        "name": "get_temperature_date", "description": "Temperature at a location on a date.",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string"}, "date": {"type": "string"}},
            "required": ["location", "date"]}}},
]

FAMILIES = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": "hermes",
    "Qwen-Qwen3-0.6B.jinja": "hermes",
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": "hermes",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja": "deepseek_v3",
    "deepseek-ai-DeepSeek-V3.1.jinja": "deepseek_v31",
    "meta-llama-Llama-3.1-8B-Instruct.jinja": "llama3",
    "meta-llama-Llama-3.2-3B-Instruct.jinja": "llama3",
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": "mistral",
    "unsloth-mistral-Devstral-Small-2507.jinja": "mistral",
    "google-gemma-2-2b-it.jinja": "generic",
    "microsoft-Phi-3.5-mini-instruct.jinja": "generic",
}

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@functools.cache
def template(name: str) -> ChatTemplate:
    return ChatTemplate((TEMPLATES / name).read_text(encoding="utf-8"), bos_token="<s>", eos_token="</s>")


def run(name: str, output: str, chunks: list[int], think_open: bool = False) -> tuple[str, str, list[ParsedCall]]:
    """Stream `output` in pieces of the given sizes through the reasoning split and the parser."""
    session = ModelTools(template(name)).session(TOOLS, "auto")
    assert session is not None
    splitter = ReasoningSplitter(in_reasoning=think_open)
    content: list[str] = []
    reasoning: list[str] = []
    calls: list[ParsedCall] = []

    def take(parts: list[tuple[str, str]]) -> None:
        for kind, text in parts:
            if kind == REASONING:
                reasoning.append(text)
            else:
                assert kind == CONTENT
                for piece in session.feed(text):
                    (content if isinstance(piece, str) else calls).append(piece)  # type: ignore[arg-type]

    i, k = 0, 0
    while i < len(output):
        size = chunks[k % len(chunks)]
        take(splitter.feed(output[i:i + size]))
        i, k = i + size, k + 1
    take(splitter.flush())
    for piece in session.flush():
        (content if isinstance(piece, str) else calls).append(piece)  # type: ignore[arg-type]
    return "".join(content), "".join(reasoning), calls


@pytest.mark.parametrize("name,family", sorted(FAMILIES.items()))
def test_format_is_detected_from_the_template(name: str, family: str) -> None:
    assert detect_format((TEMPLATES / name).read_text(encoding="utf-8")).name == family


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_parser_reads_each_family_however_the_text_is_split(case: dict[str, Any]) -> None:
    rng = random.Random(7)
    splits = [[len(case["output"])], [1], [2], [3, 1, 5], [rng.randint(1, 9) for _ in range(50)]]
    for chunks in splits:
        content, reasoning, calls = run(case["template"], case["output"], chunks, case.get("think_open", False))
        assert content.strip() == case["content"].strip(), chunks
        assert reasoning.strip() == case["reasoning"].strip()
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [tuple(c) for c in case["calls"]]
        assert [c.index for c in calls] == list(range(len(calls)))
        assert len({c.id for c in calls}) == len(calls)


def test_text_before_a_call_streams_before_the_call_is_complete() -> None:
    session = ModelTools(template("Qwen-Qwen2.5-7B-Instruct.jinja")).session(TOOLS, "auto")
    assert session is not None
    assert session.feed("Checking the weather now. <tool") == ["Checking the weather now. "]
    assert session.feed('_call>\n{"name": "get_current_temperature", "arguments": {"location": "X"') == []
    pieces = session.feed("}}\n</tool_call>")
    assert len(pieces) == 1 and isinstance(pieces[0], ParsedCall)
    assert session.finish_reason("stop") == "tool_calls"
    assert session.finish_reason("length") == "length"


def test_mistral_ids_are_kept_or_made_nine_characters() -> None:
    case = next(c for c in CASES if c["id"] == "mistral-nemo")
    _, _, calls = run(case["template"], case["output"], [4])
    assert calls[0].id == "abcdEF123"
    assert len(calls[1].id) == 9 and calls[1].id.isalnum()


def test_tool_choice_forms() -> None:
    functions = parse_tools(TOOLS)
    assert parse_tool_choice(None, functions).mode == "auto"
    assert parse_tool_choice(None, []).mode == "none"
    assert parse_tool_choice("required", functions).forced
    named = parse_tool_choice({"type": "function", "function": {"name": "get_temperature_date"}}, functions)
    assert (named.mode, named.name) == ("named", "get_temperature_date")
    responses_style = parse_tool_choice({"type": "function", "name": "get_current_temperature"}, functions)
    assert responses_style.name == "get_current_temperature"
    for bad in ("always", {"type": "function", "function": {"name": "nope"}}, 3):
        with pytest.raises(InvalidRequest) as err:
            parse_tool_choice(bad, functions)
        assert err.value.param == "tool_choice"
    with pytest.raises(InvalidRequest, match="at least one tool"):
        parse_tool_choice("required", [])


@pytest.mark.parametrize("tools,message", [
    ([{"type": "code_interpreter"}], "only tools of type 'function'"),
    ([{"type": "function", "function": {"name": "has space"}}], "letters, digits"),
    ([{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "a"}}], "twice"),
    ([{"type": "function", "function": {"name": "a", "parameters": "x"}}], "JSON schema"),
])
def test_bad_tools_are_refused_with_the_entry_named(tools: list[Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as err:
        parse_tools(tools)
    assert err.value.param == "tools"


def test_no_session_without_tools_or_with_tool_choice_none() -> None:
    tools = ModelTools(template("Qwen-Qwen2.5-7B-Instruct.jinja"))
    assert tools.session(None, None) is None
    assert tools.session(TOOLS, "none") is None


# -- the prompt ---------------------------------------------------------------------------------

HISTORY: list[dict[str, Any]] = [
    {"role": "user", "content": "Temperature in Paris and in Lyon on 2024-07-14?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1a2b3c", "type": "function",
         "function": {"name": "get_current_temperature", "arguments": '{"location": "Paris"}'}},
        {"id": "call_4d5e6f", "type": "function",
         "function": {"name": "get_temperature_date", "arguments": {"location": "Lyon", "date": "2024-07-14"}}}]},
    {"role": "tool", "tool_call_id": "call_1a2b3c", "content": "RESULT-PARIS 22.5"},
    {"role": "tool", "tool_call_id": "call_4d5e6f", "content": "RESULT-LYON 25.1"},
]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_calls_and_results_go_back_through_every_template(name: str) -> None:
    tools = ModelTools(template(name))
    prompt = tools.render(HISTORY, TOOLS, "auto")
    assert "RESULT-PARIS 22.5" in prompt and "RESULT-LYON 25.1" in prompt
    assert "get_temperature_date" in prompt  # offered, by the template or by bendi's system section
    assert prompt.count("Lyon") >= 2  # the question and the call's arguments
    assert '\\"location\\"' not in prompt  # arguments are never JSON text inside JSON text
    if tools.format.name == "mistral":
        assert "call_1a2b3c" not in prompt  # mapped to the 9 characters the template accepts


def test_probe_tells_templates_apart() -> None:
    qwen = probe(template("Qwen-Qwen2.5-7B-Instruct.jinja"))
    assert (qwen.renders_tools, qwen.native_calls, qwen.object_arguments) == (True, True, True)
    r1 = probe(template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"))
    assert (r1.renders_tools, r1.native_calls) == (False, True)
    chatml = probe(ChatTemplate(CHATML))
    assert (chatml.renders_tools, chatml.native_calls) == (False, False)


def test_a_template_without_tools_gets_them_described_in_the_call_syntax() -> None:
    prompt = ModelTools(ChatTemplate(CHATML)).render(HISTORY[:1], TOOLS, "auto")
    assert prompt.startswith("<|im_start|>system\n# Tools")
    assert "<tool_call>" in prompt and '"get_temperature_date"' in prompt
    r1 = ModelTools(template("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")).render(HISTORY[:1], TOOLS, "auto")
    assert "<｜tool▁call▁begin｜>function<｜tool▁sep｜>" in r1.split("<｜User｜>")[0]


def test_tool_choice_none_offers_nothing_but_history_still_renders() -> None:
    prompt = ModelTools(ChatTemplate(CHATML)).render(HISTORY, TOOLS, "none")
    assert "# Tools" not in prompt
    assert "<tool_call>" in prompt and "RESULT-LYON 25.1" in prompt  # past calls, as text


def test_malformed_history_call_is_a_clear_error() -> None:
    bad = [{"role": "user", "content": "x"},
           {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": "{oops"}}]}]
    with pytest.raises(InvalidRequest, match=r"tool_calls\[0\].function.arguments is not JSON"):
        ModelTools(ChatTemplate(CHATML)).render(bad, TOOLS, "auto")


# -- grammars in llama.cpp ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(FAMILIES) - {"Qwen-Qwen3-0.6B.jinja", "microsoft-Phi-3.5-mini-instruct.jinja"}))
def test_grammar_accepts_what_the_parser_reads_and_rejects_a_wrong_call(name: str, smollm: Any) -> None:
    from bendi.runtime.tools.constrain import grammar_sampler, prime

    fmt = ModelTools(template(name)).format
    functions = parse_tools(TOOLS)
    good = fmt.render([("get_temperature_date", '{"location": "Lyon", "date": "2024-07-14"}')])
    wrong_name = fmt.render([("get_weather", '{"location": "Lyon"}')])
    missing = fmt.render([("get_temperature_date", '{"location": "Lyon"}')])
    for lazy in (False, True):
        gbnf = tool_grammar(fmt, functions, parallel=True, lazy=lazy)
        for text, ok in ((good, True), (wrong_name, False), (missing, False)):
            sampler = grammar_sampler(smollm.vocab.ptr, gbnf)
            assert sampler is not None, gbnf
            try:
                accepted = prime(sampler, smollm.tokenize(text, parse_special=True))
            finally:
                import llama_cpp

                llama_cpp.llama_sampler_free(sampler)
            assert accepted is ok, (fmt.name, lazy, text)


def test_grammar_narrows_to_a_named_function() -> None:
    fmt = detect_format(None)
    gbnf = tool_grammar(fmt, [Function("only_me", "", {"type": "object", "properties": {}})], parallel=False)
    assert '\\"only_me\\"' in gbnf and "get_" not in gbnf


def test_a_repeated_call_ends_the_answer() -> None:
    session = ModelTools(template("Qwen-Qwen2.5-7B-Instruct.jinja")).session(TOOLS, "required")
    assert session is not None
    call = '<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": "Paris"}}\n</tool_call>\n'
    assert len(session.feed(call)) == 1 and not session.over
    assert session.feed(call) == [] and session.over
    assert session.finish_reason("stop") == "tool_calls"
