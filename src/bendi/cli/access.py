"""`bendi key ...`, `bendi grant ...`, `bendi quota ...`, `bendi usage`: what each user may use,
and how much they used."""

from __future__ import annotations

import time

import click

from bendi.audit.when import parse_duration, parse_time
from bendi.cli.accounts import actor
from bendi.cli.common import echo_json, human_age, services, table
from bendi.errors import InvalidRequest


def _csv(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


# -- API keys ---------------------------------------------------------------------------------

@click.group("key")
def key_group() -> None:
    """API keys: shown once, stored hashed, scoped, revocable."""


@key_group.command("create")
@click.option("--user", required=True, help="The user the key acts as.")
@click.option("--name", default="", help="A label (which application uses it).")
@click.option("--models", help="Comma-separated models it may use (name, name:tag or a pattern); default: any.")
@click.option("--kb", "knowledge_bases", help="Comma-separated knowledge bases it may read (within the "
                                               "user's grants); default: all the user's.")
@click.option("--routes", help="Comma-separated route families: chat, embeddings, kb, admin "
                               "(default: chat,embeddings,kb; 'all' adds admin for an admin user).")
@click.option("--expires", help="Lifetime, e.g. 30d, 12h; default: until revoked.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def key_create(ctx: click.Context, user: str, name: str, models: str | None, knowledge_bases: str | None,
               routes: str | None, expires: str | None, as_json: bool) -> None:
    """Create a key for a user and print it once."""
    families = ("chat", "embeddings", "kb", "admin") if routes == "all" else _csv(routes)
    info, secret = services(ctx).auth.directory.create_key(
        user, name=name, models=_csv(models), knowledge_bases=_csv(knowledge_bases), routes=families,
        expires_in=parse_duration(expires, "expires") if expires else None, actor=actor("key create"))
    if as_json:
        echo_json({**info, "key": secret})
        return
    click.echo(secret)
    click.echo(f"key bk_{info['id']} for {user}: routes {','.join(info['routes'])}"
               f"{'; models ' + ','.join(info['models']) if info['models'] else ''}"
               f"{'; knowledge bases ' + ','.join(info['knowledge_bases']) if info['knowledge_bases'] else ''}"
               f"{'; expires ' + _when(info['expires_at']) if info['expires_at'] else ''}. "
               "Copy it now: it is not shown again.", err=True)


@key_group.command("ls")
@click.option("--user", help="Only this user's keys.")
@click.option("--all", "show_all", is_flag=True, help="Include revoked and expired keys.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def key_ls(ctx: click.Context, user: str | None, show_all: bool, as_json: bool) -> None:
    """List keys (never the keys themselves: their ids, scopes and last use)."""
    keys = services(ctx).auth.directory.keys(user=user)
    if not show_all:
        keys = [k for k in keys if k["status"] == "active"]
    if as_json:
        echo_json(keys)
        return
    click.echo(table(["ID", "USER", "NAME", "ROUTES", "MODELS", "KNOWLEDGE BASES", "EXPIRES", "LAST USED", "STATUS"],
                     [[k["prefix"], k["user"], k["name"], ",".join(k["routes"]), ",".join(k["models"] or ["*"]),
                       ",".join(k["knowledge_bases"] or ["*"]), _when(k["expires_at"]),
                       human_age(k["last_used"]) if k["last_used"] else "never", k["status"]] for k in keys]))


@key_group.command("revoke")
@click.argument("key_id")
@click.pass_context
def key_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key (by its id, bk_...): it stops working at once, on a running server too."""
    info = services(ctx).auth.directory.revoke_key(key_id, actor=actor("key revoke"))
    click.echo(f"revoked bk_{info['id']} of {info['user']}")


# -- knowledge-base grants --------------------------------------------------------------------

@click.group("grant")
def grant_group() -> None:
    """Who may read (search, ask) or write (add, remove documents) which knowledge base."""


def _subject(user: str | None, group: str | None) -> str:
    if (user is None) == (group is None):
        raise InvalidRequest("give either --user or --group")
    return f"user {user}" if user else f"group {group}"


@grant_group.command("add")
@click.argument("knowledge_base")
@click.option("--user", help="The user (give --user or --group).")
@click.option("--group", help="The group (give --user or --group).")
@click.option("--access", type=click.Choice(["read", "write"]), default="read", show_default=True,
              help="read: search and ask; write: also add and remove documents.")
@click.pass_context
def grant_add(ctx: click.Context, knowledge_base: str, user: str | None, group: str | None, access: str) -> None:
    """Give a user or a group access to a knowledge base."""
    who = _subject(user, group)
    services(ctx).auth.directory.grant(knowledge_base, user=user, group=group, access=access,
                                       actor=actor("grant add"))
    click.echo(f"{who} may {access} {knowledge_base}")


@grant_group.command("rm")
@click.argument("knowledge_base")
@click.option("--user", help="The user (give --user or --group).")
@click.option("--group", help="The group (give --user or --group).")
@click.pass_context
def grant_rm(ctx: click.Context, knowledge_base: str, user: str | None, group: str | None) -> None:
    """Take a grant away."""
    who = _subject(user, group)
    services(ctx).auth.directory.revoke_grant(knowledge_base, user=user, group=group, actor=actor("grant rm"))
    click.echo(f"{who} no longer has access to {knowledge_base}")


@grant_group.command("owner")
@click.argument("knowledge_base")
@click.argument("group", required=False)
@click.pass_context
def grant_owner(ctx: click.Context, knowledge_base: str, group: str | None) -> None:
    """Set the group a knowledge base belongs to (its members read and write it); no GROUP: none."""
    services(ctx).auth.directory.set_owner(knowledge_base, group, actor=actor("grant owner"))
    click.echo(f"{knowledge_base} belongs to {group}" if group else f"{knowledge_base} belongs to no group")


@grant_group.command("ls")
@click.argument("knowledge_base", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def grant_ls(ctx: click.Context, knowledge_base: str | None, as_json: bool) -> None:
    """List grants (of one knowledge base, or all)."""
    grants = services(ctx).auth.directory.grants(knowledge_base)
    if as_json:
        echo_json(grants)
        return
    click.echo(table(["KNOWLEDGE BASE", "WHO", "ACCESS"],
                     [[g["knowledge_base"], f"user {g['user']}" if g["user"] else f"group {g['group']}",
                       "read, write (owner)" if g["access"] == "owner" else g["access"]] for g in grants]))


# -- quotas and usage -------------------------------------------------------------------------

@click.group("quota")
def quota_group() -> None:
    """Requests per minute and tokens per day, per user or per key (429 with Retry-After past them)."""


@quota_group.command("set")
@click.option("--user", help="A user name.")
@click.option("--key", help="A key id (bk_...).")
@click.option("--rpm", type=click.IntRange(min=0), help="Requests per minute.")
@click.option("--tokens-per-day", type=click.IntRange(min=0), help="Prompt + completion tokens per UTC day.")
@click.pass_context
def quota_set(ctx: click.Context, user: str | None, key: str | None, rpm: int | None,
              tokens_per_day: int | None) -> None:
    """Set (replace) the limits of a user or a key."""
    if rpm is None and tokens_per_day is None:
        raise InvalidRequest("give --rpm and/or --tokens-per-day")
    q = services(ctx).auth.directory.set_quota(user=user, key=key, requests_per_minute=rpm,
                                               tokens_per_day=tokens_per_day, actor=actor("quota set"))
    click.echo(f"{q['kind']} {q['subject']}: {q['requests_per_minute'] or 'unlimited'} requests/minute, "
               f"{q['tokens_per_day'] or 'unlimited'} tokens/day")


@quota_group.command("rm")
@click.option("--user", help="A user name.")
@click.option("--key", help="A key id (bk_...).")
@click.pass_context
def quota_rm(ctx: click.Context, user: str | None, key: str | None) -> None:
    """Remove the limits of a user or a key."""
    services(ctx).auth.directory.remove_quota(user=user, key=key, actor=actor("quota rm"))
    click.echo(f"no limits for {'user ' + user if user else 'key ' + str(key)}")


@quota_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def quota_ls(ctx: click.Context, as_json: bool) -> None:
    """List quotas."""
    quotas = services(ctx).auth.directory.quotas()
    if as_json:
        echo_json(quotas)
        return
    click.echo(table(["FOR", "REQUESTS/MIN", "TOKENS/DAY"],
                     [[f"{q['kind']} {q['subject']}", q["requests_per_minute"] or "-", q["tokens_per_day"] or "-"]
                      for q in quotas]))


@click.command("usage")
@click.option("--user", help="Only this user.")
@click.option("--key", help="Only this key (bk_...).")
@click.option("--since", default=None, help="From when: 7d (ago), 2026-01-31, ... (default: today, UTC).")
@click.option("--by", type=click.Choice(["user", "key", "day"]), default="user", show_default=True,
              help="One row per user, per key or per day.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def usage(ctx: click.Context, user: str | None, key: str | None, since: str | None, by: str, as_json: bool) -> None:
    """Requests and tokens per user, per key or per day."""
    rows = services(ctx).auth.quotas.usage(user=user, key=key, since=parse_time(since) if since else None, by=by)
    if as_json:
        echo_json(rows)
        return
    def lead(r: dict[str, object]) -> list[object]:
        if by == "day":
            return [r["day"]]
        if by == "key":
            return [r["user"], f"bk_{r['key_id']}" if r["key_id"] else "-"]
        return [r["user"]]

    heads = {"user": ["USER"], "key": ["USER", "KEY"], "day": ["DAY (UTC)"]}[by]
    click.echo(table([*heads, "REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS", "TOKENS"],
                     [[*lead(r), r["requests"], r["prompt_tokens"], r["completion_tokens"], r["tokens"]]
                      for r in rows]))


def register(cli: click.Group) -> None:
    for command in (key_group, grant_group, quota_group, usage):
        cli.add_command(command)
