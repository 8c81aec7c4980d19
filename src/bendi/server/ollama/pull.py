"""Ollama's /api/pull: bendi's puller in a thread, its progress as Ollama's NDJSON lines.

Like Ollama, an error before the first progress line is an HTTP error with `{"error": ...}`;
an error after it is a final `{"error": ...}` line. A client that goes away cancels the transfer,
which leaves the partial file for the next pull to resume.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import JSONResponse

from bendi.errors import BendiError
from bendi.server.http import ndjson, ndjson_response
from bendi.store.pull import Puller, PullEvent

_DONE = object()


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, BendiError) else f"internal error: {type(exc).__name__}"


async def pull_response(services: Any, name: str, *, stream: bool) -> Any:
    """Run a pull; stream its progress (or answer once at the end when `stream` is false)."""
    from bendi.store.wanted import recommend_quant

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        try:
            record = Puller(services.settings, services.store).pull(
                name, quant_chooser=recommend_quant(), progress=put, cancel=cancel)
            services.models.unload(str(record.name))  # a loaded model of that name is now stale
            put(PullEvent("success"))
        except BaseException as exc:  # reported to the client, in its dialect
            put(exc)
        finally:
            put(_DONE)

    threading.Thread(target=work, name=f"pull-{name}", daemon=True).start()
    first = await queue.get()
    if isinstance(first, BaseException):
        await queue.get()  # _DONE
        raise first if isinstance(first, BendiError) else BendiError(_message(first))

    async def lines() -> AsyncIterator[bytes]:
        item = first
        try:
            while item is not _DONE:
                if isinstance(item, BaseException):
                    raise item if isinstance(item, BendiError) else BendiError(_message(item))
                yield ndjson(item.to_ollama())
                item = await queue.get()
        finally:
            cancel.set()  # a no-op when the pull finished; stops it when the client left

    if stream:
        # an error after the first line becomes a last {"error": ...} line, as Ollama sends it
        return ndjson_response(lines(), lambda exc: ndjson({"error": exc.message}))
    last: Any = first
    item = first
    while item is not _DONE:
        if isinstance(item, BaseException):
            raise item if isinstance(item, BendiError) else BendiError(_message(item))
        last = item
        item = await queue.get()
    return JSONResponse(last.to_ollama())
