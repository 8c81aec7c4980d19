"""Supervision of a vLLM server process, with a stand-in that speaks vLLM's HTTP (tests/fake_vllm):
start and readiness, restart with back-off after a crash (503 + Retry-After meanwhile), a start
that fails, and a stop that takes the whole process group down."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from tests.processes import alive, wait_until

from bendi.errors import EngineError, ServerBusy
from bendi.runtime.vllm.launch import LaunchOptions, build_launch, read_facts
from bendi.runtime.vllm.supervisor import Launch, Supervisor

FAKE = Path(__file__).parent / "fake_vllm"


def _model_dir(tmp: Path) -> Path:
    model = tmp / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64,
        "max_position_embeddings": 2048}))
    return model


def _factory(tmp: Path, env: dict[str, str] | None = None) -> Callable[[int], Launch]:
    model = _model_dir(tmp)
    facts = read_facts(model)

    def make(port: int) -> Launch:
        spec = build_launch(sys.executable, model, facts, LaunchOptions("fake:1", port, max_model_len=512))
        extra = {"PYTHONPATH": str(FAKE), **(env or {})}
        return Launch(spec.argv, {**spec.env, **extra}, spec.url, spec.served_name)

    return make




@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for sup in made:
        sup.stop(timeout=5)


def test_start_waits_for_the_model_and_records_the_launch(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    record = tmp_path / "launch.json"
    sup = Supervisor("fake:1", _factory(tmp_path, {"FAKE_VLLM_READY_DELAY": "0.5",
                                                   "FAKE_VLLM_RECORD": str(record)}),
                     tmp_path / "logs" / "fake.log", probe_interval=0.05)
    supervisors.append(sup)
    sup.start()
    assert sup.state == "ready"
    models = httpx.get(sup.url() + "/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["fake:1"]
    launched = json.loads(record.read_text())
    assert launched["argv"][launched["argv"].index("--served-model-name") + 1] == "fake:1"
    assert launched["env"]["HF_HUB_OFFLINE"] == "1" and launched["env"]["VLLM_NO_USAGE_STATS"] == "1"
    log = (tmp_path / "logs" / "fake.log").read_text()
    assert "starting vLLM for fake:1" in log and "listening on 127.0.0.1" in log


def test_a_crash_is_restarted_and_requests_meanwhile_get_retry_after(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    sup = Supervisor("fake:1", _factory(tmp_path, {"FAKE_VLLM_READY_DELAY": "1.0"}),
                     tmp_path / "fake.log", probe_interval=0.05, backoff_first=0.5)
    supervisors.append(sup)
    sup.start()
    first_pid, first_url = sup.pid, sup.url()
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    wait_until(lambda: sup.state == "restarting")
    with pytest.raises(ServerBusy) as busy:
        sup.url()
    assert busy.value.status == 503 and busy.value.retry_after is not None and busy.value.retry_after >= 1
    assert "SIGKILL" in busy.value.message
    wait_until(lambda: sup.state == "ready")
    assert sup.pid not in (None, first_pid) and sup.restarts == 1
    assert httpx.get(sup.url() + "/health").status_code == 200
    assert sup.url() != first_url or sup.pid != first_pid
    assert (tmp_path / "fake.log").read_text().count("starting vLLM for fake:1") == 2


def test_restarts_that_keep_failing_back_off_longer_each_time(tmp_path: Path,
                                                              supervisors: list[Supervisor]) -> None:
    make = _factory(tmp_path)
    launches: list[float] = []

    def factory(port: int) -> Launch:
        launch = make(port)
        launches.append(time.monotonic())
        if len(launches) > 1:  # every restart fails at once, as a vLLM that cannot load would
            launch.env["FAKE_VLLM_EXIT"] = "1"
        return launch

    sup = Supervisor("fake:1", factory, tmp_path / "fake.log", probe_interval=0.05, backoff_first=0.2,
                     backoff_max=0.8)
    supervisors.append(sup)
    sup.start()
    assert sup.pid is not None
    os.kill(sup.pid, signal.SIGKILL)
    wait_until(lambda: len(launches) >= 5)
    with pytest.raises(ServerBusy, match="failing on purpose") as busy:
        sup.url()  # the failed restart's own words, not only "restarting"
    assert busy.value.retry_after is not None and busy.value.retry_after >= 1
    gaps = [b - a for a, b in zip(launches[1:], launches[2:], strict=False)]
    # waits are lower bounds (a loaded machine only makes them longer): 0.4, 0.8, then the cap
    assert gaps[0] >= 0.4 and gaps[1] >= 0.8 and gaps[2] >= 0.8
    started = time.monotonic()
    sup.stop(timeout=5)
    assert sup.state == "stopped" and time.monotonic() - started < 10  # a back-off wait ends at once


def test_a_start_that_fails_says_why(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    sup = Supervisor("fake:1", _factory(tmp_path, {"FAKE_VLLM_EXIT": "3"}), tmp_path / "fake.log",
                     probe_interval=0.05)
    supervisors.append(sup)
    with pytest.raises(EngineError) as failed:
        sup.start()
    assert "code 3" in failed.value.message and "failing on purpose" in failed.value.message
    assert "bendi logs fake:1" in failed.value.message
    assert sup.state == "failed" and sup.pid is None


def test_a_start_that_times_out_is_stopped(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    sup = Supervisor("fake:1", _factory(tmp_path, {"FAKE_VLLM_READY_DELAY": "30"}), tmp_path / "fake.log",
                     probe_interval=0.05, start_timeout=1.0, stop_timeout=5)
    supervisors.append(sup)
    started = time.monotonic()
    with pytest.raises(EngineError, match="not ready after 1s"):
        sup.start()
    assert time.monotonic() - started < 15 and sup.pid is None


def test_stop_takes_down_the_process_group(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    sup = Supervisor("fake:1", _factory(tmp_path, {"FAKE_VLLM_CHILD": "1"}), tmp_path / "fake.log",
                     probe_interval=0.05)
    supervisors.append(sup)
    sup.start()
    log = (tmp_path / "fake.log").read_text()
    child = int(log.split("engine core pid ")[1].split()[0])
    assert alive(child)
    sup.stop(timeout=5)
    assert sup.state == "stopped" and sup.pid is None
    wait_until(lambda: not alive(child), timeout=10)
    with pytest.raises(ServerBusy):
        sup.url()


def test_a_process_that_ignores_sigterm_is_killed(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    sup = Supervisor("fake:1", _factory(tmp_path, {"FAKE_VLLM_IGNORE_TERM": "1"}), tmp_path / "fake.log",
                     probe_interval=0.05)
    supervisors.append(sup)
    sup.start()
    pid = sup.pid
    assert pid is not None
    started = time.monotonic()
    sup.stop(timeout=1.0)
    assert time.monotonic() - started < 10
    assert not alive(pid)

