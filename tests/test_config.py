"""Settings: every BENDI_* variable read in one place, coerced to its field's type."""

from __future__ import annotations

from pathlib import Path

import pytest

from bendi.config import Settings
from bendi.errors import InvalidRequest


def test_variables_are_coerced_to_their_types() -> None:
    s = Settings.from_env({"BENDI_HOME": "~/x", "BENDI_PORT": "8080", "BENDI_KEEP_ALIVE": "1.5",
                           "BENDI_CTX": "2048", "BENDI_FORCE": "yes", "BENDI_LLAMA_LOG": "0",
                           "BENDI_API_KEY": "k", "BENDI_MEMORY_LIMIT": "16GB", "BENDI_THREADS": ""})
    assert s.home == Path("~/x").expanduser() and s.port == 8080 and s.keep_alive == 1.5
    assert s.ctx == 2048 and s.force is True and s.llama_log is False
    assert s.api_key == "k" and s.memory_limit == "16GB" and s.threads is None  # empty: unset
    assert Settings.from_env({}).port == 11435


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("BENDI_PORT", "http", "expected a whole number"),
    ("BENDI_KEEP_ALIVE", "5m", "expected a number"),
    ("BENDI_FORCE", "maybe", "expected one of 1, true"),
])
def test_a_bad_value_names_the_variable(name: str, value: str, expected: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        Settings.from_env({name: value})
    assert info.value.message.startswith(f"{name}={value!r}: {expected}")


def test_overrides_and_replace_leave_the_shared_settings_alone() -> None:
    shared = Settings.from_env({"BENDI_SLOTS": "4"}, port=9000)
    assert (shared.slots, shared.port) == (4, 9000)
    mine = shared.replace(slots=1, ctx=None)
    assert (mine.slots, mine.ctx, shared.slots) == (1, None, 4)


def test_every_field_is_described() -> None:
    rows = Settings.describe()
    assert all(var.startswith("BENDI_") and text for var, _, text in rows)
    assert "BENDI_LLAMA_LOG" in {var for var, _, _ in rows}
