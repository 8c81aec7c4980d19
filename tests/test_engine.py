"""The llama.cpp engine on the real bundled model."""

from __future__ import annotations

import json
import queue
import threading
from pathlib import Path

import pytest

from bendi.errors import ContextLengthExceeded, InvalidRequest, ServerBusy, TemplateError
from bendi.runtime.llama import LlamaModel, LoadOptions
from bendi.runtime.llama.scheduler import PROMPT_SCORE_CHUNK
from bendi.runtime.types import (
    ChatRequest,
    Done,
    PromptLogprobs,
    ReasoningDelta,
    SamplingParams,
    TextDelta,
)

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def collect(model: LlamaModel, request: ChatRequest) -> tuple[str, str, Done]:
    text, reasoning, done = [], [], None
    for event in model.generate(request):
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ReasoningDelta):
            reasoning.append(event.text)
        elif isinstance(event, Done):
            done = event
    assert done is not None
    return "".join(text), "".join(reasoning), done


def greedy(messages: list[dict[str, str]] = QUESTION, max_tokens: int = 48, **kw: object) -> ChatRequest:
    return ChatRequest(model="m", messages=messages, sampling=SamplingParams(temperature=0),
                       max_tokens=max_tokens, **kw)  # type: ignore[arg-type]


def test_greedy_output_equals_llama_cpp_python(bundled_path: Path) -> None:
    """Same model, messages and max_tokens at temperature 0: the same text as create_chat_completion.

    Both sides use the same attention kernel (flash attention off, llama-cpp-python's default),
    since a different kernel changes logits in the last bits and can flip a greedy choice.
    """
    from llama_cpp import Llama

    messages = [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "Name three rivers in Europe and one fact about each."},
    ]
    reference = Llama(str(bundled_path), n_ctx=2048, n_threads=2, verbose=False)
    expected = reference.create_chat_completion(messages=messages, temperature=0, max_tokens=96)
    del reference
    with LlamaModel(bundled_path, LoadOptions(ctx=2048, slots=2, flash_attn=False)) as model:
        text, _, done = collect(model, greedy(messages, 96))
    assert text == expected["choices"][0]["message"]["content"]
    assert done.usage.prompt_tokens == expected["usage"]["prompt_tokens"]
    assert done.usage.completion_tokens == expected["usage"]["completion_tokens"]
    assert done.finish_reason == expected["choices"][0]["finish_reason"]


def test_usage_and_finish_reasons(smollm: LlamaModel) -> None:
    text, _, done = collect(smollm, greedy(max_tokens=5))
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 5
    assert done.usage.prompt_tokens > 10
    assert text
    hello = [{"role": "user", "content": "Say hello."}]
    _, _, done = collect(smollm, greedy(hello, max_tokens=400))
    assert done.finish_reason == "stop"  # the model ends its answer with <|im_end|>
    assert done.usage.completion_tokens < 400


def test_stop_sequence_cuts_output(smollm: LlamaModel) -> None:
    full, _, _ = collect(smollm, greedy(max_tokens=30))
    word = full.split()[2]
    text, _, done = collect(smollm, greedy(max_tokens=30, stop=[word]))
    assert done.finish_reason == "stop"
    assert word not in text
    assert full.startswith(text)


def test_seeded_sampling_is_reproducible_alone_and_batched(smollm: LlamaModel) -> None:
    def request(seed: int) -> ChatRequest:
        return ChatRequest(
            model="m",
            messages=[{"role": "user", "content": f"Write a sentence about the number {seed}."}],
            sampling=SamplingParams(temperature=0.9, seed=seed),
            max_tokens=24,
        )

    alone = [collect(smollm, request(s))[0] for s in (1, 2)]
    results: dict[int, str] = {}

    def run(seed: int) -> None:
        results[seed] = collect(smollm, request(seed))[0]

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[1], results[2]] == alone
    assert alone[0] != alone[1]


def test_prompt_longer_than_context_is_refused(smollm: LlamaModel) -> None:
    long = [{"role": "user", "content": "word " * 5000}]
    with pytest.raises(ContextLengthExceeded, match="context is 2048 tokens"):
        collect(smollm, greedy(long))
    # the model still serves afterwards
    assert collect(smollm, greedy(max_tokens=3))[2].finish_reason == "length"


def test_cancel_frees_the_slot(smollm: LlamaModel) -> None:
    events = smollm.generate(greedy(max_tokens=1000))
    next(events)
    events.close()  # the consumer went away
    deadline = threading.Event()
    for _ in range(200):
        if smollm.busy == 0:
            break
        deadline.wait(0.01)
    assert smollm.busy == 0


def test_json_schema_response_format(smollm: LlamaModel) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    text, _, _ = collect(smollm, greedy(max_tokens=60, response_format=fmt))
    data = json.loads(text)
    assert isinstance(data["city"], str) and isinstance(data["population"], int)


def test_logprobs(smollm: LlamaModel) -> None:
    events = list(smollm.generate(greedy(max_tokens=3, logprobs=3)))
    deltas = [e for e in events if isinstance(e, TextDelta) and e.logprobs]
    assert deltas
    lp = deltas[0].logprobs[0]  # type: ignore[index]
    assert lp.logprob <= 0 and len(lp.top) == 3
    assert lp.top[0][1] >= lp.top[-1][1]
    assert lp.top[0][0] == lp.token  # greedy picks the most likely token


def test_prompt_logprobs_equal_a_full_forward_pass(bundled_path: Path) -> None:
    """Each prompt token scored by the logits before it (completions' echo with logprobs), equal to
    llama-cpp-python evaluating the whole prompt with logits for every position."""
    import numpy as np
    from llama_cpp import Llama

    prompt = "The capital of France is Paris. The capital of Germany is Berlin. " * 6
    reference = Llama(str(bundled_path), n_ctx=512, n_threads=2, logits_all=True, verbose=False)
    tokens = reference.tokenize(prompt.encode(), add_bos=True, special=True)
    assert len(tokens) > PROMPT_SCORE_CHUNK  # scored over more than one step
    reference.eval(tokens)
    logits = np.array(reference.scores[: len(tokens)], dtype=np.float64)
    del reference
    top = logits.max(axis=1, keepdims=True)
    logz = top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    expected = [logits[i, tokens[i + 1]] - logz[i, 0] for i in range(len(tokens) - 1)]

    with LlamaModel(bundled_path, LoadOptions(ctx=512, slots=2, flash_attn=False)) as model:
        warm = greedy(max_tokens=2)  # a cached prefix must not shorten the scored prompt
        warm.prompt, warm.messages = prompt, None
        collect(model, warm)
        events = list(model.generate(ChatRequest(model="m", prompt=prompt, max_tokens=0, logprobs=2,
                                                 sampling=SamplingParams(temperature=0), prompt_logprobs=True)))
    scored = [e for e in events if isinstance(e, PromptLogprobs)]
    assert len(scored) == 1 and not [e for e in events if isinstance(e, TextDelta) and e.text]
    done = events[-1]
    assert isinstance(done, Done) and done.finish_reason == "length"
    assert done.usage.prompt_tokens == len(tokens) and done.usage.completion_tokens == 0
    rest = scored[0].rest
    assert len(rest) == len(tokens) - 1 and all(len(t.top) == 2 for t in rest)
    assert np.allclose([t.logprob for t in rest], expected, atol=1e-3)
    assert scored[0].first + "".join(t.token for t in rest) == prompt


def test_context_continues_an_exchange(smollm: LlamaModel) -> None:
    """Ollama's `context`: the ids of a prompt and its answer, put before the next prompt."""
    first = greedy(max_tokens=4, return_context=True)
    first.prompt, first.messages = "Hello there,", None
    done = collect(smollm, first)[2]
    assert done.context and len(done.context) == done.usage.prompt_tokens + done.usage.completion_tokens
    second = greedy(max_tokens=4, return_context=True, context=done.context)
    second.prompt, second.messages = " and then", None
    again = collect(smollm, second)[2]
    assert again.context is not None and again.context[: len(done.context)] == done.context
    assert again.usage.prompt_tokens == len(done.context) + len(smollm.tokenize(" and then"))
    bad = greedy(max_tokens=1, context=[1, 10**9])
    with pytest.raises(InvalidRequest, match="context"):
        collect(smollm, bad)


def test_queue_bound(bundled_path: Path) -> None:
    with LlamaModel(bundled_path, LoadOptions(ctx=256, slots=1, queue_size=1)) as model:
        first = model.generate(greedy(max_tokens=200))
        next(first)
        queued: queue.SimpleQueue[object] = queue.SimpleQueue()
        model.submit(greedy(max_tokens=5), queued.put)  # waits: the only slot is taken
        with pytest.raises(ServerBusy, match="busy"):
            model.submit(greedy(max_tokens=5), queued.put)
        first.close()  # frees the slot; the queued request runs
        while not isinstance(event := queued.get(timeout=60), Done):
            pass
        assert event.finish_reason == "length"


def strip_template(src: Path, dst: Path) -> None:
    """Copy a GGUF with its chat template key renamed, i.e. a model without a template."""
    data = bytearray(src.read_bytes())
    key = b"tokenizer.chat_template"
    at = data.find(key)
    assert at > 0
    data[at : at + len(key)] = b"tokenizer.chat_templatX"
    dst.write_bytes(bytes(data))


def test_model_without_template(bundled_path: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.gguf"
    strip_template(bundled_path, bare)
    with LlamaModel(bare, LoadOptions(ctx=256, slots=1)) as model:
        with pytest.raises(TemplateError, match="no chat template"):
            collect(model, greedy())
        # raw completion needs no template
        text, _, done = collect(model, ChatRequest(model="m", prompt="The capital of France is",
                                                  sampling=SamplingParams(temperature=0), max_tokens=4))
        assert done.usage.completion_tokens == 4 and text
    template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
    with LlamaModel(bare, LoadOptions(ctx=256, slots=1, template=template)) as model:
        text, _, _ = collect(model, greedy(max_tokens=8))
        assert text


def test_reasoning_split_on_real_model(bundled_path: Path) -> None:
    """A template that opens a think block: everything up to </think> is reasoning, never content."""
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "<|im_start|>assistant\n<think>\n"
    )
    with LlamaModel(bundled_path, LoadOptions(ctx=512, slots=1, template=template)) as model:
        text, reasoning, done = collect(model, greedy(max_tokens=20, stop=["</think>"]))
        assert reasoning and text == ""
        # think=False drops the reasoning entirely
        text, reasoning, _ = collect(model, greedy(max_tokens=20, think=False))
        assert reasoning == "" and "<think>" not in text


def test_prompt_prefix_is_reused(bundled_path: Path) -> None:
    """A follow-up turn reuses the KV cells of the conversation so far; the output is unchanged."""
    with LlamaModel(bundled_path, LoadOptions(ctx=1024, slots=2)) as model:
        first, _, done1 = collect(model, greedy(QUESTION, 24))
        assert done1.usage.cached_tokens == 0
        again, _, done2 = collect(model, greedy(QUESTION, 24))
        assert again == first
        assert done2.usage.cached_tokens == done2.usage.prompt_tokens - 1
        follow_up = [*QUESTION, {"role": "assistant", "content": first},
                     {"role": "user", "content": "And of Italy?"}]
        _, _, done3 = collect(model, greedy(follow_up, 8))
        assert done3.usage.cached_tokens >= done1.usage.prompt_tokens
    with LlamaModel(bundled_path, LoadOptions(ctx=1024, slots=2)) as fresh:
        _, _, cold = collect(fresh, greedy(follow_up, 8))
        assert cold.usage.cached_tokens == 0


def test_character_cut_by_max_tokens_is_dropped_not_garbled(smollm: LlamaModel) -> None:
    """A multi-byte character split across tokens and cut by max_tokens leaves no U+FFFD."""
    prompt = "请用中文介绍一下长城的历史。"
    texts = [collect(smollm, greedy([{"role": "user", "content": prompt}], n))[0] for n in range(1, 12)]
    assert all("\ufffd" not in t for t in texts)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in t) for t in texts)


def test_batches_are_in_slot_order_and_slots_stay_packed(
    bundled_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """llama.cpp runs a batch over per-slot KV streams as one graph per run of consecutive
    sequence ids, so the engine must lay tokens out by slot, not by arrival.

    Here the second request lands in slot 1 (slot 0 holds a cached prompt worth keeping) and the
    third in slot 0 (it continues that prompt): arrival order 1, 0.
    """
    import llama_cpp

    seen: list[list[int]] = []
    real_decode = llama_cpp.llama_decode

    def recording_decode(ctx: object, batch: llama_cpp.llama_batch) -> int:
        seen.append([batch.seq_id[i][0] for i in range(batch.n_tokens)])
        return int(real_decode(ctx, batch))

    def raw(prompt: str, n: int) -> ChatRequest:
        return ChatRequest(model="m", prompt=prompt, sampling=SamplingParams(temperature=0), max_tokens=n)

    story = "Once upon a time, in a small village by the sea, there lived an old fisherman"
    with LlamaModel(bundled_path, LoadOptions(ctx=512, slots=2)) as model:
        collect(model, raw(story, 4))  # slot 0 now caches the story
        monkeypatch.setattr(llama_cpp, "llama_decode", recording_decode)
        first = model.generate(raw("Zebras and giraffes live on", 24))
        next(first)  # admitted and generating, in slot 1 (empty, nothing worth keeping lost)
        second = threading.Thread(target=lambda: collect(model, raw(story + " who", 8)))
        second.start()
        rest = list(first)
        second.join()
        monkeypatch.undo()
    assert any(isinstance(e, Done) for e in rest)
    both = [ids for ids in seen if set(ids) == {0, 1}]
    assert both, "the two requests never shared a step"
    assert all(ids == sorted(ids) for ids in both)
