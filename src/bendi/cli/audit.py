"""`bendi audit ...`: read, export, verify and prune the hash-chained audit log."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from bendi.audit.log import AuditEntry, parse_anchor
from bendi.audit.when import parse_duration, parse_time
from bendi.cli.accounts import actor
from bendi.cli.common import echo_json, services, table
from bendi.errors import BendiError


@click.group("audit")
def audit_group() -> None:
    """The audit log: who asked what, when, with which model and documents."""


def _time(ts_us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts_us / 1e6))


@audit_group.command("ls")
@click.option("--since", help="From when: 1h, 7d (ago), 2026-01-31, ...")
@click.option("--user", help="Only this user's records.")
@click.option("--kind", type=click.Choice(["chat", "completion", "embedding", "http", "admin", "auth"]),
              help="Only records of this kind.")
@click.option("--status", type=click.Choice(["ok", "error", "cancelled", "refused"]),
              help="Only records with this outcome.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True,
              help="The newest this many records.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def audit_ls(ctx: click.Context, since: str | None, user: str | None, kind: str | None, status: str | None,
             limit: int, as_json: bool) -> None:
    """The latest records, newest first."""
    rows = services(ctx).audit.query(since=parse_time(since) if since else None, user=user, kind=kind,
                                     status=status, limit=limit)
    if as_json:
        echo_json(rows)
        return
    click.echo(table(
        ["SEQ", "TIME", "USER", "KEY", "CLIENT", "ROUTE", "ACTION", "MODEL", "KB", "TOKENS", "STATUS", "MS"],
        [[r["seq"], _time(r["ts"]), r["user"], r["key_id"] and f"bk_{r['key_id']}", r["client"], r["route"],
          r["action"], r["model"], r["knowledge_base"], r["prompt_tokens"] + r["completion_tokens"] or "",
          r["status"] if r["code"] is None else f"{r['status']} {r['code']}", round(r["latency_us"] / 1000)]
         for r in rows]))


@audit_group.command("verify")
@click.option("--anchor", "anchors", multiple=True,
              help="SEQ:HASH from an earlier `bendi audit head`, kept elsewhere (repeatable).")
@click.pass_context
def audit_verify(ctx: click.Context, anchors: tuple[str, ...]) -> None:
    """Check the hash chain; report the first bad record (exit 1)."""
    result = services(ctx).audit.verify([parse_anchor(a) for a in anchors])
    if not result.ok:
        raise click.ClickException(result.summary())
    click.echo(result.summary())


@audit_group.command("head")
@click.pass_context
def audit_head(ctx: click.Context) -> None:
    """Print SEQ:HASH of the last record: keep it off this machine, pass it to `verify --anchor`."""
    head = services(ctx).audit.head()
    click.echo(f"{head.seq}:{head.digest}")


@audit_group.command("export")
@click.option("--since", help="From when: 7d (ago), 2026-01-31, ... (default: the beginning).")
@click.option("--until", help="Up to when (default: now).")
@click.option("--user", help="Only this user's records.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True,
              help="One JSON object per line, or CSV.")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write here instead of stdout.")
@click.pass_context
def audit_export(ctx: click.Context, since: str | None, until: str | None, user: str | None, fmt: str,
                 output: Path | None) -> None:
    """Export records, oldest first (JSON lines carry the hashes)."""
    audit = services(ctx).audit
    start = parse_time(since) if since else None
    end = parse_time(until, "until") if until else None
    if output is None:
        n = audit.export(sys.stdout, fmt, since=start, until=end, user=user)
    else:
        tmp = output.with_name(output.name + ".part")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            n = audit.export(f, fmt, since=start, until=end, user=user)
        tmp.replace(output)
    audit.add(AuditEntry.of(actor("audit export"), "admin", "ok", action="audit.export",
                            detail={"format": fmt, "since": since, "until": until, "user": user, "records": n}))
    click.echo(f"exported {n} records" + (f" to {output}" if output else ""), err=True)


@audit_group.command("prune")
@click.option("--older-than", required=True, help="Remove records older than this, e.g. 180d.")
@click.pass_context
def audit_prune(ctx: click.Context, older_than: str) -> None:
    """Retention: remove old records; a signed checkpoint keeps the rest verifiable."""
    removed = services(ctx).audit.prune(parse_duration(older_than, "older-than"), actor("audit prune"))
    click.echo(f"removed {removed} records older than {older_than}")


@audit_group.command("text")
@click.argument("state", type=click.Choice(["on", "off", "show"]), default="show")
@click.pass_context
def audit_text(ctx: click.Context, state: str) -> None:
    """Whether records keep prompts and answers (off by default)."""
    audit = services(ctx).audit
    if state != "show":
        audit.set_record_text(state == "on", actor("audit text"))
    click.echo(f"prompt and answer text in audit records: {'on' if audit.wants_text else 'off'}")


# -- admin actions of other commands -------------------------------------------------------------

#: commands outside `bendi user|group|key|grant|quota|audit` that change models or knowledge bases,
#: or carry them off the machine: admin actions, recorded like the admin API's
ADMIN_COMMANDS: dict[tuple[str, ...], str] = {
    ("kb", "create"): "kb.create", ("kb", "add"): "kb.add", ("kb", "rm-doc"): "kb.rm_doc", ("kb", "rm"): "kb.rm",
    ("pull",): "model.pull", ("import",): "model.import", ("create",): "model.create", ("rm",): "model.rm",
    ("cp",): "model.cp", ("export",): "bundle.export",
}
#: the parameter naming the model a command acts on (the knowledge base is `name` under `kb`)
_MODEL_PARAM = {"pull": "model", "import": "name", "create": "name", "cp": "dest"}
#: flags that say nothing about what was done
_QUIET = frozenset({"quiet", "as_json", "yes"})


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _recorded(callback: Callable[..., Any], path: tuple[str, ...], action: str) -> Callable[..., Any]:
    command = " ".join(path)

    @functools.wraps(callback)
    def run(*args: Any, **params: Any) -> Any:
        status, error = "ok", None
        try:
            return callback(*args, **params)
        except (click.Abort, KeyboardInterrupt):
            status = "cancelled"
            raise
        except BaseException as exc:
            status, error = "error", exc.message if isinstance(exc, BendiError) else type(exc).__name__
            raise
        finally:
            # only when the command got as far as opening bendi.db: before that it changed nothing
            svc = click.get_current_context().find_root().meta.get("bendi.services")
            if svc is not None:
                model = params.get(_MODEL_PARAM.get(path[0], ""))
                svc.audit.add(AuditEntry.of(
                    actor(command), "admin", status, action=action, error=error,
                    knowledge_base=params.get("name") if path[0] == "kb" else None,
                    model=str(model) if model else None,
                    documents=[str(params["document"])] if params.get("document") else [],
                    detail={k: _plain(v) for k, v in params.items() if v not in (None, False, ()) and k not in _QUIET}))

    return run


def record_admin_commands(cli: click.Group) -> None:
    """Record every run of ADMIN_COMMANDS in the audit log (who, what, with which result)."""
    for path, action in ADMIN_COMMANDS.items():
        command: click.Command | None = cli
        for name in path:
            command = command.commands.get(name) if isinstance(command, click.Group) else None
        if command is not None and command.callback is not None:
            command.callback = _recorded(command.callback, path, action)


def register(cli: click.Group) -> None:
    cli.add_command(audit_group)
    record_admin_commands(cli)  # registered last: the other commands are there
