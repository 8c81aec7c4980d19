"""One supervised server process: start it, wait until it serves, restart it with back-off when
it dies, stop it (gracefully, then by force) with everything it started.

A single owner thread starts every process and waits on it. That thread lives as long as the
supervisor, which matters on Linux: the child is told to die with its parent thread
(PR_SET_PDEATHSIG), so a bendi killed with SIGKILL does not leave a vLLM holding GPU memory, and
a thread pool's worker thread exiting must not take the child with it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bendi.errors import EngineError, ServerBusy

log = logging.getLogger(__name__)

#: back-off between restarts: first wait, cap, and how long a run must last to reset it
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 60.0
STABLE_AFTER = 120.0
#: a log file is moved aside (to .1) when it grows past this at a start
LOG_ROTATE_BYTES = 20 * 1024 * 1024


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Launch:
    """What to run: argv and extra environment, and the URL and model name to probe."""

    argv: list[str]
    env: dict[str, str]
    url: str
    served_name: str


#: port -> the launch for a process listening on that port
LaunchFactory = Callable[[int], Launch]


class Supervisor:
    """Keeps one server process alive. States: starting, ready, restarting, stopping, stopped,
    failed (the first start did not succeed)."""

    def __init__(self, name: str, factory: LaunchFactory, log_path: Path, *,
                 start_timeout: float = 900.0, probe_interval: float = 0.5,
                 backoff_first: float = BACKOFF_FIRST, backoff_max: float = BACKOFF_MAX,
                 stop_timeout: float = 30.0) -> None:
        self.name = name
        self.factory = factory
        self.log_path = log_path
        self.start_timeout = start_timeout
        self.probe_interval = probe_interval
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self.state = "stopped"
        self.launch: Launch | None = None
        self.restarts = 0
        self.last_error: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_start = 0.0  # monotonic time of the next restart
        self._start_seconds = 30.0  # how long the last start took: the Retry-After estimate

    # -- public ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process and wait until it serves; raise EngineError (with the end of its log)
        when it exits or does not get ready in time."""
        with self._cond:
            if self._thread is not None:
                raise EngineError(f"{self.name}: already started")
            self.state = "starting"
            self._thread = threading.Thread(target=self._own, name=f"bendi-supervise-{self.name}",
                                            daemon=True)
            self._thread.start()
            while self.state == "starting":
                self._cond.wait()
            if self.state != "ready":
                error = self.last_error or "it did not start"
        if self.state != "ready":
            self._join()
            raise EngineError(f"vLLM for {self.name} did not start: {error}; "
                              f"see `bendi logs {self.name}` ({self.log_path})")

    def url(self) -> str:
        """The base URL of the serving process; ServerBusy (503, Retry-After) while it restarts."""
        with self._cond:
            if self.state == "ready" and self.launch is not None:
                return self.launch.url
            state = self.state
        if state in ("restarting", "starting"):
            raise ServerBusy(f"vLLM for {self.name} is restarting "
                             f"({self.last_error or 'it stopped'}); retry shortly",
                             retry_after=self.retry_after())
        raise ServerBusy(f"vLLM for {self.name} is not running ({state})",
                         retry_after=self.retry_after())

    def retry_after(self) -> int:
        """Seconds a client should wait before trying again: the back-off left plus the time the
        last start took."""
        wait = max(0.0, self._next_start - time.monotonic()) + self._start_seconds
        return max(1, math.ceil(wait))

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def stop(self, timeout: float | None = None) -> None:
        """Stop the process (SIGTERM to its process group, SIGKILL after `timeout`) and the owner
        thread. Idempotent."""
        self.stop_timeout = self.stop_timeout if timeout is None else timeout
        with self._cond:
            if self.state not in ("stopped", "failed"):
                self.state = "stopping"
            self._stop.set()
            self._cond.notify_all()
        proc = self._proc
        if proc is not None:
            _terminate(proc, self.stop_timeout)
        self._join()
        with self._cond:
            self.state = "stopped" if self.state != "failed" else "failed"
            self._cond.notify_all()

    # -- the owner thread --------------------------------------------------------------------

    def _own(self) -> None:
        backoff = self.backoff_first
        first = True
        while not self._stop.is_set():
            started = time.monotonic()
            ok = self._run_once()
            if first and not ok:
                with self._cond:
                    self.state = "failed"
                    self._cond.notify_all()
                return
            first = False
            if self._stop.is_set():
                return
            # the process ended on its own: restart it after a back-off that grows while starts
            # keep failing and resets once a run was stable
            if ok and time.monotonic() - started > STABLE_AFTER:
                backoff = self.backoff_first
            with self._cond:
                self.state = "restarting"
                self.restarts += 1
                self._next_start = time.monotonic() + backoff
                self._cond.notify_all()
            log.warning("vLLM for %s stopped (%s); restarting in %.0fs", self.name,
                        self.last_error, backoff)
            if self._stop.wait(backoff):
                return
            backoff = min(self.backoff_max, backoff * 2)

    def _run_once(self) -> bool:
        """Start one process and wait for it to end. True if it got ready."""
        launch = self.factory(free_port())
        logfile = self._open_log(launch)
        try:
            proc = subprocess.Popen(
                launch.argv, env={**os.environ, **launch.env}, stdin=subprocess.DEVNULL,
                stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # noqa: PLW1509
            )
        except OSError as exc:
            self.last_error = f"cannot run {launch.argv[0]}: {exc.strerror}"
            logfile.close()
            return False
        self._proc = proc
        with self._cond:
            self.launch = launch
        begun = time.monotonic()
        ready = self._wait_ready(proc, launch)
        if ready:
            self._start_seconds = time.monotonic() - begun
            with self._cond:
                if not self._stop.is_set():
                    self.state = "ready"
                self._cond.notify_all()
            log.info("vLLM for %s ready on %s after %.1fs (pid %d)", self.name, launch.url,
                     self._start_seconds, proc.pid)
        else:
            _terminate(proc, self.stop_timeout)
        code = proc.wait()
        logfile.close()
        if ready and not self._stop.is_set():
            self.last_error = f"the process exited with {_describe_exit(code)}"
        with self._cond:
            if self.state == "ready":
                self.state = "restarting"
            self._cond.notify_all()
        return ready

    def _wait_ready(self, proc: subprocess.Popen[bytes], launch: Launch) -> bool:
        """Poll /health and /v1/models until the model is listed, the process exits, the deadline
        passes, or the supervisor is stopped."""
        deadline = time.monotonic() + self.start_timeout
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            while not self._stop.is_set():
                code = proc.poll()
                if code is not None:
                    self.last_error = f"it exited with {_describe_exit(code)}: {self.log_tail(3)}"
                    return False
                if time.monotonic() > deadline:
                    self.last_error = f"not ready after {self.start_timeout:.0f}s"
                    return False
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    if client.get(launch.url + "/health").status_code == 200:
                        models = client.get(launch.url + "/v1/models").json()
                        names = {m.get("id") for m in models.get("data", [])}
                        if launch.served_name in names:
                            return True
                self._stop.wait(self.probe_interval)
        self.last_error = "stopped while starting"
        return False

    def _join(self) -> None:
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._thread = None

    # -- the log -----------------------------------------------------------------------------

    def _open_log(self, launch: Launch):  # noqa: ANN202 - a binary file object
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):
            if self.log_path.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        fh = self.log_path.open("ab")
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        line = " ".join(launch.argv)
        env = " ".join(f"{k}={v}" for k, v in sorted(launch.env.items()))
        fh.write(f"\n=== bendi {stamp}: starting vLLM for {self.name} (restart {self.restarts})\n"
                 f"=== env: {env}\n=== {line}\n".encode())
        fh.flush()
        return fh

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the process log, joined by ' | ' (for one-line errors)."""
        return " | ".join(tail_lines(self.log_path, lines))


def tail_lines(path: Path, lines: int) -> list[str]:
    """The last `lines` non-empty lines of a text file (reads at most the last 64 KiB)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 65536))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [ln for ln in text.splitlines() if ln.strip()][-lines:]


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the process group (vLLM's engine core and workers are children), SIGKILL to
    the group when it has not ended after `timeout` seconds."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)  # children it may have left behind
        return
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("process %d did not stop in %.0fs; killing it", proc.pid, timeout)
        _kill_group(proc.pid, signal.SIGKILL)
        proc.wait()
    _kill_group(proc.pid, signal.SIGKILL)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
    return f"code {code}"


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the thread that started us ends."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
