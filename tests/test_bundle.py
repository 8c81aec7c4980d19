"""bendi export / bendi import: a bundle carried between two BENDI_HOMEs, tampering and signatures."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tests.mirror import sha256_of, write_tiny_gguf

from bendi.cli.main import cli
from bendi.store.bundle import is_bundle

MANUAL = ("# 输送机维护\n\n驱动滚筒轴承每运行500小时用锂基润滑脂润滑一次。\n\n"
          "## Conveyor maintenance\n\nLubricate the drive pulley bearings every 500 operating hours.\n")


def bendi(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"BENDI_HOME": str(home)}, catch_exceptions=False)


@pytest.fixture
def site(tmp_path: Path) -> dict[str, Path]:
    """Machine A with a model and a knowledge base; machine B empty; a signing key pair."""
    a, b = tmp_path / "online", tmp_path / "airgapped"
    model = write_tiny_gguf(tmp_path / "r1.gguf", license="mit")
    assert bendi(a, "import", str(model), "--name", "deepseek-r1:1.5b", "--system", "Think.").exit_code == 0
    doc = tmp_path / "manual.md"
    doc.write_text(MANUAL, encoding="utf-8")
    assert bendi(a, "kb", "create", "manuals").exit_code == 0
    assert bendi(a, "kb", "add", "manuals", str(doc)).exit_code == 0
    result = bendi(a, "keygen", str(tmp_path / "keys" / "admin.key"))
    assert result.exit_code == 0 and "fingerprint: SHA256:" in result.output
    return {"a": a, "b": b, "model": model, "key": tmp_path / "keys" / "admin.key",
            "pub": tmp_path / "keys" / "admin.key.pub", "dir": tmp_path}


def export(site: dict[str, Path], *extra: str) -> Path:
    out = site["dir"] / "carry.bendi"
    result = bendi(site["a"], "export", "deepseek-r1:1.5b", "--kb", "manuals", "-o", str(out), *extra)
    assert result.exit_code == 0, result.output
    return out


def test_round_trip_between_two_homes_with_a_model_and_a_knowledge_base(site: dict[str, Path]) -> None:
    bundle = export(site, "--sign", str(site["key"]))
    assert is_bundle(bundle) and not is_bundle(site["model"])
    assert not (site["dir"] / "carry.bendi.partial").exists()
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        index = json.loads(tar.extractfile("bendi-bundle/index.json").read())  # type: ignore[union-attr]
    assert names[0] == "bendi-bundle/BUNDLE" and "bendi-bundle/SHA256SUMS" in names
    assert "bendi-bundle/kb/manuals/kb.sqlite" in names and not any(n.endswith("-wal") for n in names)
    [model] = index["models"]
    assert model["provenance"]["license"] == "mit" and model["provenance"]["sha256"] == sha256_of(site["model"])
    assert index["knowledge_bases"][0]["documents"] == 1

    result = bendi(site["b"], "import", str(bundle), "--trust", str(site["pub"]))
    assert result.exit_code == 0, result.output
    assert "every sha256 matches, signed by SHA256:" in result.output
    listed = bendi(site["b"], "list", "--json")
    assert "deepseek-r1:1.5b" in {m["name"] for m in json.loads(listed.output)}
    shown = json.loads(bendi(site["b"], "show", "deepseek-r1:1.5b", "--json").output)
    assert shown["system"] == "Think." and shown["digest"] == f"sha256:{sha256_of(site['model'])}"
    here, there = (json.loads(bendi(home, "kb", "search", "manuals", "驱动滚筒轴承润滑", "--json").output)
                   for home in (site["a"], site["b"]))
    assert there["results"] == here["results"] and "500小时" in there["results"][0]["text"]
    docs = json.loads(bendi(site["b"], "kb", "docs", "manuals", "--json").output)
    assert [d["name"] for d in docs["documents"]] == ["manual.md"]
    assert not list(site["b"].glob(".import-*"))  # staging cleaned up

    again = bendi(site["b"], "import", str(bundle))
    assert again.exit_code == 1 and "knowledge base manuals already exists" in again.output
    forced = bendi(site["b"], "import", str(bundle), "--force")
    assert forced.exit_code == 0 and "already installed (same sha256)" in forced.output


def test_a_tampered_bundle_installs_nothing(site: dict[str, Path]) -> None:
    bundle = export(site)
    data = bytearray(bundle.read_bytes())
    blob_at = data.find(b"GGUF")  # the model file inside the tar
    data[blob_at + 100_000] ^= 0x01
    bundle.write_bytes(bytes(data))
    result = bendi(site["b"], "import", str(bundle))
    assert result.exit_code == 1 and "sha256 mismatch" in result.output and "nothing was installed" in result.output
    assert bendi(site["b"], "list", "--json").output.count("deepseek-r1") == 0
    assert json.loads(bendi(site["b"], "kb", "ls", "--json").output) == []
    assert not list(site["b"].glob(".import-*"))

    truncated = site["dir"] / "cut.bendi"
    truncated.write_bytes(bundle.read_bytes()[: len(data) // 2])
    result = bendi(site["b"], "import", str(truncated))
    assert result.exit_code == 1 and "nothing was installed" in result.output


def test_signatures_wrong_key_unsigned_and_a_changed_index(site: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    assert bendi(site["a"], "keygen", str(other)).exit_code == 0
    signed_by_other = export(site, "--sign", str(other))
    result = bendi(site["b"], "import", str(signed_by_other), "--trust", str(site["pub"]))
    assert result.exit_code == 1 and "not a trusted key" in result.output

    unsigned = export(site)
    result = bendi(site["b"], "import", str(unsigned), "--trust", str(site["pub"]))
    assert result.exit_code == 1 and "not signed" in result.output

    # a site policy through the one Settings object: BENDI_BUNDLE_TRUST
    result = CliRunner().invoke(cli, ["import", str(unsigned)], env={
        "BENDI_HOME": str(site["b"]), "BENDI_BUNDLE_TRUST": str(site["pub"])})
    assert result.exit_code == 1 and "not signed" in result.output

    # re-sign nothing, change the index: the signature no longer matches
    signed = export(site, "--sign", str(site["key"]))
    raw = bytearray(signed.read_bytes())
    at = raw.find(b'"bendi": "')
    raw[at + 10] = ord("9") if raw[at + 10] != ord("9") else ord("8")
    signed.write_bytes(bytes(raw))
    result = bendi(site["b"], "import", str(signed), "--trust", str(site["pub"]))
    assert result.exit_code == 1 and "does not match its contents" in result.output
    assert bendi(site["b"], "list", "--json").output.count("deepseek-r1") == 0


def test_export_errors_are_one_line(site: dict[str, Path]) -> None:
    result = bendi(site["a"], "export", "nope:1b", "-o", str(site["dir"] / "x.bendi"))
    assert result.exit_code == 1 and "not found" in result.output
    assert not (site["dir"] / "x.bendi").exists() and not (site["dir"] / "x.bendi.partial").exists()
    result = bendi(site["a"], "export", "-o", str(site["dir"] / "x.bendi"))
    assert result.exit_code == 1 and "at least one model" in result.output
    result = bendi(site["a"], "import", str(site["model"]))
    assert result.exit_code == 2 and "--name" in result.output


def _rewrite(bundle: Path, out: Path, change_index: object = None, extra: tarfile.TarInfo | None = None) -> Path:
    """A copy of `bundle` with its index changed and/or one more member (a hostile bundle)."""
    import io

    with tarfile.open(bundle) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()  # type: ignore[union-attr]
            if member.name.endswith("/index.json") and change_index is not None:
                index = json.loads(data)
                change_index(index)  # type: ignore[operator]
                data = json.dumps(index).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data))
        if extra is not None:
            dst.addfile(extra)
    return out


def test_hostile_bundles_are_refused(site: dict[str, Path]) -> None:
    bundle = export(site)
    victim = site["dir"] / "victim.gguf"
    victim.write_bytes(site["model"].read_bytes())

    def point_outside(index: dict) -> None:
        index["models"][0]["blob"] = "../../victim.gguf"

    result = bendi(site["b"], "import", str(_rewrite(bundle, site["dir"] / "h1.bendi", point_outside)))
    assert result.exit_code == 1 and "points outside the bundle" in result.output
    assert victim.exists()

    link = tarfile.TarInfo("bendi-bundle/kb/manuals/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    result = bendi(site["b"], "import", str(_rewrite(bundle, site["dir"] / "h2.bendi", extra=link)))
    assert result.exit_code == 1 and "link or special file" in result.output

    escape = tarfile.TarInfo("bendi-bundle/../../escaped")
    result = bendi(site["b"], "import", str(_rewrite(bundle, site["dir"] / "h3.bendi", extra=escape)))
    assert result.exit_code == 1 and "unsafe path" in result.output
    assert not (site["dir"] / "escaped").exists()
    assert bendi(site["b"], "list", "--json").output.count("deepseek-r1") == 0
