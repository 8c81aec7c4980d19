"""The llama.cpp engine, in process: backend (init, threads, build info), vocab (tokens and
templates), scheduler (continuous batching), sampling (sampler chains, log-probabilities),
embedding (the pooled context) and model (the loaded model that ties them together)."""

from bendi.runtime.llama.backend import default_threads, init_backend
from bendi.runtime.llama.model import LlamaModel, LoadOptions

__all__ = ["LlamaModel", "LoadOptions", "default_threads", "init_backend"]
