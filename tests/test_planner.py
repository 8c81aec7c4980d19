"""Hardware doctor and fit planner: vendor parsers, memory model, catalog, plans, load guard."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from bendi.cli.main import cli
from bendi.planner import hardware
from bendi.planner.catalog import QUANT_ORDER, from_gguf, load_catalog
from bendi.planner.machine import Hardware, parse_gpus, parse_size
from bendi.planner.memory import (
    BITS_PER_WEIGHT,
    ModelShape,
    estimate,
    kv_cache_bytes,
    weight_bytes_from_params,
)
from bendi.planner.plan import plan_model
from bendi.planner.vllm_layout import valid_tp_sizes, vllm_option
from bendi.store.gguf import read_gguf

FIXTURES = Path(__file__).parent / "fixtures" / "planner"
GB = 1_000_000_000
MiB = 1024 * 1024


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def catalog(name: str):  # noqa: ANN201 - a CatalogModel
    return next(m for m in load_catalog() if m.name == name)


# -- vendor tool parsers -----------------------------------------------------------------------

def test_parse_nvidia_smi() -> None:
    gpus = hardware.parse_nvidia_smi(fixture("nvidia_smi.csv"))
    # the MIG/vGPU row reporting [N/A] is skipped, not a crash
    assert [(g.index, g.name) for g in gpus] == [(0, "NVIDIA H200"), (1, "NVIDIA H200"),
                                                 (2, "NVIDIA GeForce RTX 4090")]
    assert gpus[0].memory_total == 143771 * MiB and gpus[1].memory_used == 81234 * MiB
    assert gpus[1].memory_free == (143771 - 81234) * MiB
    assert hardware.gpu_bandwidth(gpus[0].name) == 4.8e12
    assert hardware.gpu_bandwidth(gpus[2].name) == 1.01e12


def test_parse_rocm_smi() -> None:
    gpus = hardware.parse_rocm_smi(fixture("rocm_smi.json"))
    assert len(gpus) == 2 and all(g.vendor == "amd" for g in gpus)
    assert gpus[0].name == "AMD Instinct MI300X OAM"
    assert gpus[1].memory_total == 205822885888 and gpus[1].memory_used == 10484711424


def test_parse_npu_smi() -> None:
    npus = hardware.parse_npu_smi(fixture("npu_smi.txt"))
    # the process table below the device table is not mistaken for devices
    assert [(n.index, n.name) for n in npus] == [(0, "Ascend 910B3"), (1, "Ascend 910B3")]
    assert npus[0].memory_total == 65536 * MiB and npus[0].memory_used == 3389 * MiB
    assert npus[1].memory_used == 40123 * MiB


def test_parse_mthreads_gmi() -> None:
    gpus = hardware.parse_mthreads_gmi(fixture("mthreads_gmi.txt"))
    assert [(g.index, g.name) for g in gpus] == [(0, "MTT S4000"), (1, "MTT S4000")]
    assert gpus[1].memory_total == 49152 * MiB and gpus[1].memory_used == 20480 * MiB


def test_parse_apple() -> None:
    gpus = hardware.parse_apple(fixture("apple_hw_memsize.txt"), fixture("apple_system_profiler.json"))
    assert len(gpus) == 1
    assert gpus[0].name == "Apple M2 Max (38-core GPU)"
    assert gpus[0].unified and gpus[0].memory_total == 64 * 1024**3


def test_parse_cpuinfo() -> None:
    model, flags = hardware.parse_cpuinfo(fixture("cpuinfo_x86.txt"))
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags["avx2"] and flags["avx512"] and flags["amx"] and not flags["neon"]
    model, flags = hardware.parse_cpuinfo(fixture("cpuinfo_arm.txt"))
    assert model == "ARM (part 0xd02)"
    assert flags["neon"] and flags["sve"] and not flags["avx2"]


def test_missing_and_failing_tools_are_reported_not_raised() -> None:
    def runner(argv: list[str]) -> str | None:
        if argv[0] == "nvidia-smi":
            raise RuntimeError("NVIDIA-SMI has failed because it couldn't communicate with the driver")
        if argv[0] == "npu-smi":
            return fixture("npu_smi.txt")
        return None

    reports = {r.tool: r for r in hardware.detect_accelerators(runner)}
    assert reports["rocm-smi"].found is False
    assert "couldn't communicate" in (reports["nvidia-smi"].error or "")
    assert len(reports["npu-smi"].devices) == 2


# -- memory model ------------------------------------------------------------------------------

def test_kv_cache_matches_llama_cpp(bundled_path: Path) -> None:
    model = from_gguf("smollm2", read_gguf(bundled_path))
    # llama.cpp logs "CPU KV buffer size = 180.00 MiB" for this model at 8192 cells
    assert kv_cache_bytes(model.shape, 8192, 1) == 180 * MiB
    assert kv_cache_bytes(model.shape, 2048, 4) == 180 * MiB
    # quantized caches at ggml's block sizes: q8_0 is 34 bytes per 32, q4_0 18 per 32
    assert kv_cache_bytes(model.shape, 8192, 1, "q8_0") == 180 * MiB * 34 // 64
    assert kv_cache_bytes(model.shape, 8192, 1, "q4_0") == 180 * MiB * 18 // 64
    with pytest.raises(ValueError):
        kv_cache_bytes(model.shape, 8192, 1, "q3")


def test_kv_cache_of_catalog_models() -> None:
    # 2 x layers x kv_heads x head_dim x 2 bytes per token
    assert kv_cache_bytes(catalog("deepseek-r1:7b").shape, 1, 1) == 2 * 28 * 4 * 128 * 2
    assert kv_cache_bytes(catalog("deepseek-r1:70b").shape, 1, 1) == 2 * 80 * 8 * 128 * 2
    # MLA caches one 512 + 64 latent per layer instead of 128 heads of K and V
    assert kv_cache_bytes(catalog("deepseek-r1:671b").shape, 1, 1) == 61 * 576 * 2


def test_catalog_facts() -> None:
    facts = {m.name: (m.shape.layers, m.shape.heads, m.shape.kv_heads, m.shape.head_dim)
             for m in load_catalog()}
    assert facts["deepseek-r1:1.5b"] == (28, 12, 2, 128)
    assert facts["deepseek-r1:7b"] == (28, 28, 4, 128)
    assert facts["deepseek-r1:8b"] == (32, 32, 8, 128)
    assert facts["deepseek-r1:14b"] == (48, 40, 8, 128)
    assert facts["deepseek-r1:32b"] == (64, 40, 8, 128)
    assert facts["deepseek-r1:70b"] == (80, 64, 8, 128)
    big = catalog("deepseek-r1:671b")
    assert big.is_moe and big.shape.active_params == 37 * GB and big.shape.mla_latent == 576
    assert "FP8" in big.hf_sizes
    for m in load_catalog():
        assert m.source and m.hf_repo
        sizes = [m.gguf_sizes[q] for q in QUANT_ORDER]
        assert sizes == sorted(sizes, reverse=True), f"{m.name}: sizes not ordered by quantization"


@pytest.mark.parametrize("quant", ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "F16"])
def test_weight_model_against_catalog_sizes(quant: str) -> None:
    """Parameters x bits per weight lands within 10% of the published file sizes of dense models."""
    for m in load_catalog():
        if m.is_moe or m.shape.params < 5 * GB:  # small models carry a relatively huge embedding
            continue
        predicted = weight_bytes_from_params(m.shape.params, quant)
        actual = m.gguf_sizes[quant]
        assert abs(predicted - actual) / actual < 0.10, (m.name, quant, predicted, actual)
    assert set(QUANT_ORDER) <= set(BITS_PER_WEIGHT)


_MEASURE = textwrap.dedent("""
    import json, sys
    import psutil
    from bendi.runtime.llama import LlamaModel, LoadOptions, init_backend
    from bendi.runtime.types import ChatRequest

    path, ctx = sys.argv[1], int(sys.argv[2])
    proc = psutil.Process()
    init_backend()
    before = proc.memory_info().rss
    model = LlamaModel(path, LoadOptions(ctx=ctx, slots=1, threads=1))
    # a prompt longer than one 512-token batch touches every weight and the compute buffer
    prompt = " ".join(f"item {i} is on the list." for i in range(120))
    request = ChatRequest(model="m", messages=[{"role": "user", "content": prompt}], max_tokens=2)
    usage = None
    for event in model.generate(request):
        usage = getattr(event, "usage", usage)
    grown = proc.memory_info().rss - before
    print(json.dumps({"rss_growth": grown, "prompt_tokens": usage.prompt_tokens}))
    model.close()
""")


@pytest.mark.slow
@pytest.mark.parametrize("ctx", [2048, 8192])
def test_estimate_matches_measured_rss(bundled_path: Path, ctx: int) -> None:
    """The memory estimate is within 15% of the resident memory a real load adds."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(bundled_path), str(ctx)],
                         capture_output=True, text=True, check=True, timeout=300)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["prompt_tokens"] > 512
    info = read_gguf(bundled_path)
    est = estimate(from_gguf("smollm2", info).shape, info.tensor_bytes, ctx, 1)
    ratio = est.total / measured["rss_growth"]
    assert 0.85 <= ratio <= 1.15, f"estimate {est.total} vs measured {measured['rss_growth']}"


# -- plans -------------------------------------------------------------------------------------

def test_parse_sizes_and_gpus() -> None:
    assert parse_size("64GB") == 64 * GB and parse_size("512MiB") == 512 * MiB and parse_size("24") == 24 * GB
    gpus = parse_gpus("4x24GB")
    assert len(gpus) == 4 and gpus[0].memory == 24 * GB and gpus[0].bandwidth == 1.01e12
    h200 = parse_gpus("8xH200")
    assert len(h200) == 8 and h200[0].memory == 141 * GB and h200[0].bandwidth == 4.8e12
    from bendi.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        parse_gpus("4xbanana")


def test_plan_for_24gb_cpu_machine() -> None:
    hw = Hardware(ram=24 * GB, cpu_bandwidth=20e9)
    plans = {m.name: plan_model(m, hw) for m in load_catalog()}
    for name in ("deepseek-r1:1.5b", "deepseek-r1:7b", "deepseek-r1:8b", "deepseek-r1:14b"):
        p = plans[name]
        assert p.fits and p.recommended is not None, name
        assert p.recommended.quantization == "Q4_K_M" and p.recommended.target == "cpu"
        assert p.verdict.startswith("fits comfortably")
        assert p.verdict_facts["kind"] == "comfortable" and p.verdict_facts["target"] == "cpu"
        assert p.recommended.tokens_per_second is not None and p.recommended.tokens_per_second > 0
    assert plans["deepseek-r1:7b"].recommended.ctx == 8192
    for name, needs in (("deepseek-r1:70b", "4"), ("deepseek-r1:671b", "404 GB")):
        assert not plans[name].fits
        assert plans[name].verdict.startswith("does not fit: needs " + needs)
        assert plans[name].verdict.endswith("you have 24.0 GB")
        assert plans[name].verdict_facts["kind"] == "no_fit" and plans[name].verdict_facts["have"] == 24 * GB
    # 32B at Q4_K_M fits only with a shorter context
    assert "context only" in plans["deepseek-r1:32b"].verdict


def test_plan_reduces_context_then_quantization() -> None:
    m = catalog("deepseek-r1:14b")
    p = plan_model(m, Hardware(ram=11 * GB))
    assert p.verdict.startswith("fits with 2k context only")
    assert p.verdict_facts["kind"] == "context" and p.verdict_facts["ctx"] // 1024 == 2
    p = plan_model(m, Hardware(ram=9 * GB))
    assert p.verdict.startswith("fits at Q3_K_M, 2k context only") and p.recommended.quantization == "Q3_K_M"
    assert p.verdict_facts["kind"] == "quantization" and p.verdict_facts["short_context"]
    assert p.to_dict()["verdict_facts"] == p.verdict_facts


def test_plan_671b_on_8_h200_uses_vllm_tp8_fp8() -> None:
    hw = Hardware(ram=1024 * GB, gpus=parse_gpus("8x141GB"), origin="given")
    p = plan_model(catalog("deepseek-r1:671b"), hw)
    assert p.recommended is not None and p.recommended.engine == "vllm"
    assert p.recommended.tensor_parallel == 8 and p.recommended.quantization == "FP8"
    assert "--tensor-parallel-size 8" in p.recommended.detail["command"]
    assert "--reasoning-parser deepseek_r1" in p.recommended.detail["command"]


def test_vllm_says_why_not() -> None:
    hw = Hardware(ram=512 * GB, gpus=parse_gpus("8x80GB"), origin="given")
    option, why = vllm_option(catalog("deepseek-r1:671b"), hw, 32768)
    assert option is None
    assert "689 GB of FP8 weights" in why and "576 GB usable" in why
    # the 7B distill has 28 heads: TP 8 is impossible, vLLM would refuse it
    assert valid_tp_sizes(28, 8) == [1, 2, 4]
    assert valid_tp_sizes(40, 8) == [1, 2, 4, 8]


def test_plan_cli_json_schema() -> None:
    result = CliRunner().invoke(cli, ["plan", "--ram", "24GB", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["schema"] == 1 and data["hardware"]["origin"] == "given"
    by_name = {m["model"]: m for m in data["models"]}
    assert by_name["smollm2:135m"]["source"] == "store"
    assert by_name["deepseek-r1:14b"]["recommended"]["quantization"] == "Q4_K_M"
    assert by_name["deepseek-r1:70b"]["fits"] is False
    mem = by_name["deepseek-r1:7b"]["recommended"]["detail"]["memory"]
    assert mem["total"] == mem["weights"] + mem["kv_cache"] + mem["compute"] + mem["overhead"]


def test_plan_cli_table_with_gpus() -> None:
    result = CliRunner().invoke(cli, ["plan", "deepseek-r1:671b", "--gpus", "8x141GB", "--ram", "512GB"])
    assert result.exit_code == 0, result.output
    assert "vLLM TP=8 at FP8" in result.stdout and "vllm serve deepseek-ai/DeepSeek-R1" in result.stdout
    result = CliRunner().invoke(cli, ["plan", "no-such-model"])
    assert result.exit_code == 1 and "neither installed nor in the catalog" in result.stderr


def test_doctor_cli() -> None:
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "Memory" in result.stdout and "nvidia-smi" in result.stdout and "llama.cpp" in result.stdout
    data = json.loads(CliRunner().invoke(cli, ["doctor", "--json"]).stdout)
    assert data["schema"] == 1
    assert data["memory_total"] >= data["memory_available"] > 0
    assert data["cpu"]["logical_cores"] >= 1
    assert {t["tool"] for t in data["tools"]} >= {"nvidia-smi", "rocm-smi", "npu-smi", "mthreads-gmi"}
    assert data["llama_cpp"]["installed"] is True


# -- load guard --------------------------------------------------------------------------------

def test_guard_refuses_through_cli_and_force_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENDI_MEMORY_LIMIT", "150MB")
    result = CliRunner().invoke(cli, ["run", "smollm2:135m", "Hi", "--max-tokens", "2"])
    assert result.exit_code == 1
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in result.output
    assert "smollm2:135m needs 182 MB at 2048 tokens" in err and "150 MB of memory is available" in err
    assert "try a shorter context (--ctx 512" in err and "--force" in err
    result = CliRunner().invoke(cli, ["run", "smollm2:135m", "Hi", "--max-tokens", "2", "--force",
                                      "--temperature", "0"])
    assert result.exit_code == 0, result.output


def test_guard_suggests_shorter_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENDI_MEMORY_LIMIT", "200MB")
    result = CliRunner().invoke(cli, ["run", "smollm2:135m", "Hi", "--ctx", "8192"])
    assert result.exit_code == 1
    assert "try a shorter context (--ctx 2048" in result.stderr


def test_choose_context_from_memory(settings) -> None:  # noqa: ANN001
    from bendi.planner.guard import choose_context
    from bendi.store import ModelStore

    store = ModelStore(settings.models_dir)
    store.ensure_bundled()
    record = store.get("smollm2:135m")
    assert choose_context(record, 1, memory_limit="64GB") == 8192  # native 8192, under the CPU cap
    assert choose_context(record, 4, memory_limit="400MB") == 2048  # 4 slots x 8192 would not fit


def test_estimate_parts_are_consistent() -> None:
    shape = ModelShape(layers=2, heads=4, kv_heads=2, head_dim=8, embd=32, ff=64, vocab=50_000)
    est = estimate(shape, 1000, 16, 2)
    assert est.kv_cache == 2 * 2 * 2 * 8 * 16 * 2 * 2
    assert est.total == est.weights + est.kv_cache + est.compute + est.overhead
    # a GPU commits llama.cpp's whole reservation (full-batch logits); a CPU touches part of it
    assert estimate(shape, 1000, 16, 2, gpu=True).compute > est.compute


@pytest.mark.slow
def test_guard_through_the_api(tmp_path: Path) -> None:
    """The server answers a model that will not fit with a clear 507 and keeps serving."""
    import httpx
    from tests.server_util import ServerProcess

    # 155 MB: the bundled model needs ~182 MB at 2048 tokens, ~148 MB at 512
    server = ServerProcess(tmp_path / "home", "--slots", "1", "--ctx", "2048",
                           env={"BENDI_MEMORY_LIMIT": "155MB"}).wait_ready()
    try:
        messages = [{"role": "user", "content": "Hi"}]
        refused = httpx.post(server.url + "/v1/chat/completions", timeout=120,
                             json={"model": "smollm2:135m", "messages": messages, "max_tokens": 2})
        assert refused.status_code == 507
        error = refused.json()["error"]
        assert error["code"] == "insufficient_memory"
        assert "155 MB of memory is available" in error["message"] and "--ctx 512" in error["message"]
        ollama_refused = httpx.post(server.url + "/api/chat", timeout=120,
                                    json={"model": "smollm2:135m", "messages": messages, "stream": False})
        assert ollama_refused.status_code == 507 and "needs" in ollama_refused.json()["error"]
        assert httpx.get(server.url + "/health", timeout=10).status_code == 200
        # the suggested shorter context fits, and the server serves it
        ok = httpx.post(server.url + "/api/chat", timeout=120, json={
            "model": "smollm2:135m", "messages": messages, "stream": False,
            "options": {"num_ctx": 512, "num_predict": 2}})
        assert ok.status_code == 200, ok.text
        assert ok.json()["done"] is True
    finally:
        server.stop()
