"""`zhllama chat`: a streaming REPL, or one-shot answers for scripts (`--prompt`, piped stdin).

Model flags come from `ModelOptions` (`@model_options_command`), template/sampling flags from
`AnswerOptions` (`@answer_options_command`): chat, serve, webui and predict share both.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.options import examples
from zhllama.cli.schema import with_options
from zhllama.core import console
from zhllama.core.generation.options import AnswerOptions
from zhllama.core.templates import Message

if TYPE_CHECKING:
    from zhllama.core.engine import GenerationParams
    from zhllama.core.generation.guidance import Guidance
    from zhllama.core.generation.runtime import ChatRuntime

answer_options_command = with_options(AnswerOptions, "answer")

COMMANDS = {
    "/reset": "forget the conversation",
    "/system TEXT": "new system prompt (forgets the conversation)",
    "/exit": "leave (also /quit, Ctrl-D)",
}
LENGTH_NOTE = "(stopped at --max-new-tokens)"


def command_help() -> str:
    return "commands: " + ", ".join(f"{name} ({what})" for name, what in COMMANDS.items())


def answer_stream(runtime: ChatRuntime, prompt_ids: list[int], params, write: Callable[[str], None], guidance=None):
    """Generate one answer, writing each chunk as it is produced; returns the finished `Reply`."""
    reply = runtime.reply(prompt_ids, params, guidance=guidance)
    for chunk in reply:
        write(chunk)
    return reply


@contextlib.contextmanager
def quiet_keyboard():
    """While an answer streams on a terminal, keys typed are neither echoed into it nor kept for later.

    Echo is switched off on stdin (Ctrl-C still interrupts: ISIG stays on); whatever was typed is
    discarded when the answer ends, so it cannot turn into the next question by accident.
    """
    try:
        import termios

        fd = sys.stdin.fileno()
        if not sys.stdin.isatty():
            raise OSError
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError):
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcflush(fd, termios.TCIFLUSH)
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def repl(
    runtime: ChatRuntime,
    params: GenerationParams,
    read: Callable[[str], str] = input,
    write: Callable[[str], None] | None = None,
    guidance: Guidance | None = None,
) -> None:
    """The interactive loop: stream answers, keep history, /reset, /system TEXT, /exit.

    Ctrl-C while an answer streams stops that answer (what was shown stays in the history);
    Ctrl-C at the prompt clears the line; Ctrl-D or /exit leaves. Any other line starting with '/'
    is answered with the list of commands (start a question with '//' to send a literal '/').
    """
    from zhllama.core.generation.history import ChatHistory

    write = write or _stdout_write
    history = ChatHistory(runtime.prompt_ids, runtime.history_budget(params.max_new_tokens), runtime.system)
    console.log(command_help())
    while True:
        try:
            line = read(">>> ").strip()
        except KeyboardInterrupt:
            write("\n")
            continue
        except EOFError:
            write("\n")
            return
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            history.reset()
            console.log("(conversation forgotten)")
            continue
        if line == "/system" or line.startswith("/system "):
            history.system = line[len("/system") :].strip() or None
            history.reset()
            console.log("(new system prompt; conversation forgotten)")
            continue
        if line.startswith("//"):
            line = line[1:]
        elif line.startswith("/"):
            console.log(f"unknown command {line.split()[0]}; {command_help()}")
            continue
        reply = runtime.reply(history.prompt_ids(line), params, guidance=guidance)
        try:
            with quiet_keyboard():
                for chunk in reply:
                    write(chunk)
        except KeyboardInterrupt:
            console.log("\n(answer stopped)")
        write("\n")
        if reply.finish_reason == "length" and not reply.cancelled:
            console.log(LENGTH_NOTE)
        history.add(line, reply.text)


def _stdout_write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def one_shot(runtime: ChatRuntime, params, prompt: str, as_json: bool, stats: bool, guidance=None) -> None:
    """Answer one prompt: stream the text (or write one JSON record) on stdout."""
    started = time.perf_counter()
    ids = runtime.prompt_ids([Message("user", prompt)])
    reply = answer_stream(runtime, ids, params, (lambda _chunk: None) if as_json else _stdout_write, guidance)
    seconds = time.perf_counter() - started
    record = {"prompt": prompt, "answer": reply.text, "finish_reason": reply.finish_reason, "usage": reply.usage}
    if runtime.decoder is not None:
        record["speculative"] = runtime.decoder.stats.as_dict()
    if as_json:
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write("\n")
    sys.stdout.flush()
    if stats:
        rate = reply.usage["completion_tokens"] / seconds if seconds > 0 else 0.0
        extra = ""
        if runtime.decoder is not None:
            s = runtime.decoder.stats
            extra = f", draft accepted {s.accepted}/{s.proposed} ({s.acceptance_rate:.1%})"
        console.stderr.print(f"[{reply.usage['completion_tokens']} tokens, {rate:.1f} tokens/s{extra}]")


@model_options_command
@answer_options_command
def chat(
    model_options: ModelOptions,
    answer: AnswerOptions,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="Answer this one prompt and exit.")] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Print tokens/s and the draft acceptance rate on stderr.")
    ] = False,
) -> None:
    """Chat with a model: a streaming REPL on a terminal, one answer per --prompt or stdin line otherwise."""
    from zhllama.core.generation.runtime import load_for_answers

    answer = answer.validated()
    params = answer.params()
    runtime = load_for_answers(model_options, answer)
    try:
        guidance = runtime.guidance(answer.guidance_scale, answer.negative_prompt)
        if prompt is not None:
            one_shot(runtime, params, prompt, console.SETTINGS.json, stats, guidance)
        elif not sys.stdin.isatty():
            for line in sys.stdin:
                if line.strip():
                    one_shot(runtime, params, line.rstrip("\n"), console.SETTINGS.json, stats, guidance)
        else:
            repl(runtime, params, guidance=guidance)
    finally:
        runtime.close()


def register(app: typer.Typer) -> None:
    app.command(
        "chat",
        epilog=examples(
            "zhllama chat --model chinese-alpaca-2-7b",
            "zhllama chat --model SmolLM2-135M-Instruct  # --template auto: the model's own chat template",
            "zhllama chat --model tiny_zh --template none --greedy --prompt '你好'",
            "cat questions.txt | zhllama --json chat --model chinese-alpaca-2-7b --max-new-tokens 128",
            "zhllama chat --model chinese-alpaca-2-7b --guidance-scale 1.5 --negative-prompt '用英文回答'",
            "zhllama chat --model chinese-alpaca-2-7b --rope-scaling ntk --rope-factor auto",
            "zhllama chat --model chinese-alpaca-2-7b --draft-model chinese-alpaca-2-1.3b --greedy --stats",
            "zhllama chat --model model-q4_0.gguf",
        ),
    )(chat)
