"""What real clients send and expect: the Responses API through the official client, requests in
the shapes Open WebUI sends (recorded from its source: model listing on both connections, chat,
its background tasks with no token limit, embeddings under its default model name), the default
model, `kb:` models, usage chunks, CORS and the request log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import ollama
import openai
import pytest
from tests.server_util import ServerProcess

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
ORIGIN = "http://localhost:3000"
LIMIT = 64  # BENDI_MAX_TOKENS for this server: what a request with no limit may generate


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("clients-home"), "--slots", "4", "--ctx", "2048",
                         "--model", MODEL, "--demo",
                         env={"BENDI_CORS_ORIGINS": ORIGIN, "BENDI_MAX_TOKENS": str(LIMIT)}).wait_ready(300)
    yield proc
    proc.stop()



# -- the Responses API ------------------------------------------------------------------------

def test_responses_text_in_and_out(oai: openai.OpenAI) -> None:
    r = oai.responses.create(model=MODEL, input="Say hello.", instructions="Answer in English.",
                             max_output_tokens=16, temperature=0)
    assert r.status in ("completed", "incomplete") and r.output_text
    assert r.usage is not None and r.usage.output_tokens > 0 and r.usage.input_tokens > 0
    if r.status == "incomplete":
        assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"


def test_responses_stream_events(oai: openai.OpenAI) -> None:
    kinds: list[str] = []
    text, final = "", None
    for event in oai.responses.create(model=MODEL, input=[{"role": "user", "content": "Say hello."}],
                                      max_output_tokens=16, temperature=0, stream=True):
        kinds.append(event.type)
        if event.type == "response.output_text.delta":
            text += event.delta
        if event.type in ("response.completed", "response.incomplete"):
            final = event.response
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.output_item.added" in kinds and "response.output_text.delta" in kinds
    assert final is not None and final.output_text == text


def test_responses_tools(oai: openai.OpenAI) -> None:
    tool = {"type": "function", "name": "get_weather", "description": "Weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
    r = oai.responses.create(model=MODEL, input="Weather in Paris?", tools=[tool], tool_choice="required",  # type: ignore[arg-type]
                             max_output_tokens=80, temperature=0)
    calls = [item for item in r.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), tool["parameters"])
    follow = oai.responses.create(model=MODEL, max_output_tokens=8, temperature=0, input=[  # type: ignore[arg-type]
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "18 degrees"}])
    assert follow.output_text


def test_responses_unsupported_is_a_clear_400(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=MODEL, input="x", previous_response_id="resp_123")
    assert err.value.body["param"] == "previous_response_id"  # type: ignore[index]


# -- compatibility points ---------------------------------------------------------------------

def test_model_omitted_uses_the_default(server: ServerProcess) -> None:
    r = httpx.post(server.url + "/v1/chat/completions", timeout=300,
                   json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    assert r.status_code == 200 and r.json()["model"] == MODEL


def test_usage_is_null_on_every_chunk_but_the_last(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=6, stream=True, stream_options={"include_usage": True}))
    assert all(c.usage is None for c in chunks[:-1]) and chunks[-1].usage is not None
    raw = httpx.post(str(oai.base_url) + "chat/completions", timeout=300, json={
        "model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True}}).text
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert all("usage" in e and e["usage"] is None for e in events[:-1]) and events[-1]["usage"]


def test_completions_echo_scores_the_prompt(oai: openai.OpenAI) -> None:
    """echo with logprobs: the prompt's tokens come first in `logprobs` (the first unscored), and
    text_offset counts from the start of the echoed text, streamed or not."""
    prompt = "The capital of France is"
    r = oai.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=2, max_tokens=3, temperature=0)
    choice, usage = r.choices[0], r.usage
    lp = choice.logprobs
    assert lp is not None and usage is not None and lp.tokens and lp.text_offset and lp.token_logprobs
    assert choice.text.startswith(prompt)
    assert len(lp.tokens) == usage.prompt_tokens + usage.completion_tokens
    assert lp.token_logprobs[0] is None and all(v is not None and v <= 0 for v in lp.token_logprobs[1:])
    assert "".join(lp.tokens[: usage.prompt_tokens]) == prompt
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    scored = oai.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=0, max_tokens=0)
    assert scored.choices[0].text == prompt and scored.usage and scored.usage.completion_tokens == 0
    assert scored.choices[0].logprobs and scored.choices[0].logprobs.token_logprobs == lp.token_logprobs[: usage.prompt_tokens]
    tokens: list[str] = []
    offsets: list[int] = []
    text = ""
    for chunk in oai.completions.create(model=MODEL, prompt=prompt, echo=True, logprobs=1, max_tokens=3,
                                        temperature=0, stream=True):
        for c in chunk.choices:
            text += c.text
            if c.logprobs and c.logprobs.tokens:
                tokens += c.logprobs.tokens
                offsets += c.logprobs.text_offset or []
    assert text == choice.text and tokens == lp.tokens and offsets == lp.text_offset


def test_ollama_generate_context_continues(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url)
    first = client.generate(model=MODEL, prompt="My name is Ada.", options={"num_predict": 4, "temperature": 0})
    assert first.context and first.prompt_eval_count and first.eval_count is not None
    assert len(first.context) == first.prompt_eval_count + first.eval_count
    second = client.generate(model=MODEL, prompt="What is my name?", context=first.context,
                             options={"num_predict": 4, "temperature": 0})
    assert second.context and second.context[: len(first.context)] == list(first.context)
    assert second.prompt_eval_count and second.prompt_eval_count > len(first.context)
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=MODEL, prompt="x", context=[-5])
    assert err.value.status_code == 400 and "context" in err.value.error


def test_kb_models_are_listed_and_answer_under_their_name(oai: openai.OpenAI, server: ServerProcess) -> None:
    assert "kb:demo" in {m.id for m in oai.models.list().data}
    assert "kb:demo" in {m.model for m in ollama.Client(host=server.url).list().models}
    r = oai.chat.completions.create(model="kb:demo", max_tokens=16, temperature=0,
                                    messages=[{"role": "user", "content": "How often are the drive pulley bearings greased?"}])
    assert r.model == "kb:demo"


def test_embedding_aliases_are_accepted_and_listed(oai: openai.OpenAI, server: ServerProcess) -> None:
    name = "sentence-transformers/all-MiniLM-L6-v2"  # Open WebUI's default
    assert name in {m.id for m in oai.models.list().data}
    v = oai.embeddings.create(model=name, input=["hello"]).data[0].embedding
    assert len(v) == 384
    ollama_vecs = ollama.Client(host=server.url).embed(model=name, input=["hello"]).embeddings
    assert len(ollama_vecs[0]) == 384


def test_cors_allow_list(server: ServerProcess) -> None:
    pre = httpx.options(server.url + "/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.get(server.url + "/v1/models", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_requests_are_logged_one_line_each(server: ServerProcess) -> None:
    httpx.post(server.url + "/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False,
                                                   "options": {"num_predict": 3}}, timeout=300)
    lines = [line for line in server.output().splitlines() if "POST /api/generate 200" in line]
    assert lines and f"{MODEL} " in lines[-1] and " tokens " in lines[-1] and lines[-1].endswith("s")
    assert "chat in the browser: http://127.0.0.1:" in server.output()


# -- Open WebUI --------------------------------------------------------------------------------

#: The requests Open WebUI makes against an Ollama and an OpenAI connection, in its shapes.
TITLE_PROMPT = ("### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
                "### Output:\nJSON format: { \"title\": \"your concise title here\" }\n"
                "### Chat History:\n<chat_history>\nUSER: What is the capital of France?\n"
                "ASSISTANT: Paris.\n</chat_history>")
FOLLOW_UPS = ("### Task:\nSuggest 3-5 relevant follow-up questions the user might ask next.\n"
              "### Output:\nJSON format: { \"follow_ups\": [\"Question 1?\", \"Question 2?\"] }\n"
              "### Chat History:\n<chat_history>\nUSER: What is the capital of France?\n"
              "ASSISTANT: Paris.\n</chat_history>")


def test_open_webui_ollama_connection(server: ServerProcess) -> None:
    base = server.url
    assert httpx.get(base + "/api/version").json()["version"]
    names = [m["name"] for m in httpx.get(base + "/api/tags").json()["models"]]
    assert MODEL in names and "kb:demo" in names
    # chat: streamed, with the options Open WebUI fills from the model's advanced parameters
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "stream": True, "options": {"temperature": 0.8}}
    with httpx.stream("POST", base + "/api/chat", json=body, timeout=300) as r:
        parts = [json.loads(line) for line in r.iter_lines() if line.strip()]
    assert parts[-1]["done"] is True and parts[-1]["eval_count"] <= LIMIT
    # background tasks: no token limit at all, not streamed
    for prompt in (TITLE_PROMPT, FOLLOW_UPS):
        task = httpx.post(base + "/api/chat", timeout=300, json={
            "model": MODEL, "messages": [{"role": "user", "content": prompt}], "stream": False}).json()
        assert task["done"] is True and task["eval_count"] <= LIMIT
    emb = httpx.post(base + "/api/embed", timeout=300, json={
        "model": "sentence-transformers/all-MiniLM-L6-v2", "input": ["chunk one", "chunk two"]}).json()
    assert len(emb["embeddings"]) == 2


def test_open_webui_openai_connection(server: ServerProcess) -> None:
    base = server.url + "/v1"
    ids = [m["id"] for m in httpx.get(base + "/models", headers={"Authorization": "Bearer unused"}).json()["data"]]
    assert MODEL in ids and "kb:demo" in ids
    body: dict[str, Any] = {"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
                            "messages": [{"role": "system", "content": "You are helpful."},
                                         {"role": "user", "content": "What is the capital of France?"}]}
    raw = httpx.post(base + "/chat/completions", json=body, timeout=300).text
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert events[-1]["usage"]["completion_tokens"] <= LIMIT
    task = httpx.post(base + "/chat/completions", timeout=300, json={
        "model": MODEL, "stream": False, "messages": [{"role": "user", "content": TITLE_PROMPT}]}).json()
    assert task["usage"]["completion_tokens"] <= LIMIT
    emb = httpx.post(base + "/embeddings", timeout=300, json={
        "model": "sentence-transformers/all-MiniLM-L6-v2", "input": ["chunk one"]}).json()
    assert len(emb["data"][0]["embedding"]) == 384


def test_ollama_show_modelfile_and_ps_memory(server: ServerProcess) -> None:
    client = ollama.Client(host=server.url)
    client.create(model="tuned", from_=MODEL, parameters={"temperature": 0.3, "stop": ["<|im_end|>"]})
    shown = client.show("tuned")
    assert shown.modelfile is not None and shown.modelfile.splitlines()[1].startswith("FROM ")
    assert 'TEMPLATE """' in shown.modelfile and "PARAMETER temperature 0.3" in shown.modelfile
    assert "PARAMETER stop" in shown.modelfile and shown.parameters and "temperature" in shown.parameters
    client.generate(model=MODEL, prompt="Hi", options={"num_predict": 2})
    loaded = {m.model: m for m in client.ps().models}
    file_size = next(m.size for m in client.list().models if m.model == MODEL)
    assert loaded[MODEL].size > file_size  # weights and the KV cache of every slot
