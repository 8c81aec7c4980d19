"""What the console's Models page shows (/models): installed models with the planner's verdict for
this machine, loaded models with their memory and expiry, the catalog plan (`bendi plan`), and
importing a GGUF file that already lies on the server.

Copying, removing and pulling use the Ollama routes (/api/copy, /api/delete, /api/pull); this
module adds only what they do not say.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bendi.errors import BendiError
from bendi.planner.guard import describe
from bendi.planner.inventory import hardware_dict, models_to_plan
from bendi.planner.machine import Hardware, this_machine
from bendi.planner.plan import plan_models
from bendi.server.body import documented, parse_body
from bendi.server.http import services
from bendi.services import Services

router = APIRouter(prefix="/models", tags=["models"])

#: memory available changes as models load; the bandwidth (a 64 MB copy) is measured once
MACHINE_TTL = 10.0


@dataclass
class _Machine:
    hardware: Hardware
    at: float


class MachineCache:
    """This machine as the planner sees it, re-read at most every MACHINE_TTL seconds."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cached: _Machine | None = None
        self._bandwidth: float | None = None

    def get(self) -> Hardware:
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached.at < MACHINE_TTL:
                return self._cached.hardware
            hw = this_machine(measure=self._bandwidth is None)
            if self._bandwidth is None:
                self._bandwidth = hw.cpu_bandwidth
            hw.cpu_bandwidth = self._bandwidth
            self._cached = _Machine(hw, time.monotonic())
            return hw


def _machine(request: Request) -> Hardware:
    cache = getattr(request.app.state, "machine", None)
    if cache is None:
        cache = request.app.state.machine = MachineCache()
    return cache.get()


def models_report(svc: Services, hw: Hardware) -> dict[str, Any]:
    """Installed models with their facts and verdicts, loaded models, and the catalog plan."""
    plans = {(p.model, p.source): p.to_dict()
             for p in plan_models(models_to_plan(svc.store), hw, None, svc.settings.slots)}
    installed = []
    for record in svc.store.list():
        details = record.details
        entry: dict[str, Any] = {
            "name": str(record.name), "size": record.size, "digest": record.digest,
            "modified_at": record.modified, "family": details.get("family"),
            "parameter_size": details.get("parameter_size"), "quantization": details.get("quantization_level"),
            "context_length": details.get("context_length"), "plan": plans.get((str(record.name), "store")),
        }
        installed.append(entry)
    now = time.monotonic()
    loaded = []
    for item in svc.models.loaded():
        try:
            memory: int | None = describe(item.record, item.ctx, svc.settings.slots).total
        except BendiError:
            memory = None
        loaded.append({"name": item.name, "context_length": item.ctx, "slots": svc.settings.slots,
                       "memory": memory, "size": item.record.size,
                       "expires_in": None if item.expires_at is None else max(0.0, item.expires_at - now)})
    catalog = [p for (_, source), p in plans.items() if source == "catalog"]
    return {"hardware": hardware_dict(hw), "slots": svc.settings.slots, "installed": installed,
            "loaded": loaded, "catalog": catalog}


@router.get("", **documented(None))
async def list_models(request: Request) -> Any:
    """Installed and loaded models and the plan for this machine (the console's Models page)."""
    svc = services(request)
    hw = await asyncio.to_thread(_machine, request)
    return await asyncio.to_thread(models_report, svc, hw)


class ImportBody(BaseModel):
    #: a GGUF file on the server's own disk
    path: str
    name: str


@router.post("/import", **documented(ImportBody, success=(201,), errors=(422,)))
async def import_model(request: Request) -> Any:
    """Register a GGUF file that lies on the server (as `bendi import FILE --name NAME`)."""
    body = await parse_body(request, ImportBody)
    record = await asyncio.to_thread(services(request).store.import_file, body.path, body.name)
    d = record.details
    return JSONResponse({"name": str(record.name), "size": record.size, "family": d.get("family"),
                         "parameter_size": d.get("parameter_size"),
                         "quantization": d.get("quantization_level")}, status_code=201)
