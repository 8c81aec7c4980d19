"""The `bendi` command: a thin adapter that parses, calls a service, renders."""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from bendi import __version__
from bendi.config import Settings
from bendi.errors import BendiError


class BendiGroup(click.Group):
    """Turns bendi errors into one clear line on stderr and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BendiError as exc:
            raise click.ClickException(exc.message) from None
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug: still one line for the user, details with --verbose
            logging.getLogger("bendi").info("unexpected error", exc_info=True)
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {exc} (run `bendi -v ...` for details)"
            ) from None


@click.group(cls=BendiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bendi")
@click.option("--verbose", "-v", is_flag=True, help="Log what bendi is doing to stderr.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """bendi (本地): run DeepSeek-class models on hardware you own."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    ctx.obj = Settings.from_env()


def _register() -> None:
    from bendi.cli import (
        access,
        accounts,
        audit,
        chat,
        doctor,
        gpu,
        kb,
        models,
        remote,
        serve,
        transfer,
    )

    for module in (models, chat, serve, remote, doctor, kb, transfer, accounts, access, audit, gpu):
        module.register(cli)


_register()


def main() -> None:
    cli(prog_name="bendi")
