"""`zhllama serve`: an OpenAI-compatible HTTP API for a model (FastAPI + uvicorn, loopback by default)."""

from __future__ import annotations

from typing import Annotated

import typer

from zhllama.cli.commands.chat import (
    ContextLength,
    DraftK,
    DraftModel,
    Dtype,
    Engine,
    Load,
    Lora,
    Model,
    RepetitionPenalty,
    RopeFactor,
    RopeScaling,
    SystemPrompt,
    Temperature,
    TemplateName,
    TopK,
    TopP,
    load_options,
)
from zhllama.cli.options import examples
from zhllama.core import console
from zhllama.core.engine import GenerationParams
from zhllama.core.registry import missing_modules

API_KEY_ENV = "ZHLLAMA_API_KEY"


def serve(
    model: Model,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback unless you open it up).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar=API_KEY_ENV, help=f"Require 'Authorization: Bearer KEY' (or set {API_KEY_ENV})."
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
    lora: Lora = None,
    load: Load = None,
    engine: Engine = None,
    dtype: Dtype = None,
    template: TemplateName = "auto",
    system_prompt: SystemPrompt = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", min=1, help="max_tokens when a request omits it.")
    ] = 512,
    temperature: Temperature = 0.2,
    top_p: TopP = 0.9,
    top_k: TopK = 40,
    repetition_penalty: RepetitionPenalty = 1.1,
    rope_scaling: RopeScaling = None,
    rope_factor: RopeFactor = None,
    context_length: ContextLength = None,
    draft_model: DraftModel = None,
    draft_k: DraftK = "auto",
) -> None:
    """Serve /v1/models, /v1/chat/completions and /v1/completions (streaming too) for one model."""
    from zhllama.core.errors import MissingDependencyError

    missing = missing_modules(("fastapi", "uvicorn"))
    if missing:
        raise MissingDependencyError(f"serve needs {', '.join(missing)}; install it with: pip install 'zhllama[serve]'")
    import uvicorn

    from zhllama.core.generation.runtime import load_runtime
    from zhllama.core.server import ServerLimits, create_app

    defaults = GenerationParams(
        max_new_tokens=min(max_new_tokens, max_tokens_limit),
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        repetition_penalty=repetition_penalty,
        greedy=temperature == 0,
    )
    options = load_options(lora, load, dtype, rope_scaling, rope_factor, context_length)
    runtime = load_runtime(model, options, engine, template, system_prompt, draft_model, draft_k)
    if name:
        runtime.name = name
    limits = ServerLimits(max_tokens=max_tokens_limit, max_request_bytes=max_request_bytes)
    app = create_app(runtime, defaults, api_key or None, limits)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        console.warn(f"serving on {host} without --api-key: anyone who can reach this port can use the model")
    console.log(f"serving '{runtime.name}' on http://{host}:{port}/v1 (Ctrl-C to stop)")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning" if not console.SETTINGS.debug else "info")
    finally:
        runtime.close()


def register(app: typer.Typer) -> None:
    app.command(
        "serve",
        epilog=examples(
            "zhllama serve --model chinese-alpaca-2-7b --port 8000",
            "zhllama serve --model model-q4_0.gguf --api-key secret --host 0.0.0.0",
            'curl -s localhost:8000/v1/chat/completions -d \'{"messages":[{"role":"user","content":"你好"}]}\'',
        ),
    )(serve)
