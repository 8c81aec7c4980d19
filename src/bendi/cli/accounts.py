"""`bendi user ...` and `bendi group ...`: accounts and departments.

The CLI acts as the person at this machine (it can open bendi.db anyway): it needs no login, and
every change it makes is recorded in the audit log under that person's login name.
"""

from __future__ import annotations

import sys

import click

from bendi.cli.common import echo_json, human_age, services, table
from bendi.core.context import RequestContext
from bendi.errors import InvalidRequest


def actor(command: str) -> RequestContext:
    """The person at this machine, running `bendi <command>`."""
    return RequestContext.local(f"cli {command}")


def read_password(from_stdin: bool, prompt: str = "Password") -> str:
    """A password from one line of stdin (scripts), or typed twice without echo."""
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise InvalidRequest("no password on stdin")
        return line
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))


# -- users ------------------------------------------------------------------------------------

@click.group("user")
def user_group() -> None:
    """Accounts: admins manage the server, members use it."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "member"]), default="member", show_default=True,
              help="admin: every route and the admin API; member: what grants allow.")
@click.option("--group", "groups", multiple=True, help="Add to this group (repeatable).")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--no-password", is_flag=True, help="No browser login: the user works with API keys only.")
@click.pass_context
def user_add(ctx: click.Context, name: str, role: str, groups: tuple[str, ...], password_stdin: bool,
             no_password: bool) -> None:
    """Add a user (asks for a password unless --no-password)."""
    password = None if no_password else read_password(password_stdin)
    services(ctx).auth.directory.add_user(name, role=role, password=password, groups=groups,
                                          actor=actor("user add"))
    first = " (the server now requires a credential on every route)" if role == "admin" else ""
    click.echo(f"added {role} {name}{first}")


@user_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def user_ls(ctx: click.Context, as_json: bool) -> None:
    """List users."""
    users = services(ctx).auth.directory.users()
    if as_json:
        echo_json(users)
        return
    click.echo(table(["NAME", "ROLE", "GROUPS", "KEYS", "LOGIN", "STATUS", "CREATED"],
                     [[u["name"], u["role"], ",".join(u["groups"]), u["keys"], "password" if u["password"] else "-",
                       "disabled" if u["disabled"] else "active", human_age(u["created_at"])] for u in users]))


@user_group.command("rm")
@click.argument("name")
@click.pass_context
def user_rm(ctx: click.Context, name: str) -> None:
    """Remove a user with their keys, sessions, grants and quotas."""
    services(ctx).auth.directory.remove_user(name, actor=actor("user rm"))
    click.echo(f"removed {name}")


@user_group.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.pass_context
def user_passwd(ctx: click.Context, name: str, password_stdin: bool) -> None:
    """Set a user's password (their browser sessions end)."""
    services(ctx).auth.directory.update_user(name, password=read_password(password_stdin, "New password"),
                                             actor=actor("user passwd"))
    click.echo(f"password of {name} changed")


@user_group.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "member"]), help="Change the role.")
@click.option("--disable/--enable", "disabled", default=None, help="Stop (or allow again) every credential of the user.")
@click.pass_context
def user_set(ctx: click.Context, name: str, role: str | None, disabled: bool | None) -> None:
    """Change a user's role, or disable them."""
    if role is None and disabled is None:
        raise InvalidRequest("nothing to change: give --role, --disable or --enable")
    user = services(ctx).auth.directory.update_user(name, role=role, disabled=disabled, actor=actor("user set"))
    click.echo(f"{name}: {user['role']}, {'disabled' if user['disabled'] else 'active'}")


# -- groups -----------------------------------------------------------------------------------

@click.group("group")
def group_group() -> None:
    """Groups (departments): knowledge bases belong to one, grants name them."""


@group_group.command("add")
@click.argument("name")
@click.argument("users", nargs=-1)
@click.pass_context
def group_add(ctx: click.Context, name: str, users: tuple[str, ...]) -> None:
    """Create a group, optionally with members."""
    directory = services(ctx).auth.directory
    directory.add_group(name, actor=actor("group add"))
    if users:
        directory.set_members(name, users, add=True, actor=actor("group add"))
    click.echo(f"added group {name}" + (f" with {', '.join(users)}" if users else ""))


@group_group.command("rm")
@click.argument("name")
@click.pass_context
def group_rm(ctx: click.Context, name: str) -> None:
    """Remove a group (its grants and ownerships go with it)."""
    services(ctx).auth.directory.remove_group(name, actor=actor("group rm"))
    click.echo(f"removed group {name}")


@group_group.command("join")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
@click.pass_context
def group_join(ctx: click.Context, name: str, users: tuple[str, ...]) -> None:
    """Add users to a group."""
    group = services(ctx).auth.directory.set_members(name, users, add=True, actor=actor("group join"))
    click.echo(f"{name}: {', '.join(group['members'])}")


@group_group.command("leave")
@click.argument("name")
@click.argument("users", nargs=-1, required=True)
@click.pass_context
def group_leave(ctx: click.Context, name: str, users: tuple[str, ...]) -> None:
    """Take users out of a group."""
    group = services(ctx).auth.directory.set_members(name, users, add=False, actor=actor("group leave"))
    click.echo(f"{name}: {', '.join(group['members']) or '(no members)'}")


@group_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def group_ls(ctx: click.Context, as_json: bool) -> None:
    """List groups and their members."""
    groups = services(ctx).auth.directory.groups()
    if as_json:
        echo_json(groups)
        return
    click.echo(table(["GROUP", "MEMBERS"], [[g["name"], ", ".join(g["members"])] for g in groups]))


def register(cli: click.Group) -> None:
    cli.add_command(user_group)
    cli.add_command(group_group)
