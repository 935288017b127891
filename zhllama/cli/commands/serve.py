"""`zhllama serve`: an OpenAI-compatible HTTP API for a model (FastAPI + uvicorn, loopback by default).

The app itself is the `zhllama.server` package; this command loads the model with the same flags as
`chat` (`ModelOptions` + `AnswerOptions`: the sampling flags become the defaults of requests that
omit a field) and runs uvicorn. `--max-batch-size` and `--max-queue` size the scheduler
(`core.generation.scheduler`): answers decoded together, answers allowed to wait before a 429.
"""

from __future__ import annotations

from typing import Annotated

import typer

from zhllama.cli.commands.chat import answer_options_command
from zhllama.cli.model_options import ModelOptions, model_options_command
from zhllama.cli.options import Host, Port, examples
from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.generation.options import AnswerOptions
from zhllama.core.registry import missing_modules

API_KEY_ENV = "ZHLLAMA_API_KEY"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_port(host: str, port: int) -> None:
    """Refuse a port that another process listens on, before the model is loaded."""
    import errno
    import socket

    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: cannot resolve ({exc.strerror})") from None
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UserError(f"--port {port}: already in use on {host}") from None
            if exc.errno == errno.EADDRNOTAVAIL:
                raise UserError(f"--host {host}: not an address of this machine") from None
            raise UserError(f"--port {port}: cannot bind on {host}: {exc.strerror}") from None


@model_options_command
@answer_options_command
def serve(
    model_options: ModelOptions,
    answer: AnswerOptions,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar=API_KEY_ENV,
            help=f"Require 'Authorization: Bearer KEY' on every route, /docs and /openapi.json too "
            f"(or set {API_KEY_ENV}).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Model id clients send (default: the folder name).")
    ] = None,
    max_tokens_limit: Annotated[
        int, typer.Option("--max-tokens-limit", min=1, help="Largest max_tokens accepted.")
    ] = 2048,
    max_request_bytes: Annotated[
        int, typer.Option("--max-request-bytes", min=1024, help="Largest request body accepted.")
    ] = 1 << 20,
    max_batch_size: Annotated[
        int,
        typer.Option(
            "--max-batch-size",
            min=1,
            help="Answers decoded together (continuous batching, transformers engine; 1 = one at a time). "
            "Other engines serve one answer at a time.",
        ),
    ] = 8,
    max_queue: Annotated[
        int,
        typer.Option("--max-queue", min=1, help="Answers that may wait for a slot; beyond it requests get a 429."),
    ] = 64,
) -> None:
    """Serve /v1/models, /v1/chat/completions, /v1/completions (streaming too) and /v1/embeddings for one model."""
    from dataclasses import replace

    from zhllama.core.errors import MissingDependencyError

    missing = missing_modules(("fastapi", "uvicorn"))
    if missing:
        raise MissingDependencyError(f"serve needs {', '.join(missing)}; install it with: pip install 'zhllama[serve]'")
    answer = answer.validated()
    check_port(host, port)
    if answer.guidance_scale is not None or answer.negative_prompt is not None:
        raise UserError(
            "--guidance-scale/--negative-prompt: serve takes them per request (guidance_scale, negative_prompt)"
        )
    import uvicorn

    from zhllama.core.generation.runtime import load_for_answers
    from zhllama.server import ServerLimits, create_app

    defaults = replace(answer.params(), max_new_tokens=min(answer.max_new_tokens, max_tokens_limit))
    runtime = load_for_answers(model_options, answer)
    if name:
        runtime.name = name
    limits = ServerLimits(
        max_tokens=max_tokens_limit,
        max_request_bytes=max_request_bytes,
        max_batch_size=max_batch_size,
        max_queue=max_queue,
    )
    app = create_app(runtime, defaults, api_key or None, limits)
    if host not in LOOPBACK and not api_key:
        console.warn(f"serving on {host} without --api-key: anyone who can reach this port can use the model")
    console.log(f"serving '{runtime.name}' on http://{host}:{port}/v1 (Ctrl-C to stop)")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning" if not console.SETTINGS.debug else "info")
    finally:
        app.state.server.close()
        runtime.close()


def register(app: typer.Typer) -> None:
    app.command(
        "serve",
        epilog=examples(
            "zhllama serve --model chinese-alpaca-2-7b --port 8000",
            "zhllama serve --model model-q4_0.gguf --api-key secret --host 0.0.0.0",
            'curl -s localhost:8000/v1/chat/completions -d \'{"messages":[{"role":"user","content":"你好"}]}\'',
            'curl -s localhost:8000/v1/embeddings -d \'{"input":["北京是中国的首都。","上海"]}\'',
        ),
    )(serve)
