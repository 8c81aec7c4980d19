"""A Ray cluster for vLLM across machines: the `ray start` command lines bendi runs for
`bendi cluster head` / `join` / `status` / `stop` (pure, unit-tested; see docs/gpu-servers.md).

Ray comes from the vLLM environment (`pip install ray` there); its usage statistics are off and
its dashboard is not started, so nothing leaves the cluster and no extra port opens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bendi.errors import InvalidRequest
from bendi.runtime.vllm.environment import VllmMissing

DEFAULT_PORT = 6379
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}


@dataclass
class RayCommand:
    argv: list[str]
    env: dict[str, str]


def ray_executable(python: str) -> str:
    """The `ray` command beside the vLLM environment's interpreter."""
    ray = Path(python).parent / "ray"
    if not ray.is_file():
        raise VllmMissing(f"Ray is not installed in the vLLM environment ({Path(python).parent}); "
                          f"install it there: {Path(python).parent / 'pip'} install ray")
    return str(ray)


def head_command(ray: str, *, node_ip: str, port: int = DEFAULT_PORT, devices: int | None = None,
                 device_resource: str | None = None) -> RayCommand:
    """`ray start --head` on this machine, reachable on `node_ip`:`port`."""
    _check_ip(node_ip)
    argv = [ray, "start", "--head", f"--port={port}", f"--node-ip-address={node_ip}",
            "--disable-usage-stats", "--include-dashboard=false"]
    argv += _devices(devices, device_resource)
    return RayCommand(argv, dict(RAY_ENV))


def join_command(ray: str, address: str, *, node_ip: str, devices: int | None = None,
                 device_resource: str | None = None) -> RayCommand:
    """`ray start --address HEAD` on a worker machine."""
    _check_ip(node_ip)
    if ":" not in address:
        address = f"{address}:{DEFAULT_PORT}"
    argv = [ray, "start", f"--address={address}", f"--node-ip-address={node_ip}",
            "--disable-usage-stats"]
    argv += _devices(devices, device_resource)
    return RayCommand(argv, dict(RAY_ENV))


def status_command(ray: str, address: str | None) -> RayCommand:
    return RayCommand([ray, "status"] + ([f"--address={address}"] if address else []), dict(RAY_ENV))


def stop_command(ray: str) -> RayCommand:
    return RayCommand([ray, "stop"], dict(RAY_ENV))


def _devices(count: int | None, resource: str | None) -> list[str]:
    """Ray counts NVIDIA GPUs itself; Ascend NPUs and MUSA GPUs are declared as resources."""
    if count is None:
        return []
    if resource is None:
        return [f"--num-gpus={count}"]
    return [f'--resources={{"{resource}": {count}}}']


def _check_ip(ip: str) -> None:
    parts = ip.split(".")
    if len(parts) != 4 or not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts):
        raise InvalidRequest(f"{ip!r} is not an IPv4 address; give the address other nodes reach "
                             "this one on (the cluster network)")
