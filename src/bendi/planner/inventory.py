"""What `bendi plan` and the console's Models page plan for: the catalog and the installed
models, and the machine, as plain data."""

from __future__ import annotations

from typing import Any

from bendi.errors import BendiError, InvalidRequest, ModelNotFound
from bendi.planner.catalog import CatalogModel, from_gguf, load_catalog
from bendi.planner.machine import Hardware
from bendi.store import ModelStore


def models_to_plan(store: ModelStore, name: str | None = None) -> list[tuple[CatalogModel, str]]:
    """(model, source) pairs: the catalog entries matching `name` or, failing that, the installed
    model of that name; with no name, the whole catalog and every installed model."""
    catalog = load_catalog()
    if name:
        matches = [(m, "catalog") for m in catalog if m.matches(name)]
        if matches:
            return matches
        try:
            record = store.get(name)
        except ModelNotFound:
            known = ", ".join(m.name for m in catalog)
            raise ModelNotFound(f"model {name!r} is neither installed nor in the catalog ({known})",
                                param="model") from None
        if record.format != "gguf":
            raise InvalidRequest(f"{name} is a {record.format} model (served by vLLM); bendi plan "
                                 "reads GGUF headers: plan its catalog name, with --gpus")
        return [(from_gguf(str(record.name), record.gguf()), "store")]
    models = [(m, "catalog") for m in catalog]
    for record in store.list():
        if record.format != "gguf":
            continue  # vLLM's safetensors directories have no GGUF header to plan from
        try:
            models.append((from_gguf(str(record.name), record.gguf()), "store"))
        except BendiError:
            continue  # a broken file is `bendi list`'s business, not the planner's
    return models


def hardware_dict(hw: Hardware) -> dict[str, Any]:
    """The machine a plan is for, as JSON."""
    return {
        "origin": hw.origin,
        "ram": hw.ram,
        "ram_budget": hw.ram_budget,
        "cpu_bandwidth": hw.cpu_bandwidth,
        "gpu_offload": hw.gpu_offload,
        "gpus": [{"name": g.name, "memory": g.memory, "bandwidth": g.bandwidth, "unified": g.unified}
                 for g in hw.gpus],
    }
