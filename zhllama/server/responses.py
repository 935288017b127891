"""Response bodies and stream chunks in OpenAI's shapes (chat and text completions)."""

from __future__ import annotations

import json
import time
import uuid


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class _Shape:
    object = ""
    chunk_object = ""
    prefix = ""

    def __init__(self, runtime, job, replies):
        self.runtime = runtime
        self.job = job
        self.replies = replies
        self.ident = f"{self.prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _token(self, idx: int) -> str:
        return self.runtime.model.tokenizer.decode([idx], skip_special=False)

    def head(self, object_name: str) -> dict:
        return {"id": self.ident, "object": object_name, "created": self.created, "model": self.runtime.name}

    def usage(self) -> dict[str, int]:
        """Prompt tokens once per prompt (its n choices share it), completion tokens summed."""
        prompt = sum(len(r.prompt_ids) for r in self.replies[:: self.job.n])
        completion = sum(len(r.token_ids) for r in self.replies)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def usage_chunk(self) -> dict:
        return {**self.head(self.chunk_object), "choices": [], "usage": self.usage()}


class ChatShape(_Shape):
    object = "chat.completion"
    chunk_object = "chat.completion.chunk"
    prefix = "chatcmpl"

    def logprobs(self, reply) -> dict | None:
        if self.job.logprobs is None:
            return None

        def entry(idx: int, value: float) -> dict:
            text = self._token(idx)
            return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

        content = []
        for token, value, alternatives in reply.stopper.token_logprobs:
            content.append({**entry(token, value), "top_logprobs": [entry(i, v) for i, v in alternatives]})
        return {"content": content, "refusal": None}

    def full(self) -> dict:
        replies = self.replies
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": r.text},
                "logprobs": self.logprobs(r),
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(replies)
        ]
        return {**self.head(self.object), "choices": choices, "usage": self.usage()}

    def first_chunk(self, index: int) -> dict:
        return {
            **self.head(self.chunk_object),
            "choices": [{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
        }

    def chunk(self, index: int, text: str, finish: str | None) -> dict:
        delta = {"content": text} if text else {}
        return {**self.head(self.chunk_object), "choices": [{"index": index, "delta": delta, "finish_reason": finish}]}


class CompletionShape(_Shape):
    object = "text_completion"
    chunk_object = "text_completion"
    prefix = "cmpl"

    def logprobs(self, reply) -> dict | None:
        if self.job.logprobs is None:
            return None
        tokens, values, tops, offsets = [], [], [], []
        offset = 0
        for token, value, alternatives in reply.stopper.token_logprobs:
            text = self._token(token)
            tokens.append(text)
            values.append(value)
            tops.append({self._token(i): v for i, v in alternatives})
            offsets.append(offset)
            offset += len(text)
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}

    def prompt_text(self, index: int) -> str:
        """The prompt as sent (echo); token-id prompts are decoded."""
        if not self.job.echo:
            return ""
        prompt = self.job.prompts[index // self.job.n]
        return prompt if isinstance(prompt, str) else self.runtime.model.tokenizer.decode(prompt)

    def full(self) -> dict:
        replies = self.replies
        choices = [
            {
                "index": i,
                "text": self.prompt_text(i) + r.text,
                "logprobs": self.logprobs(r),
                "finish_reason": r.finish_reason,
            }
            for i, r in enumerate(replies)
        ]
        return {**self.head(self.object), "choices": choices, "usage": self.usage()}

    def first_chunk(self, index: int) -> dict | None:
        if not self.job.echo:
            return None
        return self.chunk(index, self.prompt_text(index), None)

    def chunk(self, index: int, text: str, finish: str | None) -> dict:
        choice = {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
        return {**self.head(self.chunk_object), "choices": [choice]}
