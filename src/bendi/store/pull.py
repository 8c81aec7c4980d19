"""`bendi pull` and /api/pull: find a model on the configured sources, fetch it, verify it, register it.

The model is registered only after its sha256 matched and its GGUF header was read; until then
it lives in models/partial/, where the next pull resumes it. Progress is reported as events that
mirror Ollama's pull stream: `pulling manifest`, `pulling <digest>` with total/completed,
`verifying sha256 digest`, `writing manifest`, `success`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bendi.config import Settings
from bendi.errors import InvalidModelFile, ModelNotFound, SourceError
from bendi.store.gguf import GGUFInfo, read_gguf
from bendi.store.records import ModelRecord
from bendi.store.remote import RemoteModel, ollama_parameters, resolve
from bendi.store.sources import Source, pick_sources
from bendi.store.store import ModelStore
from bendi.store.transfer import Download, check_disk_space, http_client
from bendi.store.wanted import QuantChooser, Wanted, parse_wanted

log = logging.getLogger(__name__)


@dataclass
class PullEvent:
    """One step of a pull, in the shape of Ollama's progress lines."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    def to_ollama(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


Progress = Callable[[PullEvent], None]


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]


class Puller:
    """Pulls models into a store from the sources in the settings."""

    def __init__(self, settings: Settings, store: ModelStore) -> None:
        self.settings = settings
        self.store = store

    @property
    def partial_dir(self) -> Path:
        return self.settings.models_dir / "partial"

    def pull(self, text: str, *, source: str | None = None, name: str | None = None,
             quant_chooser: QuantChooser | None = None, progress: Progress | None = None,
             cancel: threading.Event | None = None) -> ModelRecord:
        """Pull `text` (a catalog name, `repo/file.gguf`, or an Ollama name) and register it."""
        emit = progress or (lambda event: None)
        sources = pick_sources(self.settings, source)
        wanted = parse_wanted(text, quant_chooser=quant_chooser, register_as=name)
        if wanted.catalog is not None and wanted.quant:
            emit(PullEvent(f"{wanted.catalog.name}: {wanted.quant}, {wanted.quant_reason}"))
        emit(PullEvent("pulling manifest"))
        with http_client() as client:
            found = self._find(wanted, sources, client)
        return self._fetch_and_register(wanted, found, emit, cancel)

    def _find(self, wanted: Wanted, sources: list[Source], client: Any) -> RemoteModel:
        reasons = []
        for source in sources:
            try:
                if source.token:
                    with http_client(source.token) as authed:
                        found = resolve(source, wanted, authed)
                else:
                    found = resolve(source, wanted, client)
            except (SourceError, InvalidModelFile) as exc:
                log.info("source %s: %s", source.name, exc.message)
                reasons.append(f"{source.name}: {exc.message}")
                continue
            if found is not None:
                return found
            reasons.append(f"{source.name}: not found")
        what = wanted.text
        if wanted.catalog is not None:
            what = f"{wanted.catalog.name} ({wanted.quant})"
        if all(r.endswith(": not found") for r in reasons):
            raise ModelNotFound(f"{what} is not on any configured source ({'; '.join(reasons)})",
                                param="model")
        raise SourceError(f"cannot pull {what}: {'; '.join(reasons)}")

    def _fetch_and_register(self, wanted: Wanted, found: RemoteModel, emit: Progress,
                            cancel: threading.Event | None) -> ModelRecord:
        file = found.model
        status = f"pulling {_short(file.digest)}"
        existing = self.store.blob_path(file.digest)
        if existing is None:
            download = Download(self.partial_dir, file.digest, file.size)
            with download.locked():
                existing = self.store.blob_path(file.digest)  # another pull may have finished it
                if existing is None:
                    have = download.prepare(self.settings.pull_connections)
                    check_disk_space(self.partial_dir, file.size - have)
                    emit(PullEvent(status, file.digest, file.size, have))
                    path = download.run(
                        file.remote, connections=self.settings.pull_connections, cancel=cancel,
                        progress=lambda done: emit(PullEvent(status, file.digest, file.size, done)))
                    emit(PullEvent("verifying sha256 digest"))  # done as the bytes arrived
                    try:
                        info = read_gguf(path)
                    except InvalidModelFile as exc:
                        download.discard()
                        raise InvalidModelFile(f"{found.reference} is not a usable GGUF file: "
                                               f"{exc.message}; nothing was installed") from None
                    emit(PullEvent("writing manifest"))
                    return self._register(wanted, found, path, info, download)
        # the store already holds these bytes (another name, an earlier pull): nothing to fetch
        emit(PullEvent(status, file.digest, file.size, file.size))
        emit(PullEvent("verifying sha256 digest"))
        emit(PullEvent("writing manifest"))
        return self._register(wanted, found, existing, read_gguf(existing), None)

    def _register(self, wanted: Wanted, found: RemoteModel, path: Path, info: GGUFInfo,
                  download: Download | None) -> ModelRecord:
        extras = found.extras
        if wanted.quant and info.quantization.upper() != wanted.quant.upper():
            log.warning("%s: the file is %s, not %s as its name says", found.reference,
                        info.quantization, wanted.quant)
        provenance = {
            "source": found.source.name,
            "kind": found.source.kind,
            "url": found.model.url,
            "reference": found.reference,
            "sha256": found.model.digest.removeprefix("sha256:"),
            "license": info.get("general.license") or (extras["license"].strip().splitlines()[0][:200]
                                   if extras.get("license", "").strip() else None),
            "quantization": info.quantization,
            "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        record = self.store.install_blob(
            path, found.model.digest, str(wanted.name),
            source=f"{found.source.name}: {found.reference}", provenance=provenance,
            system=extras.get("system") or None,
            parameters=ollama_parameters(extras["params"]) if "params" in extras else None,
            move=download is not None)
        if download is not None:
            download.discard()  # the state file; the data file was moved into the store
        return record
