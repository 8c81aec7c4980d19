"""The audit log: one record per request from every entry point, hash-chained, and `verify`
finding the first bad record after the database is edited, records are inserted or deleted (at
the tail too), the chain is recomputed, or the log is pruned."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from tests.auth_env import CLI, MODEL
from tests.fake_engine import fake_registry, tiny_gguf

from bendi.audit.chain import Anchor, anchor_mac, record_hash
from bendi.audit.log import AuditEntry, AuditLog
from bendi.audit.writer import BackgroundWriter
from bendi.cli.main import cli
from bendi.config import Settings
from bendi.core.context import RequestContext
from bendi.runtime.types import ChatRequest
from bendi.server.app import create_app
from bendi.services import Services


@pytest.fixture
def log(settings: Settings) -> Iterator[AuditLog]:
    writer = BackgroundWriter(settings.db_path)
    audit = AuditLog(settings.db_path, settings.home / "audit.key", writer)
    for i in range(10):
        audit.add(AuditEntry(kind="chat", route="POST /v1/chat/completions", status="ok", user=f"u{i}",
                             model=MODEL, prompt_tokens=i, completion_tokens=2 * i, latency=0.01 * i))
    assert audit.flush()
    yield audit
    writer.close()
    audit.close()


def edit(settings: Settings, sql: str, *args: object) -> None:
    """Change bendi.db behind bendi's back, as someone with the file would."""
    conn = sqlite3.connect(settings.db_path)
    conn.execute(sql, args)
    conn.commit()
    conn.close()


def rows(settings: Settings) -> list[dict[str, object]]:
    conn = sqlite3.connect(settings.db_path)
    conn.row_factory = sqlite3.Row
    out = [dict(r) for r in conn.execute("SELECT * FROM audit ORDER BY seq")]
    conn.close()
    return out


def test_an_intact_chain_verifies(log: AuditLog) -> None:
    result = log.verify()
    assert result.ok and result.checked == 10 and (result.first, result.last) == (1, 10)
    assert log.head().seq == 10


def test_an_edited_record_is_the_first_bad_one(log: AuditLog, settings: Settings) -> None:
    edit(settings, "UPDATE audit SET user = 'mallory' WHERE seq = 4")
    result = log.verify()
    assert not result.ok and result.bad_seq == 4 and "edited" in str(result.problem)
    assert result.summary().startswith("audit log broken at record 4: edited")


def test_an_edited_token_count_is_caught(log: AuditLog, settings: Settings) -> None:
    edit(settings, "UPDATE audit SET completion_tokens = 0 WHERE seq = 7")
    assert log.verify().bad_seq == 7


def test_a_deleted_record_is_reported(log: AuditLog, settings: Settings) -> None:
    edit(settings, "DELETE FROM audit WHERE seq = 5")
    result = log.verify()
    assert result.bad_seq == 5 and "record 5 deleted" in str(result.problem)


def test_records_deleted_at_the_tail_are_reported(log: AuditLog, settings: Settings) -> None:
    edit(settings, "DELETE FROM audit WHERE seq >= 9")
    result = log.verify()
    assert result.bad_seq == 9 and "records 9..10 deleted" in str(result.problem)


def test_an_inserted_record_is_reported(log: AuditLog, settings: Settings) -> None:
    # make room at 5 and forge a record that links correctly to record 4
    conn = sqlite3.connect(settings.db_path)
    for seq in range(10, 4, -1):
        conn.execute("UPDATE audit SET seq = seq + 1 WHERE seq = ?", (seq,))
    conn.commit()
    conn.close()
    before = rows(settings)[3]
    forged = AuditEntry(kind="admin", route="cli user add", status="ok", action="user.add", user="mallory"
                        ).row(5, str(before["hash"]))
    edit(settings, f"INSERT INTO audit({', '.join(forged)}) VALUES ({', '.join('?' * len(forged))})",
         *forged.values())
    result = log.verify()
    # the forged record itself is consistent; the record after it is not where it was
    assert result.bad_seq == 6 and not result.ok


def test_a_record_appended_outside_bendi_is_reported(log: AuditLog, settings: Settings) -> None:
    last = rows(settings)[-1]
    forged = AuditEntry(kind="chat", route="POST /v1/chat/completions", status="ok").row(11, str(last["hash"]))
    edit(settings, f"INSERT INTO audit({', '.join(forged)}) VALUES ({', '.join('?' * len(forged))})",
         *forged.values())
    result = log.verify()
    assert result.bad_seq == 11 and "outside bendi" in str(result.problem)


def recompute_chain(settings: Settings, from_seq: int) -> list[dict[str, object]]:
    """What an attacker with bendi.db but without audit.key can do: recompute every hash after an
    edit (SHA-256 needs no key), and move the head's hash to match."""
    records = rows(settings)
    prev = str(records[from_seq - 2]["hash"]) if from_seq > 1 else "0" * 64
    conn = sqlite3.connect(settings.db_path)
    for row in records[from_seq - 1:]:
        row["prev_hash"] = prev
        row["hash"] = record_hash(row)
        conn.execute("UPDATE audit SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, row["hash"], row["seq"]))
        prev = str(row["hash"])
    head = json.loads(conn.execute("SELECT value FROM audit_meta WHERE key = 'head'").fetchone()[0])
    head["hash"] = prev
    conn.execute("UPDATE audit_meta SET value = ? WHERE key = 'head'", (json.dumps(head),))
    conn.commit()
    conn.close()
    return records


def test_a_recomputed_chain_fails_the_head_signature(log: AuditLog, settings: Settings) -> None:
    edit(settings, "UPDATE audit SET user = 'mallory' WHERE seq = 3")
    recompute_chain(settings, 3)
    result = log.verify()
    assert not result.ok and result.bad_seq == 10 and "signature" in str(result.problem)


def test_an_anchor_kept_elsewhere_catches_a_rewrite_even_with_the_key(log: AuditLog, settings: Settings) -> None:
    anchor = Anchor(6, str(rows(settings)[5]["hash"]))
    edit(settings, "UPDATE audit SET user = 'mallory' WHERE seq = 3")
    recompute_chain(settings, 3)
    # the attacker also holds audit.key: the head can be re-signed
    conn = sqlite3.connect(settings.db_path)
    head = json.loads(conn.execute("SELECT value FROM audit_meta WHERE key = 'head'").fetchone()[0])
    head["mac"] = anchor_mac(log.key(), "head", head["seq"], head["hash"])
    conn.execute("UPDATE audit_meta SET value = ? WHERE key = 'head'", (json.dumps(head),))
    conn.commit()
    conn.close()
    assert log.verify().ok  # undetectable from the database alone ...
    result = log.verify([anchor])
    assert result.bad_seq == 6 and "anchor" in str(result.problem)  # ... but not from an anchor


def test_pruning_keeps_the_rest_verifiable_and_the_base_signed(settings: Settings) -> None:
    writer = BackgroundWriter(settings.db_path)
    audit = AuditLog(settings.db_path, settings.home / "audit.key", writer)
    old = time.time() - 100 * 86400
    for i in range(6):
        audit.add(AuditEntry(kind="chat", route="cli run", status="ok", user="u", time=old + i))
    for _ in range(3):
        audit.add(AuditEntry(kind="chat", route="cli run", status="ok", user="u"))
    assert audit.prune(30 * 86400, CLI) == 6
    result = audit.verify()
    assert result.ok and (result.first, result.last, result.checked) == (7, 10, 4)
    [pruned] = audit.query(kind="admin")
    assert pruned["action"] == "audit.prune" and json.loads(pruned["detail"])["removed"] == 6
    edit(settings, "DELETE FROM audit WHERE seq = 7")
    assert audit.verify().bad_seq == 7  # deleting the new first record is still seen
    edit(settings, "UPDATE audit_meta SET value = json_set(value, '$.seq', 7) WHERE key = 'base'")
    assert "checkpoint" in str(audit.verify().problem)
    writer.close()
    audit.close()


def test_export_as_json_lines_and_csv(log: AuditLog) -> None:
    lines = log.export_text("jsonl").splitlines()
    assert len(lines) == 10
    first = json.loads(lines[0])
    assert first["seq"] == 1 and first["user"] == "u0" and first["time"].endswith("Z")
    assert record_hash(first) == first["hash"]  # an export can be checked against the chain
    csv_lines = log.export_text("csv").splitlines()
    assert csv_lines[0].startswith("seq,ts,time,kind,route") and len(csv_lines) == 11
    assert len(log.export_text("jsonl", since=time.time() + 60).splitlines()) == 0


# -- every request, every entry point -------------------------------------------------------------

@pytest.fixture
def served(settings: Settings, tmp_path: Path) -> Iterator[tuple[TestClient, Services]]:
    registry, _ = fake_registry()
    services = Services.build(settings, engines=registry)
    services.store.import_file(tiny_gguf(tmp_path / "fake.gguf"), MODEL)
    (tmp_path / "manual.md").write_text("# Conveyor\n\nLubricate the drive pulley bearings every 500 operating "
                                        "hours with lithium grease.\n", encoding="utf-8")
    services.kb.create("docs")
    services.kb.add_paths("docs", [tmp_path / "manual.md"])
    with TestClient(create_app(settings, services=services), base_url="http://localhost") as client:
        yield client, services


def test_every_request_is_recorded_once_whatever_the_entry_point(served: tuple[TestClient, Services]) -> None:
    client, services = served
    question = [{"role": "user", "content": "How often are the drive pulley bearings lubricated?"}]
    client.post("/v1/chat/completions", json={"model": MODEL, "messages": question})
    client.post("/api/chat", json={"model": MODEL, "messages": question, "stream": True})
    client.post("/v1/embeddings", json={"model": MODEL, "input": "x"})
    client.post("/v1/chat/completions", json={"model": "kb:docs", "messages": question})
    client.post("/kb/docs/ask", json={"question": "drive pulley bearings", "model": MODEL})
    client.post("/kb/docs/search", json={"query": "pulley"})
    blocking = services.generation.generate(ChatRequest(model=MODEL, messages=question), RequestContext.local("cli run"))
    list(blocking.events)
    records = list(reversed(services.audit.query()))
    got = [(r["route"], r["kind"], r["knowledge_base"]) for r in records]
    assert got == [
        ("POST /v1/chat/completions", "chat", None), ("POST /api/chat", "chat", None),
        ("POST /v1/embeddings", "embedding", None), ("POST /v1/chat/completions", "chat", "docs"),
        ("POST /kb/{name}/ask", "chat", "docs"), ("POST /kb/{name}/search", "http", "docs"),
        ("cli run", "chat", None)]
    chat, *_ = records
    assert chat["user"] == "anonymous" and chat["client"] == "testclient" and chat["completion_tokens"] > 0
    assert chat["prompt"] is None and chat["answer"] is None  # no text unless an admin turns it on
    assert json.loads(records[3]["documents"]) == ["manual.md"]
    assert records[-1]["user"] == RequestContext.local("x").principal and records[-1]["client"] is None
    assert services.audit.verify().ok


def test_prompt_and_answer_text_only_when_turned_on(served: tuple[TestClient, Services]) -> None:
    client, services = served
    body = {"model": MODEL, "messages": [{"role": "user", "content": "tell me everything"}]}
    services.audit.set_record_text(True, CLI)
    client.post("/v1/chat/completions", json=body)
    services.audit.set_record_text(False, CLI)
    client.post("/v1/chat/completions", json=body)
    off, switched_off, on, switched_on = services.audit.query()
    assert json.loads(on["prompt"])[0]["content"] == "tell me everything" and on["answer"] == "tell me everything"
    assert off["prompt"] is None and off["answer"] is None
    assert (switched_on["action"], switched_off["action"]) == ("audit.text", "audit.text")


def test_cli_verify_reports_the_first_bad_record(settings: Settings) -> None:
    runner = CliRunner()
    for name in ("a", "b", "c"):
        assert runner.invoke(cli, ["group", "add", name]).exit_code == 0
    ok = runner.invoke(cli, ["audit", "verify"])
    assert ok.exit_code == 0 and "3 records" in ok.output
    head = runner.invoke(cli, ["audit", "head"]).output.strip()
    assert head.startswith("3:")
    edit(settings, "UPDATE audit SET detail = '{\"group\":\"z\"}' WHERE seq = 2")
    bad = runner.invoke(cli, ["audit", "verify"])
    assert bad.exit_code == 1 and "record 2: edited" in bad.output and "Traceback" not in bad.output
    exported = runner.invoke(cli, ["audit", "export", "--format", "csv"])
    assert exported.exit_code == 0 and exported.output.count("\n") >= 4
    listing = runner.invoke(cli, ["audit", "ls", "--kind", "admin"])
    assert listing.exit_code == 0 and "group.add" in listing.output
    assert runner.invoke(cli, ["audit", "verify", "--anchor", "nonsense"]).exit_code == 1


def test_cli_commands_that_change_models_or_knowledge_bases_are_admin_actions(settings: Settings) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["kb", "create", "manuals"]).exit_code == 0
    chosen = json.loads(runner.invoke(cli, ["kb", "info", "manuals", "--json"]).output)["embed"]
    assert runner.invoke(cli, ["kb", "rm", "manuals", "-y"]).exit_code == 0
    failed = runner.invoke(cli, ["rm", "no-such-model:1b"])
    assert failed.exit_code == 1
    listed = runner.invoke(cli, ["audit", "ls", "--kind", "admin", "--json"])
    rows = sorted(json.loads(listed.output), key=lambda r: r["seq"])
    assert [(r["action"], r["status"], r["knowledge_base"]) for r in rows] == [
        ("kb.create", "ok", "manuals"), ("kb.rm", "ok", "manuals"), ("model.rm", "error", None)]
    assert rows[0]["route"] == "cli kb create" and json.loads(rows[0]["detail"])["embed"] == chosen
    assert "no-such-model" in rows[2]["error"]
    assert runner.invoke(cli, ["audit", "verify"]).exit_code == 0
