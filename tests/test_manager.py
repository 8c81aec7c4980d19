"""ModelManager with a fake engine: LRU unloading, reloading when the file behind a name changes,
keep-alive expiry, the load guard, and holding: nothing is closed while a caller holds it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.fake_engine import FakeEngine, fake_registry, tiny_gguf

from bendi.config import Settings
from bendi.errors import InsufficientMemory, ServerBusy
from bendi.runtime.manager import Loaded, ModelManager, parse_keep_alive
from bendi.store import ModelStore


@pytest.fixture
def store(settings: Settings, tmp_path: Path) -> ModelStore:
    store = ModelStore(settings.models_dir)
    for i, name in enumerate(("a", "b", "c")):
        store.import_file(tiny_gguf(tmp_path / f"{name}.gguf", name, pad=i), name)
    return store


def manager(settings: Settings, store: ModelStore, **changes: object) -> tuple[ModelManager, FakeEngine]:
    registry, engine = fake_registry()
    return ModelManager(settings.replace(**changes), store, registry), engine


def load(models: ModelManager, name: str, **kwargs: object) -> Loaded:
    """Load `name` and let go of it (what a finished request leaves behind)."""
    loaded = models.acquire(name, **kwargs)  # type: ignore[arg-type]
    models.release(loaded)
    return loaded


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_least_recently_used_idle_model_is_unloaded_for_room(settings: Settings, store: ModelStore,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("bendi.runtime.manager.time.monotonic", clock)
    models, engine = manager(settings, store, max_loaded_models=2)
    a = load(models, "a")
    clock.now += 1
    load(models, "b")
    clock.now += 1
    load(models, "a")  # a is now the most recently used
    clock.now += 1
    load(models, "c")
    assert {m.name for m in models.loaded()} == {"a:latest", "c:latest"}
    assert [m.name for m in engine.loaded if m.closed] == ["b:latest"]
    assert load(models, "a") is a  # still loaded: the same model, not a reload


def test_a_held_model_is_not_the_one_unloaded(settings: Settings, store: ModelStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("bendi.runtime.manager.time.monotonic", clock)
    models, engine = manager(settings, store, max_loaded_models=2)
    a = models.acquire("a")  # a request is using it
    clock.now += 1
    load(models, "b")
    clock.now += 1
    load(models, "c")
    assert {m.name for m in models.loaded()} == {"a:latest", "c:latest"}
    assert [m.name for m in engine.loaded if m.closed] == ["b:latest"]
    models.release(a)


def test_reload_when_the_name_points_at_another_file(settings: Settings, store: ModelStore,
                                                     tmp_path: Path) -> None:
    models, engine = manager(settings, store)
    first = load(models, "a")
    store.import_file(tiny_gguf(tmp_path / "a2.gguf", "a", pad=9), "a")  # same name, new digest
    second = load(models, "a")
    assert second is not first and second.record.digest != first.record.digest
    assert engine.loaded[0].closed and not engine.loaded[1].closed
    assert load(models, "a", ctx=1024).ctx == 1024 and engine.loaded[1].closed  # another context


def test_keep_alive_expiry_unloads_idle_models_only(settings: Settings, store: ModelStore,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("bendi.runtime.manager.time.monotonic", clock)
    models, engine = manager(settings, store, keep_alive=60.0)
    a = models.acquire("a")
    models.release(a)
    b = models.acquire("b", keep_alive=-1)  # forever
    models.release(b, -1)
    c = models.acquire("c", keep_alive=5)
    models.release(c, 5)
    c.model.running = 1  # type: ignore[attr-defined]  # running outside the manager (the CLI)
    clock.now += 30
    assert models.unload_expired() == []
    clock.now += 31
    assert models.unload_expired() == ["a:latest"]  # c is past its time but busy; b never expires
    c.model.running = 0  # type: ignore[attr-defined]
    assert models.unload_expired() == ["c:latest"]
    assert [m.name for m in models.loaded()] == ["b:latest"]
    models.release(b, 0)  # keep_alive 0 on release: unload now that it is idle
    assert models.loaded() == []


def test_keep_alive_durations() -> None:
    assert parse_keep_alive("1h30m", 300) == 5400 and parse_keep_alive(None, 300) == 300
    assert parse_keep_alive("-1", 300) == -1 and parse_keep_alive(90, 300) == 90


def test_fit_check_refuses_before_loading_unless_forced(settings: Settings, store: ModelStore) -> None:
    def refuse(record: object, ctx: int, slots: int) -> None:
        raise InsufficientMemory("too big")

    registry, engine = fake_registry()
    models = ModelManager(settings, store, registry, fit_check=refuse)
    with pytest.raises(InsufficientMemory):
        models.acquire("a")
    assert engine.loaded == []
    forced = ModelManager(settings.replace(force=True), store, registry, fit_check=refuse)
    assert forced.acquire("a").name == "a:latest"


def test_abort_all_reaches_every_model(settings: Settings, store: ModelStore) -> None:
    models, engine = manager(settings, store)
    models.acquire("a")
    models.acquire("b")
    error = ServerBusy("shutting down")
    models.abort_all(error)
    assert [m.aborted for m in engine.loaded] == [error, error]


def test_the_load_guard_leaves_other_formats_to_their_engine(settings: Settings, store: ModelStore) -> None:
    from bendi.planner.guard import choose_context, fit_check

    store.update("b", details={"format": "safetensors", "context_length": 32768})
    with pytest.raises(InsufficientMemory):
        fit_check(store.get("a"), 2048, 1, memory_limit="1MB")
    fit_check(store.get("b"), 2048, 1, memory_limit="1MB")  # no GGUF header to plan from: not refused
    assert choose_context(store.get("b"), 1, memory_limit="1MB") == 8192


# -- holding: nothing is closed under a caller -----------------------------------------------


def test_unloading_a_held_model_closes_it_when_the_last_holder_releases(settings: Settings,
                                                                        store: ModelStore) -> None:
    models, engine = manager(settings, store)
    first, second = models.acquire("a"), models.acquire("a")
    assert first is second and first.users == 2
    assert models.unload("a:latest")
    assert models.loaded() == [] and not engine.loaded[0].closed  # gone from the list, not freed
    third = models.acquire("a")  # a new request gets a fresh copy
    assert third is not first
    models.release(first)
    assert not engine.loaded[0].closed
    models.release(second)
    assert engine.loaded[0].closed and not engine.loaded[1].closed
    models.release(third)


def test_the_reaper_never_closes_a_held_model(settings: Settings, store: ModelStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr("bendi.runtime.manager.time.monotonic", clock)
    models, engine = manager(settings, store)
    held = models.acquire("a", keep_alive=0.001)  # e.g. an embedding of many inputs
    clock.now += 10
    assert models.unload_expired() == [] and not engine.loaded[0].closed
    models.release(held, 0.001)
    clock.now += 10
    assert models.unload_expired() == ["a:latest"] and engine.loaded[0].closed


def test_keep_alive_zero_unloads_after_the_last_holder(settings: Settings, store: ModelStore) -> None:
    models, engine = manager(settings, store)
    one, two = models.acquire("a"), models.acquire("a")
    models.release(one, 0)
    assert models.loaded() and not engine.loaded[0].closed
    models.release(two, 0)
    assert models.loaded() == [] and engine.loaded[0].closed


def test_a_model_removed_from_the_store_is_unloaded(settings: Settings, store: ModelStore) -> None:
    models, engine = manager(settings, store)
    load(models, "a")
    b = models.acquire("b")
    store.remove("a")
    store.remove("b")
    assert sorted(models.unload_expired()) == ["a:latest", "b:latest"]
    assert engine.loaded[0].closed and not engine.loaded[1].closed  # b closes when released
    models.release(b)
    assert engine.loaded[1].closed and models.loaded() == []


def test_num_ctx_is_clamped_to_the_model_and_the_loaded_context_reused(settings: Settings,
                                                                      store: ModelStore) -> None:
    models, engine = manager(settings, store, ctx=512)
    record = store.update("a", details={**store.get("a").details, "context_length": 2048})
    assert record.details["context_length"] == 2048
    big = load(models, "a", ctx=100_000)
    assert big.ctx == 2048
    for _ in range(3):
        assert load(models, "a", ctx=100_000) is big  # clamped once: no reload per request
    assert load(models, "a") is big  # no num_ctx: a context above the default serves
    tiny = load(models, "a", ctx=16)
    assert tiny.ctx == 16 and engine.loaded[0].closed
    default = load(models, "a")  # a tiny num_ctx does not stay for everyone else
    assert default is not tiny and default.ctx == 512 and engine.loaded[1].closed
    assert len(engine.loaded) == 3
