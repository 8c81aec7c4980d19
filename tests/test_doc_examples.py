"""Every `bendi` command in the README's and docs/kb.md's shell examples runs as written on a
fresh install (a fresh BENDI_HOME). The one file a reader must bring, the DeepSeek GGUF of
"Your own models", is stood in for by a copy of the bundled model under that name."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from bendi.cli.main import cli

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "kb.md"]
#: commands that start something long-running
SKIP = ("serve",)
#: what a reader types at a command's prompt (a new user's password, twice)
TYPED = {("user", "add"): "correct horse battery\ncorrect horse battery\n"}


def examples(path: Path) -> list[list[str]]:
    """The bendi commands in the ```sh blocks of `path`, as argument lists (comments dropped,
    `a && b` split)."""
    text = path.read_text(encoding="utf-8")
    out: list[list[str]] = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        for line in block.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0].endswith("bendi") and words[1] not in SKIP:
                    out.append(words[1:])
    return out


def test_the_documents_have_examples() -> None:
    assert len(examples(DOCS[0])) >= 10 and examples(DOCS[1])


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_documented_examples_run_as_written(doc: Path, bundled_path: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(bundled_path, tmp_path / "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf")
    monkeypatch.setenv("BENDI_MAX_TOKENS", "48")  # the examples' answers, kept short for the test
    for args in examples(doc):
        result = CliRunner().invoke(cli, args, input=TYPED.get(tuple(args[:2]), ""))
        assert result.exit_code == 0, f"bendi {' '.join(args)}: {result.stderr or result.stdout}"
