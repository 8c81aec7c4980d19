"""Which models are loaded: load on first use, keep alive for a while, unload the least recently
used when room is needed. Shared by the CLI and the server."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bendi.config import Settings
from bendi.errors import BendiError, InvalidRequest
from bendi.runtime.engine import EngineRegistry, LoadedModel, LoadOptions
from bendi.store import ModelRecord, ModelStore

log = logging.getLogger(__name__)

#: (record, ctx per sequence, slots) -> None, raising InsufficientMemory when it will not fit
FitCheck = Callable[[ModelRecord, int, int], None]
#: (record) -> the context length to use when nobody asked for one
ContextChooser = Callable[[ModelRecord, int], int]

DEFAULT_CTX = 4096


@dataclass
class Loaded:
    """A loaded model and its bookkeeping."""

    record: ModelRecord
    model: LoadedModel
    ctx: int
    loaded_at: float
    last_used: float
    #: monotonic deadline after which an idle model is unloaded; None keeps it forever
    expires_at: float | None
    #: callers between `acquire` and `release`; the model is closed only when this is 0
    users: int = 0
    #: the context a request asked for when it was loaded (Ollama num_ctx); None: the default
    requested_ctx: int | None = None

    @property
    def name(self) -> str:
        return str(self.record.name)


#: one part of a duration such as "1h30m" (ASCII digits only: str.isdigit also accepts "²")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|h|m|s)", re.ASCII)
#: keep-alives longer than this mean "forever" (deadlines must stay representable as dates)
FOREVER_AFTER = 10 * 365 * 86400.0


def parse_keep_alive(value: object, default: float) -> float:
    """Ollama's keep_alive: seconds (number) or a duration string ("5m", "1h30m", "-1"). Negative
    means forever, and so does anything longer than ten years (returned as -1)."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InvalidRequest("keep_alive must be a duration such as '5m' or a number of seconds",
                             param="keep_alive")
    if isinstance(value, int | float):
        seconds = _seconds(value, value)
    else:
        text = str(value).strip()
        sign = -1.0 if text.startswith("-") else 1.0
        body = text.lstrip("+-")
        parts = list(_DURATION_PART.finditer(body))
        if re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)([eE][+-]?\d+)?", body, re.ASCII):
            seconds = _seconds(float(body), value)
        elif parts and "".join(m.group(0) for m in parts) == body:
            units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
            seconds = sum(_seconds(float(m.group(1)), value) * units[m.group(2)] for m in parts)
        else:
            raise InvalidRequest(f"keep_alive {str(value)[:40]!r} is not a duration such as '5m', "
                                 "'1h30m' or a number of seconds", param="keep_alive")
        seconds *= sign
    return -1.0 if seconds < 0 or seconds > FOREVER_AFTER else seconds


def _seconds(number: float, value: object) -> float:
    try:
        seconds = float(number)
    except OverflowError:  # an integer too large for a float: longer than forever
        return math.inf
    if math.isnan(seconds):
        raise InvalidRequest(f"keep_alive {str(value)[:40]!r} is not a number", param="keep_alive")
    return seconds


class ModelManager:
    """Loads models through the engine registry and keeps track of them."""

    def __init__(
        self,
        settings: Settings,
        store: ModelStore,
        engines: EngineRegistry,
        fit_check: FitCheck | None = None,
        choose_ctx: ContextChooser | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.engines = engines
        self.fit_check = fit_check
        self.choose_ctx = choose_ctx
        self._loaded: dict[str, Loaded] = {}
        #: unloaded while still held: closed by the last `release`
        self._retiring: list[Loaded] = []
        self._lock = threading.RLock()
        self._loading: dict[str, threading.Lock] = {}

    def acquire(self, name: str, *, ctx: int | None = None, keep_alive: float | None = None) -> Loaded:
        """The loaded model called `name`, loading it first if needed. The caller holds it until
        `release`: nothing unloads a model while someone holds it."""
        record = self.store.get(name)
        key = str(record.name)
        ctx = self._clamp_ctx(record, ctx)
        with self._lock:
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                current = self._loaded.get(key)
                reusable = current is not None and current.record.digest == record.digest
                if current is not None and reusable and self._fits(current, record, ctx):
                    current.users += 1
                    self._touch(current, keep_alive)
                    return current
            if current is not None:
                self.unload(key)
            want_ctx = ctx or self._default_ctx(record)
            if self.fit_check is not None and not self.settings.force:
                self.fit_check(record, want_ctx, self.settings.slots)
            self._make_room()
            engine = self.engines.for_record(record, self.settings.engine)
            started = time.monotonic()
            model = engine.load(record, self.load_options(record, want_ctx))
            log.info("loaded %s in %.2fs", key, time.monotonic() - started)
            now = time.monotonic()
            loaded = Loaded(record, model, model.n_ctx_seq, now, now, None, users=1, requested_ctx=ctx)
            self._touch(loaded, keep_alive)
            with self._lock:
                self._loaded[key] = loaded
            return loaded

    def load_options(self, record: ModelRecord, ctx: int) -> LoadOptions:
        """The options `record` is loaded with: sizes from the settings, the template from its
        manifest."""
        return LoadOptions(
            ctx=ctx,
            slots=self.settings.slots,
            batch_tokens=self.settings.batch_tokens,
            threads=self.settings.threads,
            gpu_layers=self.settings.gpu_layers,
            queue_size=self.settings.queue_size,
            template=record.manifest.get("template"),
            settings=self.settings,
        )

    def _fits(self, current: Loaded, record: ModelRecord, ctx: int | None) -> bool:
        """Whether the loaded model serves a request for `ctx`: the same context when one is asked
        for; when none is, anything but a context shorter than the default (a request for a tiny
        num_ctx must not leave everyone else with it until the keep-alive runs out)."""
        if ctx is not None:
            return ctx == current.ctx
        if current.requested_ctx is None:
            return True
        return current.ctx >= (self._clamp_ctx(record, self._default_ctx(record)) or 0)

    @staticmethod
    def _clamp_ctx(record: ModelRecord, ctx: int | None) -> int | None:
        """A context no longer than the model was trained for: the engine would clamp it anyway,
        and comparing the unclamped number with the loaded one reloaded the model on every request."""
        native = record.details.get("context_length")
        if ctx is None or not native:
            return ctx
        return min(ctx, int(native))

    def _default_ctx(self, record: ModelRecord) -> int:
        if self.settings.ctx:
            return self.settings.ctx
        if self.choose_ctx is not None:
            return self.choose_ctx(record, self.settings.slots)
        native = record.details.get("context_length") or DEFAULT_CTX
        return min(int(native), DEFAULT_CTX)

    def _touch(self, loaded: Loaded, keep_alive: float | None) -> None:
        seconds = self.settings.keep_alive if keep_alive is None else keep_alive
        loaded.last_used = time.monotonic()
        loaded.expires_at = None if seconds < 0 else loaded.last_used + seconds

    def release(self, loaded: Loaded, keep_alive: float | None = None) -> None:
        """Mark the end of a request; restarts the keep-alive clock (0 unloads when idle). A model
        unloaded while held is closed here, by its last holder."""
        with self._lock:
            loaded.users = max(0, loaded.users - 1)
            self._touch(loaded, keep_alive)
            close = False
            if loaded.users == 0:
                if loaded in self._retiring:
                    self._retiring.remove(loaded)
                    close = True
                elif keep_alive == 0 and self._loaded.get(loaded.name) is loaded:
                    del self._loaded[loaded.name]
                    close = True
        if close:
            self._close(loaded)

    def _make_room(self) -> None:
        victims: list[Loaded] = []
        with self._lock:
            while len(self._loaded) >= max(1, self.settings.max_loaded_models):
                idle = [m for m in self._loaded.values() if m.users == 0] or list(self._loaded.values())
                taken = self._take(min(idle, key=lambda m: m.last_used).name)
                if taken is not None:
                    victims.append(taken)
        for victim in victims:
            self._close(victim)

    def unload(self, name: str) -> bool:
        """Unload `name`: at once when nobody holds it, else when its last holder releases it (it
        is no longer listed or handed out from now on). False when it was not loaded."""
        with self._lock:
            if name not in self._loaded:
                return False
            loaded = self._take(name)
        if loaded is not None:
            self._close(loaded)
        return True

    def _take(self, name: str) -> Loaded | None:
        """Remove `name` from the loaded models (lock held): returned when it can be closed now,
        kept among the retiring ones when someone still holds it."""
        loaded = self._loaded.pop(name)
        if loaded.users > 0:
            self._retiring.append(loaded)
            return None
        return loaded

    def _close(self, loaded: Loaded) -> None:
        loaded.model.close()
        log.info("unloaded %s", loaded.name)

    def unload_expired(self) -> list[str]:
        """Unload idle models whose keep-alive ran out, and models whose name was removed from the
        store or now means another file (`bendi rm`, `bendi create` from another process).
        Returns their names."""
        now = time.monotonic()
        gone = [m.name for m in self.loaded() if not self._still_in_store(m)]
        names, to_close = [], []
        with self._lock:
            for m in list(self._loaded.values()):
                expired = m.expires_at is not None and m.expires_at <= now and m.users == 0
                if m.name in gone or (expired and m.model.busy == 0):
                    names.append(m.name)
                    taken = self._take(m.name)
                    if taken is not None:
                        to_close.append(taken)
        for loaded in to_close:
            self._close(loaded)
        return names

    def _still_in_store(self, loaded: Loaded) -> bool:
        try:
            return self.store.get(loaded.name).digest == loaded.record.digest
        except BendiError:
            return False

    def abort_all(self, error: BendiError) -> None:
        """End every in-flight request on every loaded model with `error`."""
        with self._lock:
            models = [*self._loaded.values(), *self._retiring]
        for loaded in models:
            loaded.model.abort(error)

    def loaded(self) -> list[Loaded]:
        with self._lock:
            return sorted(self._loaded.values(), key=lambda m: m.last_used, reverse=True)

    def close(self) -> None:
        """Close every model, held or not (shutdown: the engines end what is still running)."""
        with self._lock:
            models = [*self._loaded.values(), *self._retiring]
            self._loaded.clear()
            self._retiring.clear()
        for loaded in models:
            self._close(loaded)
