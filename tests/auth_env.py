"""A department on one server, for the access tests: an admin, members with and without grants,
two knowledge bases, API keys for each, on the fake engine (tests/fake_engine.py).

    boss   admin                      key "admin": every route family
    li     member, no group, no grant key "member"
    zhao   member of group "mining"   key "writer"; "mining" owns knowledge base "shared"
           (read + write)             key "narrow": chat only, model fake:1 only
    wang   member, read grant on      key "reader"
           "shared"
    knowledge bases: "shared" (manual.md), "secret" (plans.md), no grants on "secret"
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi.testclient import TestClient
from tests.fake_engine import FakeEngine, fake_registry, tiny_gguf

from bendi.config import Settings
from bendi.core.context import RequestContext
from bendi.server.app import create_app
from bendi.services import Services

MODEL = "fake:1"
OTHER_MODEL = "other:1"
PASSWORDS = {"boss": "boss-password", "li": "li-password", "zhao": "zhao-password", "wang": "wang-password"}
CLI = RequestContext.local("cli test")


@dataclass
class Department:
    client: TestClient
    services: Services
    engine: FakeEngine
    keys: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str | None) -> dict[str, str]:
        """Authorization for key `who` ("admin", "member", "writer", "reader", "narrow"); None: none."""
        return {} if who is None else {"Authorization": f"Bearer {self.keys[who]}"}


def populate(services: Services, tmp_path: Path) -> dict[str, str]:
    """Models, knowledge bases, users, grants and keys; returns the keys by role."""
    services.store.import_file(tiny_gguf(tmp_path / "fake.gguf"), MODEL)
    services.store.import_file(tiny_gguf(tmp_path / "other.gguf", pad=1), OTHER_MODEL)
    (tmp_path / "manual.md").write_text("# Conveyor\n\nLubricate the drive pulley bearings every 500 operating "
                                        "hours with lithium grease.\n", encoding="utf-8")
    (tmp_path / "plans.md").write_text("# Plans\n\nThe drive pulley bearings of the secret mine are replaced "
                                       "every 300 hours.\n", encoding="utf-8")
    kb = services.kb
    kb.create("shared")
    kb.add_paths("shared", [tmp_path / "manual.md"])
    kb.create("secret")
    kb.add_paths("secret", [tmp_path / "plans.md"])
    d = services.auth.directory
    d.add_group("mining", actor=CLI)
    d.add_user("boss", role="admin", password=PASSWORDS["boss"], actor=CLI)
    d.add_user("li", password=PASSWORDS["li"], actor=CLI)
    d.add_user("zhao", password=PASSWORDS["zhao"], groups=("mining",), actor=CLI)
    d.add_user("wang", password=PASSWORDS["wang"], actor=CLI)
    d.set_owner("shared", "mining", actor=CLI)
    d.grant("shared", user="wang", access="read", actor=CLI)
    keys = {
        "admin": d.create_key("boss", routes=("chat", "embeddings", "kb", "admin"), actor=CLI)[1],
        "member": d.create_key("li", actor=CLI)[1],
        "writer": d.create_key("zhao", actor=CLI)[1],
        "reader": d.create_key("wang", actor=CLI)[1],
        "narrow": d.create_key("zhao", routes=("chat",), models=(MODEL,), actor=CLI)[1],
    }
    return keys


@contextmanager
def department(settings: Settings, tmp_path: Path) -> Iterator[Department]:
    registry, engine = fake_registry()
    services = Services.build(settings, engines=registry)
    keys = populate(services, tmp_path)
    with TestClient(create_app(settings, services=services), base_url="http://localhost") as client:
        yield Department(client, services, engine, keys)
