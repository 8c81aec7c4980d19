"""Requests that used to kill the server process in llama.cpp, sent to the real server the way an
attacker (or a careless client) would: each test ends by checking that the server still serves.

- An embedding longer than the batch the embedding context was created with
  (GGML_ASSERT n_tokens_all <= n_batch) after a small `num_ctx` load.
- Embeddings racing the keep-alive reaper: the model was freed under a running embedding (segfault).
- Embeddings, generations and unloads interleaved from several threads.
- `bendi rm` of a model the server has loaded: the server unloads it, the CLI says so.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.server_util import ServerProcess

from bendi.errors import ContextLengthExceeded
from bendi.runtime.llama import LlamaModel, LoadOptions

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
HELLO = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("engine-races"), "--slots", "4", "--ctx", "512").wait_ready()
    yield proc
    proc.stop()


def alive(server: ServerProcess) -> None:
    """The process is running and still answers a real generation."""
    assert server.proc.poll() is None, server.output()[-3000:]
    res = httpx.post(server.url + "/api/generate", timeout=120,
                     json={"model": MODEL, "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
    assert res.status_code == 200, res.text


def test_embedding_longer_than_a_tiny_context_is_a_400(bundled_path: Path) -> None:
    """llama.cpp pads a 16-token context to 256 but the batch stays 16: the embedding path measured
    inputs against the padded size and the process died in GGML_ASSERT(n_tokens_all <= n_batch)."""
    with LlamaModel(bundled_path, LoadOptions(ctx=16, slots=1), name=MODEL) as model:
        for words in (20, 40, 200):  # more than the 16-token batch, less than the padded context
            with pytest.raises(ContextLengthExceeded) as refused:
                model.embed(["ok", " ".join(["word"] * words)])
            assert refused.value.param == "input.1"
        vectors, tokens = model.embed(["hi"])
        assert len(vectors) == 1 and 0 < tokens <= 16


def test_an_embedding_after_a_tiny_num_ctx_load(server: ServerProcess) -> None:
    """Over HTTP: a model loaded with num_ctx 16, then longer embeddings; never a dead server."""
    load = httpx.post(server.url + "/api/generate", timeout=120,
                      json={"model": MODEL, "prompt": "", "options": {"num_ctx": 16}})
    assert load.status_code == 200, load.text
    assert {m["context_length"] for m in httpx.get(server.url + "/api/ps").json()["models"]} == {16}
    for words in (20, 40, 200):
        text = " ".join(["word"] * words)
        # a request that names no context gets the default one, not the tiny one left loaded
        res = httpx.post(server.url + "/api/embed", json={"model": MODEL, "input": text}, timeout=120)
        assert res.status_code == 200, res.text[:300]
        res = httpx.post(server.url + "/v1/embeddings", json={"model": MODEL, "input": [text]}, timeout=120)
        assert res.status_code == 200, res.text[:300]
    assert {m["context_length"] for m in httpx.get(server.url + "/api/ps").json()["models"]} == {512}
    alive(server)


def test_embeddings_racing_the_keep_alive_reaper(server: ServerProcess) -> None:
    # each request takes seconds, the reaper looks every second: it finds the model expired mid-way
    inputs = [f"sentence number {i} about nothing in particular" for i in range(200)]

    def embed(_: int) -> int:
        res = httpx.post(server.url + "/api/embed", timeout=300,
                         json={"model": MODEL, "input": inputs, "keep_alive": 0.001})
        assert res.status_code == 200, res.text
        assert len(res.json()["embeddings"]) == len(inputs)
        return res.status_code

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert list(pool.map(embed, range(4))) == [200] * 4
    alive(server)


def test_embeddings_generations_and_unloads_interleaved(server: ServerProcess) -> None:
    def embed(i: int) -> int:
        return httpx.post(server.url + "/api/embed", timeout=300, json={
            "model": MODEL, "input": [f"text {i} {j}" for j in range(40)], "keep_alive": 0.01}).status_code

    def generate(i: int) -> int:
        return httpx.post(server.url + "/v1/chat/completions", timeout=300, json={
            "model": MODEL, "messages": HELLO, "max_tokens": 8, "seed": i}).status_code

    def unload(_: int) -> int:
        return httpx.post(server.url + "/api/generate", timeout=300,
                          json={"model": MODEL, "prompt": "", "keep_alive": 0}).status_code

    def reload_small(_: int) -> int:
        return httpx.post(server.url + "/api/chat", timeout=300, json={
            "model": MODEL, "messages": HELLO, "stream": False,
            "options": {"num_ctx": 64, "num_predict": 4}}).status_code

    work = [embed, generate, unload, reload_small] * 5
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda pair: pair[1](pair[0]), enumerate(work)))
    assert codes == [200] * len(work), codes
    alive(server)


def test_bendi_rm_of_a_model_the_server_has_loaded(server: ServerProcess) -> None:
    assert httpx.post(server.url + "/api/copy", json={"source": MODEL, "destination": "doomed:1"}).status_code == 200
    res = httpx.post(server.url + "/api/generate", timeout=120,
                     json={"model": "doomed:1", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
    assert res.status_code == 200, res.text
    assert "doomed:1" in [m["name"] for m in httpx.get(server.url + "/api/ps").json()["models"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENDI_")}
    env.update(BENDI_HOME=str(server.home), BENDI_PORT=str(server.port))
    cli = subprocess.run([sys.executable, "-m", "bendi", "rm", "doomed:1"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert "deleted doomed:1" in cli.stdout and "running server" in cli.stdout, cli.stdout
    assert "has unloaded it" in cli.stdout, cli.stdout
    assert "doomed:1" not in [m["name"] for m in httpx.get(server.url + "/api/ps").json()["models"]]
    # without a server there, nothing about one is said
    env["BENDI_PORT"] = "1"
    assert httpx.post(server.url + "/api/copy", json={"source": MODEL, "destination": "doomed:2"}).status_code == 200
    quiet = subprocess.run([sys.executable, "-m", "bendi", "rm", "doomed:2"], env=env, capture_output=True,
                           text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stdout.strip() == "deleted doomed:2", quiet.stdout + quiet.stderr
    alive(server)
