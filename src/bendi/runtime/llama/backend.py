"""llama.cpp's process-wide backend: initialised once, its log kept quiet (what the build has: build.py).

Anything that calls llama.cpp directly (the engine, the quantizer, benchmarks) calls
`init_backend()` first.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading

import llama_cpp

from bendi.runtime.llama.build import ensure_loaded

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False


def init_backend(show_log: bool | None = None) -> None:
    """Initialise llama.cpp once per process. Its log goes to stderr only when `show_log` (default:
    the `llama_log` setting, BENDI_LLAMA_LOG); otherwise errors go to bendi's debug log."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            ensure_loaded()  # a GGML_BACKEND_DL build not made by bendi: its backend modules
            llama_cpp.llama_backend_init()
            if show_log is None:
                from bendi.config import Settings

                show_log = Settings.from_env().llama_log
            if not show_log:
                llama_cpp.llama_log_set(_quiet_log, ctypes.c_void_p())
            _backend_ready = True


@llama_cpp.llama_log_callback
def _quiet_log(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    if level == 2:  # GGML_LOG_LEVEL_ERROR
        log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


def default_threads() -> int:
    """llama.cpp threads when none are configured: the physical cores."""
    try:
        import psutil

        return max(1, psutil.cpu_count(logical=False) or os.cpu_count() or 1)
    except Exception:  # noqa: BLE001 - psutil may not know this platform
        return max(1, os.cpu_count() or 1)
