"""Starting Debian's Chromium for the console's browser tests (never a downloaded browser:
`make test` installs the `chromium` package when it is missing), and where screenshots go."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
#: the network of a test machine is closed: without these Chromium keeps trying to reach Google
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
SHOTS = Path(__file__).parent / "output" / "console"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
XSS = "<img src=x onerror=window.__xss=1>"
#: a generous bound for a step on a loaded 2-core machine (never a speed assertion)
STEP_MS = 120_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for a test module."""
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def shoot(pg: Any, name: str) -> None:
    pg.screenshot(path=str(SHOTS / f"{name}.png"))
