"""Hugging Face layout models in the store (import, show, copy, remove), the GGUF conversion's
errors, the Ray commands of `bendi cluster`, and `bendi plan --nodes`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.test_vllm_engine import make_hf_dir

from bendi.cli.main import cli
from bendi.errors import BendiError, InvalidModelFile, InvalidRequest
from bendi.runtime.vllm import cluster
from bendi.store import ModelStore


def _files(home: Path) -> list[str]:
    root = home / "models"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_import_a_model_directory(tmp_path: Path, bendi_home: Path) -> None:
    source = make_hf_dir(tmp_path)
    out = CliRunner().invoke(cli, ["import", str(source), "--name", "tiny:hf"])
    assert out.exit_code == 0, out.output
    assert "llama" in out.output and "safetensors" in out.output
    store = ModelStore(bendi_home / "models")
    record = store.get("tiny:hf")
    assert record.format == "safetensors" and record.path.is_dir()
    assert {p.name for p in record.path.iterdir()} == {"config.json", "tokenizer.json",
                                                        "tokenizer_config.json", "model.safetensors"}
    assert (record.path / "config.json").read_text() == (source / "config.json").read_text()
    assert set(record.manifest["files"]) == {p.name for p in record.path.iterdir()}
    facts = record.facts()
    assert facts["architecture"] == "llama" and facts["parameter_count"] == 8 * 64
    assert facts["context_length"] == 2048 and "<think>" in facts["chat_template"]
    shown = CliRunner().invoke(cli, ["show", "tiny:hf"])
    assert shown.exit_code == 0 and "llama" in shown.output
    carried = CliRunner().invoke(cli, ["export", "tiny:hf", "-o", str(tmp_path / "x.bendi")])
    assert carried.exit_code == 1 and "bundles carry GGUF models" in carried.output
    assert "Traceback" not in carried.output and not list(tmp_path.glob("x.bendi*"))
    # a second name shares the blobs and the tree; removing both leaves nothing behind
    store.copy("tiny:hf", "tiny:two")
    assert store.get("tiny:two").path == record.path
    store.remove("tiny:hf")
    assert record.path.is_dir()
    store.remove("tiny:two")
    assert not record.path.exists()
    assert not [p for p in (bendi_home / "models" / "blobs").iterdir() if "sha256" in p.name
                and p.name not in _bundled_blobs(store)]


def _bundled_blobs(store: ModelStore) -> set[str]:
    return {r.path.name for r in store.list()}


def test_bad_model_directories_write_nothing(tmp_path: Path, bendi_home: Path) -> None:
    store = ModelStore(bendi_home / "models")
    good = make_hf_dir(tmp_path)
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    (no_config / "model.safetensors").write_bytes((good / "model.safetensors").read_bytes())
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    (pickles / "config.json").write_text("{}")
    (pickles / "pytorch_model.bin").write_bytes(b"\0" * 64)
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in good.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    data = (good / "model.safetensors").read_bytes()
    (cut / "model.safetensors").write_bytes(data[: len(data) - 100])
    before = _files(bendi_home)
    for path, message in ((no_config, "no config.json"), (pickles, "PyTorch .bin"), (cut, "truncated"),
                          (tmp_path / "missing", "not a directory")):
        with pytest.raises(InvalidModelFile, match=message):
            store.import_dir(path, "bad:one")
    assert _files(bendi_home) == before


def test_conversion_without_transformers_says_what_is_missing(bendi_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # bendi's own environment has no transformers or torch: a clear one-line error, nothing written
    monkeypatch.setenv("BENDI_VLLM_PYTHON", sys.executable)
    runner = CliRunner()
    runner.invoke(cli, ["list"])  # registers the bundled model
    before = _files(bendi_home)
    out = runner.invoke(cli, ["create", "smol:hf", "--from", "smollm2:135m", "--format", "safetensors"])
    assert out.exit_code == 1
    assert "cannot convert smollm2:135m to safetensors" in out.output and "transformers" in out.output
    assert "Traceback" not in out.output
    assert _files(bendi_home) == before


def test_conversion_needs_a_vllm_environment(bendi_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENDI_VLLM_PYTHON", "/nonexistent/python")
    out = CliRunner().invoke(cli, ["create", "smol:hf", "--from", "smollm2:135m", "--format", "safetensors"])
    assert out.exit_code == 1 and "BENDI_VLLM_PYTHON=/nonexistent/python is not an executable" in out.output
    bad = CliRunner().invoke(cli, ["create", "x:y", "--from", "smollm2:135m", "--engine", "nope"])
    assert bad.exit_code == 1 and "no engine 'nope'" in bad.output


def test_create_can_pin_the_engine(bendi_home: Path) -> None:
    out = CliRunner().invoke(cli, ["create", "smol:pinned", "--from", "smollm2:135m", "--engine", "llama.cpp"])
    assert out.exit_code == 0, out.output
    manifest = json.loads((bendi_home / "models" / "manifests" / "smol" / "pinned.json").read_text())
    assert manifest["engine"] == "llama.cpp"
    # the engine as a parameter (how Ollama's /api/create can carry it) lands in the same place
    out = CliRunner().invoke(cli, ["create", "smol:as-param", "--from", "smollm2:135m",
                                   "--param", "engine=vllm", "--param", "temperature=0.2"])
    assert out.exit_code == 0, out.output
    manifest = json.loads((bendi_home / "models" / "manifests" / "smol" / "as-param.json").read_text())
    assert manifest["engine"] == "vllm" and "engine" not in manifest["parameters"]
    assert manifest["parameters"]["temperature"] == 0.2


def test_ray_commands(tmp_path: Path) -> None:
    head = cluster.head_command("/opt/vllm/bin/ray", node_ip="10.0.0.1")
    assert head.argv[:3] == ["/opt/vllm/bin/ray", "start", "--head"]
    assert "--port=6379" in head.argv and "--node-ip-address=10.0.0.1" in head.argv
    assert "--disable-usage-stats" in head.argv and "--include-dashboard=false" in head.argv
    assert head.env["RAY_USAGE_STATS_ENABLED"] == "0"
    join = cluster.join_command("ray", "10.0.0.1", node_ip="10.0.0.2", devices=8, device_resource="NPU")
    assert "--address=10.0.0.1:6379" in join.argv and '--resources={"NPU": 8}' in join.argv
    assert "--num-gpus=4" in cluster.join_command("ray", "h:1", node_ip="10.0.0.3", devices=4).argv
    with pytest.raises(InvalidRequest, match="not an IPv4 address"):
        cluster.head_command("ray", node_ip="head.local")
    python = tmp_path / "bin" / "python"
    python.parent.mkdir()
    python.touch()
    with pytest.raises(BendiError, match="pip install ray"):
        cluster.ray_executable(str(python))


def test_plan_across_nodes() -> None:
    out = CliRunner().invoke(cli, ["plan", "deepseek-r1:671b", "--gpus", "8x80GB", "--ram", "512GB",
                                   "--nodes", "2", "--json"])
    assert out.exit_code == 0, out.output
    vllm = json.loads(out.output)["models"][0]["vllm"]
    assert vllm["tensor_parallel"] == 8 and vllm["pipeline_parallel"] == 2
    assert "--distributed-executor-backend ray" in vllm["detail"]["command"]
    assert "BENDI_VLLM_NODES=2" in vllm["detail"]["bendi"]
    one = CliRunner().invoke(cli, ["plan", "deepseek-r1:671b", "--gpus", "8x80GB", "--ram", "512GB", "--json"])
    assert json.loads(one.output)["models"][0]["vllm"] is None  # 671B FP8 does not fit one 8x80GB node
    bad = CliRunner().invoke(cli, ["plan", "--nodes", "0"])
    assert bad.exit_code != 0
