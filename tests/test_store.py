"""The model store: import, list, show, rm, cp, shared blobs, corrupt files, atomic writes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bendi.errors import InvalidModelFile, InvalidRequest, ModelNotFound
from bendi.store import ModelStore, parse_name
from bendi.store.gguf import read_gguf


@pytest.fixture
def store(bendi_home: Path) -> ModelStore:
    store = ModelStore(bendi_home / "models")
    store.ensure_bundled()
    return store


def blobs(store: ModelStore) -> list[str]:
    return sorted(p.name for p in store.blobs.iterdir()) if store.blobs.exists() else []


def test_names_follow_ollama_conventions() -> None:
    assert str(parse_name("DeepSeek-R1")) == "deepseek-r1:latest"
    assert str(parse_name("deepseek-r1:1.5b")) == "deepseek-r1:1.5b"
    assert str(parse_name("library/qwen2.5:7b-instruct-q4_K_M")) == "library/qwen2.5:7b-instruct-q4_k_m"
    with pytest.raises(InvalidRequest):
        parse_name("../etc/passwd")
    with pytest.raises(InvalidRequest):
        parse_name("bad name")


def test_gguf_header_of_bundled_model(bundled_path: Path) -> None:
    info = read_gguf(bundled_path)
    assert info.architecture == "llama"
    assert info.quantization == "Q4_1"
    assert info.context_length == 8192
    assert info.embedding_length == 576
    assert 130e6 < info.parameter_count < 140e6
    assert info.chat_template and "<|im_start|>" in info.chat_template


def test_reads_write_nothing(bendi_home: Path) -> None:
    store = ModelStore(bendi_home / "models")
    assert store.list() == []
    with pytest.raises(ModelNotFound):
        store.get("smollm2:135m")
    assert not (bendi_home / "models").exists()


def test_bundled_model_registered_without_copy(store: ModelStore, bundled_path: Path) -> None:
    names = [str(r.name) for r in store.list()]
    assert names == ["smollm2:135m"]
    record = store.get("smollm2:135m")
    assert record.path.is_symlink()
    assert record.path.resolve() == bundled_path.resolve()
    assert record.details["quantization_level"] == "Q4_1"


def test_import_show_copy_remove_share_blobs(store: ModelStore, bundled_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "model.gguf"
    shutil.copyfile(bundled_path, src)
    record = store.import_file(src, "deepseek-r1:1.5b", parameters={"temperature": 0.6})
    assert record.digest.startswith("sha256:")
    assert store.get("deepseek-r1:1.5b").parameters == {"temperature": 0.6}
    # Same content as the bundled model: one blob serves both names.
    assert len(blobs(store)) == 1
    store.copy("deepseek-r1:1.5b", "mine")
    assert {str(r.name) for r in store.list()} == {"smollm2:135m", "deepseek-r1:1.5b", "mine:latest"}
    store.remove("deepseek-r1:1.5b")
    store.remove("smollm2:135m")
    assert len(blobs(store)) == 1, "blob must stay while 'mine' uses it"
    assert store.get("mine").path.exists()
    store.remove("mine")
    assert blobs(store) == []
    # A removed bundled model is not re-registered behind the user's back.
    store.ensure_bundled()
    assert store.list() == []


def test_import_distinct_files_keeps_both(store: ModelStore, bundled_path: Path, tmp_path: Path) -> None:
    a = tmp_path / "a.gguf"
    shutil.copyfile(bundled_path, a)
    with a.open("ab") as fh:  # extra bytes after the tensor data: a different, still valid file
        fh.write(b"\0" * 64)
    store.import_file(a, "other")
    assert len(blobs(store)) == 2
    store.remove("other")
    assert len(blobs(store)) == 1


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"this is not a model", "not a GGUF"),
        (b"GGUF\x03\x00\x00\x00" + b"\xff" * 16, "corrupt"),
        (b"GGUF\x03\x00", "truncated"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_written(
    store: ModelStore, tmp_path: Path, content: bytes, reason: str
) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    before = blobs(store)
    with pytest.raises(InvalidModelFile, match=reason):
        store.import_file(bad, "bad")
    assert blobs(store) == before
    assert not store.exists("bad")


def test_truncated_model_is_refused(store: ModelStore, bundled_path: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.gguf"
    with bundled_path.open("rb") as src:
        cut.write_bytes(src.read(20_000_000))
    with pytest.raises(InvalidModelFile, match="truncated"):
        store.import_file(cut, "cut")
    assert not store.exists("cut")
    assert not list(store.blobs.glob(".partial-*"))


def test_unknown_model_suggests_close_names(store: ModelStore) -> None:
    with pytest.raises(ModelNotFound) as info:
        store.get("smolm2:135m")
    assert "smollm2:135m" in info.value.message
    assert "bendi list" in info.value.message


def test_interrupted_import_leaves_no_manifest(
    store: ModelStore, bundled_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "m.gguf"
    shutil.copyfile(bundled_path, src)

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("bendi.store.store.os.replace", boom)
    store.remove("smollm2:135m")  # so the blob must really be written
    with pytest.raises(KeyboardInterrupt):
        store.import_file(src, "half", link="copy")
    monkeypatch.undo()
    assert not store.exists("half")
    assert blobs(store) == []


def test_failed_create_leaves_nothing_and_stale_partials_are_swept(store: ModelStore) -> None:
    store.list()

    def half_then_fail(source: object, path: Path) -> None:
        path.write_bytes(b"GGUF" + b"\0" * 100)
        raise RuntimeError("quantizer died")

    with pytest.raises(RuntimeError):
        store.create_from("smollm2:135m", "broken", half_then_fail, note="test")
    assert not store.exists("broken")
    assert [b for b in blobs(store) if not b.startswith("sha256-")] == []
    # A partial file of a process that was killed (no such pid) goes at the next collection.
    (store.blobs / ".partial-999999999-x.gguf").write_bytes(b"x")
    store.copy("smollm2:135m", "other")
    store.remove("other")
    assert [b for b in blobs(store) if not b.startswith("sha256-")] == []
