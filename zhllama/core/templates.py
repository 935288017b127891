"""Prompt templates: how a conversation becomes token ids, and which tokens are trained.

A template renders messages into `Segment`s. Text segments are encoded one by one (as the
reference SFT scripts encode prompt and answer separately), BOS/EOS are inserted as ids (so a
literal "</s>" typed by a user is never an end of sequence), and `train=True` marks the answer
tokens that carry loss. Templates are plugins in the `zhllama.templates` entry-point group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zhllama.core import registry
from zhllama.core.errors import UserError

if TYPE_CHECKING:
    from zhllama.core.tokenizer import ZhTokenizer

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class Segment:
    """A piece of a rendered conversation: text, or the BOS/EOS token (`special`)."""

    text: str = ""
    special: str | None = None  # "bos" | "eos"
    train: bool = False


BOS = Segment(special="bos")


def EOS(train: bool) -> Segment:  # noqa: N802 - reads like the token it stands for
    return Segment(special="eos", train=train)


class Template:
    """Base class: subclasses set the class attributes and implement `segments`."""

    name: str = ""
    description: str = ""
    requires: tuple[str, ...] = ()
    install_hint: str = ""
    default_system: str | None = None
    stop_strings: tuple[str, ...] = ()

    def segments(self, messages: Sequence[Message], system: str | None = None, add_generation_prompt: bool = False):
        raise NotImplementedError

    # --- helpers shared by all templates -----------------------------------------------------
    @staticmethod
    def split_turns(messages: Sequence[Message]) -> tuple[str | None, list[tuple[str, str | None]]]:
        """(system, [(user, assistant_or_None), ...]) from alternating user/assistant messages."""
        system = None
        turns: list[tuple[str, str | None]] = []
        pending: str | None = None
        for i, m in enumerate(messages):
            if m.role not in ROLES:
                raise UserError(f"message {i}: unknown role '{m.role}' (expected one of {', '.join(ROLES)})")
            if m.role == "system":
                if i != 0:
                    raise UserError(f"message {i}: a system message may only come first")
                system = m.content
            elif m.role == "user":
                if pending is not None:
                    raise UserError(f"message {i}: two user messages in a row")
                pending = m.content
            else:
                if pending is None:
                    raise UserError(f"message {i}: assistant message without a user message before it")
                turns.append((pending, m.content))
                pending = None
        if pending is not None:
            turns.append((pending, None))
        return system, turns

    def render_text(self, messages: Sequence[Message], system: str | None = None, add_generation_prompt=False) -> str:
        """The conversation as one string (BOS/EOS shown as <s>/</s>), as the token ids read back."""
        out = ""
        previous_text = False
        for seg in self.segments(messages, system=system, add_generation_prompt=add_generation_prompt):
            if seg.special:
                out += "<s>" if seg.special == "bos" else "</s>"
                previous_text = False
            else:
                if previous_text and not out.endswith((" ", "\n")):
                    out += " "
                out += seg.text
                previous_text = True
        return out


def encode(
    tokenizer: ZhTokenizer, segments: Sequence[Segment], max_length: int | None = None
) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 where not trained); right-truncated to `max_length`."""
    ids: list[int] = []
    labels: list[int] = []
    for seg in segments:
        if seg.special == "bos":
            piece = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
        elif seg.special == "eos":
            piece = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
        else:
            piece = tokenizer.encode(seg.text) if seg.text else []
        ids.extend(piece)
        labels.extend(piece if seg.train else [IGNORE_INDEX] * len(piece))
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


def get_template(name: str) -> Template:
    cls = registry.load("templates", name)
    return cls() if isinstance(cls, type) else cls


def template_names() -> list[str]:
    return registry.names("templates")
