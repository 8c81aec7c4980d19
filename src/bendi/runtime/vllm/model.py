"""A model served by a supervised vLLM process, behind the same contract as a llama.cpp model.

Loading starts `vllm serve` (launch.py) under a Supervisor and returns once the model is listed;
generation streams through an async HTTP client; embeddings of a chat model go to a second vLLM
process in pooling mode, started on first use (vLLM serves one task per process). Unloading
(keep-alive, LRU, shutdown) drains the requests in flight, then stops the process group.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import shlex
import threading
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bendi.config import Settings
from bendi.errors import BendiError, EngineError, InvalidRequest, ServerBusy
from bendi.runtime.engine import BlockingGenerate, Capabilities, LoadOptions
from bendi.runtime.types import ChatRequest, Event
from bendi.runtime.vllm import launch as L
from bendi.runtime.vllm.environment import find_python
from bendi.runtime.vllm.supervisor import Launch, Supervisor
from bendi.runtime.vllm.upstream import error_from_response, stream_events
from bendi.store import ModelRecord

log = logging.getLogger(__name__)


def log_path(logs_dir: Path, model: str, *, pooling: bool = False) -> Path:
    """Where the vLLM process of `model` writes its log (`bendi logs MODEL` reads it)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    return logs_dir / f"vllm-{safe}{'-embed' if pooling else ''}.log"


@dataclass(eq=False)  # jobs are kept in a set, by identity
class _Job:
    """One request in flight, so abort() can end it with an error."""

    error: BendiError | None = None


class VllmModel(BlockingGenerate):
    """One model on one vLLM server (and, for embeddings, a second one in pooling mode)."""

    engine_name = "vllm"

    def __init__(self, record: ModelRecord, options: LoadOptions, settings: Settings) -> None:
        self.name = str(record.name)
        self.path = record.path
        self.settings = settings
        self.facts = L.read_facts(record.path)
        self.python = find_python(settings.vllm_python)
        self.slots = options.slots
        self._ctx = options.ctx
        self.capabilities = Capabilities(embeddings=True, grammar=True, logprobs=True,
                                         tool_calls=L.tool_parser(self.facts) is not None)
        self._vendor, self._devices, self._layout = _placement(settings)
        self._extra = shlex.split(settings.vllm_args or "")
        self._jobs: set[_Job] = set()
        self._lock = threading.Lock()
        self._closing = False
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = \
            weakref.WeakKeyDictionary()
        self._pooling: Supervisor | None = None
        self.supervisor = self._supervisor(pooling=self.facts.is_embedding)
        self.supervisor.start()
        self.n_ctx_seq = self._served_context() or options.ctx

    # -- processes ---------------------------------------------------------------------------

    def launch_options(self, port: int, *, pooling: bool) -> L.LaunchOptions:
        """The launch of this model's server (or its pooling twin) listening on `port`."""
        gpu_share = self.settings.vllm_gpu_memory_utilization
        if pooling and not self.facts.is_embedding:
            gpu_share = max(0.02, min(0.1, 1.0 - gpu_share - 0.02))  # what the chat server left
        return L.LaunchOptions(
            served_name=self.name, port=port, layout=L.Layout(1, 1, 1) if pooling else self._layout,
            vendor=self._vendor, devices=self._devices, max_model_len=self._ctx,
            max_num_seqs=self.slots, gpu_memory_utilization=gpu_share,
            cpu_threads=self.settings.threads, pooling=pooling, extra_args=self._extra,
            ray_address=self.settings.vllm_ray_address)

    def _supervisor(self, *, pooling: bool) -> Supervisor:
        def factory(port: int) -> Launch:
            spec = L.build_launch(self.python, self.path, self.facts,
                                  self.launch_options(port, pooling=pooling))
            return Launch(spec.argv, spec.env, spec.url, spec.served_name)

        label = f"{self.name} (embeddings)" if pooling and not self.facts.is_embedding else self.name
        return Supervisor(label, factory, log_path(self.settings.logs_dir, self.name, pooling=pooling),
                          start_timeout=self.settings.vllm_start_timeout)

    def _served_context(self) -> int | None:
        try:
            data = httpx.get(self.supervisor.url() + "/v1/models", timeout=10, trust_env=False).json()
            return int(next(m["max_model_len"] for m in data["data"] if m["id"] == self.name))
        except (httpx.HTTPError, ValueError, KeyError, StopIteration, TypeError):
            return None

    # -- the contract ------------------------------------------------------------------------

    @property
    def busy(self) -> int:
        return len(self._jobs)

    @property
    def queued(self) -> int:
        return max(0, len(self._jobs) - self.slots)

    async def agenerate(self, request: ChatRequest) -> AsyncIterator[Event]:  # type: ignore[override]
        """Stream one request through the vLLM server; 503 with Retry-After while it restarts."""
        if self._closing:
            raise ServerBusy(f"{self.name} is being unloaded; retry shortly")
        if self.facts.is_embedding:
            raise InvalidRequest(f"{self.name} is an embedding model; it cannot generate text",
                                 param="model")
        url = self.supervisor.url()
        job = _Job()
        self._jobs.add(job)
        try:
            async for event in stream_events(self._client(), url, request, self.name):
                if job.error is not None:
                    raise job.error
                yield event
        except (httpx.HTTPError, httpx.StreamError) as exc:
            if job.error is not None:
                raise job.error from None
            if self.supervisor.state != "ready" or not self._alive():
                raise ServerBusy(f"vLLM for {self.name} stopped during the request; it is restarting",
                                 retry_after=self.supervisor.retry_after()) from None
            raise EngineError(f"lost the connection to vLLM for {self.name}: {type(exc).__name__}") from None
        finally:
            self._jobs.discard(job)

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors from vLLM's pooling runner (L2-normalised), and the tokens read."""
        if self._closing:
            raise ServerBusy(f"{self.name} is being unloaded; retry shortly")
        sup = self.supervisor if self.facts.is_embedding else self._pooling_supervisor()
        job = _Job()
        self._jobs.add(job)
        try:
            response = httpx.post(sup.url() + "/v1/embeddings", timeout=300, trust_env=False,
                                  json={"model": self.name, "input": texts, "encoding_format": "float"})
        except httpx.HTTPError as exc:
            raise EngineError(f"vLLM for {self.name} did not answer the embedding request: "
                              f"{type(exc).__name__}") from None
        finally:
            self._jobs.discard(job)
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.content)
        data = response.json()
        vectors = [_normalise(item["embedding"]) for item in sorted(data["data"], key=lambda d: d["index"])]
        return vectors, int((data.get("usage") or {}).get("prompt_tokens") or 0)

    def tokenize(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        response = httpx.post(self.supervisor.url() + "/tokenize", timeout=60, trust_env=False,
                              json={"model": self.name, "prompt": text, "add_special_tokens": add_special})
        if response.status_code != 200:
            raise error_from_response(response.status_code, response.content)
        return [int(t) for t in response.json()["tokens"]]

    def abort(self, error: BendiError) -> None:
        """End the requests in flight with `error` at their next event; the process stopping
        (close) ends the ones still waiting for one."""
        for job in list(self._jobs):
            job.error = error

    def close(self, timeout: float = 10.0) -> None:
        """Let the requests in flight finish (at most `timeout` seconds), then stop vLLM."""
        self._closing = True
        deadline = time.monotonic() + timeout
        while self._jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._jobs:
            self.abort(ServerBusy(f"{self.name} was unloaded"))
        self.supervisor.stop()
        if self._pooling is not None:
            self._pooling.stop()

    # -- helpers -----------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        """One connection pool per event loop (the server's, or a blocking caller's own)."""
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(
                trust_env=False, limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
                timeout=httpx.Timeout(connect=10.0, read=None, write=60.0, pool=None))
            self._clients[loop] = client
        return client

    def _pooling_supervisor(self) -> Supervisor:
        with self._lock:
            if self._pooling is None:
                sup = self._supervisor(pooling=True)
                sup.start()
                self._pooling = sup
            return self._pooling

    def _alive(self) -> bool:
        return self.supervisor.pid is not None


def _placement(settings: Settings) -> tuple[L.Vendor, list[int] | None, L.Layout]:
    """Vendor, devices and layout from the settings and the accelerators detected."""
    from bendi.planner.hardware import detect_accelerators

    found = [d for report in detect_accelerators() for d in report.devices]
    vendor = L.vendor_for([d.vendor for d in found])
    devices = L.parse_devices(settings.vllm_devices)
    if vendor.device_variable is None:
        return vendor, None, L.Layout(1, settings.vllm_nodes, settings.vllm_nodes)
    count = len(devices) if devices is not None else len([d for d in found if d.vendor == vendor.name])
    tp = settings.vllm_tensor_parallel or max(1, count)
    return vendor, devices, L.Layout(tp, settings.vllm_nodes, settings.vllm_nodes)


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


class VllmEngine:
    """Hugging Face layout models (safetensors) on a supervised `vllm serve` process."""

    name = "vllm"

    def accepts(self, record: ModelRecord) -> bool:
        return record.format == "safetensors"

    def load(self, record: ModelRecord, options: LoadOptions) -> VllmModel:
        if record.format != "safetensors":
            raise InvalidRequest(
                f"{record.name} is a {record.format} file; vLLM serves Hugging Face safetensors "
                f"models here: `bendi create {record.name.name}-hf --from {record.name} --format "
                "safetensors` converts it", param="model")
        settings = options.settings or Settings.from_env()
        return VllmModel(record, options, settings)
