"""The vLLM engine behind the real `bendi serve`, with the stand-in vLLM (tests/fake_vllm) in place
of the real one: both dialects with the official clients, the reasoning split, embeddings, a
crash during serving (503 + Retry-After, then recovery), a stop that drains, keep-alive unloading.
tests/test_vllm_real.py runs the same API against the real vLLM when it is installed."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import psutil
import pytest
from safetensors.numpy import save_file
from tests.processes import alive, wait_until
from tests.server_util import ServerProcess

from bendi.config import Settings
from bendi.core.context import RequestContext
from bendi.services import Services
from bendi.store import ModelStore

FAKE = Path(__file__).parent / "fake_vllm"
NAME = "tiny-hf:latest"
pytestmark = pytest.mark.slow


def make_hf_dir(root: Path) -> Path:
    """A minimal Hugging Face layout directory: config, tokenizer, safetensors weights."""
    d = root / "tiny-hf"
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64,
        "max_position_embeddings": 2048, "torch_dtype": "bfloat16"}))
    (d / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "WordLevel",
                                                                             "vocab": {"a": 0}}}))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}<think>\n"}))
    save_file({"model.embed_tokens.weight": np.zeros((8, 64), dtype=np.float32)}, str(d / "model.safetensors"))
    return d




class FakeVllmServer:
    """`bendi serve` whose vLLM is the stand-in, with its launch recorded for inspection."""

    def __init__(self, tmp: Path, setup: Callable[[Path], None] | None = None, **env: str) -> None:
        home = tmp / "home"
        ModelStore(home / "models").import_dir(make_hf_dir(tmp), NAME)
        if setup is not None:
            setup(home)
        self.record = tmp / "launch.json"
        full_env = {"BENDI_VLLM_PYTHON": sys.executable, "BENDI_KEEP_ALIVE": "-1",
                    "PYTHONPATH": os.pathsep.join([str(FAKE), os.environ.get("PYTHONPATH", "")]),
                    "FAKE_VLLM_RECORD": str(self.record), "FAKE_VLLM_REASONING": "1", **env}
        self.proc = ServerProcess(home, env=full_env).wait_ready()
        self.url = self.proc.url

    def vllm_pid(self) -> int:
        return int(json.loads(self.record.read_text())["pid"])


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeVllmServer]:
    """One server for the tests that leave it serving (starting one takes seconds)."""
    server = FakeVllmServer(tmp_path_factory.mktemp("fake-vllm"))
    yield server
    server.proc.stop()


def test_both_dialects_and_reasoning(fake: FakeVllmServer) -> None:
    oai = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)
    chat = oai.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "hello there world"}],
                                       max_tokens=20)
    assert chat.choices[0].message.content.split() == ["hello", "there", "world"]
    assert getattr(chat.choices[0].message, "reasoning_content", "").split() == ["thinking", "first"]
    assert chat.usage.prompt_tokens == 3 and chat.choices[0].finish_reason == "stop"
    launched = json.loads(fake.record.read_text())
    argv = launched["argv"]
    assert argv[argv.index("--served-model-name") + 1] == NAME
    assert argv[argv.index("--reasoning-parser") + 1] == "deepseek_r1"
    assert launched["env"]["HF_HUB_OFFLINE"] == "1" and launched["env"]["VLLM_HOST_IP"] == "127.0.0.1"

    pieces = [c.choices[0].delta.content or "" for c in oai.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "one two three four"}], max_tokens=2, stream=True)
        if c.choices]
    assert "".join(pieces).split() == ["one", "two"]
    done = oai.completions.create(model=NAME, prompt="raw text here", max_tokens=10)
    assert done.choices[0].text.split() == ["raw", "text", "here"]

    client = ollama.Client(host=fake.url)
    reply = client.chat(model=NAME, messages=[{"role": "user", "content": "ni hao"}], think=True)
    assert reply.message.content.split() == ["ni", "hao"] and reply.message.thinking.split() == ["thinking", "first"]
    streamed = "".join(part.message.content or "" for part in client.chat(
        model=NAME, messages=[{"role": "user", "content": "a b c"}], stream=True))
    assert streamed.split() == ["a", "b", "c"]
    generated = client.generate(model=NAME, prompt="x y", raw=True)
    assert generated.response.split() == ["x", "y"]
    assert NAME in [m.model for m in client.ps().models]


def test_knowledge_base_answers_and_metrics_on_vllm(fake: FakeVllmServer) -> None:
    """A kb answer fits its sources with the vLLM server's tokenizer; the generation is observed."""
    url = fake.url
    assert httpx.post(url + "/kb", json={"name": "gpu"}, timeout=60).status_code == 201
    doc = "# Pumps\n\nThe coolant pump must be inspected every 500 operating hours.\n"
    up = httpx.post(url + "/kb/gpu/documents", files=[("file", ("pumps.md", doc.encode(), "text/markdown"))],
                    timeout=120)
    assert up.status_code in (200, 201, 207) and up.json()["results"][0]["status"] == "added"
    answer = httpx.post(url + "/kb/gpu/ask", timeout=120, json={
        "question": "How often must the coolant pump be inspected?", "model": NAME, "stream": False}).json()
    assert answer["model"] == NAME and answer["found"] and answer["sources"][0]["document"] == "pumps.md"
    assert answer["answer"] and answer["finish_reason"] == "stop"
    metrics = httpx.get(url + "/metrics", timeout=30).text
    assert any(line.startswith("bendi_output_tokens") and f'model="{NAME}"' in line
               for line in metrics.splitlines())


def test_keys_quotas_and_audit_on_vllm(tmp_path: Path) -> None:
    """Users, quotas and audit see a vLLM-backed model like any other: they sit in the core
    generation service, above the engines."""
    keys: dict[str, str] = {}

    def accounts(home: Path) -> None:
        cli = RequestContext.local("cli test")
        services = Services.build(Settings(home=home))
        d = services.auth.directory
        d.add_user("boss", role="admin", password="boss-password", actor=cli)
        d.add_user("li", password="li-password", actor=cli)
        keys["admin"] = d.create_key("boss", routes=("chat", "embeddings", "kb", "admin"), actor=cli)[1]
        keys["li"] = d.create_key("li", name="rpm", actor=cli)[1]
        d.set_quota(key=keys["li"].split("_")[1], requests_per_minute=2, actor=cli)
        services.close()

    fake = FakeVllmServer(tmp_path, setup=accounts)
    try:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=fake.url + "/v1", api_key="nope", max_retries=0).chat.completions.create(
                model=NAME, messages=[{"role": "user", "content": "hi"}])
        li = openai.OpenAI(base_url=fake.url + "/v1", api_key=keys["li"], max_retries=0)
        reply = li.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "one two"}])
        assert reply.choices[0].message.content.split() == ["one", "two"]
        ollama.Client(host=fake.url, headers={"Authorization": f"Bearer {keys['li']}"}).chat(
            model=NAME, messages=[{"role": "user", "content": "three"}])
        with pytest.raises(openai.RateLimitError) as limited:
            li.chat.completions.create(model=NAME, messages=[{"role": "user", "content": "four"}])
        assert int(limited.value.response.headers["retry-after"]) >= 1
        usage = httpx.get(fake.url + "/admin/usage?by=key", timeout=30,
                          headers={"Authorization": f"Bearer {keys['admin']}"}).json()
        assert {u["key_id"]: u for u in usage["usage"]}[keys["li"].split("_")[1]]["requests"] == 2
    finally:
        assert fake.proc.stop() == 0
    services = Services.build(Settings(home=tmp_path / "home"))
    try:
        assert services.audit.verify().ok
        records = services.audit.query(limit=None)
        chats = [r for r in records if r["kind"] == "chat" and r["status"] == "ok"]
        assert len(chats) == 2 and {r["model"] for r in chats} == {NAME}
        assert all(r["user"] == "li" and r["completion_tokens"] > 0 for r in chats)
        assert {401, 429} <= {r["code"] for r in records if r["status"] == "refused"}
    finally:
        services.close()


def test_embeddings_start_a_pooling_server(fake: FakeVllmServer) -> None:
    oai = openai.OpenAI(base_url=fake.url + "/v1", api_key="x", max_retries=0)
    vectors = oai.embeddings.create(model=NAME, input=["first text", "second"])
    assert len(vectors.data) == 2 and abs(np.linalg.norm(vectors.data[0].embedding) - 1) < 1e-6
    assert vectors.data[0].embedding != vectors.data[1].embedding
    embed = ollama.Client(host=fake.url).embed(model=NAME, input="first text")
    assert np.allclose(embed.embeddings[0], vectors.data[0].embedding)
    pooling = json.loads(fake.record.read_text())["argv"]  # the last launch was the pooling one
    assert pooling[pooling.index("--runner") + 1] == "pooling"
    assert pooling[pooling.index("--convert") + 1] == "embed"


def test_a_crashed_vllm_answers_503_then_recovers(tmp_path: Path) -> None:
    fake = FakeVllmServer(tmp_path, FAKE_VLLM_READY_DELAY="1.5")
    try:
        body = {"model": NAME, "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(fake.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200
        first = fake.vllm_pid()
        os.kill(first, signal.SIGKILL)
        busy = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = httpx.post(fake.url + "/v1/chat/completions", json=body, timeout=60)
            if r.status_code == 503:
                busy = r
                break
        assert busy is not None, "no request saw the restart"
        assert int(busy.headers["Retry-After"]) >= 1
        assert "restarting" in busy.json()["error"]["message"]
        ollama_busy = httpx.post(fake.url + "/api/chat", json={**body, "stream": False}, timeout=60)
        assert ollama_busy.status_code in (200, 503)  # 200 once the restart is done
        wait_until(lambda: httpx.post(fake.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200)
        assert fake.vllm_pid() != first
        log = httpx.get(fake.url + "/health").status_code
        assert log == 200
    finally:
        fake.proc.stop()
    text = (tmp_path / "home" / "logs" / "vllm-tiny-hf_latest.log").read_text()
    assert text.count("starting vLLM for tiny-hf:latest") == 2


def test_stop_drains_streams_and_stops_vllm(tmp_path: Path) -> None:
    fake = FakeVllmServer(tmp_path, FAKE_VLLM_TOKEN_DELAY="0.2", BENDI_SHUTDOWN_GRACE="60")
    body = {"model": NAME, "messages": [{"role": "user", "content": "w1 w2 w3 w4 w5 w6 w7 w8"}],
            "stream": True}
    lines: list[str] = []
    arrived: list[float] = []  # when each content chunk reached the client
    with httpx.stream("POST", fake.url + "/v1/chat/completions", json=body, timeout=60) as response:
        it = response.iter_lines()
        lines.append(next(it))
        pid = fake.vllm_pid()
        codes: list[int] = []
        stopper = threading.Thread(target=lambda: codes.append(fake.proc.stop(timeout=60)))
        stopper.start()
        for line in it:
            lines.append(line)
            if '"content":"w' in line.replace(" ", ""):
                arrived.append(time.monotonic())
        stopper.join()
    assert codes == [0]
    # tokens come 0.2 s apart upstream: passed through one by one, not buffered into one answer
    assert len(arrived) >= 7 and arrived[-1] - arrived[0] >= 1.0
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text.split() == [f"w{i}" for i in range(1, 9)]  # the stream ran to its end
    assert lines[-1] == "data: [DONE]" or [x for x in lines if x][-1] == "data: [DONE]"
    wait_until(lambda: not alive(pid), timeout=20)


def test_keep_alive_zero_stops_the_process(fake: FakeVllmServer) -> None:
    client = ollama.Client(host=fake.url)
    client.chat(model=NAME, messages=[{"role": "user", "content": "hi"}])
    assert _vllm_pids(fake.proc.home)
    client.chat(model=NAME, messages=[{"role": "user", "content": "hi"}], keep_alive=0)
    wait_until(lambda: not _vllm_pids(fake.proc.home), timeout=20)  # the chat and any pooling server
    assert NAME not in [m.model for m in client.ps().models]


def test_bendi_logs_shows_the_vllm_log(fake: FakeVllmServer) -> None:
    from click.testing import CliRunner

    from bendi.cli.main import cli

    httpx.post(fake.url + "/v1/chat/completions", timeout=60,
               json={"model": NAME, "messages": [{"role": "user", "content": "hi"}]})
    env = {"BENDI_HOME": str(fake.proc.home)}
    out = CliRunner().invoke(cli, ["logs", NAME, "-n", "200"], env=env)
    assert out.exit_code == 0 and "starting vLLM for tiny-hf:latest" in out.output
    assert "listening on 127.0.0.1" in out.output
    missing = CliRunner().invoke(cli, ["logs", "nothing:here"], env=env)
    assert missing.exit_code == 1 and "no log for nothing:here" in missing.output


def _vllm_pids(home: Path) -> list[int]:
    """Live (not zombie) vLLM servers serving a model from `home`'s store."""
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if "vllm.entrypoints.openai.api_server" in cmd and any(str(home) in a for a in cmd) \
                and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(p.pid)
    return found

