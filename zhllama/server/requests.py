"""Request parsing: every OpenAI field is either honoured or refused with a 400 that names it.

A request body becomes a `Job` (prompts, sampling settings, what to return) before anything runs,
so a bad field never reaches the model. Values are checked by hand, field by field, so the error
message and `param` always name the field the client sent (`messages[1].content`, `seed`, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from zhllama.core.engine import GenerationParams

INT64 = 1 << 63

# Fields that exist in OpenAI's API and are accepted only at a value that changes nothing.
NEUTRAL = {
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "logit_bias": ({},),
    "tools": ([],),
    "functions": ([],),
    "tool_choice": ("none", "auto"),
    "function_call": ("none", "auto"),
    "parallel_tool_calls": (True, False),
    "response_format": ({"type": "text"},),
    "modalities": (["text"],),
    "store": (False,),
    "best_of": (1,),
    "suffix": ("",),
    "service_tier": ("auto", "default"),
    "dimensions": (),  # checked against the model in `embeddings`
}
COMMON = {"model", "user", "stream", "stream_options", "max_tokens", "temperature", "top_p", "n", "seed", "stop"}
VENDOR = {"top_k", "repetition_penalty", "guidance_scale", "negative_prompt"}
CHAT_FIELDS = COMMON | VENDOR | {"messages", "max_completion_tokens", "logprobs", "top_logprobs"}
COMPLETION_FIELDS = COMMON | VENDOR | {"prompt", "logprobs", "echo"}
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "user", "dimensions"}
CHAT_NEUTRAL = (
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "parallel_tool_calls",
    "response_format",
    "modalities",
    "store",
    "service_tier",
)
COMPLETION_NEUTRAL = ("frequency_penalty", "presence_penalty", "logit_bias", "best_of", "suffix", "service_tier")
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind=None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"{param}: {message}", param=param)


@dataclass
class Job:
    """One request, checked: what to generate and what to send back."""

    kind: str  # "chat" | "completion"
    params: GenerationParams
    messages: list[tuple[str, str]] = field(default_factory=list)
    prompts: list[str | list[int]] = field(default_factory=list)
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    logprobs: int | None = None  # top alternatives per token; None: no log-probabilities
    echo: bool = False
    guidance_scale: float | None = None
    negative_prompt: str | None = None


@dataclass
class EmbeddingJob:
    inputs: list[str | list[int]]
    base64: bool
    dimensions: int | None


def check_strings(value: Any, path: str = "") -> None:
    """Refuse lone surrogates (valid JSON escapes, invalid text) anywhere in the body."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise bad(path or "body", "contains a lone UTF-16 surrogate (invalid Unicode text)") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_strings(key, path or "body")
            check_strings(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_strings(item, f"{path}[{i}]")


def _present(data: dict, name: str) -> bool:
    return data.get(name) is not None


def _bool(data: dict, name: str, default: bool = False) -> bool:
    value = data.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(name, f"expected true or false, got {json_type(value)}")
    return value


def _int(data: dict, name: str, low: int, high: int, default: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise bad(name, f"expected an integer, got {json_type(value)}")
    if not low <= value <= high:
        raise bad(name, f"must be between {low} and {high}, got {value}")
    return value


def _float(data: dict, name: str, low: float, high: float, low_open: bool = False) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad(name, f"expected a number, got {json_type(value)}")
    if value > high or value < low or (low_open and value == low):
        interval = f"({low:g}, {high:g}]" if low_open else f"[{low:g}, {high:g}]"
        raise bad(name, f"must be in {interval}, got {value}")
    return float(value)


def json_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array"}
    if value is None:
        return "null"
    return names.get(type(value), "an object")


def check_fields(data: dict, allowed: set[str], neutral: tuple[str, ...]) -> None:
    for name in data:
        if name in neutral:
            value = data[name]
            if value is not None and value not in NEUTRAL[name]:
                raise bad(name, f"not supported by this server (only {NEUTRAL[name]!r} or null is accepted)")
        elif name not in allowed:
            raise bad(name, "unrecognized request field")


def check_model(data: dict, served: str) -> None:
    model = data.get("model")
    if model is None:
        return
    if not isinstance(model, str):
        raise bad("model", f"expected a string, got {json_type(model)}")
    if model != served:
        raise ApiError(
            404, f"model '{model}' does not exist; this server has '{served}'", param="model", code="model_not_found"
        )


def sampling(data: dict, defaults: GenerationParams, max_tokens_limit: int, max_stops: int) -> GenerationParams:
    """The generation settings of a request, on top of the server's defaults."""
    max_tokens = _int(data, "max_completion_tokens", 1, INT64) or _int(data, "max_tokens", 1, INT64)
    max_tokens = max_tokens or defaults.max_new_tokens
    if max_tokens > max_tokens_limit:
        name = "max_completion_tokens" if _present(data, "max_completion_tokens") else "max_tokens"
        raise bad(name, f"at most {max_tokens_limit} on this server")
    stop = data.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("stop", "expected a string or an array of strings")
    if len(stops) > max_stops:
        raise bad("stop", f"at most {max_stops} strings")
    if any(s == "" for s in stops):
        raise bad("stop", "empty stop strings are not allowed")
    params = replace(defaults, max_new_tokens=max_tokens, stop_strings=tuple(stops))
    temperature = _float(data, "temperature", 0.0, 2.0)
    if temperature is not None:
        params = replace(params, temperature=temperature, greedy=temperature == 0)
    top_p = _float(data, "top_p", 0.0, 1.0, low_open=True)
    if top_p is not None:
        params = replace(params, top_p=top_p)
    top_k = _int(data, "top_k", 0, 1 << 31)
    if top_k is not None:
        params = replace(params, top_k=top_k)
    penalty = _float(data, "repetition_penalty", 0.0, 10.0, low_open=True)
    if penalty is not None:
        params = replace(params, repetition_penalty=penalty)
    seed = _int(data, "seed", -INT64, INT64 - 1)
    if seed is not None:
        params = replace(params, seed=seed)
    return params


def common(data: dict, job: Job, max_n: int) -> None:
    job.n = _int(data, "n", 1, max_n, default=1)
    job.stream = _bool(data, "stream")
    options = data.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise bad("stream_options", f"expected an object, got {json_type(options)}")
        if not job.stream:
            raise bad("stream_options", "only allowed with stream: true")
        for key in options:
            if key == "include_usage":
                job.include_usage = _bool(options, "include_usage")
            elif key == "include_obfuscation" and options[key] in (False, None):
                continue
            else:
                raise bad(f"stream_options.{key}", "not supported by this server")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise bad("user", f"expected a string, got {json_type(user)}")
    job.guidance_scale = _float(data, "guidance_scale", 0.0, 100.0, low_open=True)
    negative = data.get("negative_prompt")
    if negative is not None:
        if not isinstance(negative, str):
            raise bad("negative_prompt", f"expected a string, got {json_type(negative)}")
        if job.guidance_scale is None:
            raise bad("negative_prompt", "give guidance_scale too")
        job.negative_prompt = negative


def _content(message: dict, where: str) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"{where}.content[{j}]", "only text parts ({'type': 'text', 'text': ...}) are supported")
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"{where}.content", f"expected a string or an array of text parts, got {json_type(content)}")


def chat_job(data: dict, defaults: GenerationParams, limits) -> Job:
    check_fields(data, CHAT_FIELDS, CHAT_NEUTRAL)
    params = sampling(data, defaults, limits.max_tokens, limits.max_stop_strings)
    job = Job("chat", params)
    common(data, job, limits.max_n)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("messages", "expected a non-empty array of messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad(where, f"expected an object, got {json_type(message)}")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise bad(f"{where}.role", f"expected one of system, developer, user, assistant; got {role!r}")
        for key, value in message.items():
            if key not in ("role", "content") and value is not None:
                raise bad(f"{where}.{key}", "not supported by this server")
        job.messages.append((ROLES[role], _content(message, where)))
    if job.messages[-1][0] != "user":
        raise bad("messages", "the conversation must end with a user message")
    if _bool(data, "logprobs"):
        job.logprobs = _int(data, "top_logprobs", 0, 20, default=0)
    elif _present(data, "top_logprobs"):
        raise bad("top_logprobs", "only allowed with logprobs: true")
    _no_stream_logprobs(job)
    return job


def _no_stream_logprobs(job: Job) -> None:
    if job.stream and job.logprobs is not None:
        raise bad("logprobs", "not supported together with stream: true on this server")


def completion_job(data: dict, defaults: GenerationParams, limits) -> Job:
    check_fields(data, COMPLETION_FIELDS, COMPLETION_NEUTRAL)
    params = sampling(data, defaults, limits.max_tokens, limits.max_stop_strings)
    job = Job("completion", params)
    common(data, job, limits.max_n)
    job.prompts = _texts_or_ids(data, "prompt")
    job.logprobs = _int(data, "logprobs", 0, 5)
    job.echo = _bool(data, "echo")
    if job.echo and job.logprobs is not None:
        raise bad("echo", "echo together with logprobs is not supported (prompt log-probabilities)")
    _no_stream_logprobs(job)
    if len(job.prompts) * job.n > limits.max_n:
        raise bad("prompt", f"at most {limits.max_n} choices per request (prompts x n)")
    return job


def embedding_job(data: dict) -> EmbeddingJob:
    check_fields(data, EMBEDDING_FIELDS, ())
    inputs = _texts_or_ids(data, "input")
    if any(item == "" or item == [] for item in inputs):
        raise bad("input", "empty inputs cannot be embedded")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad("encoding_format", f"expected float or base64, got {encoding!r}")
    return EmbeddingJob(inputs, encoding == "base64", _int(data, "dimensions", 1, 1 << 20))


def _texts_or_ids(data: dict, name: str) -> list[str | list[int]]:
    """A string, an array of strings, an array of token ids, or an array of such arrays."""
    value = data.get(name)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [list(value)]
        if all(isinstance(v, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in v) for v in value):
            return [list(v) for v in value]
    raise bad(name, "expected a string, an array of strings, or token-id arrays")
