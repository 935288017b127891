"""Multi-turn chat history that fits a token budget: the oldest turns are dropped first.

The whole conversation is re-rendered every turn (templates differ in how a later turn is
framed), and whole user/assistant turns are removed from the front until the prompt fits
`context_length - max_new_tokens`. The system prompt always stays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from zhllama.core import console
from zhllama.core.templates import Message


@dataclass
class ChatHistory:
    render: Callable[[Sequence[Message]], list[int]]  # messages -> prompt ids (`ChatRuntime.prompt_ids`)
    budget: int
    system: str | None = None
    turns: list[tuple[str, str]] = field(default_factory=list)
    dropped: int = 0

    def _ids(self, user: str) -> list[int]:
        messages = [Message("system", self.system)] if self.system is not None else []
        for question, answer in self.turns:
            messages += [Message("user", question), Message("assistant", answer)]
        messages.append(Message("user", user))
        return self.render(messages)

    def prompt_ids(self, user: str) -> list[int]:
        """The prompt for a new user message; forgets the oldest turns that no longer fit."""
        ids = self._ids(user)
        while len(ids) > self.budget and self.turns:
            self.turns.pop(0)
            self.dropped += 1
            ids = self._ids(user)
        if len(ids) > self.budget:
            console.warn(f"the message alone is {len(ids)} tokens; keeping its last {self.budget}")
            ids = ids[-self.budget :]
        return ids

    def add(self, user: str, answer: str) -> None:
        self.turns.append((user, answer))

    def reset(self) -> None:
        self.turns.clear()
