"""The real server (`python -m bendi serve`) on the real bundled model, with the official `openai`
and `ollama` clients: API keys in both dialects, quotas biting with 429 and Retry-After, and an
audit log that is complete and verifies after the server stops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from tests.server_util import ServerProcess

from bendi.config import Settings
from bendi.core.context import RequestContext
from bendi.services import Services

pytestmark = pytest.mark.slow

MODEL = "smollm2:135m"
CLI = RequestContext.local("cli test")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str], Path]]:
    home = tmp_path_factory.mktemp("auth-server") / "home"
    services = Services.build(Settings(home=home))
    d = services.auth.directory
    d.add_user("boss", role="admin", password="boss-password", actor=CLI)
    d.add_user("li", password="li-password", actor=CLI)
    keys = {"admin": d.create_key("boss", routes=("chat", "embeddings", "kb", "admin"), actor=CLI)[1],
            "rpm": d.create_key("li", name="rpm", actor=CLI)[1],
            "tokens": d.create_key("li", name="tokens", actor=CLI)[1]}
    d.set_quota(key=keys["rpm"].split("_")[1], requests_per_minute=2, actor=CLI)
    d.set_quota(key=keys["tokens"].split("_")[1], tokens_per_day=10, actor=CLI)
    services.close()
    proc = ServerProcess(home).wait_ready()
    try:
        yield proc, keys, home
    finally:
        proc.stop()


def test_keys_in_both_dialects_with_the_official_clients(setup: tuple[ServerProcess, dict[str, str], Path]) -> None:
    proc, keys, _ = setup
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=proc.url + "/v1", api_key="bk_000000000000_" + "x" * 43, max_retries=0).models.list()
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=proc.url).list()
    assert caught.value.status_code == 401
    admin = openai.OpenAI(base_url=proc.url + "/v1", api_key=keys["admin"], max_retries=0)
    reply = admin.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    tags = ollama.Client(host=proc.url, headers={"Authorization": f"Bearer {keys['admin']}"}).list()
    assert any(m.model == MODEL for m in tags.models)


def test_quotas_bite_in_both_dialects(setup: tuple[ServerProcess, dict[str, str], Path]) -> None:
    proc, keys, _ = setup
    client = openai.OpenAI(base_url=proc.url + "/v1", api_key=keys["rpm"], max_retries=0)
    oll = ollama.Client(host=proc.url, headers={"Authorization": f"Bearer {keys['rpm']}"})
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    oll.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 2})
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60
    assert "requests per minute" in limited.value.message
    with pytest.raises(ollama.ResponseError) as refused:
        oll.chat(model=MODEL, messages=[{"role": "user", "content": "Hi"}])
    assert refused.value.status_code == 429 and "requests per minute" in refused.value.error

    tokens = openai.OpenAI(base_url=proc.url + "/v1", api_key=keys["tokens"], max_retries=0)
    tokens.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello there"}], max_tokens=4)
    with pytest.raises(openai.RateLimitError) as used_up:
        tokens.embeddings.create(model="all-minilm", input="x")
    assert "tokens per day" in used_up.value.message
    assert int(used_up.value.response.headers["retry-after"]) > 0
    usage = httpx.get(proc.url + "/admin/usage?by=key", headers={"Authorization": f"Bearer {keys['admin']}"}).json()
    by_key = {u["key_id"]: u for u in usage["usage"]}
    assert by_key[keys["rpm"].split("_")[1]]["requests"] == 2


def test_the_audit_log_is_complete_and_verifies_after_shutdown(
        setup: tuple[ServerProcess, dict[str, str], Path]) -> None:
    proc, keys, home = setup
    openai.OpenAI(base_url=proc.url + "/v1", api_key=keys["admin"], max_retries=0).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "last one"}], max_tokens=2)
    assert proc.stop() == 0  # SIGINT: the writer flushes what is queued
    services = Services.build(Settings(home=home))
    try:
        assert services.audit.verify().ok
        records = services.audit.query(limit=None)
        chats = [r for r in records if r["kind"] == "chat" and r["status"] == "ok"]
        assert chats[0]["user"] == "boss" and chats[0]["client"] == "127.0.0.1"
        assert chats[0]["key_id"] == keys["admin"].split("_")[1] and chats[0]["model"] == MODEL
        assert chats[0]["completion_tokens"] > 0 and chats[0]["latency_us"] > 0
        refused = [r for r in records if r["status"] == "refused"]
        assert {r["code"] for r in refused} >= {401, 429}
        text = "\n".join(services.auth.directory.db().iterdump()) + proc.output()
        assert all(key not in text for key in keys.values())
    finally:
        services.close()
