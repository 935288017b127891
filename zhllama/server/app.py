"""The FastAPI application: routes, authentication, streaming; generation is the scheduler's.

- Concurrent requests are decoded together (`core.generation.scheduler`: continuous batching on
  the transformers engine, up to `max_batch_size` answers per step; other engines one at a time).
  The model is touched by the scheduler's thread only (embeddings too, between steps).
- The queue is bounded: when `max_queue` answers already wait, a request gets a 429 in OpenAI's
  shape (`code: rate_limit_exceeded`, `Retry-After: 1`) before anything is generated.
- A client that disconnects cancels its request: a queued one never starts, a running one stops
  after the current token.
- Errors use OpenAI's body `{"error": {"message", "type", "param", "code"}}`: malformed JSON and
  bad fields -> 400, missing/wrong API key -> 401, unknown model -> 404, too large a body -> 413,
  queue full -> 429. A failure after a stream started is sent as an SSE `error` event followed by
  `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import struct
import threading
import time
from dataclasses import dataclass, replace

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from zhllama.core.engine import GenerationParams
from zhllama.core.errors import UserError
from zhllama.core.generation.embeddings import embed, supports_embeddings
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.generation.scheduler import QueueFull, Scheduler
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
    max_batch_size: int = 8  # answers decoded together (1: one at a time, in arrival order)
    max_queue: int = 64  # answers waiting for a slot before requests get a 429


class Server:
    """The app state: the runtime, the defaults from the command line, the scheduler."""

    def __init__(self, runtime: ChatRuntime, defaults: GenerationParams, api_key: str | None, limits: ServerLimits):
        self.runtime = runtime
        self.defaults = defaults
        self.api_key = api_key
        self.limits = limits
        self.scheduler = Scheduler(runtime.model, limits.max_batch_size, limits.max_queue)
        self._mailbox: _Mailbox | None = None

    def feed(self) -> _Feed:
        """A new request's feed, on the running event loop's mailbox."""
        loop = asyncio.get_running_loop()
        if self._mailbox is None or self._mailbox.loop is not loop:
            self._mailbox = _Mailbox(loop)
        return _Feed(self._mailbox)

    def submit(self, replies: list, feed: _Feed) -> None:
        try:
            self.scheduler.submit(replies, feed)
        except QueueFull as exc:
            raise ApiError(
                429,
                f"the server is busy: {exc}; retry later",
                code="rate_limit_exceeded",
                kind="requests",
                headers={"Retry-After": "1"},
            ) from None

    def close(self) -> None:
        self.scheduler.close()

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
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

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
        feed = server.feed()
        server.submit(replies, feed)
        if job.stream:
            return StreamingResponse(_events(replies, shape, job, feed), media_type="text/event-stream")
        await _collect(request, replies, feed)
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
        vectors = await asyncio.wrap_future(server.scheduler.call(embed, runtime.model, batch))
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


class _Mailbox:
    """Hands chunks from the scheduler's thread to the event loop: one loop wake-up per batch step,
    however many streams the step fed (not one per chunk)."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.items: list = []
        self.lock = threading.Lock()
        self.scheduled = False

    def post(self, queue: asyncio.Queue, item) -> None:
        with self.lock:
            self.items.append((queue, item))
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        with self.lock:
            items, self.items, self.scheduled = self.items, [], False
        for queue, item in items:
            queue.put_nowait(item)


class _Feed:
    """Where the scheduler's thread sends one request's chunks: an asyncio queue on the app's loop."""

    def __init__(self, box: _Mailbox):
        self.box = box
        self.queue: asyncio.Queue = asyncio.Queue()

    def __call__(self, index: int, item) -> None:
        self.box.post(self.queue, (index, item))


def _failure(exc: BaseException) -> ApiError:
    if isinstance(exc, UserError):
        return ApiError(400, str(exc))
    return ApiError(500, f"generation failed: {type(exc).__name__}: {exc}")


def _cancel(replies) -> None:
    for reply in replies:
        reply.cancel()  # no-op when finished; stops a generation whose client went away


async def _watch(request, replies) -> None:
    """Cancel `replies` once the client of `request` has gone (checked every 0.25 s)."""
    while True:
        await asyncio.sleep(0.25)
        if await request.is_disconnected():
            _cancel(replies)
            return


async def _collect(request, replies, feed: _Feed) -> None:
    """Wait until every answer of a non-streaming request ended; a client disconnect cancels them."""
    remaining, error = len(replies), None
    watcher = asyncio.ensure_future(_watch(request, replies))
    try:
        while remaining:
            _index, item = await feed.queue.get()
            if item is None or isinstance(item, BaseException):
                remaining -= 1
                if isinstance(item, BaseException) and error is None:
                    error = item
    finally:
        watcher.cancel()
        if remaining:
            _cancel(replies)
    if error is not None:
        raise _failure(error)


async def _events(replies, shape, job: Job, feed: _Feed):
    """Server-sent events for a streaming request; closing the stream cancels the generation.

    Chunks already waiting are sent together in one write."""
    remaining, started = len(replies), set()
    try:
        while remaining:
            items = [await feed.queue.get()]
            while not feed.queue.empty():
                items.append(feed.queue.get_nowait())
            out = []
            for index, item in items:
                if isinstance(item, BaseException):
                    if out:
                        yield "".join(out)
                    raise item
                if index not in started:
                    started.add(index)
                    first = shape.first_chunk(index)
                    if first is not None:
                        out.append(sse(first))
                if item is None:
                    remaining -= 1
                    out.append(sse(shape.chunk(index, "", replies[index].finish_reason)))
                elif item:
                    out.append(sse(shape.chunk(index, item, None)))
            if out:
                yield "".join(out)
        if job.include_usage:
            yield sse(shape.usage_chunk())
        yield DONE
    except Exception as exc:  # after the headers went out: an error event, then the end marker
        yield sse(_failure(exc).body()) + DONE
    finally:
        _cancel(replies)
