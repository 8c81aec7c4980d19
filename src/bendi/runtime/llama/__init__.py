"""The llama.cpp engine, in process: backend (init, threads, build info), vocab (tokens and
templates), scheduler (continuous batching), sampling (sampler chains, log-probabilities),
embedding (the pooled context), model (the loaded model that ties them together) and engine
(what the engine registry loads models through).

Names are imported on first use, so discovering the engine does not load llama.cpp's library.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "LlamaModel": "bendi.runtime.llama.model",
    "LlamaCppEngine": "bendi.runtime.llama.engine",
    "LoadOptions": "bendi.runtime.engine",
    "default_threads": "bendi.runtime.llama.backend",
    "init_backend": "bendi.runtime.llama.backend",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
