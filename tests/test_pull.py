"""bendi pull against a real HTTP server on loopback speaking each source's shape (tests/mirror.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.mirror import Mirror, MirrorServer, sha256_of, write_tiny_gguf

from bendi.cli.main import cli
from bendi.config import Settings
from bendi.errors import DigestMismatch, InvalidRequest, ModelNotFound, NotAvailableOffline
from bendi.store import ModelStore
from bendi.store.pull import Puller, PullEvent
from bendi.store.remote import parse_checksums
from bendi.store.sources import load_sources
from bendi.store.wanted import default_name, parse_wanted

R1_REPO = "bartowski/DeepSeek-R1-Distill-Qwen-1.5B-GGUF"
R1_FILE = "DeepSeek-R1-Distill-Qwen-1.5B-{}.gguf"


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_gguf(tmp_path / "tiny.gguf", n_floats=512 * 1024)  # 2 MB


@pytest.fixture
def mirror() -> Iterator[tuple[Mirror, MirrorServer]]:
    m = Mirror()
    with MirrorServer(m) as server:
        yield m, server


def configure(home: Path, *entries: tuple[str, str, str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    text = "".join(f'[[source]]\nname = "{n}"\nkind = "{k}"\nurl = "{u}"\n\n' for n, k, u in entries)
    (home / "sources.toml").write_text(text)


def pull(settings: Settings, text: str, **kw: object) -> tuple[object, list[PullEvent]]:
    events: list[PullEvent] = []
    record = Puller(settings, ModelStore(settings.models_dir)).pull(text, progress=events.append, **kw)  # type: ignore[arg-type]
    return record, events


def installed(settings: Settings) -> set[str]:
    return {str(r.name) for r in ModelStore(settings.models_dir).list()} - {"smollm2:135m"}


# -- names, sources, checksum files (no network) -----------------------------------------------------

def test_names_map_to_catalog_quantizations_and_files() -> None:
    w = parse_wanted("deepseek-r1:1.5b")
    assert (w.catalog and w.catalog.name, w.quant, str(w.name)) == ("deepseek-r1:1.5b", "Q4_K_M", "deepseek-r1:1.5b")
    assert w.hf_target(None) == (R1_REPO, R1_FILE.format("Q4_K_M"))
    assert w.ollama_target() == ("library/deepseek-r1", "1.5b-qwen-distill-q4_K_M")
    q8 = parse_wanted("deepseek-r1:8b-q8_0")
    assert (q8.quant, str(q8.name)) == ("Q8_0", "deepseek-r1:8b-q8_0")
    assert q8.ollama_target() == ("library/deepseek-r1", "8b-llama-distill-q8_0")
    assert parse_wanted("deepseek-r1:7b-qwen-distill-fp16").quant == "F16"
    assert parse_wanted("deepseek-r1").catalog.name == "deepseek-r1:7b"  # type: ignore[union-attr]
    chosen = parse_wanted("deepseek-r1:14b", quant_chooser=lambda m: ("Q3_K_M", "tight here"))
    assert (chosen.quant, chosen.quant_reason) == ("Q3_K_M", "tight here")
    f = parse_wanted("bartowski/Qwen2.5-0.5B-Instruct-GGUF/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf")
    assert (f.repo, f.file, str(f.name)) == ("bartowski/Qwen2.5-0.5B-Instruct-GGUF",
                                             "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "qwen2.5-0.5b-instruct:q4_k_m")
    assert parse_wanted("qwen2.5:0.5b").ollama_target() == ("library/qwen2.5", "0.5b")
    assert default_name("model.gguf") == "model:latest"
    with pytest.raises(InvalidRequest):
        parse_wanted("deepseek-r1:7b-q9_z")
    with pytest.raises(InvalidRequest):
        parse_wanted("org/repo/../../etc/passwd.gguf")


def test_sources_file_env_overrides_and_errors(bendi_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(bendi_home, ("hf-mirror", "huggingface", "https://hf-mirror.com"), ("nas", "path", "/mnt/models"))
    monkeypatch.setenv("BENDI_SOURCES", "lan=ollama:http://10.0.0.5:11434,nas=http:http://shadowed")
    found = load_sources(Settings.from_env())
    assert [(s.name, s.kind) for s in found] == [("lan", "ollama"), ("nas", "http"), ("hf-mirror", "huggingface")]
    result = CliRunner().invoke(cli, ["sources", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["sources"][0]["url"] == "http://10.0.0.5:11434"
    (bendi_home / "sources.toml").write_text('[[source]]\nname = "x"\nkind = "ftp"\nurl = "ftp://a"\n')
    monkeypatch.delenv("BENDI_SOURCES")
    result = CliRunner().invoke(cli, ["sources"])
    assert result.exit_code == 1 and "unknown source kind 'ftp'" in result.output
    (bendi_home / "sources.toml").unlink()
    with pytest.raises(NotAvailableOffline, match="no pull sources configured"):
        pull(Settings.from_env(), "deepseek-r1:1.5b")


def test_checksum_file_formats() -> None:
    text = f"# comment\n{'a' * 64}  model.gguf\n{'B' * 64} *sub/x.gguf\nnot a line\n"
    assert parse_checksums(text) == {"model.gguf": "a" * 64, "sub/x.gguf": "b" * 64}


# -- each kind of source -----------------------------------------------------------------------------

def test_pull_from_a_hugging_face_mirror_by_catalog_name(mirror, tiny: Path, settings: Settings) -> None:
    m, server = mirror
    served = m.add_hf(R1_REPO, R1_FILE.format("Q8_0"), tiny)
    configure(settings.home, ("mirror", "huggingface", server.url))
    record, events = pull(settings, "deepseek-r1:1.5b-q8_0")
    assert str(record.name) == "deepseek-r1:1.5b-q8_0"  # type: ignore[attr-defined]
    assert record.digest == f"sha256:{served.sha256}"  # type: ignore[attr-defined]
    statuses = [e.status for e in events]
    assert statuses[:2] == ["deepseek-r1:1.5b: Q8_0, asked for in the tag", "pulling manifest"]
    assert statuses[-2:] == ["verifying sha256 digest", "writing manifest"]
    progress = [e for e in events if e.total is not None]
    assert progress[-1].completed == progress[-1].total == served.size
    prov = record.manifest["provenance"]  # type: ignore[attr-defined]
    assert prov["source"] == "mirror" and prov["license"] == "mit" and prov["quantization"] == "F32"
    assert prov["url"] == f"{server.url}/{R1_REPO}/resolve/main/{R1_FILE.format('Q8_0')}"
    assert any(p.startswith(f"/api/models/{R1_REPO}/tree/main") for _, p, _ in m.requests)
    assert any(p == f"/cdn/{served.sha256}" for _, p, _ in m.requests)  # followed the redirect
    assert not list((settings.models_dir / "partial").glob("*.partial"))
    # pulling again fetches nothing
    m.requests.clear()
    _, again = pull(settings, "deepseek-r1:1.5b-q8_0")
    assert not any(p.startswith("/cdn/") for _, p, _ in m.requests)
    assert [e for e in again if e.total is not None][0].completed == served.size


def test_pull_a_repo_file_when_the_listing_has_no_lfs_metadata(mirror, tiny: Path, settings: Settings) -> None:
    m, server = mirror
    served = m.add_hf("someone/Tiny-GGUF", "Tiny-Q4_K_M.gguf", tiny)
    m.add_hf("someone/Tiny-GGUF", "README.md", tiny)
    m.add_hf("someone/Tiny-GGUF", "Tiny-Q8_0.gguf", tiny)
    m.page_size = 1  # three pages: the file is found by following the Link headers
    m.hide_lfs = True  # the sha256 must come from the resolve URL's X-Linked-Etag
    configure(settings.home, ("mirror", "hf", server.url))
    record, _ = pull(settings, "someone/Tiny-GGUF/Tiny-Q4_K_M.gguf")
    assert str(record.name) == "tiny:q4_k_m" and record.digest.endswith(served.sha256)  # type: ignore[attr-defined]
    assert any(method == "HEAD" and "/resolve/main/" in p for method, p, _ in m.requests)
    assert sum("/tree/main" in t for t in m.targets) == 3 and any("cursor=2" in t for t in m.targets)


def test_pull_from_an_ollama_registry_keeps_system_and_params(mirror, tiny: Path, settings: Settings) -> None:
    m, server = mirror
    served = m.add_ollama("library/deepseek-r1:7b-qwen-distill-q4_K_M", tiny, system="Think first.",
                          params={"temperature": 0.6, "stop": ["<｜end▁of▁sentence｜>"]}, license="MIT License\n...")
    configure(settings.home, ("registry", "ollama", server.url))
    record, _ = pull(settings, "deepseek-r1:7b", quant_chooser=lambda m: ("Q4_K_M", "test"))
    assert str(record.name) == "deepseek-r1:7b" and record.digest.endswith(served.sha256)  # type: ignore[attr-defined]
    assert record.manifest["system"] == "Think first."  # type: ignore[attr-defined]
    assert record.manifest["parameters"]["temperature"] == 0.6  # type: ignore[attr-defined]
    accepts = [p for _, p, _ in m.requests if "/manifests/" in p]
    assert accepts == ["/v2/library/deepseek-r1/manifests/7b-qwen-distill-q4_K_M"]


def test_pull_from_an_http_directory_and_a_local_path(mirror, tiny: Path, tmp_path: Path,
                                                      settings: Settings) -> None:
    m, server = mirror
    served = m.add_plain(R1_FILE.format("Q4_K_M"), tiny)
    folder = tmp_path / "nfs"
    folder.mkdir()
    (folder / "models").mkdir()
    (folder / "models" / "other.gguf").write_bytes(tiny.read_bytes())
    (folder / "SHA256SUMS").write_text(f"{served.sha256}  models/other.gguf\n")
    configure(settings.home, ("web", "http", server.url + "/files"), ("nfs", "path", str(folder)))
    record, _ = pull(settings, "deepseek-r1:1.5b", quant_chooser=lambda m: ("Q4_K_M", "test"))
    assert record.manifest["provenance"]["source"] == "web"  # type: ignore[attr-defined]
    record2, _ = pull(settings, "models/other.gguf", source="nfs")
    assert str(record2.name) == "other:latest" and record2.digest == record.digest  # type: ignore[attr-defined]
    with pytest.raises(ModelNotFound, match="not on any configured source"):
        pull(settings, "missing.gguf")


# -- transfers that go wrong ---------------------------------------------------------------------------

def test_a_dropped_connection_is_resumed_with_a_range_request(mirror, tiny: Path, settings: Settings) -> None:
    m, server = mirror
    served = m.add_hf(R1_REPO, R1_FILE.format("Q4_K_M"), tiny)
    m.drop_after = 1_500_000
    configure(settings.home, ("mirror", "huggingface", server.url))
    record, _ = pull(settings, "deepseek-r1:1.5b-q4_k_m")
    assert record.digest.endswith(served.sha256)  # type: ignore[attr-defined]
    first, *rest = m.ranges_from()
    assert first == 0 and rest and 0 < rest[0] <= 1_500_000  # continued where the first stopped


def test_a_corrupted_byte_is_refused_and_nothing_is_registered(mirror, tiny: Path, settings: Settings) -> None:
    m, server = mirror
    m.add_hf(R1_REPO, R1_FILE.format("Q4_K_M"), tiny)
    m.corrupt_at = 1_000_000
    configure(settings.home, ("mirror", "huggingface", server.url))
    with pytest.raises(DigestMismatch, match="nothing was installed"):
        pull(settings, "deepseek-r1:1.5b-q4_k_m")
    assert installed(settings) == set()
    assert not list((settings.models_dir / "partial").glob("*.partial"))
    assert not [b for b in (settings.models_dir / "blobs").iterdir() if not b.is_symlink()] \
        if (settings.models_dir / "blobs").exists() else True
    m.corrupt_at = None  # the mirror is fixed: the next pull succeeds
    record, _ = pull(settings, "deepseek-r1:1.5b-q4_k_m")
    assert str(record.name) == "deepseek-r1:1.5b-q4_k_m"  # type: ignore[attr-defined]


def test_parallel_parts_and_a_server_that_ignores_range(mirror, tmp_path: Path, settings: Settings,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from bendi.store import transfer

    monkeypatch.setattr(transfer, "MIN_PART", 1 << 20)  # 4 parts of a 4 MB file
    m, server = mirror
    big = write_tiny_gguf(tmp_path / "big.gguf", n_floats=1024 * 1024)
    served = m.add_hf("x/Big-GGUF", "Big-Q8_0.gguf", big)
    configure(settings.home, ("mirror", "huggingface", server.url))
    record, _ = pull(settings, "x/Big-GGUF/Big-Q8_0.gguf")
    assert sha256_of(record.path) == served.sha256  # type: ignore[attr-defined]
    assert len({r for r in m.ranges_from()}) == 4
    ModelStore(settings.models_dir).remove(str(record.name))  # type: ignore[attr-defined]
    m.ignore_range = True
    m.requests.clear()
    record, _ = pull(settings, "x/Big-GGUF/Big-Q8_0.gguf")
    assert sha256_of(record.path) == served.sha256  # type: ignore[attr-defined]


def test_proxy_variables_are_honoured(mirror, tiny: Path, settings: Settings,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A source on a host name that does not resolve, reachable only through HTTP_PROXY: the mirror
    doubles as the proxy (it routes absolute-URL requests by their path)."""
    m, server = mirror
    served = m.add_hf(R1_REPO, R1_FILE.format("Q4_K_M"), tiny)
    for var in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    configure(settings.home, ("far", "huggingface", "http://mirror.bendi.invalid"))
    record, _ = pull(settings, "deepseek-r1:1.5b-q4_k_m")
    assert record.digest.endswith(served.sha256)  # type: ignore[attr-defined]
    assert any(t.startswith("http://mirror.bendi.invalid/api/models/") for t in m.targets)
    assert any(t == f"http://mirror.bendi.invalid/cdn/{served.sha256}" for t in m.targets)


def test_not_enough_disk_space_is_refused_before_downloading(mirror, tiny: Path, settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    m, server = mirror
    m.add_hf(R1_REPO, R1_FILE.format("Q4_K_M"), tiny)
    configure(settings.home, ("mirror", "huggingface", server.url))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 1000))  # type: ignore[attr-defined]
    with pytest.raises(Exception, match="not enough disk space"):
        pull(settings, "deepseek-r1:1.5b-q4_k_m")
    assert not any(p.startswith("/cdn/") for _, p, _ in m.requests)


# -- the real CLI process, killed mid-transfer -----------------------------------------------------

def _bendi(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENDI_")}
    env["BENDI_HOME"] = str(home)
    return subprocess.Popen([sys.executable, "-m", "bendi", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _state_done(home: Path) -> int:
    for state in (home / "models" / "partial").glob("*.json"):
        try:
            return sum(p["done"] for p in json.loads(state.read_text())["parts"])
        except (ValueError, KeyError, OSError):
            return 0
    return 0


@pytest.fixture(scope="session")
def real_gguf(bundled_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled 100 MB GGUF with its last weight byte changed: a real model whose sha256 is
    not already in the store (the bundled model would be found there and nothing fetched)."""
    copy = tmp_path_factory.mktemp("real") / "real.gguf"
    data = bytearray(bundled_path.read_bytes())
    data[-1] ^= 0x01
    copy.write_bytes(bytes(data))
    return copy


@pytest.mark.slow
def test_kill_9_mid_pull_then_pull_again_resumes(mirror, real_gguf: Path, settings: Settings) -> None:
    """The demonstration: `bendi pull deepseek-r1:1.5b` from a configured mirror serving a real GGUF
    under the real repository and file names; killed with SIGKILL mid-transfer; pulled again."""
    m, server = mirror
    served = m.add_hf(R1_REPO, R1_FILE.format("Q4_K_M"), real_gguf)
    m.add_hf(R1_REPO, R1_FILE.format("Q8_0"), real_gguf)
    configure(settings.home, ("hf-mirror", "huggingface", server.url))
    m.throttle = 20e6  # ~5 s for the 100 MB file, so the kill lands mid-transfer
    proc = _bendi(settings.home, "pull", "deepseek-r1:1.5b")
    deadline = time.monotonic() + 60
    while _state_done(settings.home) < 10_000_000:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the pull made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_at_kill = _state_done(settings.home)
    assert 0 < done_at_kill < served.size
    assert installed(settings) == set()  # nothing half-registered
    m.throttle = None
    m.requests.clear()
    second = _bendi(settings.home, "pull", "deepseek-r1:1.5b")
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert "pulled deepseek-r1:1.5b" in out and "sha256 verified" in out
    assert "deepseek-r1:1.5b: Q" in err and "bendi plan" in err  # the quantization and why
    starts = m.ranges_from()
    assert starts and min(starts) >= done_at_kill - 1  # resumed, not restarted
    assert ModelStore(settings.models_dir).get("deepseek-r1:1.5b").digest == f"sha256:{served.sha256}"


@pytest.mark.slow
def test_ctrl_c_leaves_nothing_registered_and_says_how_to_resume(mirror, real_gguf: Path,
                                                                 settings: Settings) -> None:
    m, server = mirror
    m.add_hf(R1_REPO, R1_FILE.format("Q4_K_M"), real_gguf)
    configure(settings.home, ("hf-mirror", "huggingface", server.url))
    m.throttle = 20e6
    proc = _bendi(settings.home, "pull", "deepseek-r1:1.5b-q4_k_m")
    deadline = time.monotonic() + 60
    while _state_done(settings.home) < 5_000_000:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "run the same command again to resume" in err
    assert "Traceback" not in err
    assert installed(settings) == set()
    assert list((settings.models_dir / "partial").glob("*.partial"))


# -- /api/pull through the official ollama client ------------------------------------------------------

@pytest.mark.slow
def test_api_pull_streams_ollama_progress_to_the_official_client(mirror, real_gguf: Path, tiny: Path,
                                                                  tmp_path: Path) -> None:
    import ollama
    from tests.server_util import ServerProcess

    m, server = mirror
    served = m.add_ollama("library/deepseek-r1:1.5b-qwen-distill-q8_0", real_gguf, system="Be brief.")
    m.add_hf("x/Bad-GGUF", "Bad-Q4_0.gguf", tiny)
    srv = ServerProcess(tmp_path / "server-home", env={
        "BENDI_SOURCES": f"registry=ollama:{server.url},hub=huggingface:{server.url}"}).wait_ready()
    try:
        client = ollama.Client(host=srv.url)
        events = list(client.pull("deepseek-r1:1.5b-q8_0", stream=True))
        statuses = [e.status for e in events]
        assert statuses[0].startswith("deepseek-r1:1.5b: Q8_0") and statuses[1] == "pulling manifest"
        assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
        progress = [e for e in events if e.total]
        assert progress and progress[-1].digest == f"sha256:{served.sha256}"
        assert progress[-1].completed == progress[-1].total == served.size
        assert all(e.status == f"pulling {served.sha256[:12]}" for e in progress)
        assert "deepseek-r1:1.5b-q8_0" in {x.model for x in client.list().models}
        reply = client.chat(model="deepseek-r1:1.5b-q8_0", messages=[{"role": "user", "content": "Hi"}],
                            options={"num_predict": 4})
        assert reply.done and reply.eval_count and reply.eval_count > 0  # the pulled model serves
        # a bad name: an HTTP error before any line, as Ollama sets the status when nothing was sent
        with pytest.raises(ollama.ResponseError) as bad_name:
            list(client.pull("deepseek-r1:7b-q9_z", stream=True))
        assert bad_name.value.status_code == 400 and "not a quantization" in bad_name.value.error
        # not on any source: like Ollama, "pulling manifest" went out first, so the error is a line
        with pytest.raises(ollama.ResponseError) as missing:
            list(client.pull("nothing-here:7b", stream=True))
        assert "not on any configured source" in missing.value.error
        # an error after progress began: a final {"error": ...} line
        m.corrupt_at = 100
        with pytest.raises(ollama.ResponseError) as bad:
            list(client.pull("x/Bad-GGUF/Bad-Q4_0.gguf", stream=True))
        assert "sha256 mismatch" in bad.value.error
        assert "bad:q4_0" not in {x.model for x in client.list().models}
        m.corrupt_at = None
        done = client.pull("x/Bad-GGUF/Bad-Q4_0.gguf", stream=False)
        assert done.status == "success"
    finally:
        srv.stop()
