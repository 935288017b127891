"""`zhllama webui` in a real headless browser (Debian's chromium driven by playwright).

Type a question, watch the streamed answer appear and equal the model's answer, ask again (a second
turn) with a long limit, stop it mid-answer, clear the chat; a screenshot is saved on the way
(to $ZHLLAMA_SCREENSHOT_DIR when set, else the test's tmp folder).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(tiny_zh_model):
    pytest.importorskip("gradio")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from zhllama.core.engine import open_model
    from zhllama.core.generation.options import AnswerOptions
    from zhllama.core.generation.runtime import ChatRuntime
    from zhllama.core.templates import get_template
    from zhllama.webui.app import build_ui

    model = open_model(tiny_zh_model)
    runtime = ChatRuntime(model, get_template("llama2-zh"), "tiny-zh")
    defaults = AnswerOptions(template="llama2-zh", temperature=0.0, max_new_tokens=24)
    demo = build_ui(runtime, defaults)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield runtime, defaults, f"http://127.0.0.1:{port}"
    demo.close()
    model.close()


def _bot_texts(page) -> list[str]:
    return [m.inner_text().strip() for m in page.locator("#chatbot .message.bot").all()]


def test_type_stream_stop_clear(ui, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    from zhllama.core.templates import Message

    runtime, defaults, url = ui
    expected = runtime.reply(runtime.prompt_ids([Message("user", "你好")]), defaults.params()).run()
    shots = Path(os.environ.get("ZHLLAMA_SCREENSHOT_DIR", tmp_path))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url)
        box = page.locator("#question textarea")
        box.fill("你好")
        box.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('#chatbot .message.bot').length == 1", timeout=60_000)
        want = "".join(expected.split()) + "(stoppedatmaxnewtokens)"  # 24 tokens: the length note shows
        deadline = time.monotonic() + 60
        while "".join(_bot_texts(page)[-1].split()) != want and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "".join(_bot_texts(page)[-1].split()) == want
        assert page.locator("#chatbot .message.user").first.inner_text().strip() == "你好"
        page.screenshot(path=str(shots / "webui-answer.png"), full_page=True)

        # second turn with a long limit: it streams, Stop ends it
        page.get_by_text("Generation settings", exact=True).click()
        limit = page.locator("input[aria-label='number input for Max new tokens']")
        limit.fill("3000")
        limit.press("Enter")
        limit.blur()  # gradio commits a slider's typed value on change/blur; wait until the slider has it
        page.wait_for_function(
            "() => document.querySelector(\"input[aria-label='range slider for Max new tokens']\")?.value == '3000'",
            timeout=10_000,
        )
        box.fill("北京")
        box.press("Enter")
        page.wait_for_function(
            "() => { const m = document.querySelectorAll('#chatbot .message.bot'); "
            "return m.length == 2 && m[1].innerText.trim().length > 5; }",
            timeout=60_000,
        )
        lengths = []
        for _ in range(3):
            lengths.append(len(_bot_texts(page)[-1]))
            time.sleep(0.3)
        page.locator("#stop").click(timeout=20_000)
        time.sleep(1.0)
        stopped = _bot_texts(page)[-1]
        time.sleep(1.5)
        assert _bot_texts(page)[-1] == stopped  # nothing more arrives after Stop
        assert len(set(lengths)) > 1  # the answer grew while we watched (streaming)
        assert 0 < len(stopped) and "stopped at max new tokens" not in stopped
        page.screenshot(path=str(shots / "webui-stopped.png"), full_page=True)

        page.locator("#clear").click(timeout=20_000)
        page.wait_for_function("() => document.querySelectorAll('#chatbot .message').length == 0", timeout=30_000)
        page.screenshot(path=str(shots / "webui-cleared.png"), full_page=True)
        browser.close()
    assert (shots / "webui-answer.png").stat().st_size > 10_000
