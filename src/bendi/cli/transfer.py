"""Moving models in and out: pull, sources, export, keygen (and bundles for `import`)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import click

from bendi.cli.common import echo_json, human_bytes, services, table
from bendi.config import Settings
from bendi.store.pull import Puller, PullEvent
from bendi.store.sources import load_sources


class ProgressBar:
    """One line per file: percentage, bar, bytes, speed and time left; redrawn in place on a
    terminal, printed every few seconds otherwise (logs, CI)."""

    def __init__(self, stream: object = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.label = ""
        self.samples: list[tuple[float, int]] = []
        self.last_print = 0.0
        self.open_line = False
        self.finished = False

    def status(self, text: str) -> None:
        self.end()
        click.echo(text, err=True)

    def update(self, label: str, done: int, total: int) -> None:
        now = time.monotonic()
        if label != self.label:
            self.end()
            self.label, self.samples, self.finished = label, [], False
        if self.finished:
            return
        self.samples.append((now, done))
        self.samples = [s for s in self.samples if now - s[0] <= 5.0] or [(now, done)]
        if not self.tty and now - self.last_print < 5.0 and done < total:
            return
        self.last_print = now
        t0, d0 = self.samples[0]
        speed = (done - d0) / (now - t0) if now > t0 else 0.0
        pct = 100 * done / total if total else 100.0
        left = f"{(total - done) / speed:.0f}s" if speed > 0 and done < total else ""
        width = 25
        filled = int(width * pct / 100)
        bar = "█" * filled + " " * (width - filled)
        line = (f"{label} {pct:3.0f}% ▕{bar}▏ {human_bytes(done)}/{human_bytes(total)}"
                f"{f'  {human_bytes(speed)}/s' if speed else ''}{f'  {left}' if left else ''}")
        self.finished = done >= total
        if self.tty:
            click.echo("\r\x1b[2K" + line, err=True, nl=False)
            self.open_line = True
        else:
            click.echo(line, err=True)

    def end(self) -> None:
        if self.open_line:
            click.echo("", err=True)
            self.open_line = False
        self.finished = False


@click.command()
@click.argument("model")
@click.option("--source", "-s", help="Use only this source (a name from `bendi sources`).")
@click.option("--name", "-n", help="Register under this name (default: the name pulled).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def pull(ctx: click.Context, model: str, source: str | None, name: str | None, quiet: bool) -> None:
    """Download MODEL from the configured sources, verify its sha256, register it.

    \b
    bendi pull deepseek-r1:7b            # the quantization `bendi plan` recommends here
    bendi pull deepseek-r1:7b-q8_0       # pick one
    bendi pull bartowski/Qwen2.5-0.5B-Instruct-GGUF/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf
    An interrupted pull resumes where it stopped when run again.
    """
    from bendi.store.wanted import recommend_quant

    svc = services(ctx)
    bar = ProgressBar()

    def show(event: PullEvent) -> None:
        if quiet:
            return
        if event.total is not None:
            bar.update(event.status, event.completed or 0, event.total)
        else:
            bar.status(event.status)

    cancel = threading.Event()
    try:
        record = Puller(svc.settings, svc.store).pull(
            model, source=source, name=name, quant_chooser=recommend_quant(), progress=show,
            cancel=cancel)
    except KeyboardInterrupt:
        cancel.set()
        bar.end()
        click.echo("interrupted: run the same command again to resume", err=True)
        raise
    finally:
        bar.end()
    d = record.details
    click.echo(f"pulled {record.name}: {d.get('family')} {d.get('parameter_size')} "
               f"{d.get('quantization_level')}, {human_bytes(record.size)}, sha256 verified")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def sources(ctx: click.Context, as_json: bool) -> None:
    """List the sources `bendi pull` may use, in the order it tries them (contacts none)."""
    settings: Settings = ctx.find_root().obj
    found = load_sources(settings)
    if as_json:
        echo_json({"file": str(settings.sources_path), "sources": [s.describe() for s in found]})
        return
    if not found:
        click.echo(f"no sources configured: add [[source]] entries to {settings.sources_path} "
                   "or set BENDI_SOURCES (docs/models.md)")
        return
    click.echo(table(["NAME", "KIND", "URL", "FROM"],
                     [(s.name, s.kind, s.url, s.origin.split(" source #")[0]) for s in found]))


@click.command("export")
@click.argument("models", nargs=-1)
@click.option("--kb", "kbs", multiple=True, help="A knowledge base to include (repeatable).")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The bundle file to write.")
@click.option("--sign", "sign_key", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Sign with this ed25519 private key (from `bendi keygen`).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def export(ctx: click.Context, models: tuple[str, ...], kbs: tuple[str, ...], output: Path,
           sign_key: Path | None, quiet: bool) -> None:
    """Write models and knowledge bases to one bundle file, for a machine with no network.

    \b
    bendi export deepseek-r1:7b --kb manuals -o site.bendi --sign admin.key
    On the other machine: bendi import site.bendi --trust admin.key.pub
    """
    from bendi.store.bundle import export_bundle

    svc = services(ctx)
    bar = ProgressBar()
    summary = export_bundle(svc.settings, svc.store, svc.kb, list(models), list(kbs), output,
                            sign_key=sign_key, progress=None if quiet else bar.update)
    bar.end()
    for note in summary.notes:
        click.echo(note)
    what = ", ".join(summary.models + [f"kb {k}" for k in summary.knowledge_bases])
    signed = f", signed by {summary.signer}" if summary.signer else ""
    click.echo(f"wrote {output} ({human_bytes(summary.size)}): {what}{signed}")


@click.command()
@click.argument("keyfile", type=click.Path(dir_okay=False, path_type=Path))
def keygen(keyfile: Path) -> None:
    """Create an ed25519 key pair for signing bundles: KEYFILE (private) and KEYFILE.pub."""
    from bendi.store.signing import fingerprint, generate_keypair, load_public_keys

    private, public = generate_keypair(keyfile)
    click.echo(f"private key: {private} (keep it secret; sign with `bendi export --sign {private}`)")
    click.echo(f"public key:  {public} (give it to importing sites: `bendi import --trust {public}`)")
    click.echo(f"fingerprint: {fingerprint(load_public_keys(public)[0])}")


def import_bundle_cli(ctx: click.Context, file: Path, trust: tuple[Path, ...], force: bool) -> None:
    """`bendi import BUNDLE`: verify everything, then install (called by the import command)."""
    from bendi.store.bundle import import_bundle

    svc = services(ctx)
    bar = ProgressBar()
    summary = import_bundle(svc.settings, svc.store, svc.kb, file, trust=list(trust), force=force,
                            progress=bar.update)
    bar.end()
    signer = f"signed by {summary.signer}" if summary.signer else "unsigned"
    click.echo(f"verified {file.name}: every sha256 matches, {signer}")
    for name in summary.models:
        click.echo(f"imported model {name}")
    for name in summary.unchanged:
        click.echo(f"model {name} already installed (same sha256)")
    for name in summary.knowledge_bases:
        click.echo(f"imported knowledge base {name}")


def register(group: click.Group) -> None:
    for command in (pull, sources, export, keygen):
        group.add_command(command)
