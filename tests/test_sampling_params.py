"""Every sampling parameter docs/api.md lists, in both dialects, on the real model through the real
server and the official clients. Assertions are about behaviour, never exact words (greedy output
differs between CPUs): a strong penalty breaks the loop the bundled model falls into, a window of
0 turns the penalty off, top_k 1 / a tiny top_p / min_p 1 leave only the most likely token,
a seed makes sampled text reproducible, stop and length limits end the text where they say.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest
from tests.server_util import ServerProcess

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
# At temperature 0 the bundled model answers this with a phrase it repeats until the limit.
LOOPING = [{"role": "user", "content": "What is the capital of France?"}]
TOKENS = 48


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("sampling"), "--slots", "4", "--ctx", "512").wait_ready()
    yield proc
    proc.stop()




def repeats(text: str) -> int:
    """Repeated word trigrams: how much the text loops."""
    words = text.split()
    trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
    return len(trigrams) - len(set(trigrams))


def openai_text(oai: openai.OpenAI, **params: Any) -> str:
    extra = {k: params.pop(k) for k in ("repeat_penalty", "top_k", "min_p") if k in params}
    out = oai.chat.completions.create(model=MODEL, messages=LOOPING, max_tokens=TOKENS,  # type: ignore[arg-type]
                                      extra_body=extra or None, **{"temperature": 0, **params})
    return out.choices[0].message.content or ""


def ollama_text(oll: ollama.Client, **options: Any) -> str:
    out = oll.chat(model=MODEL, messages=LOOPING, options={"temperature": 0, "num_predict": TOKENS, **options})
    return out.message.content or ""


@pytest.fixture(scope="module")
def greedy(oai: openai.OpenAI, oll: ollama.Client) -> dict[str, str]:
    texts = {"openai": openai_text(oai), "ollama": ollama_text(oll)}
    assert texts["openai"] == texts["ollama"]  # one engine behind both dialects
    assert repeats(texts["openai"]) >= 5, texts  # the loop the penalties must break
    return texts


@pytest.mark.parametrize("penalty", [{"repeat_penalty": 1.8}, {"frequency_penalty": 1.5},
                                     {"presence_penalty": 1.5}])
def test_penalties_break_the_loop_in_both_dialects(oai: openai.OpenAI, oll: ollama.Client,
                                                   greedy: dict[str, str], penalty: dict[str, float]) -> None:
    for dialect, text in (("openai", openai_text(oai, **penalty)), ("ollama", ollama_text(oll, **penalty))):
        assert text, dialect
        assert repeats(text) < repeats(greedy[dialect]) / 2, (dialect, penalty, text)


def test_a_penalty_window_of_zero_turns_the_penalty_off(oll: ollama.Client, greedy: dict[str, str]) -> None:
    assert ollama_text(oll, repeat_penalty=1.8, repeat_last_n=0) == greedy["ollama"]
    assert ollama_text(oll, repeat_penalty=1.8, repeat_last_n=-1) != greedy["ollama"]  # -1: the context


def test_filters_that_leave_one_token_are_greedy(oai: openai.OpenAI, oll: ollama.Client,
                                                 greedy: dict[str, str]) -> None:
    hot = {"temperature": 1.5, "seed": 3}
    for only_one in ({"top_k": 1}, {"top_p": 0.0001, "top_k": 0}, {"min_p": 1.0, "top_k": 0}):
        assert openai_text(oai, **hot, **only_one) == greedy["openai"], only_one
        assert ollama_text(oll, **hot, **only_one) == greedy["ollama"], only_one


def test_seeds_make_sampled_text_reproducible(oai: openai.OpenAI, oll: ollama.Client) -> None:
    for dialect, run in (("openai", lambda seed: openai_text(oai, temperature=1.0, top_p=0.95, seed=seed)),
                         ("ollama", lambda seed: ollama_text(oll, temperature=1.0, top_p=0.95, seed=seed))):
        assert run(11) == run(11), dialect
        assert len({run(seed) for seed in (11, 12, 13, 14)}) > 1, dialect  # the seed is used


def test_stop_and_length_limits(oai: openai.OpenAI, oll: ollama.Client, greedy: dict[str, str]) -> None:
    words = greedy["openai"].split()
    stop = words[3]
    chat = oai.chat.completions.create(model=MODEL, messages=LOOPING, temperature=0,  # type: ignore[arg-type]
                                       max_tokens=TOKENS, stop=[stop])
    assert stop not in (chat.choices[0].message.content or "") and chat.choices[0].finish_reason == "stop"
    answer = oll.chat(model=MODEL, messages=LOOPING, options={"temperature": 0, "num_predict": TOKENS, "stop": [stop]})
    assert stop not in (answer.message.content or "") and answer.done_reason == "stop"
    short = oai.chat.completions.create(model=MODEL, messages=LOOPING, temperature=0,  # type: ignore[arg-type]
                                        max_completion_tokens=5)
    assert short.usage is not None and short.usage.completion_tokens <= 5
    assert short.choices[0].finish_reason == "length"
    brief = oll.generate(model=MODEL, prompt="Count to twenty.", options={"num_predict": 5, "temperature": 0})
    assert brief.eval_count is not None and brief.eval_count <= 5 and brief.done_reason == "length"


def test_top_logprobs_in_the_openai_dialect(oai: openai.OpenAI) -> None:
    out = oai.chat.completions.create(model=MODEL, messages=LOOPING, temperature=0,  # type: ignore[arg-type]
                                      max_tokens=4, logprobs=True, top_logprobs=3)
    content = out.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content and all(len(t.top_logprobs) == 3 for t in content)
    assert all(t.logprob <= 0 and t.top_logprobs[0].logprob >= t.logprob for t in content)


def test_num_ctx_is_clamped_to_the_model_and_reused(server: ServerProcess, oll: ollama.Client) -> None:
    info = httpx.post(server.url + "/api/show", json={"model": MODEL}).json()["model_info"]
    native = int(info["llama.context_length"])
    for _ in range(2):
        oll.generate(model=MODEL, prompt="hi", options={"num_ctx": native * 4, "num_predict": 1})
        ps = {m["model"]: m for m in httpx.get(server.url + "/api/ps").json()["models"]}
        assert ps[MODEL]["context_length"] == native


def test_cli_run_with_a_repeat_penalty() -> None:
    from click.testing import CliRunner

    from bendi.cli.main import cli

    result = CliRunner().invoke(cli, ["run", MODEL, "What is the capital of France?", "--temperature", "0",
                                      "--repeat-penalty", "1.8", "--max-tokens", str(TOKENS)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() and repeats(result.output) < 5
