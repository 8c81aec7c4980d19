"""The demo knowledge base: sample documents written for bendi (a Chinese mine-safety handbook,
an English conveyor manual as PDF, a ventilation checklist as docx), built by `bendi serve --demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bendi.kb.service import AddResult

DEMO_NAME = "demo"
DEMO_DIR = Path(__file__).parent


def demo_files() -> list[Path]:
    return sorted(p for p in DEMO_DIR.iterdir() if p.is_file() and p.suffix in (".md", ".pdf", ".docx"))


def ensure_demo_kb(services: Any, name: str = DEMO_NAME) -> str:
    """Create the demo knowledge base if needed and add its documents (unchanged ones are skipped)."""
    kb = services.kb
    kb.create(name, exist_ok=True)
    results: list[AddResult] = kb.add_paths(name, demo_files())
    failed = [r for r in results if r.status == "failed"]
    if failed:
        from bendi.errors import DocumentError

        raise DocumentError("demo knowledge base: " + "; ".join(f"{r.name}: {r.error}" for r in failed))
    return name
