"""The FastAPI application: routes, authentication, one generation worker, streaming.

- One generation at a time: every request runs on a single worker thread, so concurrent requests
  queue in arrival order and never share model or cache state.
- A client that disconnects cancels its request: a queued one never starts, a running one stops
  after the current token.
- Errors use OpenAI's body `{"error": {"message", "type", "param", "code"}}`: malformed JSON and
  bad fields -> 400, missing/wrong API key -> 401, unknown model -> 404, too large a body -> 413.
  A failure after a stream started is sent as an SSE `error` event followed by `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from zhllama.core.engine import GenerationParams
from zhllama.core.errors import UserError
from zhllama.core.generation.embeddings import embed, supports_embeddings
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import Message
from zhllama.server.requests import (
    ApiError,
    Job,
    bad,
    chat_job,
    check_model,
    check_strings,
    completion_job,
    embedding_job,
)
from zhllama.server.responses import ChatShape, CompletionShape, sse

DONE = "data: [DONE]\n\n"


@dataclass
class ServerLimits:
    max_tokens: int = 2048
    max_request_bytes: int = 1 << 20
    max_stop_strings: int = 4
    max_n: int = 8
    max_embedding_inputs: int = 256


class Server:
    """The app state: the runtime, the defaults from the command line, the single worker."""

    def __init__(self, runtime: ChatRuntime, defaults: GenerationParams, api_key: str | None, limits: ServerLimits):
        self.runtime = runtime
        self.defaults = defaults
        self.api_key = api_key
        self.limits = limits
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zhllama-generate")

    def check_auth(self, header: str | None) -> None:
        if self.api_key is None:
            return
        expected = f"Bearer {self.api_key}"
        if header is None or not secrets.compare_digest(header.encode(), expected.encode()):
            raise ApiError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')", code="invalid_api_key")

    def load(self, raw: bytes) -> dict:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "request body must be a JSON object")
        check_strings(data)
        check_model(data, self.runtime.name)
        return data

    # ---- prompts -----------------------------------------------------------------------------
    def _fit(self, ids: list[int], param: str) -> list[int]:
        if not ids:
            raise bad(param, "the prompt is empty (this tokenizer has no BOS token to start from)")
        if len(ids) >= self.runtime.model.context_length:
            raise ApiError(
                400,
                f"{param}: the prompt is {len(ids)} tokens; the context holds {self.runtime.model.context_length}",
                param=param,
                code="context_length_exceeded",
            )
        return ids

    def _ids(self, prompt: str | list[int], param: str) -> list[int]:
        if isinstance(prompt, str):
            return self.runtime.completion_ids(prompt)
        vocab = len(self.runtime.model.tokenizer)
        if any(not 0 <= t < vocab for t in prompt):
            raise bad(param, f"token ids must be in [0, {vocab})")
        return list(prompt)

    def replies(self, job: Job) -> list:
        """The `Reply` objects of a job: n per prompt, choice i sampled with seed + i."""
        runtime = self.runtime
        try:
            if job.kind == "chat":
                prompts = [self._fit(runtime.prompt_ids([Message(r, c) for r, c in job.messages]), "messages")]
            else:
                prompts = [self._fit(self._ids(p, "prompt"), "prompt") for p in job.prompts]
            guidance = runtime.guidance(job.guidance_scale, job.negative_prompt)
        except UserError as exc:
            raise ApiError(400, str(exc), param="messages" if job.kind == "chat" else "prompt") from None
        out = []
        for ids in prompts:
            for i in range(job.n):
                params = job.params
                if i:
                    params = replace(params, seed=(params.seed or 0) + i)
                try:
                    out.append(runtime.reply(ids, params, guidance=guidance, logprobs=job.logprobs))
                except UserError as exc:
                    raise ApiError(400, str(exc)) from None
        return out


def create_app(
    runtime: ChatRuntime,
    defaults: GenerationParams | None = None,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
):
    """The FastAPI application serving `runtime`."""
    server = Server(runtime, defaults or GenerationParams(), api_key, limits or ServerLimits())
    app = FastAPI(title="zhllama", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(404)
    async def not_found(request: Request, _exc):
        return JSONResponse(ApiError(404, f"no route {request.url.path}").body(), status_code=404)

    @app.exception_handler(405)
    async def bad_method(request: Request, _exc):
        return JSONResponse(
            ApiError(405, f"{request.method} not allowed on {request.url.path}").body(), status_code=405
        )

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request):
        server.check_auth(request.headers.get("authorization"))
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request):
        from fastapi.openapi.docs import get_swagger_ui_html

        server.check_auth(request.headers.get("authorization"))
        page = get_swagger_ui_html(openapi_url="/openapi.json", title="zhllama API")
        return HTMLResponse(page.body.decode())

    @app.get("/v1/models")
    async def models(request: Request):
        server.check_auth(request.headers.get("authorization"))
        created = int(time.time())
        return {
            "object": "list",
            "data": [{"id": runtime.name, "object": "model", "created": created, "owned_by": "zhllama"}],
        }

    async def read_body(request: Request) -> dict:
        server.check_auth(request.headers.get("authorization"))
        limit = server.limits.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")
        return server.load(bytes(body))

    async def handle(request: Request, kind: str):
        data = await read_body(request)
        parse = chat_job if kind == "chat" else completion_job
        job = parse(data, server.defaults, server.limits)
        replies = server.replies(job)
        shape = (ChatShape if kind == "chat" else CompletionShape)(runtime, job, replies)
        if job.stream:
            return StreamingResponse(_events(server, request, replies, shape, job), media_type="text/event-stream")
        await _run_cancellable(server, request, replies)
        return shape.full()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, "completion")

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        data = await read_body(request)
        job = embedding_job(data)
        if not supports_embeddings(runtime.model):
            raise ApiError(400, "embeddings need the transformers engine (serve a HF model folder)", param="input")
        if len(job.inputs) > server.limits.max_embedding_inputs:
            raise bad("input", f"at most {server.limits.max_embedding_inputs} inputs per request")
        tokenizer = runtime.model.tokenizer
        batch = []
        for i, item in enumerate(job.inputs):
            ids = tokenizer.encode(item, bos=True) if isinstance(item, str) else server._ids(item, f"input[{i}]")
            if len(ids) > runtime.model.context_length:
                raise bad(f"input[{i}]", f"{len(ids)} tokens; the context holds {runtime.model.context_length}")
            batch.append(ids)
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(server.worker, embed, runtime.model, batch)
        if job.dimensions is not None and job.dimensions != len(vectors[0]):
            raise bad("dimensions", f"this model's embeddings have {len(vectors[0])} dimensions")
        tokens = sum(len(ids) for ids in batch)
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _encode_vector(v) if job.base64 else v}
                for i, v in enumerate(vectors)
            ],
            "model": runtime.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    return app


def _encode_vector(vector: list[float]) -> str:
    """OpenAI's base64 format: the little-endian float32 bytes."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def _generate(replies, emit=None) -> None:
    """Worker-thread body: run each reply unless it was cancelled while queued."""
    for index, reply in enumerate(replies):
        if reply.cancelled:
            return
        for chunk in reply:
            if emit is not None:
                emit((index, chunk))
        if emit is not None:
            emit((index, None))


async def _run_cancellable(server: Server, request, replies) -> None:
    """Run a non-streaming generation on the worker; a client disconnect cancels it."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(server.worker, _generate, replies)
    while not future.done():
        done, _ = await asyncio.wait({future}, timeout=0.2)
        if not done and await request.is_disconnected():
            for reply in replies:
                reply.cancel()
    try:
        await future
    except UserError as exc:
        raise ApiError(400, str(exc)) from None


async def _events(server: Server, request, replies, shape, job: Job):
    """Server-sent events for a streaming request; closing the stream cancels the generation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    end = object()

    def emit(item) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    future = loop.run_in_executor(server.worker, _generate, replies, emit)
    future.add_done_callback(lambda _f: loop.call_soon_threadsafe(queue.put_nowait, end))
    try:
        started = set()
        while True:
            item = await queue.get()
            if item is end:
                break
            index, chunk = item
            if index not in started:
                started.add(index)
                first = shape.first_chunk(index)
                if first is not None:
                    yield sse(first)
            if chunk is None:
                yield sse(shape.chunk(index, "", replies[index].finish_reason))
            elif chunk:
                yield sse(shape.chunk(index, chunk, None))
        future.result()
        if job.include_usage:
            yield sse(shape.usage_chunk())
        yield DONE
    except Exception as exc:  # after the headers went out: an error event, then the end marker
        error = ApiError(400, str(exc)) if isinstance(exc, UserError) else ApiError(500, f"generation failed: {exc}")
        yield sse(error.body())
        yield DONE
    finally:
        for reply in replies:
            reply.cancel()  # no-op when finished; stops a generation whose client went away
