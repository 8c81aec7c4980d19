"""The vLLM launch as bendi constructs it, per vendor and layout (no such hardware is needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bendi.errors import InvalidRequest
from bendi.runtime.vllm.launch import (
    VENDORS,
    LaunchOptions,
    Layout,
    build_launch,
    parse_devices,
    read_facts,
    reasoning_parser,
    tool_parser,
    vendor_for,
)

R1_TEMPLATE = "{% for m in messages %}<｜User｜>{{m.content}}{% endfor %}<｜Assistant｜><think>\n"
QWEN_TOOLS = "{% if tools %}<tools>{{ tools }}</tools> reply with <tool_call>{...}</tool_call>{% endif %}"


def _model(tmp: Path, template: str | None = None, **config: object) -> Path:
    d = tmp / "m"
    d.mkdir(exist_ok=True)
    base = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "num_hidden_layers": 28,
            "num_attention_heads": 28, "num_key_value_heads": 4, "hidden_size": 3584,
            "max_position_embeddings": 131072}
    (d / "config.json").write_text(json.dumps({**base, **config}))
    if template is not None:
        (d / "tokenizer_config.json").write_text(json.dumps({"chat_template": template}))
    return d


def _arg(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_r1_distill_on_four_nvidia_gpus(tmp_path: Path) -> None:
    model = _model(tmp_path, R1_TEMPLATE)
    facts = read_facts(model)
    spec = build_launch("/opt/vllm/bin/python", model, facts, LaunchOptions(
        "deepseek-r1:7b", 8123, layout=Layout(tensor_parallel=4), vendor=VENDORS["nvidia"],
        devices=[4, 5, 6, 7], max_model_len=32768, max_num_seqs=16, gpu_memory_utilization=0.85))
    argv = spec.argv
    assert argv[:3] == ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert _arg(argv, "--model") == str(model) and _arg(argv, "--served-model-name") == "deepseek-r1:7b"
    assert _arg(argv, "--host") == "127.0.0.1" and _arg(argv, "--port") == "8123"
    assert _arg(argv, "--tensor-parallel-size") == "4" and _arg(argv, "--pipeline-parallel-size") == "1"
    assert _arg(argv, "--max-model-len") == "32768" and _arg(argv, "--max-num-seqs") == "16"
    assert _arg(argv, "--gpu-memory-utilization") == "0.85"
    assert _arg(argv, "--reasoning-parser") == "deepseek_r1"
    assert "--enable-auto-tool-choice" not in argv and "--distributed-executor-backend" not in argv
    env = spec.env
    assert env["CUDA_VISIBLE_DEVICES"] == "4,5,6,7" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "VLLM_NO_USAGE_STATS", "DO_NOT_TRACK"):
        assert env[key] == "1"
    assert env["VLLM_HOST_IP"] == "127.0.0.1"
    assert "VLLM_CPU_KVCACHE_SPACE" not in env and "VLLM_PLUGINS" not in env
    assert "CUDA_VISIBLE_DEVICES=4,5,6,7" in spec.command_line()


def test_ascend_uses_the_plugin_and_its_device_variable(tmp_path: Path) -> None:
    model = _model(tmp_path, QWEN_TOOLS)
    spec = build_launch("python", model, read_facts(model), LaunchOptions(
        "qwen2.5:72b", 9000, layout=Layout(tensor_parallel=8), vendor=vendor_for(["huawei"]),
        devices=parse_devices("0-7")))
    assert spec.env["ASCEND_RT_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert spec.env["VLLM_PLUGINS"] == "ascend"
    assert spec.env["PYTORCH_NPU_ALLOC_CONF"] == "expandable_segments:True"
    assert "CUDA_VISIBLE_DEVICES" not in spec.env
    assert _arg(spec.argv, "--tool-call-parser") == "hermes" and "--enable-auto-tool-choice" in spec.argv


def test_moore_threads_uses_the_musa_plugin(tmp_path: Path) -> None:
    model = _model(tmp_path)
    spec = build_launch("python", model, read_facts(model), LaunchOptions(
        "m", 9000, layout=Layout(tensor_parallel=2), vendor=vendor_for(["moorethreads"]), devices=[0, 1]))
    assert spec.env["MUSA_VISIBLE_DEVICES"] == "0,1" and spec.env["VLLM_PLUGINS"] == "musa"
    assert VENDORS["moorethreads"].package == "vllm-musa"


def test_amd_and_unknown_vendors() -> None:
    assert vendor_for(["amd"]).device_variable == "HIP_VISIBLE_DEVICES"
    assert vendor_for(["apple"]).name == "cpu"  # no vLLM build for Metal
    assert vendor_for([]).name == "cpu"


def test_two_nodes_run_pipeline_stages_through_ray(tmp_path: Path) -> None:
    model = _model(tmp_path, R1_TEMPLATE)
    opts = LaunchOptions("deepseek-r1:70b", 9000, layout=Layout(tensor_parallel=8, pipeline_parallel=2, nodes=2),
                         vendor=VENDORS["nvidia"], ray_address="10.0.0.1:6379")
    spec = build_launch("python", model, read_facts(model), opts)
    assert _arg(spec.argv, "--pipeline-parallel-size") == "2"
    assert _arg(spec.argv, "--distributed-executor-backend") == "ray"
    assert spec.env["RAY_ADDRESS"] == "10.0.0.1:6379"
    assert "VLLM_HOST_IP" not in spec.env  # the ranks on other nodes must reach this one
    opts.ray_address = None
    with pytest.raises(InvalidRequest, match="bendi cluster head"):
        build_launch("python", model, read_facts(model), opts)


def test_cpu_build_sizes_its_kv_cache(tmp_path: Path) -> None:
    model = _model(tmp_path, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                   hidden_size=576, head_dim=64, max_position_embeddings=8192,
                   architectures=["LlamaForCausalLM"], model_type="llama")
    facts = read_facts(model)
    assert facts.kv_bytes_per_token == 2 * 30 * 3 * 64 * 2
    spec = build_launch("python", model, facts, LaunchOptions("smol", 9000, max_model_len=2048, max_num_seqs=8))
    assert spec.env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert "--gpu-memory-utilization" not in spec.argv
    big = build_launch("python", model, facts, LaunchOptions("smol", 9000, max_model_len=8192, max_num_seqs=64))
    assert int(big.env["VLLM_CPU_KVCACHE_SPACE"]) == 12  # 23 KB x 8192 x 64 = 11.25 GiB, rounded up
    with pytest.raises(InvalidRequest, match="CPU build"):
        build_launch("python", model, facts, LaunchOptions("smol", 9000, layout=Layout(tensor_parallel=2)))


def test_embedding_runs_the_pooling_runner(tmp_path: Path) -> None:
    chat = _model(tmp_path, R1_TEMPLATE)
    spec = build_launch("python", chat, read_facts(chat), LaunchOptions("m", 9000, pooling=True))
    assert _arg(spec.argv, "--runner") == "pooling" and _arg(spec.argv, "--convert") == "embed"
    assert "--reasoning-parser" not in spec.argv
    encoder = tmp_path / "enc"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["XLMRobertaModel"],
                                                     "model_type": "xlm-roberta"}))
    facts = read_facts(encoder)
    assert facts.is_embedding
    spec = build_launch("python", encoder, facts, LaunchOptions("bge-m3", 9000, pooling=True))
    assert "--convert" not in spec.argv


def test_parsers_follow_the_chat_template(tmp_path: Path) -> None:
    assert reasoning_parser(read_facts(_model(tmp_path, "plain {{ messages }}"))) is None
    assert reasoning_parser(read_facts(_model(tmp_path, R1_TEMPLATE))) == "deepseek_r1"
    assert reasoning_parser(read_facts(_model(tmp_path, "x", model_type="qwen3"))) == "qwen3"
    assert tool_parser(read_facts(_model(tmp_path, "<tool_call> without the variable"))) is None
    llama = '{% if tools %}{"name": ..., "parameters": dict}<|python_tag|>{% endif %}'
    assert tool_parser(read_facts(_model(tmp_path, llama))) == "llama3_json"


def test_device_lists() -> None:
    assert parse_devices("0,2, 3") == [0, 2, 3]
    assert parse_devices("4-7") == [4, 5, 6, 7]
    assert parse_devices("") is None
    for bad in ("a,b", "3-1", "0,0"):
        with pytest.raises(InvalidRequest):
            parse_devices(bad)


def test_too_few_devices_for_the_layout(tmp_path: Path) -> None:
    model = _model(tmp_path)
    with pytest.raises(InvalidRequest, match="needs 4 devices"):
        build_launch("python", model, read_facts(model), LaunchOptions(
            "m", 1, layout=Layout(tensor_parallel=4), vendor=VENDORS["nvidia"], devices=[0, 1]))
