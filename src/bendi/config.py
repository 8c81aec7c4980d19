"""One Settings object. Every field can be set from the environment as BENDI_<FIELD>."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bendi.errors import InvalidRequest


def _describe(text: str, default: Any) -> Any:
    if callable(default):
        return field(default_factory=default, metadata={"help": text})
    return field(default=default, metadata={"help": text})


def _default_home() -> Path:
    return Path.home() / ".bendi"


@dataclass
class Settings:
    """Runtime configuration; `Settings.from_env()` reads BENDI_* variables."""

    home: Path = _describe("Root of bendi's data: models, bendi.db, knowledge bases.", _default_home)
    host: str = _describe("Address the server binds; loopback unless an API key is set.", "127.0.0.1")
    port: int = _describe("Port the server listens on.", 11435)
    api_key: str | None = _describe(
        "Bootstrap admin key (Bearer); with it every route but /health needs a credential.", None)
    ctx: int | None = _describe("Context length per sequence; None lets the planner choose.", None)
    slots: int = _describe("Concurrent sequences per loaded model (continuous batching).", 8)
    queue_size: int = _describe("Requests waiting beyond the slots before 503 is returned.", 64)
    batch_tokens: int = _describe("Tokens per llama_decode step (prompt chunk budget).", 512)
    threads: int | None = _describe("CPU threads for llama.cpp; None uses physical cores.", None)
    keep_alive: float = _describe("Seconds an idle model stays loaded (Ollama default 5m).", 300.0)
    max_loaded_models: int = _describe("Models kept loaded at once before LRU unloading.", 3)
    max_request_bytes: int = _describe("Largest accepted request body in bytes.", 8 * 1024 * 1024)
    gpu_layers: int | None = _describe(
        "Layers llama.cpp offloads to the GPUs; None places them as `bendi plan` says (all when they "
        "fit, else as many as fit), 0 keeps models on the CPU, -1 offloads all.", None)
    amx: bool = _describe(
        "Let llama.cpp use its AMX kernels when the build has them (off: they crash on recent Xeons).", False)
    shutdown_grace: float = _describe(
        "Seconds in-flight streams get to finish at shutdown before they end with an error event.", 20.0
    )
    force: bool = _describe("Load models even when the planner says they will not fit.", False)
    memory_limit: str | None = _describe(
        "Memory the load guard may use (e.g. 16GB); None uses the RAM available now.", None)
    default_model: str | None = _describe(
        "Model for requests that name none (bendi serve --model); None: such requests get 400.", None)
    max_tokens: int = _describe(
        "Tokens a generation may produce when the request sets no limit and the model's parameters "
        "set no max_tokens (clients such as Open WebUI send none).", 2048)
    cors_origins: str | None = _describe(
        "Comma-separated origins browsers may call the API from (CORS); None: no cross-origin access.", None)
    allowed_hosts: str | None = _describe(
        "Comma-separated Host names the server answers besides loopback names and the bound address "
        "(`*`: any); None: a loopback server refuses other names (DNS rebinding).", None)
    llama_log: bool = _describe("Let llama.cpp print its own log to stderr (for debugging).", False)
    sources_file: Path | None = _describe(
        "TOML file listing the mirrors `bendi pull` may use; None means BENDI_HOME/sources.toml.", None)
    sources: str | None = _describe(
        "Extra pull sources tried before the file's, e.g. `hf=huggingface:https://hf-mirror.com,"
        "lan=ollama:http://10.0.0.5:11434` (name=kind:url, comma-separated).", None)
    pull_connections: int = _describe("Parallel HTTP connections per large file `bendi pull` uses.", 4)
    bundle_trust: Path | None = _describe(
        "Public key file (or a directory of them): `bendi import` then accepts only bundles signed "
        "by one of these keys.", None)
    engine: str | None = _describe(
        "Engine preferred for models it can run (llama.cpp, vllm); None: by the model's format.", None)
    vllm_python: str | None = _describe(
        "Python of the environment vLLM is installed in; None: this one if it has vLLM, else the "
        "one beside a `vllm` command on PATH (docs/gpu-servers.md).", None)
    vllm_devices: str | None = _describe(
        "Accelerators vLLM may use (e.g. 0,1,2,3 or 0-3); None: all it sees.", None)
    vllm_gpu_memory_utilization: float = _describe(
        "Share of each accelerator's memory one vLLM server takes (weights, KV cache).", 0.9)
    vllm_tensor_parallel: int | None = _describe(
        "Tensor-parallel size; None: the planner's layout (all devices of one node).", None)
    vllm_nodes: int = _describe("Machines of the Ray cluster a model runs across (pipeline stages).", 1)
    vllm_ray_address: str | None = _describe(
        "The Ray head (host:port) when vllm_nodes > 1; `bendi cluster head` prints it.", None)
    vllm_args: str | None = _describe("Extra `vllm serve` flags, appended last (shell syntax).", None)
    vllm_start_timeout: float = _describe(
        "Seconds a vLLM server may take to load its model before the start counts as failed.", 900.0)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def kb_dir(self) -> Path:
        return self.home / "kb"

    @property
    def db_path(self) -> Path:
        return self.home / "bendi.db"

    @property
    def sources_path(self) -> Path:
        return self.sources_file or self.home / "sources.toml"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from BENDI_* variables, then apply explicit overrides."""
        env = dict(os.environ) if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f"BENDI_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes` applied (None values ignored): commands adjust their own copy,
        never the settings other code shares."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(variable, default, help) for every field, for docs and `bendi doctor`."""
        rows = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else "~/.bendi"
            rows.append((f"BENDI_{f.name.upper()}", str(default), f.metadata.get("help", "")))
        return rows


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _coerce(name: str, type_name: Any, raw: str) -> Any:
    """The value of variable `name` as its field's type; InvalidRequest names the variable."""
    text = str(type_name)
    if "Path" in text:
        return Path(raw).expanduser()
    if "bool" in text:
        word = raw.strip().lower()
        if word not in _TRUE + _FALSE:
            raise InvalidRequest(f"{name}={raw!r}: expected one of {', '.join(_TRUE + _FALSE)}")
        return word in _TRUE
    if "float" in text:
        try:
            return float(raw)
        except ValueError:
            raise InvalidRequest(f"{name}={raw!r}: expected a number") from None
    if "int" in text:
        try:
            return int(raw)
        except ValueError:
            raise InvalidRequest(f"{name}={raw!r}: expected a whole number") from None
    return raw
