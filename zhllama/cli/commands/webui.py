"""`zhllama webui`: a browser chat page for a model (gradio; loopback by default, optional login)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from zhllama.cli.commands.chat import answer_options_command
from zhllama.cli.commands.serve import check_port
from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.options import Host, Port, examples
from zhllama.core import console
from zhllama.core.errors import MissingDependencyError, UserError
from zhllama.core.generation.options import AnswerOptions
from zhllama.core.registry import missing_modules

AUTH_ENV = "ZHLLAMA_WEBUI_AUTH"


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise UserError("--auth: expected USER:PASSWORD")
    return user, password


@model_options_command
@answer_options_command
def webui(
    model_options: ModelOptions,
    answer: AnswerOptions,
    host: Host = "127.0.0.1",
    port: Port = 7860,
    auth: Annotated[
        str | None,
        typer.Option("--auth", envvar=AUTH_ENV, help=f"Require a login USER:PASSWORD (or set {AUTH_ENV})."),
    ] = None,
) -> None:
    """Chat with a model in the browser: streaming, multi-turn, sampling controls, CFG, stop and clear."""
    missing = missing_modules(("gradio",))
    if missing:
        raise MissingDependencyError("webui needs gradio; install it with: pip install 'zhllama[webui]'")
    answer = answer.validated()
    login = parse_auth(auth)
    check_port(host, port)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from zhllama.core.generation.runtime import load_for_answers
    from zhllama.webui.app import build_ui

    runtime = load_for_answers(model_options, answer)
    try:
        demo = build_ui(runtime, answer)
        if host not in ("127.0.0.1", "localhost", "::1") and login is None:
            console.warn(f"serving the web UI on {host} without --auth: anyone who can reach this port can use it")
        console.log(f"web UI for '{runtime.name}' on http://{host}:{port} (Ctrl-C to stop)")
        demo.launch(server_name=host, server_port=port, auth=login, share=False, quiet=True, show_error=False)
    finally:
        runtime.close()


def register(app: typer.Typer) -> None:
    app.command(
        "webui",
        epilog=examples(
            "zhllama webui --model chinese-alpaca-2-7b",
            "zhllama webui --model SmolLM2-135M-Instruct --port 7861 --auth me:secret",
            "zhllama webui --model model-q4_0.gguf --host 0.0.0.0 --auth me:secret",
        ),
    )(webui)
