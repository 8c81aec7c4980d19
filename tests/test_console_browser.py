"""The web console in a real browser: Playwright driving Debian's Chromium (never a downloaded
browser; `make test` installs the `chromium` package when it is missing) against the real
`bendi serve --demo` with the bundled model.

Scenarios: chat with streaming and server-side history; stopping a streaming answer; asking the
demo knowledge base in Chinese and opening the cited passage; creating a knowledge base and
uploading a PDF (progress and per-file result, a failed file with its reason); searching; the
Models page; the language switch; and text from the server (document names, answers) shown as
text, never run as HTML. Each page is saved as a screenshot under tests/output/console/ at
1280x800 and on a 390-wide phone screen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.browser_util import DESKTOP, PHONE, STEP_MS, XSS, browser, shoot
from tests.mirror import Mirror, MirrorServer, write_tiny_gguf
from tests.server_util import ServerProcess

__all__ = ["browser"]  # the fixture, used by the tests below


#: what the Models page pulls from the loopback mirror (tests/mirror.py), and the name it gets
PULL_NAME, PULLED = "x/Tiny-GGUF/Tiny-Q4_0.gguf", "tiny:q4_0"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("console")
    mirror = Mirror()
    mirror.add_hf("x/Tiny-GGUF", "Tiny-Q4_0.gguf", write_tiny_gguf(root / "tiny.gguf", n_floats=512 * 1024))
    with MirrorServer(mirror) as source:
        proc = ServerProcess(root / "home", "--demo", env={"BENDI_SOURCES": f"hub=huggingface:{source.url}"})
        yield proc.wait_ready(timeout=300)
        proc.stop()


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP, locale="en-US", base_url=server.url)
    pg = context.new_page()
    pg.set_default_timeout(STEP_MS)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors  # no uncaught script error on any page


def phone_shot(browser: Any, server: ServerProcess, path: str, name: str, wait_for: str, locale: str = "zh-CN") -> None:
    context = browser.new_context(viewport=PHONE, locale=locale, base_url=server.url, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.set_default_timeout(STEP_MS)
    pg.goto(path)
    pg.wait_for_selector(wait_for)
    pg.wait_for_timeout(300)
    shoot(pg, name)
    context.close()


def open_console(pg: Any, path: str = "/") -> None:
    pg.goto(path)
    pg.wait_for_selector("#prompt")


def ask(pg: Any, text: str) -> None:
    pg.fill("#prompt", text)
    pg.keyboard.press("Enter")


def last_answer(pg: Any) -> Any:
    return pg.locator(".msg.assistant").last


def limit_tokens(pg: Any, n: int) -> None:
    """Keep answers short (the bundled model likes to ramble): the chat settings' max tokens."""
    pg.click("#chat-settings")
    pg.fill("#max-tokens", str(n))
    pg.locator("#max-tokens").dispatch_event("change")
    pg.click("#chat-settings")


def wait_idle(pg: Any) -> None:
    """The answer under way has ended (the send button is back)."""
    pg.wait_for_selector("#send:not([hidden])", state="attached")
    pg.wait_for_function("!document.querySelector('.chat.running')")


def test_chat_streams_an_answer_and_keeps_the_conversation_on_the_server(page: Any, server: ServerProcess) -> None:
    open_console(page)
    assert page.locator("#model").input_value() == "smollm2:135m"
    assert page.locator("#model option[value='kb:demo']").count() == 1  # knowledge bases are models too
    shoot(page, "chat-empty-1280")
    limit_tokens(page, 24)
    ask(page, "Say hello in one short sentence.")
    page.wait_for_selector("#stop:not([hidden])")  # streaming: the stop button replaces send
    wait_idle(page)
    answer = last_answer(page).locator(".answer")
    assert answer.inner_text().strip()
    assert "/chat/" in page.url
    conv_id = page.url.rsplit("/", 1)[-1]
    stored = httpx.get(f"{server.url}/conversations/{conv_id}").json()
    assert [m["role"] for m in stored["messages"]] == ["user", "assistant"]
    assert stored["messages"][1]["content"].strip() == answer.inner_text().strip()
    assert stored["settings"]["max_tokens"] == "24"
    # regenerate replaces the answer, it does not add one
    last_answer(page).locator(".regen").click()
    wait_idle(page)
    assert page.locator(".msg.assistant").count() == 1
    assert len(httpx.get(f"{server.url}/conversations/{conv_id}").json()["messages"]) == 2
    shoot(page, "chat-answer-1280")
    # a reload finds it in the list; deleting removes it from the server
    page.reload()
    page.wait_for_selector(f".conv[href='#/chat/{conv_id}']")
    page.locator(f".conv[href='#/chat/{conv_id}'] .conv-del").click()
    page.locator("dialog .btn-danger").click()
    page.wait_for_selector(f".conv[href='#/chat/{conv_id}']", state="detached")
    assert httpx.get(f"{server.url}/conversations/{conv_id}").status_code == 404


def test_stop_ends_a_streaming_answer_and_keeps_what_came(page: Any, server: ServerProcess) -> None:
    open_console(page)
    ask(page, "Write a very long story about a dragon who learns to cook, with many chapters.")
    answer = last_answer(page).locator(".answer")
    page.wait_for_function("el => el.innerText.trim().length > 20", arg=answer.element_handle())
    page.keyboard.press("Escape")  # the keyboard shortcut for stop
    wait_idle(page)
    assert last_answer(page).locator(".tag", has_text="stopped").count() == 1
    kept = answer.inner_text().strip()
    assert kept
    conv_id = page.url.rsplit("/", 1)[-1]
    stored = httpx.get(f"{server.url}/conversations/{conv_id}").json()["messages"][-1]
    assert stored["stopped"] is True and stored["content"].strip() == kept
    # the server is free again: the next question is answered
    limit_tokens(page, 16)
    ask(page, "Hi")
    wait_idle(page)
    assert page.locator(".msg.assistant").count() == 2 and not page.locator(".msg-error:not([hidden])").count()


def test_asking_the_demo_knowledge_base_in_chinese_opens_the_cited_passage(browser: Any, server: ServerProcess) -> None:
    context = browser.new_context(viewport=DESKTOP, locale="zh-CN", base_url=server.url)
    pg = context.new_page()
    pg.set_default_timeout(STEP_MS)
    open_console(pg)
    assert pg.locator("#nav-kb").inner_text() == "知识库"  # Chinese: the browser asks for it
    pg.select_option("#model", "kb:demo")
    limit_tokens(pg, 32)
    ask(pg, "瓦斯浓度达到1.5%时应该怎么办？")
    pg.wait_for_selector(".msg.assistant .source")
    wait_idle(pg)
    sources = pg.locator(".msg.assistant .source")
    assert "煤矿安全手册" in " ".join(sources.all_inner_texts())
    manual = sources.filter(has_text="煤矿安全手册").first
    manual.click()
    drawer = pg.locator("#passage")
    drawer.wait_for()
    assert "煤矿安全手册" in drawer.locator(".doc-name").inner_text()
    assert "1.5%" in drawer.locator(".passage-text").inner_text()
    assert drawer.locator("mark.quote").inner_text().strip()  # the supporting sentence is highlighted
    shoot(pg, "kb-answer-cited-passage-1280")
    pg.keyboard.press("Escape")
    assert drawer.is_hidden()
    context.close()


#: a DeepSeek-R1 stream as bendi's OpenAI route sends it (reasoning_content deltas, then content),
#: played by the page itself: the reasoning events come at once, the answer when the test says so
REASONING_STREAM = """
(() => {
  const events = %s;
  const real = window.fetch;
  window.__answer = null;
  window.fetch = (url, init) => {
    if (!String(url).endsWith("/v1/chat/completions")) return real(url, init);
    window.__request = JSON.parse(init.body);
    const enc = new TextEncoder();
    const line = (e) => enc.encode("data: " + JSON.stringify(e) + "\\n\\n");
    const body = new ReadableStream({async start(c) {
      for (const e of events.reasoning) c.enqueue(line(e));
      await new Promise((go) => { window.__answer = go; });
      for (const e of events.answer) c.enqueue(line(e));
      c.enqueue(enc.encode("data: [DONE]\\n\\n"));
      c.close();
    }});
    return Promise.resolve(new Response(body, {headers: {"content-type": "text/event-stream"}}));
  };
})();
"""


def test_reasoning_streams_into_a_block_that_folds_away(page: Any, server: ServerProcess) -> None:
    """DeepSeek-R1's reasoning shows in its own open block while the model thinks and folds away
    when the answer starts; the answer's Markdown and code are rendered. The bundled model does not
    reason, so the stream is played by the page (the server's side is tested in test_reasoning.py
    and test_server.py)."""
    def chunk(**delta: str) -> dict[str, Any]:
        return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}

    events = {"reasoning": [chunk(role="assistant", reasoning_content="The user greets. "),
                            chunk(reasoning_content="I answer **briefly**.")],
              "answer": [chunk(content="Hello! Here is `code`:\n\n```python\nprint('hi')  # greet\n```\n"),
                         {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]}
    page.add_init_script(REASONING_STREAM % json.dumps(events))
    open_console(page)
    # the chat settings go with the request: system prompt and temperature
    page.click("#chat-settings")
    page.fill("#system-prompt", "You are the plant's assistant.")
    page.locator("#system-prompt").dispatch_event("change")
    page.locator("#temperature").fill("0.3")
    page.locator("#temperature").dispatch_event("change")
    page.click("#chat-settings")
    ask(page, "Hello")
    block = last_answer(page).locator("details.reasoning")
    block.locator(".reasoning-text strong").wait_for()  # the reasoning is Markdown too
    assert block.get_attribute("open") is not None  # open while the model thinks
    assert "I answer" in block.locator(".reasoning-text").inner_text()
    assert page.locator("#stop").is_visible()
    sent = page.evaluate("window.__request")
    assert sent["messages"][0] == {"role": "system", "content": "You are the plant's assistant."}
    assert sent["temperature"] == 0.3 and sent["stream"] is True
    shoot(page, "chat-reasoning-1280")
    page.evaluate("window.__answer()")
    wait_idle(page)
    assert block.get_attribute("open") is None  # folded once the answer came
    shoot(page, "chat-reasoning-folded-1280")
    block.locator("summary").click()
    assert block.get_attribute("open") is not None and "I answer" in block.locator(".reasoning-text").inner_text()
    answer = last_answer(page).locator(".answer")
    assert answer.locator(".codeblock code").inner_text().strip().startswith("print('hi')")
    assert answer.locator(".codeblock code span").count() >= 1  # the code is coloured
    assert answer.locator("p code").inner_text() == "code"
    assert "I answer" not in answer.inner_text()
    # what is kept on the server has the reasoning apart from the answer
    conv_id = page.url.rsplit("/", 1)[-1]
    stored = httpx.get(f"{server.url}/conversations/{conv_id}").json()["messages"][-1]
    assert "I answer" in stored["reasoning"] and "I answer" not in stored["content"]


def make_pdf(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    for text in ("Forklift inspection: check the brakes and the horn before every shift.",
                 "Battery charging: charge only in the ventilated charging room, never near open flames."):
        pdf.add_page()
        pdf.set_font("helvetica", size=12)
        pdf.multi_cell(0, 8, text)
    pdf.output(str(path))
    return path


def test_upload_shows_progress_and_each_files_result(page: Any, server: ServerProcess, tmp_path: Path) -> None:
    page.goto("/#/kb")
    page.wait_for_selector(".page-head")
    page.get_by_role("button", name="New knowledge base").first.click()
    page.fill("#f-name", "warehouse")
    page.locator("dialog .btn-primary").click()
    page.wait_for_url(re.compile(r"#/kb/warehouse$"))
    page.wait_for_selector("#dropzone")
    pdf = make_pdf(tmp_path / "forklift-safety.pdf")
    broken = tmp_path / "broken.pdf"
    broken.write_bytes(b"%PDF-1.4 this is not really a pdf")
    page.set_input_files("#file-input", [str(pdf), str(broken)])
    done = page.locator(".upload[data-file='forklift-safety.pdf'][data-status='added']")
    done.wait_for()
    assert "added" in done.locator(".upload-status").inner_text()
    assert done.locator(".bar.done").count() == 1
    failed = page.locator(".upload[data-file='broken.pdf'][data-status='failed']")
    failed.wait_for()
    assert len(failed.locator(".upload-status").inner_text()) > len("failed: ")  # the reason is shown
    page.wait_for_selector("#documents >> text=forklift-safety.pdf")
    shoot(page, "kb-upload-1280")
    # the same file again is recognised
    page.set_input_files("#file-input", [str(pdf)])
    page.locator(".upload[data-file='forklift-safety.pdf'][data-status='unchanged']").wait_for()
    # dropped on the drop zone
    page.evaluate("""([name, text]) => {
      const dt = new DataTransfer();
      dt.items.add(new File([text], name, {type: "text/markdown"}));
      document.querySelector("#dropzone").dispatchEvent(new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""", ["dropped.md", "# Dropped\n\nForklifts park in bay 3 overnight.\n"])
    page.locator(".upload[data-file='dropped.md'][data-status='added']").wait_for()
    # a folder: each file named by its path inside it (as `bendi kb add FOLDER` names them), so
    # two files of the same name do not replace each other; hidden files are left out
    folder = tmp_path / "manuals"
    for line in ("line-a", "line-b"):
        (folder / line).mkdir(parents=True)
        (folder / line / "checklist.md").write_text(f"# {line}\n\nCheck the belt tension of {line} every Monday.\n")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "notes.md").write_text("# hidden\n")
    page.set_input_files("#folder-input", str(folder))
    for line in ("line-a", "line-b"):
        page.locator(f".upload[data-file='{line}/checklist.md'][data-status='added']").wait_for()
    page.wait_for_selector("#documents >> text=line-b/checklist.md")
    assert page.locator(".upload[data-file*='notes.md']").count() == 0
    docs = {d["name"] for d in httpx.get(f"{server.url}/kb/warehouse/documents").json()["documents"]}
    assert {"line-a/checklist.md", "line-b/checklist.md", "dropped.md"} <= docs
    # removing a document (a name with a folder in it too)
    page.locator("#documents tr", has_text="line-a/checklist.md").get_by_role("button", name="Remove").click()
    page.locator("dialog .btn-danger").click()
    page.wait_for_selector("#documents >> text=line-a/checklist.md", state="detached")
    # search shows ranked passages with their scores, and opens one
    page.get_by_role("tab", name="Search").click()
    page.fill("#kb-query", "charging room flames")
    page.keyboard.press("Enter")
    first = page.locator(".result").first
    first.wait_for()
    assert "forklift-safety.pdf" in first.inner_text() and "score" in first.inner_text()
    first.click()
    assert "charging room" in page.locator("#passage .passage-text").inner_text()
    assert page.locator("#passage .pill", has_text="p. 2").count() == 1
    shoot(page, "kb-search-1280")


def test_text_from_the_server_is_never_run_as_html(page: Any, server: ServerProcess, tmp_path: Path) -> None:
    httpx.post(f"{server.url}/kb", json={"name": "xss"}).raise_for_status()
    evil = tmp_path / f"{XSS}.md"
    evil.write_text(f"# Title {XSS}\n\nThe answer is 42. {XSS}\n")
    with evil.open("rb") as f:
        httpx.post(f"{server.url}/kb/xss/documents", files={"file": (evil.name, f, "text/markdown")}).raise_for_status()
    messages = [{"role": "user", "content": XSS},
                {"role": "assistant", "content": f"**bold** {XSS} <script>window.__xss=2</script> [link](javascript:window.__xss=3)",
                 "sources": [{"document": XSS, "text": XSS}]}]
    conv = httpx.post(f"{server.url}/conversations", json={"messages": messages}).json()
    page.goto(f"/#/chat/{conv['id']}")
    answer = last_answer(page).locator(".answer")
    answer.wait_for()
    assert XSS in answer.inner_text() and "<script>" in answer.inner_text()
    assert answer.locator("strong").inner_text() == "bold"  # Markdown still works
    assert answer.locator("img, script").count() == 0
    assert answer.locator("a").get_attribute("href") == "#"
    answer.locator("a").click()
    page.goto("/#/kb/xss")
    page.wait_for_selector(f"#documents >> text={XSS}")
    page.get_by_role("tab", name="Search").click()
    page.fill("#kb-query", "answer 42")
    page.keyboard.press("Enter")
    page.locator(".result").first.click()
    assert XSS in page.locator("#passage .doc-name").inner_text()
    assert page.locator("img").count() == 0
    assert page.evaluate("window.__xss") is None


def test_models_page_and_language_switch(page: Any, browser: Any, server: ServerProcess) -> None:
    # an empty prompt loads the model (as in Ollama), so the page has a loaded model to show
    httpx.post(f"{server.url}/api/generate", json={"model": "smollm2:135m", "prompt": ""}, timeout=120).raise_for_status()
    page.goto("/#/models")
    row = page.locator("#installed tr[data-model='smollm2:135m']")
    row.wait_for()
    assert "Q8_0" in row.inner_text() or re.search(r"Q\d|F16|BF16", row.inner_text())
    assert row.locator(".pill").inner_text().strip()  # the planner's verdict for this machine
    assert page.locator("#plan tbody tr").count() >= 3  # the catalog's plan table
    assert "smollm2:135m" in page.locator("#loaded").inner_text()
    shoot(page, "models-1280")
    page.click("#lang-switch")
    page.wait_for_selector("#nav-models >> text=模型")
    assert page.locator("h1").inner_text() == "模型"
    verdict = page.locator("#installed tr[data-model='smollm2:135m'] .pill").inner_text()
    assert "fits" not in verdict and "CPU" in verdict  # the planner's verdict in Chinese too
    page.reload()  # the choice is kept in this browser
    page.wait_for_selector("#nav-models >> text=模型")
    page.click("#lang-switch")
    page.wait_for_selector("#nav-models >> text=Models")
    page.goto("/#/kb")
    page.wait_for_selector(".kb-card")
    shoot(page, "kb-list-1280")
    page.goto("/#/kb/demo")
    page.wait_for_selector("#documents")
    shoot(page, "kb-documents-1280")


def test_models_page_pulls_with_progress_imports_copies_and_removes(page: Any, server: ServerProcess, tmp_path: Path) -> None:
    page.goto("/#/models")
    page.wait_for_selector("#installed")
    # a GGUF file that lies on the server
    tiny = write_tiny_gguf(tmp_path / "tiny-import.gguf", n_floats=1024)
    page.get_by_role("button", name="Import a file").click()
    page.fill("#f-path", str(tiny))
    page.fill("#f-name", "tiny-import:latest")
    page.locator("dialog .btn-primary").click()
    page.wait_for_selector("#installed tr[data-model='tiny-import:latest']")
    page.get_by_role("button", name="Pull").click()
    page.fill("#f-model", PULL_NAME)
    page.locator("dialog .btn-primary").click()
    row = page.locator(f".upload[data-pull='{PULL_NAME}']")
    row.locator(".bar.done").wait_for()
    assert "installed" in row.inner_text()
    page.wait_for_selector(f"#installed tr[data-model='{PULLED}']")
    shoot(page, "models-pull-1280")
    page.locator(f"#installed tr[data-model='{PULLED}']").get_by_role("button", name="Copy").click()
    page.fill("#f-destination", "tiny-copy:latest")
    page.locator("dialog .btn-primary").click()
    page.wait_for_selector("#installed tr[data-model='tiny-copy:latest']")
    for name in (PULLED, "tiny-copy:latest", "tiny-import:latest"):
        page.locator(f"#installed tr[data-model='{name}']").get_by_role("button", name="Remove").click()
        page.locator("dialog .btn-danger").click()
        page.wait_for_selector(f"#installed tr[data-model='{name}']", state="detached")
    tags = {m["name"] for m in httpx.get(f"{server.url}/api/tags").json()["models"]}
    assert not tags & {PULLED, "tiny-copy:latest", "tiny-import:latest"}


def test_phone_screens(browser: Any, server: ServerProcess) -> None:
    conv = httpx.get(f"{server.url}/conversations").json()["conversations"]
    phone_shot(browser, server, "/", "chat-390", "#prompt")
    if conv:
        phone_shot(browser, server, f"/#/chat/{conv[0]['id']}", "chat-answer-390", ".msg.assistant .answer")
    phone_shot(browser, server, "/#/kb", "kb-list-390", ".kb-card")
    phone_shot(browser, server, "/#/kb/demo", "kb-documents-390", "#documents")
    phone_shot(browser, server, "/#/models", "models-390", "#installed")
    # the menu opens as a drawer and navigates
    context = browser.new_context(viewport=PHONE, locale="en-US", base_url=server.url, is_mobile=True, has_touch=True)
    pg = context.new_page()
    pg.goto("/")
    pg.wait_for_selector("#prompt")
    assert pg.locator("#sidebar").bounding_box()["x"] < 0  # hidden off screen
    pg.get_by_role("button", name="Menu").click()
    pg.wait_for_timeout(300)
    assert pg.locator("#sidebar").bounding_box()["x"] == 0
    shoot(pg, "menu-390")
    pg.click("#nav-models")
    pg.wait_for_selector("#installed")
    assert pg.locator("#sidebar").bounding_box()["x"] < 0
    context.close()
