"""A gradio chat page over a `ChatRuntime`, as Chinese-LLaMA-Alpaca(-2)'s `gradio_demo.py` offers.

Streaming multi-turn chat (the whole conversation is re-rendered with the template every turn and
the oldest turns are dropped when it outgrows the context, as in `chat`), a system prompt, sampling
controls (temperature, top-p, top-k, repetition penalty, max new tokens), classifier-free guidance
(scale + negative prompt, transformers engine), a Stop button that ends the running answer and a
Clear button. One answer is generated at a time (the queue runs one event at a time).

Stop and Clear cancel the session's `Reply` (it ends after the current token) instead of cancelling
the gradio event: a cancelled event makes gradio 6 paint an "Error" panel over the chat.
"""

import time
from dataclasses import dataclass, replace

from zhllama.core.generation.options import AnswerOptions
from zhllama.core.generation.respond import Reply
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import Message

LENGTH_NOTE = "\n\n*(stopped at max new tokens)*"
REFRESH_SECONDS = 0.05


def text_of(content) -> str:
    """The text of a chatbot message's content (a string, or gradio's list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list | tuple):
        return "".join(text_of(part) for part in content)
    return ""


def conversation(history: list[dict], system: str) -> list[Message]:
    """Template messages from the chatbot history (the last entry is the new user message)."""
    messages = [Message("system", system)] if system.strip() else []
    for entry in history:
        text = text_of(entry.get("content")).removesuffix(LENGTH_NOTE)
        if entry.get("role") in ("user", "assistant") and text:
            messages.append(Message(entry["role"], text))
    return messages


def fit(runtime: ChatRuntime, messages: list[Message], max_new_tokens: int) -> list[int]:
    """Prompt ids, dropping the oldest user/assistant pairs until the answer fits the context."""
    budget = runtime.history_budget(max_new_tokens)
    head = 1 if messages and messages[0].role == "system" else 0
    ids = runtime.prompt_ids(messages)
    while len(ids) > budget and len(messages) - head > 2:
        messages = messages[:head] + messages[head + 2 :]
        ids = runtime.prompt_ids(messages)
    return ids[-budget:]


@dataclass
class Turn:
    """The answer a browser session is generating; `cleared` when Clear ended it (nothing more shown)."""

    reply: Reply
    cleared: bool = False


def build_ui(runtime: ChatRuntime, defaults: AnswerOptions):
    """The gradio Blocks app (not launched)."""
    import gradio as gr

    can_guide = callable(getattr(getattr(runtime.model, "model", None), "forward", None))
    with gr.Blocks(title=f"zhllama · {runtime.name}", analytics_enabled=False) as demo:
        gr.Markdown(f"### zhllama · {runtime.name} · template `{runtime.template.name}`")
        chatbot = gr.Chatbot(elem_id="chatbot", height=420, label="Chat")
        with gr.Row():
            question = gr.Textbox(
                placeholder="输入问题，回车发送 / type a question, Enter to send",
                show_label=False,
                elem_id="question",
                scale=8,
            )
            send = gr.Button("Send", variant="primary", elem_id="send", scale=1)
            stop = gr.Button("Stop", elem_id="stop", scale=1)
            clear = gr.Button("Clear", elem_id="clear", scale=1)
        with gr.Accordion("Generation settings", open=False, elem_id="settings"):
            system = gr.Textbox(label="System prompt", value=defaults.system_prompt or "", elem_id="system")
            with gr.Row():
                temperature = gr.Slider(0.0, 2.0, value=defaults.temperature, step=0.05, label="Temperature")
                top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.05, label="Top-p")
                top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label="Top-k")
            with gr.Row():
                penalty = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.05, label="Repetition penalty")
                max_new = gr.Slider(1, 4096, value=defaults.max_new_tokens, step=1, label="Max new tokens")
            with gr.Row(visible=can_guide):
                scale = gr.Slider(1.0, 5.0, value=defaults.guidance_scale or 1.0, step=0.1, label="CFG guidance scale")
                negative = gr.Textbox(label="CFG negative prompt", value=defaults.negative_prompt or "")

        running: dict[str, Turn] = {}  # session hash -> its answer in progress

        def add_question(text: str, history: list):
            if not text.strip():
                return "", history
            return "", [*history, {"role": "user", "content": text}]

        def answer(history, system_text, temp, p, k, rp, limit, cfg_scale, negative_text, request: gr.Request):
            if not history or history[-1].get("role") != "user":
                yield history
                return
            params = replace(
                defaults,
                temperature=float(temp),
                top_p=float(p),
                top_k=int(k),
                repetition_penalty=float(rp),
                max_new_tokens=int(limit),
            ).params()
            guidance = None
            if can_guide and float(cfg_scale) != 1.0:
                guidance = runtime.guidance(float(cfg_scale), negative_text.strip() or None)
            ids = fit(runtime, conversation(history, system_text), params.max_new_tokens)
            reply = runtime.reply(ids, params, guidance=guidance)
            turn = running[request.session_hash] = Turn(reply)
            history = [*history, {"role": "assistant", "content": ""}]
            shown, last = "", 0.0
            try:
                for chunk in reply:
                    shown += chunk
                    history[-1] = {"role": "assistant", "content": shown}
                    if time.monotonic() - last >= REFRESH_SECONDS:  # the browser redraws at most ~20 times/s
                        last = time.monotonic()
                        yield history
            finally:
                if running.get(request.session_hash) is turn:
                    del running[request.session_hash]
            if turn.cleared:
                yield []
                return
            yield history
            if reply.finish_reason == "length" and not reply.cancelled:
                history[-1] = {"role": "assistant", "content": shown + LENGTH_NOTE}
                yield history

        controls = [chatbot, system, temperature, top_p, top_k, penalty, max_new, scale, negative]
        question.submit(add_question, [question, chatbot], [question, chatbot], queue=False).then(
            answer, controls, chatbot
        )
        send.click(add_question, [question, chatbot], [question, chatbot], queue=False).then(answer, controls, chatbot)

        def stop_answer(request: gr.Request) -> None:
            turn = running.get(request.session_hash)
            if turn is not None:
                turn.reply.cancel()

        def clear_chat(request: gr.Request) -> list:
            turn = running.get(request.session_hash)
            if turn is not None:
                turn.cleared = True
                turn.reply.cancel()
            return []

        stop.click(stop_answer, None, None, queue=False)
        clear.click(clear_chat, None, chatbot, queue=False)
    demo.queue(default_concurrency_limit=1)
    return demo
