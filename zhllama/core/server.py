"""An OpenAI-compatible HTTP API over a `ChatRuntime` (FastAPI; run by `zhllama serve`).

Imported only by `serve` (FastAPI and uvicorn are the `serve` extra).

- `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions`; `stream: true` sends
  server-sent events ending in `data: [DONE]`.
- One generation at a time: every request runs on a single worker thread, so concurrent requests
  queue in arrival order and never share model or cache state.
- A client that disconnects cancels its request: a queued one never starts, a running one stops
  after the current token.
- Errors use OpenAI's body `{"error": {"message", "type", "param", "code"}}`: malformed JSON and
  bad fields -> 400, missing/wrong API key -> 401, unknown model -> 404, too large a body -> 413.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zhllama.core.engine import GenerationParams
from zhllama.core.errors import UserError
from zhllama.core.generation.runtime import ChatRuntime
from zhllama.core.templates import Message


@dataclass
class ServerLimits:
    max_tokens: int = 2048
    max_request_bytes: int = 1 << 20
    max_stop_strings: int = 4


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, kind=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None


class _TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class _ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant"]
    content: str | list[_TextPart]

    def text(self) -> str:
        """The content; OpenAI's list-of-parts form is joined (only text parts exist for this model)."""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: list[_ChatMessage] = Field(min_length=1)


class CompletionRequest(_Request):
    prompt: str


class Server:
    """The app state: the runtime, the defaults from the command line, the single worker."""

    def __init__(self, runtime: ChatRuntime, defaults: GenerationParams, api_key: str | None, limits: ServerLimits):
        self.runtime = runtime
        self.defaults = defaults
        self.api_key = api_key
        self.limits = limits
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zhllama-generate")

    # ---- request checks ---------------------------------------------------------------------
    def check_auth(self, header: str | None) -> None:
        if self.api_key is None:
            return
        expected = f"Bearer {self.api_key}"
        if header is None or not secrets.compare_digest(header.encode(), expected.encode()):
            raise ApiError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')", code="invalid_api_key")

    def parse(self, raw: bytes, schema: type[_Request]) -> _Request:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "request body must be a JSON object")
        model = data.get("model")
        if model is not None and model != self.runtime.name:
            raise ApiError(
                404,
                f"model '{model}' does not exist; this server has '{self.runtime.name}'",
                param="model",
                code="model_not_found",
            )
        try:
            request = schema.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            param = ".".join(str(p) for p in first["loc"])
            raise ApiError(400, f"{param}: {first['msg']}", param=param) from None
        return request

    def params(self, request: _Request) -> GenerationParams:
        max_tokens = request.max_completion_tokens or request.max_tokens or self.defaults.max_new_tokens
        if max_tokens > self.limits.max_tokens:
            raise ApiError(400, f"max_tokens: at most {self.limits.max_tokens} on this server", param="max_tokens")
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        if len(stops) > self.limits.max_stop_strings:
            raise ApiError(400, f"stop: at most {self.limits.max_stop_strings} strings", param="stop")
        params = replace(self.defaults, max_new_tokens=max_tokens, stop_strings=tuple(stops))
        if request.temperature is not None:
            params = replace(params, temperature=request.temperature, greedy=request.temperature == 0)
        if request.top_p is not None:
            params = replace(params, top_p=request.top_p)
        if request.seed is not None:
            params = replace(params, seed=request.seed)
        return params

    def prompt_ids(self, request: _Request) -> list[int]:
        try:
            if isinstance(request, ChatRequest):
                ids = self.runtime.prompt_ids([Message(m.role, m.text()) for m in request.messages])
            else:
                ids = self.runtime.completion_ids(request.prompt)
        except UserError as exc:
            raise ApiError(400, str(exc), param="messages") from None
        if len(ids) >= self.runtime.model.context_length:
            raise ApiError(
                400,
                f"the prompt is {len(ids)} tokens; the context holds {self.runtime.model.context_length}",
                code="context_length_exceeded",
            )
        return ids


def create_app(
    runtime: ChatRuntime,
    defaults: GenerationParams | None = None,
    api_key: str | None = None,
    limits: ServerLimits | None = None,
):
    """The FastAPI application serving `runtime`."""
    server = Server(runtime, defaults or GenerationParams(), api_key, limits or ServerLimits())
    app = FastAPI(title="zhllama", docs_url=None, redoc_url=None)
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

    @app.get("/v1/models")
    async def models(request: Request):
        server.check_auth(request.headers.get("authorization"))
        created = int(time.time())
        return {
            "object": "list",
            "data": [{"id": runtime.name, "object": "model", "created": created, "owned_by": "zhllama"}],
        }

    async def read_body(request: Request) -> bytes:
        limit = server.limits.max_request_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")
        return bytes(body)

    async def handle(request: Request, schema: type[_Request]):
        server.check_auth(request.headers.get("authorization"))
        parsed = server.parse(await read_body(request), schema)
        params = server.params(parsed)
        ids = server.prompt_ids(parsed)
        reply = runtime.reply(ids, params)
        shape = _ChatShape() if schema is ChatRequest else _CompletionShape()
        if parsed.stream:
            include_usage = bool((parsed.stream_options or {}).get("include_usage"))
            return StreamingResponse(
                _events(server, request, reply, shape, include_usage), media_type="text/event-stream"
            )
        await _run_cancellable(server, request, reply)
        return shape.full(runtime.name, reply)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, ChatRequest)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, CompletionRequest)

    return app


def _generate(reply, emit=None) -> None:
    """Worker-thread body: run `reply` unless it was cancelled while queued."""
    if reply.cancelled:
        return
    for chunk in reply:
        if emit is not None:
            emit(chunk)


async def _run_cancellable(server: Server, request, reply) -> None:
    """Run a non-streaming generation on the worker; a client disconnect cancels it."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(server.worker, _generate, reply)
    while not future.done():
        done, _ = await asyncio.wait({future}, timeout=0.2)
        if not done and await request.is_disconnected():
            reply.cancel()
    await future


async def _events(server: Server, request, reply, shape, include_usage: bool):
    """Server-sent events for a streaming request; closing the stream cancels the generation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    ident, created, name = shape.ident(), int(time.time()), server.runtime.name

    def emit(chunk: str) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, chunk)

    future = loop.run_in_executor(server.worker, _generate, reply, emit)
    future.add_done_callback(lambda _f: loop.call_soon_threadsafe(queue.put_nowait, None))
    try:
        first = shape.first_chunk(ident, created, name)
        if first is not None:
            yield _sse(first)
        while True:
            chunk = await queue.get()
            if chunk is None:
                break
            yield _sse(shape.chunk(ident, created, name, chunk, None))
        future.result()
        yield _sse(shape.chunk(ident, created, name, "", reply.finish_reason))
        if include_usage:
            yield _sse(
                {
                    "id": ident,
                    "object": shape.chunk_object,
                    "created": created,
                    "model": name,
                    "choices": [],
                    "usage": reply.usage,
                }
            )
        yield "data: [DONE]\n\n"
    finally:
        reply.cancel()  # no-op when finished; stops a generation whose client went away


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class _ChatShape:
    chunk_object = "chat.completion.chunk"

    def ident(self) -> str:
        return f"chatcmpl-{uuid.uuid4().hex}"

    def full(self, name: str, reply) -> dict:
        return {
            "id": self.ident(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": reply.usage,
        }

    def first_chunk(self, ident: str, created: int, name: str) -> dict:
        return self.chunk(ident, created, name, None, None)

    def chunk(self, ident: str, created: int, name: str, text: str | None, finish: str | None) -> dict:
        delta: dict[str, str] = (
            {"role": "assistant", "content": ""} if text is None else ({"content": text} if text else {})
        )
        return {
            "id": ident,
            "object": self.chunk_object,
            "created": created,
            "model": name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }


class _CompletionShape:
    chunk_object = "text_completion"

    def ident(self) -> str:
        return f"cmpl-{uuid.uuid4().hex}"

    def full(self, name: str, reply) -> dict:
        return {
            "id": self.ident(),
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": [{"index": 0, "text": reply.text, "logprobs": None, "finish_reason": reply.finish_reason}],
            "usage": reply.usage,
        }

    def first_chunk(self, ident: str, created: int, name: str) -> None:
        return None

    def chunk(self, ident: str, created: int, name: str, text: str, finish: str | None) -> dict:
        return {
            "id": ident,
            "object": self.chunk_object,
            "created": created,
            "model": name,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        }
