"""`zhllama webui` in a real headless browser (Debian's chromium driven by playwright).

Type a question, watch the streamed answer appear and equal the model's answer, ask again (a second
turn) with a long limit, stop it mid-answer, clear the chat; a screenshot is saved on the way
(to $ZHLLAMA_SCREENSHOT_DIR when set, else the test's tmp folder).
"""

from __future__ import annotations

import os
import socket
import threading
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


def _squeezed(text: str) -> str:
    return "".join(text.split())


# the chatbot's status tracker (gradio 6.31): a visible 'minimal' overlay while its event runs, hidden when
# the event is over (no more output arrives). Stop ends the answer, not the event, so a stopped answer ends
# normally too: no 'full' panel reading "Error" (what a cancelled gradio event shows).
TRACKER = "document.querySelector('#chatbot [data-testid=status-tracker]')"
CHATBOT_RUNNING = (
    f"() => {{ const t = {TRACKER}; return !!t && t.classList.contains('minimal') && !t.classList.contains('hide'); }}"
)
CHATBOT_IDLE = f"() => !({CHATBOT_RUNNING})()"
TRACKER_HIDDEN = (
    f"() => {{ const t = {TRACKER}; return t.classList.contains('hide') && !t.classList.contains('full'); }}"
)
LAST_BOT_TEXT = (
    "() => { const m = document.querySelectorAll('#chatbot .message.bot'); "
    "return m.length ? m[m.length - 1].innerText.replace(/\\s/g, '') : null; }"
)


class WatchedReply:
    """A `Reply` whose iteration the test can see: the text handed to the page and when it stopped."""

    def __init__(self, reply):
        self.reply = reply
        self.text = ""
        self.closed = threading.Event()

    def __iter__(self):
        try:
            for chunk in self.reply:
                self.text += chunk
                yield chunk
        finally:
            self.closed.set()  # finished, or closed when the page's Stop cancelled the event

    def __getattr__(self, name):
        return getattr(self.reply, name)


def test_type_stream_stop_clear(ui, tmp_path, monkeypatch):
    sync_api = pytest.importorskip("playwright.sync_api")
    from PIL import Image

    from zhllama.core.templates import Message

    runtime, defaults, url = ui
    expected = runtime.reply(runtime.prompt_ids([Message("user", "你好")]), defaults.params()).run()
    replies: list[WatchedReply] = []
    reply = runtime.reply

    def watched(*args, **kwargs):
        replies.append(WatchedReply(reply(*args, **kwargs)))
        return replies[-1]

    monkeypatch.setattr(runtime, "reply", watched)
    shots = Path(os.environ.get("ZHLLAMA_SCREENSHOT_DIR", tmp_path))
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(url)
        box = page.locator("#question textarea")
        box.fill("你好")
        box.press("Enter")
        want = _squeezed(expected) + "(stoppedatmaxnewtokens)"  # 24 tokens: the length note shows
        page.wait_for_function(f"w => ({LAST_BOT_TEXT})() == w", arg=want, timeout=60_000)
        page.wait_for_function(CHATBOT_IDLE, timeout=60_000)
        assert [_squeezed(t) for t in _bot_texts(page)] == [want]
        assert page.locator("#chatbot .message.user").first.inner_text().strip() == "你好"
        assert replies[0].closed.is_set() and replies[0].text == expected
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
        seen = len(_squeezed(_bot_texts(page)[-1]))
        # streaming: the same answer grows on the page while it is generated
        page.wait_for_function(f"n => ({LAST_BOT_TEXT})().length > n", arg=seen, timeout=60_000)
        assert page.evaluate(CHATBOT_RUNNING)  # the signal waited for below shows while the answer runs
        page.locator("#stop").click(timeout=20_000)
        assert replies[1].closed.wait(60), "the answer was still generated after Stop"
        page.wait_for_function(CHATBOT_IDLE, timeout=60_000)  # the event is over: nothing more arrives
        stopped = _bot_texts(page)[-1]
        assert len(replies) == 2 and replies[1].cancelled and len(replies[1].token_ids) < 3000  # cut short
        assert len(_squeezed(stopped)) > seen and "stopped at max new tokens" not in stopped
        assert _squeezed(stopped) == _squeezed(replies[1].text)  # all that was generated, no more
        assert page.evaluate(TRACKER_HIDDEN) and "Error" not in page.locator("#chatbot").inner_text()
        page.screenshot(path=str(shots / "webui-stopped.png"), full_page=True)

        page.locator("#clear").click(timeout=20_000)
        page.wait_for_function("() => document.querySelectorAll('#chatbot .message').length == 0", timeout=30_000)
        page.screenshot(path=str(shots / "webui-cleared.png"), full_page=True)
        browser.close()
    for name in ("webui-answer.png", "webui-stopped.png", "webui-cleared.png"):
        with Image.open(shots / name) as shot:
            assert shot.format == "PNG" and shot.width == 1100 and shot.height >= 900
