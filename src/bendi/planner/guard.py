"""Load guard: refuse to load what will not fit, and choose default context lengths.

Placeholder until the planner lands: no refusal, the model's native context capped at 4096.
"""

from __future__ import annotations

from bendi.store import ModelRecord

DEFAULT_CTX = 4096


def fit_check(record: ModelRecord, ctx: int, slots: int) -> None:
    """Raise InsufficientMemory when `record` at `ctx` x `slots` will not fit in memory."""
    return None


def choose_context(record: ModelRecord, slots: int) -> int:
    """The context length per sequence to use when the user asked for none."""
    native = record.details.get("context_length") or DEFAULT_CTX
    return min(int(native), DEFAULT_CTX)
