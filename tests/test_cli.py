"""The `bendi` command line, end to end on the bundled model."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from bendi.cli.main import cli


def bendi(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_list_and_show() -> None:
    code, out, _ = bendi("list")
    assert code == 0
    assert "smollm2:135m" in out and "Q4_1" in out and "135M" in out
    code, out, _ = bendi("list", "--json")
    assert json.loads(out)[0]["name"] == "smollm2:135m"
    code, out, _ = bendi("show", "smollm2:135m", "--json")
    data = json.loads(out)
    assert data["architecture"] == "llama"
    assert data["context_length"] == 8192
    assert data["embedding_length"] == 576
    assert data["quantization"] == "Q4_1"
    assert data["license"] == "apache-2.0"
    assert "<|im_start|>" in data["chat_template"]
    code, out, _ = bendi("show", "smollm2:135m")
    assert code == 0 and "context length" in out and "Chat template" in out


def test_import_cp_rm(bundled_path: Path, tmp_path: Path) -> None:
    src = tmp_path / "DeepSeek-R1-Distill-Qwen-1.5B-Q4_K_M.gguf"
    shutil.copyfile(bundled_path, src)
    code, out, _ = bendi("import", str(src), "--name", "deepseek-r1:1.5b", "--param", "temperature=0.6")
    assert code == 0 and "imported deepseek-r1:1.5b" in out
    assert bendi("cp", "deepseek-r1:1.5b", "r1")[0] == 0
    _, out, _ = bendi("list")
    assert "deepseek-r1:1.5b" in out and "r1:latest" in out
    assert bendi("rm", "deepseek-r1:1.5b")[0] == 0
    code, _, err = bendi("show", "deepseek-r1:1.5b")
    assert code == 1 and "not found" in err
    assert bendi("show", "r1")[0] == 0


def test_run_one_shot_and_stdin() -> None:
    code, out, _ = bendi("run", "smollm2:135m", "What is the capital of France?",
                         "--temperature", "0", "--max-tokens", "12")
    assert code == 0 and out.strip()
    code, out2, _ = bendi("run", "smollm2:135m", "--temperature", "0", "--max-tokens", "12",
                          input="What is the capital of France?\n")
    assert code == 0 and out2 == out


def test_interactive_session_commands() -> None:
    script = "/set temperature 0\n/set system Answer in one word.\nHi there\n/show\n/clear\n/bogus\n/bye\n"
    code, out, _ = bendi("run", "smollm2:135m", "-i", "--max-tokens", "8", input=script)
    assert code == 0
    assert "Set temperature to 0.0." in out
    assert "Set system prompt." in out
    assert "temperature=0.0" in out
    assert "Cleared the conversation." in out
    assert "Unknown command" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "no-such-model", "hi"], "model 'no-such-model' not found"),
        (["run", "smollm2", "hi"], "Did you mean smollm2:135m"),
        (["show", "nothing:here"], "bendi list"),
        (["rm", "nothing"], "not found"),
        (["run", "smollm2:135m", "--ctx", "64", "word " * 200], "context is 64 tokens"),
    ],
)
def test_errors_are_one_line(args: list[str], message: str) -> None:
    code, out, err = bendi(*args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err + out
    assert len(err.strip().splitlines()) == 1


def test_bad_model_files_write_nothing(bundled_path: Path, tmp_path: Path, bendi_home: Path) -> None:
    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(bundled_path.read_bytes()[:30_000_000])
    bendi("list")  # the store as any command leaves it (the bundled model registered)
    before = sorted(p.name for p in (bendi_home / "models").rglob("*"))
    for path, message in ((text, "not a GGUF"), (cut, "truncated"), (tmp_path / "missing.gguf", "no such file")):
        code, _, err = bendi("import", str(path), "--name", "bad")
        assert code == 1 and message in err, err
    after = sorted(p.name for p in (bendi_home / "models").rglob("*")) if (bendi_home / "models").exists() else []
    assert after == before
    assert "bad" not in bendi("list")[1]


def test_real_process_prints_no_traceback(bendi_home: Path) -> None:
    """The installed entry point, as a user runs it."""
    env = dict(os.environ, BENDI_HOME=str(bendi_home))
    proc = subprocess.run([sys.executable, "-m", "bendi", "run", "missing-model", "hello"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: model 'missing-model' not found")
    assert "Traceback" not in proc.stderr


def test_ctrl_c_stops_the_answer_not_the_session(bendi_home: Path) -> None:
    """A real `bendi run -i` process: SIGINT mid-answer ends that answer; the chat goes on.

    Nothing here depends on the words the model picks (they differ between CPU kernels): the
    signal goes out as soon as the answer starts streaming, and the question asks for a long
    answer so it is still streaming then. If an answer does finish first (the session then reports
    the SIGINT at its prompt instead), the next question tries again.
    """
    import signal
    import time

    env = dict(os.environ, BENDI_HOME=str(bendi_home), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bendi", "run", "smollm2:135m", "-i", "--temperature", "0", "--stats"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    seen = b""

    def read_until(done: Callable[[bytes], bool], seconds: float = 120) -> bytes:
        nonlocal seen
        start, deadline = len(seen), time.monotonic() + seconds
        while not done(seen[start:]) and time.monotonic() < deadline and proc.poll() is None:
            seen += proc.stdout.read1(4096)  # type: ignore[union-attr]
        return seen[start:]

    read_until(lambda out: b">>> " in out)  # the session is ready for a question
    stopped = False
    for question in (b"Write a long essay about the history of France.",
                     b"List the numbers from 1 to 500, one per line.",
                     b"Tell me a very long story about a dragon."):
        proc.stdin.write(question + b"\n")
        proc.stdin.flush()
        read_until(lambda out: len(out.strip()) > 0)  # the answer is streaming
        proc.send_signal(signal.SIGINT)
        # until the session prompts again after reporting the signal
        after = read_until(lambda out: (b"[stopped]" in out or b"Use Ctrl-D" in out)
                           and out.rstrip().endswith(b">>>"))
        if b"[stopped]" in after:
            # the interrupted answer reports no completion (--stats prints one for finished ones)
            assert not re.search(rb"first token [\d.]+s, finish ", after), after
            stopped = True
            break
        assert b"Use Ctrl-D" in after, seen  # it finished first; the prompt took the signal
    proc.stdin.write(b"/show\n/bye\n")
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=120)
    text = (seen + out).decode()
    assert stopped, text
    assert proc.returncode == 0, text
    assert "model: smollm2:135m" in text  # the session answered /show after the interrupt


def test_create_requantizes_with_llama_cpp_and_the_copy_runs(bendi_home: Path) -> None:
    code, out, err = bendi("create", "smol:q8", "--from", "smollm2:135m", "--quantize", "q8_0",
                           "--system", "Answer in one word.")
    assert code == 0, err
    assert "Q8_0" in out
    _, out, _ = bendi("show", "smol:q8", "--json")
    data = json.loads(out)
    assert data["quantization"] == "Q8_0" and data["system"] == "Answer in one word."
    assert data["parameter_count"] > 130e6 and data["size"] > 140e6  # 8.5 bits a weight
    code, out, err = bendi("run", "smol:q8", "Name a colour.", "--max-tokens", "8")
    assert code == 0 and out.strip(), err
    # The bundled model is untouched.
    _, out, _ = bendi("show", "smollm2:135m", "--json")
    assert json.loads(out)["quantization"] == "Q4_1"


def test_create_refuses_lossy_or_unknown_quantization_and_writes_nothing(bendi_home: Path) -> None:
    blobs_dir = bendi_home / "models" / "blobs"
    bendi("list")
    before = sorted(p.name for p in blobs_dir.iterdir())
    code, _, err = bendi("create", "smol:q4", "--from", "smollm2:135m", "--quantize", "q4_0")
    assert code != 0 and "already quantized (Q4_1)" in err and "--allow-requantize" in err
    code, _, err = bendi("create", "smol:q9", "--from", "smollm2:135m", "--quantize", "q9")
    assert code != 0 and "unknown quantization" in err and "q8_0" in err
    code, _, err = bendi("create", "smol:x", "--from", "no-such-model", "--quantize", "q8_0")
    assert code != 0 and "not found" in err
    code, _, err = bendi("create", "smol:same", "--from", "smollm2:135m", "--quantize", "q4_1")
    assert code != 0 and "already Q4_1" in err
    assert sorted(p.name for p in blobs_dir.iterdir()) == before
    _, out, _ = bendi("list", "--json")
    assert [m["name"] for m in json.loads(out)] == ["smollm2:135m"]
