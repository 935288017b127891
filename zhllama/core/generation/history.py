"""Multi-turn chat history that fits a token budget: the oldest turns are dropped first.

The whole conversation is re-rendered with the template every turn (templates differ in how a
later turn is framed), and whole user/assistant turns are removed from the front until the prompt
fits `context_length - max_new_tokens`. The system prompt always stays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zhllama.core import console
from zhllama.core.templates import Message, Template, encode


@dataclass
class ChatHistory:
    template: Template
    tokenizer: object
    budget: int
    system: str | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)
    dropped: int = 0

    def _ids(self, turns: list[tuple[str, str]], user: str) -> list[int]:
        messages = [Message("system", self.system)] if self.system is not None else []
        for question, answer in turns:
            messages += [Message("user", question), Message("assistant", answer)]
        messages.append(Message("user", user))
        segments = self.template.segments(messages, add_generation_prompt=True)
        return encode(self.tokenizer, segments)[0]

    def prompt_ids(self, user: str) -> list[int]:
        """The prompt for a new user message; forgets the oldest turns that no longer fit."""
        while True:
            ids = self._ids(self.turns, user)
            if len(ids) <= self.budget or not self.turns:
                break
            self.turns.pop(0)
            self.dropped += 1
        if len(ids) > self.budget:
            console.warn(f"the message alone is {len(ids)} tokens; keeping its last {self.budget}")
            ids = ids[-self.budget :]
        return ids

    def add(self, user: str, answer: str) -> None:
        self.turns.append((user, answer))

    def reset(self) -> None:
        self.turns.clear()
