"""The services bendi runs on, built once from Settings and shared by the CLI and the server."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from bendi.audit.log import AuditLog
from bendi.audit.writer import BackgroundWriter
from bendi.auth.service import AuthService
from bendi.config import Settings
from bendi.core.embeddings import EmbeddingService
from bendi.core.generation import GenerationService
from bendi.core.observe import Observers
from bendi.errors import InvalidRequest
from bendi.kb.service import KnowledgeBaseService
from bendi.runtime.engine import EngineRegistry
from bendi.runtime.manager import ModelManager
from bendi.store import ModelRecord, ModelStore


@dataclass
class Services:
    settings: Settings
    store: ModelStore
    engines: EngineRegistry
    models: ModelManager
    kb: KnowledgeBaseService
    #: the one path every generation and embedding takes (see bendi.core)
    generation: GenerationService
    #: accounts, keys, grants, quotas (bendi.auth) and the audit log (bendi.audit), both observers
    #: of `generation`, so every request from every entry point is checked and recorded once
    auth: AuthService
    audit: AuditLog
    writer: BackgroundWriter

    @classmethod
    def build(cls, settings: Settings, engines: EngineRegistry | None = None) -> Services:
        """Everything bendi runs on, from `settings`; `engines` defaults to the installed ones."""
        from bendi.planner.guard import choose_context, fit_check

        store = ModelStore(settings.models_dir)
        store.ensure_bundled()
        engines = engines or EngineRegistry.discover()
        limit = settings.memory_limit
        models = ModelManager(settings, store, engines,
                              fit_check=functools.partial(fit_check, memory_limit=limit),
                              choose_ctx=functools.partial(choose_context, memory_limit=limit))
        writer = BackgroundWriter(settings.db_path)
        audit = AuditLog(settings.db_path, settings.home / "audit.key", writer)
        auth = AuthService(settings.db_path, audit, writer, bootstrap_key=settings.api_key)
        observers = Observers()
        # in this order: who may, then how much, then the record of what happened
        observers.add(auth.access)
        observers.add(auth.quotas)
        observers.add(audit)
        embeddings = EmbeddingService(store, models, observers)
        kb = KnowledgeBaseService(settings, store, embeddings)
        generation = GenerationService(store, models, kb, embeddings, observers,
                                       default_model=settings.default_model, max_tokens=settings.max_tokens)
        return cls(settings, store, engines, models, kb, generation, auth, audit, writer)

    def create_model(
        self,
        name: str,
        source: str,
        *,
        quantize: str | None = None,
        allow_requantize: bool = False,
        system: str | None = None,
        template: str | None = None,
        parameters: dict[str, Any] | None = None,
        model_format: str | None = None,
        engine: str | None = None,
    ) -> ModelRecord:
        """`bendi create` and Ollama's /api/create: model `name` from `source`, re-quantized with
        llama.cpp's quantizer when `quantize` is given, converted to the Hugging Face layout for
        vLLM when `model_format` is "safetensors", with other defaults where given."""
        record = self.store.get(source)
        if parameters and "engine" in parameters:  # Ollama's /api/create, `--param engine=vllm`
            parameters = dict(parameters)
            engine = engine or str(parameters.pop("engine"))
        if engine is not None and engine not in self.engines.names():
            raise InvalidRequest(f"no engine {engine!r}; installed: {', '.join(self.engines.names())}")
        fields: dict[str, Any] = {"system": system, "template": template, "engine": engine}
        if parameters:
            fields["parameters"] = {**record.parameters, **parameters}
        fields = {k: v for k, v in fields.items() if v is not None}
        if quantize and record.format != "gguf":
            raise InvalidRequest(f"--quantize re-quantizes GGUF files; {source} is a {record.format} model")
        if model_format not in (None, record.format, "gguf", "safetensors"):
            raise InvalidRequest(f"unknown format {model_format!r}; use gguf or safetensors")
        if model_format == "safetensors" and record.format == "gguf":
            if quantize:
                raise InvalidRequest("--quantize makes GGUF files; convert with --format alone")
            from bendi.runtime.vllm.environment import find_python
            from bendi.store.convert import to_huggingface

            created = to_huggingface(self.store, source, name, find_python(self.settings.vllm_python),
                                     **fields)
        elif model_format == "gguf" and record.format != "gguf":
            raise InvalidRequest(f"{source} is a {record.format} model; bendi converts GGUF to "
                                 "safetensors, not back")
        elif not quantize:
            self.store.copy(source, name)
            created = self.store.update(name, **fields) if fields else self.store.get(name)
        else:
            from bendi.runtime.quantize import check_target, quantize_file

            target = check_target(quantize, record.gguf(), allow_requantize=allow_requantize)
            created = self.store.create_from(
                source, name, lambda info, path: quantize_file(info, path, target),
                note=f"quantized to {target.upper()}", **fields,
            )
        # A model loaded under that name would go on serving what the name meant before.
        self.models.unload(str(created.name))
        return created

    def close(self) -> None:
        self.kb.close()
        self.models.close()
        self.writer.close()  # after the models: the last streams' records are written
        self.auth.close()
        self.audit.close()
