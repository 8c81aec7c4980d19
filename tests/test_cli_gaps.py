"""The command line as an Ollama user expects it: ps/stop against a running server, multi-line
input, /save and /load, the token-limit marker, help for every option, confirmations without a
terminal, `create` onto an existing name, unknown GPUs, display-width tables, library warnings."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from tests.server_util import ServerProcess

from bendi.chats import ChatStore
from bendi.cli.common import display_width, library_messages, table
from bendi.cli.main import cli
from bendi.config import Settings


def bendi(*args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=input)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_every_option_has_help() -> None:
    missing = []

    def walk(command: click.Command, path: str) -> None:
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden and not param.help:
                missing.append(f"{path} {param.opts[0]}")
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(cli, "bendi")
    assert missing == []


@pytest.mark.slow
def test_multiline_save_load_and_the_length_marker(settings: Settings) -> None:
    script = '"""\nFirst line\nsecond line\n"""\n/save trip\n/clear\n/load trip\n/load nothing\n/bye\n'
    code, out, err = bendi("run", "smollm2:135m", "-i", "--max-tokens", "3", "--temperature", "0", input=script)
    assert code == 0, err
    assert "Saved the conversation as trip (2 messages)." in out
    assert "Loaded trip: 2 messages." in out
    assert "no saved conversation 'nothing'; saved: trip" in err
    assert "[stopped at the token limit: 3 tokens" in err
    saved = ChatStore(settings.db_path).load("trip")
    assert saved.messages[0] == {"role": "user", "content": "First line\nsecond line"}
    assert saved.model == "smollm2:135m" and saved.options["max_tokens"] == 3


@pytest.mark.slow
def test_stats_flag_replaces_run_verbose() -> None:
    code, _, err = bendi("run", "smollm2:135m", "Hi", "--max-tokens", "4", "--stats")
    assert code == 0 and "tokens/s" in err
    code, _, err = bendi("run", "smollm2:135m", "Hi", "--verbose")
    assert code == 2 and "--verbose" in err


def test_kb_rm_without_a_terminal_needs_yes(settings: Settings) -> None:
    assert bendi("kb", "create", "notes")[0] == 0
    code, _, err = bendi("kb", "rm", "notes", input="y\n")  # piped: no terminal to ask on
    assert code == 1 and "add -y" in err and len(err.strip().splitlines()) == 1
    assert "notes" in bendi("kb", "ls")[1]
    assert bendi("kb", "rm", "notes", "-y")[0] == 0
    assert "notes" not in bendi("kb", "ls")[1]


def test_create_onto_an_existing_name_says_it_replaces_it() -> None:
    assert bendi("create", "mine", "--from", "smollm2:135m")[0] == 0
    code, out, _ = bendi("create", "mine", "--from", "smollm2:135m", "--param", "temperature=0.2")
    assert code == 0 and "replaced the previous mine:latest" in out


def test_plan_with_an_unknown_gpu_lists_the_known_ones() -> None:
    code, _, err = bendi("plan", "--gpus", "8xFOO")
    assert code == 1 and "unknown GPU 'FOO'" in err and "H200" in err and "8x80GB" in err


def test_tables_align_by_display_width() -> None:
    text = table(["NAME", "CHUNKS"], [["煤矿安全手册.md", 12], ["通风（设备）点检表.docx", 3], ["manual.pdf", 7]])
    columns = {display_width(line[: line.index(n)]) for line, n in zip(text.splitlines()[1:], "1237", strict=False)
               if n in line}
    assert len(columns) == 1
    assert display_width("煤矿") == 4 and display_width("（）") == 4 and display_width("e\u0301") == 1


def test_library_warnings_are_collected_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with library_messages() as messages:
        logging.getLogger("pypdf._reader").warning("EOF marker not found")
    assert messages == ["pypdf: EOF marker not found"]
    assert "EOF marker" not in capsys.readouterr().err


@pytest.mark.slow
def test_ps_and_stop_talk_to_a_running_server(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "home", "--slots", "2").wait_ready()
    try:
        url = ["--url", server.url]
        code, out, _ = bendi("ps", *url)
        assert code == 0 and out.strip().startswith("NAME") and "smollm2" not in out
        assert bendi("stop", "smollm2:135m", *url)[0] == 1  # not loaded yet
        import httpx

        httpx.post(server.url + "/api/generate", json={"model": "smollm2:135m", "prompt": "Hi", "stream": False,
                                                       "options": {"num_predict": 2}}, timeout=300)
        code, out, _ = bendi("ps", *url)
        assert code == 0 and "smollm2:135m" in out and "100% CPU" in out and "from now" in out
        code, out, _ = bendi("stop", "smollm2:135m", *url)
        assert code == 0 and "stopped smollm2:135m" in out
        assert "smollm2" not in bendi("ps", *url)[1]
        # the same port again: one clear line, exit 1
        again = subprocess.run([sys.executable, "-m", "bendi", "serve", "--port", str(server.port)],
                               capture_output=True, text=True, timeout=120,
                               env={"BENDI_HOME": str(tmp_path / "other"), "PATH": "/usr/bin:/bin"})
        assert again.returncode == 1 and "already in use" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    finally:
        server.stop()
    code, _, err = bendi("ps", "--url", server.url)
    assert code == 1 and "no bendi server answers" in err
