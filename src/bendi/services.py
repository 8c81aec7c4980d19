"""The services bendi runs on, built once from Settings and shared by the CLI and the server."""

from __future__ import annotations

from dataclasses import dataclass

from bendi.config import Settings
from bendi.kb.service import KnowledgeBaseService
from bendi.runtime.engine import EngineRegistry
from bendi.runtime.manager import ModelManager
from bendi.store import ModelStore


@dataclass
class Services:
    settings: Settings
    store: ModelStore
    engines: EngineRegistry
    models: ModelManager
    kb: KnowledgeBaseService

    @classmethod
    def build(cls, settings: Settings) -> Services:
        from bendi.planner.guard import choose_context, fit_check

        store = ModelStore(settings.models_dir)
        engines = EngineRegistry.discover()
        models = ModelManager(settings, store, engines, fit_check=fit_check, choose_ctx=choose_context)
        return cls(settings, store, engines, models, KnowledgeBaseService(settings, store, models))

    def close(self) -> None:
        self.kb.close()
        self.models.close()
