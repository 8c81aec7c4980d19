"""Signing in and the administration section of the web console, in Chromium (see
test_console_browser.py for how the browser is started): a server with accounts asks for a login;
an admin creates a member, creates an API key that is shown once, and reads the audit log; the
member signs in and sees neither the administration section (whose API refuses them) nor a
knowledge base they were not granted, until the admin grants it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.browser_util import DESKTOP, PHONE, STEP_MS, browser, shoot
from tests.server_util import ServerProcess

__all__ = ["browser"]  # the fixture, used by the test below

ADMIN, ADMIN_PASSWORD = "boss", "boss-password-1"
MEMBER, MEMBER_PASSWORD = "li", "li-password-1"


def bendi(home: Path, *args: str, stdin: str | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENDI_")} | {"BENDI_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "bendi", *args], input=stdin, text=True, env=env, check=True,
                   capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("console-admin")
    home = root / "home"
    (root / "plans.md").write_text("# Plans\n\nThe new shaft opens in March.\n", encoding="utf-8")
    bendi(home, "kb", "create", "private")
    bendi(home, "kb", "add", "private", str(root / "plans.md"))
    bendi(home, "user", "add", ADMIN, "--role", "admin", "--password-stdin", stdin=ADMIN_PASSWORD + "\n")
    proc = ServerProcess(home).wait_ready(timeout=300)
    yield proc
    proc.stop()


def new_page(browser: Any, server: ServerProcess, viewport: dict[str, int] = DESKTOP) -> Any:
    context = browser.new_context(viewport=viewport, locale="en-US", base_url=server.url)
    pg = context.new_page()
    pg.set_default_timeout(STEP_MS)
    return pg


def log_in(pg: Any, user: str, password: str) -> None:
    pg.goto("/")
    pg.wait_for_selector("#login")
    pg.fill("#login-user", user)
    pg.fill("#login-password", password)
    pg.keyboard.press("Enter")
    pg.wait_for_selector("#nav-chat")


def test_admin_creates_a_member_who_sees_no_admin_section_and_no_ungranted_knowledge_base(
        browser: Any, server: ServerProcess) -> None:
    admin = new_page(browser, server)
    admin.goto("/")
    admin.wait_for_selector("#login")
    shoot(admin, "login-1280")
    admin.fill("#login-user", ADMIN)
    admin.fill("#login-password", "wrong")
    admin.keyboard.press("Enter")
    admin.wait_for_selector(".form-error:not([hidden])")
    assert "Wrong user name or password" in admin.locator(".form-error").inner_text()
    log_in(admin, ADMIN, ADMIN_PASSWORD)
    admin.click("#nav-admin")
    admin.wait_for_selector("#users")
    admin.click("#add-user")
    admin.fill("#f-name", MEMBER)
    admin.fill("#f-password", MEMBER_PASSWORD)
    admin.locator("dialog .btn-primary").click()
    admin.wait_for_selector(f"#users tr[data-user='{MEMBER}']")
    shoot(admin, "admin-users-1280")
    # an API key is shown once
    admin.get_by_role("tab", name="API keys").click()
    admin.get_by_role("button", name="New API key").click()
    admin.select_option("#f-user", MEMBER)
    admin.locator("dialog .btn-primary").click()
    key = admin.locator("#new-key")
    key.wait_for()
    assert key.inner_text().startswith("bk_")
    shoot(admin, "admin-key-once-1280")
    admin.locator("dialog .btn-primary").click()
    admin.wait_for_selector("#keys tbody tr")
    assert key.count() == 0
    # the audit log shows what happened, and can be filtered
    admin.get_by_role("tab", name="Audit log").click()
    admin.wait_for_selector("#audit tbody tr")
    assert "user.add" in admin.locator("#audit").inner_text()
    shoot(admin, "admin-audit-1280")

    member = new_page(browser, server)
    log_in(member, MEMBER, MEMBER_PASSWORD)
    assert member.locator("#nav-admin").count() == 0
    status = member.evaluate("fetch('/admin/users').then(r => r.status)")
    assert status == 403
    member.goto("/#/admin/users")
    member.wait_for_selector("#prompt")  # not an admin: the chat, not the section
    assert member.locator("#users").count() == 0
    assert member.locator("#model option[value='kb:private']").count() == 0
    member.goto("/#/kb")
    member.wait_for_selector(".empty")
    assert member.locator(".kb-card").count() == 0
    shoot(member, "member-kb-none-1280")
    member.goto("/#/kb/private")
    member.wait_for_selector(".notice.error")

    # granted: now they see it
    admin.goto("/#/admin/grants")
    admin.click("#add-grant")
    admin.select_option("#f-knowledge_base", "private")
    admin.select_option("#f-who", f"user:{MEMBER}")
    admin.locator("dialog .btn-primary").click()
    admin.wait_for_selector("#grants >> text=private")
    member.goto("/#/kb")
    member.wait_for_selector(".kb-card >> text=private")
    member.goto("/#/kb/private")
    member.wait_for_selector("#documents >> text=plans.md")
    assert member.locator("#dropzone").count() == 0  # read access: no uploads, no remove buttons
    assert member.locator("#documents button").count() == 0
    phone = new_page(browser, server, PHONE)
    log_in(phone, ADMIN, ADMIN_PASSWORD)
    phone.goto("/#/admin/users")
    phone.wait_for_selector("#users")
    shoot(phone, "admin-users-390")


def test_admin_groups_quotas_audit_filters_export_and_revoking_a_key(browser: Any, server: ServerProcess) -> None:
    admin = new_page(browser, server)
    log_in(admin, ADMIN, ADMIN_PASSWORD)
    # a group with a member
    admin.goto("/#/admin/groups")
    admin.get_by_role("button", name="New group").click()
    admin.fill("#f-name", "shift-a")
    admin.locator("dialog .btn-primary").click()
    row = admin.locator("#groups tr", has_text="shift-a")
    row.wait_for()
    row.get_by_role("button", name="Add members").click()
    admin.select_option("#f-users", [ADMIN])
    admin.locator("dialog .btn-primary").click()
    admin.locator("#groups tr", has_text="shift-a").locator(".chip", has_text=ADMIN).wait_for()
    shoot(admin, "admin-groups-1280")
    # a quota, and today's usage
    admin.get_by_role("tab", name="Quotas and usage").click()
    admin.get_by_role("button", name="Set a quota").click()
    admin.select_option("#f-user", ADMIN)
    admin.fill("#f-requests_per_minute", "600")
    admin.locator("dialog .btn-primary").click()
    admin.locator("#quotas tr", has_text=ADMIN).wait_for()
    assert "600" in admin.locator("#quotas").inner_text()
    shoot(admin, "admin-quotas-1280")
    # the audit log filtered by user, and its export
    admin.get_by_role("tab", name="Audit log").click()
    admin.wait_for_selector("#audit tbody tr")
    admin.fill("input[name=kind]", "admin")
    admin.locator("input[name=kind]").dispatch_event("change")
    admin.wait_for_function("[...document.querySelectorAll('#audit tbody tr')].every(r => !r.innerText.includes('login'))")
    assert "group.add" in admin.locator("#audit").inner_text()
    href = admin.locator("a", has_text="CSV").get_attribute("href")
    assert "kind=admin" in href  # the export takes the filters shown
    csv = admin.evaluate("(u) => fetch(u).then(r => r.text())", href).splitlines()
    assert csv[0].startswith("seq,") and any("group.add" in line for line in csv[1:])
    assert not any("/auth/login" in line for line in csv)
    shoot(admin, "admin-audit-filtered-1280")
    # a key revoked
    admin.get_by_role("tab", name="API keys").click()
    admin.wait_for_selector("#keys tbody tr")
    admin.locator("#keys tbody tr").first.get_by_role("button", name="Revoke").click()
    admin.locator("dialog .btn-danger, dialog .btn-primary").last.click()
    admin.locator("#keys .pill", has_text="revoked").wait_for()
