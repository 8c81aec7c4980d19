"""Tool calling end to end on the bundled model: the real server, judged by the official `openai`
and `ollama` clients, by LangChain (langchain-openai and langchain-ollama) and LiteLLM, streaming
and not.

The bundled SmolLM2-135M knows no tools: its ChatML template gets them described in the system
prompt, and with tool_choice `required` or a named function the grammar makes it write a valid
call. These tests assert shapes and validity, never which words the model picked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import ollama
import openai
import pytest
from tests.server_util import ServerProcess

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"},
                           "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone.",
        "parameters": {"type": "object", "properties": {"timezone": {"type": "string"}},
                       "required": ["timezone"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}


def valid(name: str, arguments: str | dict[str, Any]) -> dict[str, Any]:
    args = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
    jsonschema.validate(args, SCHEMAS[name])
    return args


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("tools-home"), "--slots", "4", "--ctx", "2048").wait_ready()
    yield proc
    proc.stop()




# -- OpenAI ------------------------------------------------------------------------------------

@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_openai_forced_call_is_valid(oai: openai.OpenAI, choice: Any) -> None:
    r = oai.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice=choice,
                                    temperature=0, max_tokens=120)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    calls = c.message.tool_calls
    assert calls and all(call.type == "function" and call.id for call in calls)
    for call in calls:
        valid(call.function.name, call.function.arguments)
    if isinstance(choice, dict):
        assert [call.function.name for call in calls] == ["get_weather"]


def test_openai_parallel_tool_calls_false_makes_one_call(oai: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "What are the weather and the time in Paris, Tokyo and Lima?"}]
    r = oai.chat.completions.create(model=MODEL, messages=ask, tools=[WEATHER, TIME], tool_choice="required",
                                    parallel_tool_calls=False, temperature=0, max_tokens=200)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.tool_calls is not None
    assert len(c.message.tool_calls) == 1
    valid(c.message.tool_calls[0].function.name, c.message.tool_calls[0].function.arguments)


def test_openai_streamed_call_matches_the_shape_clients_accumulate(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                         temperature=0, max_tokens=120, stream=True,
                                         stream_options={"include_usage": True})
    calls: dict[int, dict[str, str]] = {}
    finish, usage_seen, nulls = None, None, 0
    for chunk in stream:
        if chunk.usage is not None:
            usage_seen = chunk.usage
        else:
            nulls += 1
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                slot = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = d.id or slot["id"]
                if d.function is not None:
                    slot["name"] += d.function.name or ""
                    slot["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls" and usage_seen is not None and nulls > 0
    assert calls and sorted(calls) == list(range(len(calls)))
    for call in calls.values():
        assert call["id"] and call["name"] == "get_weather"
        valid(call["name"], call["arguments"])


def test_openai_tool_result_goes_back_through_the_template(oai: openai.OpenAI) -> None:
    first = oai.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required",
                                        temperature=0, max_tokens=120)
    message = first.choices[0].message
    assert message.tool_calls
    call = message.tool_calls[0]
    history = [*ASK, message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"}]
    second = oai.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], tool_choice="none",
                                         temperature=0, max_tokens=30)
    c = second.choices[0]
    assert c.message.tool_calls is None and c.message.content
    assert c.finish_reason in ("stop", "length")
    plain = oai.chat.completions.create(model=MODEL, messages=ASK, temperature=0, max_tokens=1)
    assert second.usage is not None and plain.usage is not None
    assert second.usage.prompt_tokens > plain.usage.prompt_tokens + 10  # the call and its result


def test_openai_auto_answers_text_or_a_valid_call(oai: openai.OpenAI) -> None:
    """With auto the model decides; whatever it does, a call that reaches the client is valid."""
    for prompt in ("Hi!", "What is the weather in Paris? Use the tool."):
        r = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                        tools=[WEATHER], temperature=0, max_tokens=80)
        c = r.choices[0]
        for call in c.message.tool_calls or []:
            valid(call.function.name, call.function.arguments)
        assert (c.finish_reason == "tool_calls") == bool(c.message.tool_calls)


def test_bad_tools_get_openai_errors(oai: openai.OpenAI) -> None:
    for kwargs, param in (({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools"),
                          ({"tools": [WEATHER], "tool_choice": {"type": "function",
                                                                "function": {"name": "nope"}}}, "tool_choice")):
        with pytest.raises(openai.BadRequestError) as err:
            oai.chat.completions.create(model=MODEL, messages=ASK, max_tokens=5, **kwargs)
        assert err.value.body["param"] == param  # type: ignore[index]


# -- Ollama ------------------------------------------------------------------------------------

def test_ollama_tools_arguments_are_an_object(oll: ollama.Client) -> None:
    r = oll.chat(model=MODEL, messages=ASK, tools=[WEATHER], options={"temperature": 0, "num_predict": 120},
                 stream=False, format=None)
    # Ollama has no tool_choice: the model decides; what reaches the client is always valid
    for call in r.message.tool_calls or []:
        assert isinstance(call.function.arguments, dict)
        valid(call.function.name, call.function.arguments)


def test_ollama_forced_call_streamed_and_not(server: ServerProcess, oll: ollama.Client) -> None:
    # tool_choice is a bendi extension on /api/chat (Ollama clients pass it through `extra` fields)
    import httpx

    body = {"model": MODEL, "messages": ASK, "tools": [WEATHER], "tool_choice": "required",
            "options": {"temperature": 0, "num_predict": 120}}
    whole = httpx.post(server.url + "/api/chat", json={**body, "stream": False}, timeout=300).json()
    calls = whole["message"]["tool_calls"]
    assert calls and whole["done"] is True
    for call in calls:
        valid(call["function"]["name"], call["function"]["arguments"])
    lines = []
    with httpx.stream("POST", server.url + "/api/chat", json={**body, "stream": True}, timeout=300) as resp:
        for line in resp.iter_lines():
            if line.strip():
                lines.append(json.loads(line))
    streamed = [c for part in lines for c in part["message"].get("tool_calls") or []]
    assert lines[-1]["done"] is True and streamed
    assert [c["function"]["name"] for c in streamed] == [c["function"]["name"] for c in calls]
    ollama.ChatResponse.model_validate(whole)
    for part in lines:
        ollama.ChatResponse.model_validate(part)


def test_ollama_tool_result_in_history(oll: ollama.Client) -> None:
    history = [*ASK,
               {"role": "assistant", "content": "", "tool_calls": [
                   {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}}]},
               {"role": "tool", "content": "18 degrees", "tool_name": "get_weather"}]
    r = oll.chat(model=MODEL, messages=history, options={"temperature": 0, "num_predict": 20})
    assert r.message.content and r.done


# -- LangChain ---------------------------------------------------------------------------------

def test_langchain_bind_tools_and_structured_output(server: ServerProcess) -> None:
    from langchain_core.messages import ToolMessage
    from langchain_openai import ChatOpenAI
    from pydantic import BaseModel, Field

    llm = ChatOpenAI(model=MODEL, base_url=server.url + "/v1", api_key="unused", temperature=0,  # type: ignore[arg-type]
                     max_tokens=120, max_retries=0)

    class GetWeather(BaseModel):
        """Current weather in a city."""

        city: str = Field(description="City name")

    bound = llm.bind_tools([GetWeather], tool_choice="GetWeather")
    msg = bound.invoke("What is the weather in Paris?")
    assert msg.tool_calls and msg.tool_calls[0]["name"] == "GetWeather"
    assert isinstance(msg.tool_calls[0]["args"]["city"], str)
    follow = bound.invoke(["What is the weather in Paris?", msg,
                           ToolMessage("18 degrees", tool_call_id=msg.tool_calls[0]["id"])])
    assert follow.tool_calls  # still forced: the tool result went through the template

    chunks = list(bound.stream("What is the weather in Berlin?"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.tool_calls and merged.tool_calls[0]["name"] == "GetWeather"  # type: ignore[attr-defined]

    class Person(BaseModel):
        """A person mentioned in the text."""

        name: str
        age: int

    structured = llm.with_structured_output(Person, method="function_calling")
    person = structured.invoke("Alice is 30 years old.")
    assert isinstance(person, Person) and isinstance(person.age, int)


def test_langchain_ollama_tools_and_history(server: ServerProcess) -> None:
    """ChatOllama (the Ollama dialect) sends no tool_choice: the model decides. Whatever it does
    comes back in LangChain's shapes, and a conversation holding a call and its result (LangChain
    sends arguments as an object, the result as role "tool") goes back through the template."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model=MODEL, base_url=server.url, temperature=0, num_predict=80)
    bound = llm.bind_tools([WEATHER])
    msg = bound.invoke("What is the weather in Paris?")
    assert isinstance(msg, AIMessage)
    for call in msg.tool_calls:
        valid(call["name"], call["args"])
    assert msg.tool_calls or msg.content
    history = [HumanMessage("What is the weather in Paris?"),
               AIMessage("", tool_calls=[{"name": "get_weather", "id": "call_1",
                                          "args": {"city": "Paris", "unit": "celsius"}}]),
               ToolMessage("18 degrees", tool_call_id="call_1")]
    follow = bound.invoke(history)
    assert isinstance(follow, AIMessage) and (follow.content or follow.tool_calls)
    for call in follow.tool_calls:
        valid(call["name"], call["args"])


# -- LiteLLM -----------------------------------------------------------------------------------

def test_litellm_tools_in_both_dialects(server: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """LiteLLM's `openai/` provider talks to /v1, its `ollama_chat/` provider to /api/chat."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # its price table, not fetched
    import litellm

    common: dict[str, Any] = {"messages": ASK, "tools": [WEATHER], "temperature": 0, "max_tokens": 120}
    openai_side = {"model": f"openai/{MODEL}", "api_base": server.url + "/v1", "api_key": "unused",
                   "tool_choice": "required"}
    # LiteLLM drops tool_choice for Ollama (Ollama has none); bendi's extension goes as an extra field
    ollama_side = {"model": f"ollama_chat/{MODEL}", "api_base": server.url,
                   "extra_body": {"tool_choice": "required"}}
    for side in (openai_side, ollama_side):
        whole = litellm.completion(**side, **common)
        chunks = list(litellm.completion(**side, **common, stream=True))
        streamed = litellm.stream_chunk_builder(chunks, messages=ASK)
        for answer in (whole, streamed):
            choice = answer.choices[0]
            assert choice.finish_reason == "tool_calls", side["model"]
            calls = choice.message.tool_calls
            assert calls and calls[0].function.name == "get_weather"
            valid("get_weather", calls[0].function.arguments)
