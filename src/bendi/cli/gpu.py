"""GPU server commands: `bendi logs MODEL` (a vLLM server's log) and `bendi cluster ...` (the Ray
cluster a model runs across several machines on)."""

from __future__ import annotations

import os
import subprocess
import time

import click

from bendi.config import Settings
from bendi.errors import BendiError, InvalidRequest
from bendi.store import parse_name


@click.command("logs")
@click.argument("model")
@click.option("--lines", "-n", type=int, default=50, show_default=True, help="How many lines to show.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing what is written (Ctrl-C to stop).")
@click.option("--embed", is_flag=True, help="The log of the model's embedding server instead.")
@click.pass_context
def logs(ctx: click.Context, model: str, lines: int, follow: bool, embed: bool) -> None:
    """Show the log of the vLLM server of MODEL (its start, errors, restarts)."""
    from bendi.runtime.vllm.model import log_path
    from bendi.runtime.vllm.supervisor import tail_lines

    settings: Settings = ctx.find_root().obj
    path = log_path(settings.logs_dir, str(parse_name(model)), pooling=embed)
    if not path.exists():
        raise InvalidRequest(f"no log for {model} ({path}); a model has one once vLLM has served it")
    for line in tail_lines(path, lines):
        click.echo(line)
    if not follow:
        return
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        while True:
            chunk = fh.readline()
            if chunk:
                click.echo(chunk.decode("utf-8", errors="replace").rstrip("\n"))
            else:
                time.sleep(0.5)


@click.group("cluster")
def cluster() -> None:
    """A Ray cluster for models across several GPU servers (see docs/gpu-servers.md)."""


def _ray() -> str:
    from bendi.runtime.vllm.cluster import ray_executable
    from bendi.runtime.vllm.environment import find_python

    settings: Settings = click.get_current_context().find_root().obj
    return ray_executable(find_python(settings.vllm_python))


def _run(command: object) -> None:
    from bendi.runtime.vllm.cluster import RayCommand

    assert isinstance(command, RayCommand)
    click.echo("$ " + " ".join(command.argv), err=True)
    try:
        code = subprocess.run(command.argv, env={**os.environ, **command.env}, check=False).returncode
    except OSError as exc:
        raise BendiError(f"cannot run {command.argv[0]}: {exc.strerror}") from None
    if code != 0:
        raise BendiError(f"ray exited with code {code}")


_DEVICES = click.option("--devices", type=int, help="Accelerators on this node (default: Ray counts "
                        "NVIDIA GPUs itself; give it for Ascend/MUSA).")
_RESOURCE = click.option("--resource", help="Ray resource name of the accelerators (NPU for Ascend, "
                         "MUSA for Moore Threads); default GPU.")


@cluster.command("head")
@click.option("--address", "node_ip", required=True, help="This machine's address on the cluster network.")
@click.option("--port", type=int, default=6379, show_default=True, help="Port of the Ray head (GCS).")
@_DEVICES
@_RESOURCE
def head(node_ip: str, port: int, devices: int | None, resource: str | None) -> None:
    """Start the Ray head on this machine (where `bendi serve` runs)."""
    from bendi.runtime.vllm.cluster import head_command

    _run(head_command(_ray(), node_ip=node_ip, port=port, devices=devices, device_resource=resource))
    click.echo(f"\nRay head on {node_ip}:{port}. On every other node:\n"
               f"  bendi cluster join {node_ip}:{port} --address <that node's address>\n"
               f"Then here:\n  BENDI_VLLM_NODES=<nodes> BENDI_VLLM_RAY_ADDRESS={node_ip}:{port} bendi serve")


@cluster.command("join")
@click.argument("head_address")
@click.option("--address", "node_ip", required=True, help="This machine's address on the cluster network.")
@_DEVICES
@_RESOURCE
def join(head_address: str, node_ip: str, devices: int | None, resource: str | None) -> None:
    """Join this machine to the Ray cluster whose head is HEAD_ADDRESS (host[:port])."""
    from bendi.runtime.vllm.cluster import join_command

    _run(join_command(_ray(), head_address, node_ip=node_ip, devices=devices, device_resource=resource))


@cluster.command("status")
@click.option("--address", help="The head (host:port); default: the local cluster.")
def status(address: str | None) -> None:
    """Nodes and accelerators of the cluster, as Ray sees them."""
    from bendi.runtime.vllm.cluster import status_command

    _run(status_command(_ray(), address))


@cluster.command("stop")
def stop() -> None:
    """Stop Ray on this machine (head or worker)."""
    from bendi.runtime.vllm.cluster import stop_command

    _run(stop_command(_ray()))


def register(group: click.Group) -> None:
    group.add_command(logs)
    group.add_command(cluster)
