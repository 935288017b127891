"""Prompt templates: how a conversation becomes token ids, and which tokens are trained.

A template renders messages into `Segment`s. Text segments are encoded one by one (as the
reference SFT scripts encode prompt and answer separately); special tokens (BOS/EOS, ChatML's
`<|im_start|>`...) are inserted as the tokenizer's special-token ids (so a literal "</s>" or
"<|im_end|>" typed by a user is never a control token), and only where the template puts them;
`train=True` marks the answer tokens that carry loss. Templates are plugins in the
`zhllama.templates` entry-point group.

`resolve_template(name, tokenizer)` adds the model's own template: `auto` (the default) uses the
chat template the model ships (tokenizer_config.json `chat_template`, `chat_template.jinja`, GGUF
`tokenizer.chat_template`) rendered as transformers' `apply_chat_template` renders it, and
`llama2-zh` for models without one; `hf` insists on the model's template.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from zhllama.core import console, registry
from zhllama.core.errors import UserError
from zhllama.core.plugin_api import TemplatePlugin

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
    """A piece of a rendered conversation.

    - text (`text`), encoded with special-token strings as plain text;
    - one special token (`special`): "bos", "eos", or the token's text such as "<|im_end|>";
    - `markup=True`: text rendered by a chat template, whose special-token strings are the tokens
      (what `apply_chat_template` tokenizes).
    """

    text: str = ""
    special: str | None = None
    train: bool = False
    markup: bool = False


BOS = Segment(special="bos")


def EOS(train: bool) -> Segment:  # noqa: N802 - reads like the token it stands for
    return Segment(special="eos", train=train)


def Special(token: str, train: bool = False) -> Segment:  # noqa: N802
    return Segment(special=token, train=train)


class Template(TemplatePlugin):
    """Base class: subclasses set the class attributes and implement `segments`."""

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
            if seg.special or seg.markup:
                out += {"bos": "<s>", "eos": "</s>"}.get(seg.special, seg.special or seg.text)
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
        elif seg.special:
            piece = [special_id(tokenizer, seg.special)]
        elif seg.markup:
            piece = tokenizer.encode(seg.text, special=True) if seg.text else []
        else:
            piece = tokenizer.encode(seg.text) if seg.text else []
        ids.extend(piece)
        labels.extend(piece if seg.train else [IGNORE_INDEX] * len(piece))
    if max_length is not None:
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


def special_id(tokenizer, token: str) -> int:
    """The id of a template's special token; a vocabulary without it is an error (never text)."""
    idx = getattr(tokenizer, "special_tokens", {}).get(token)
    if idx is None and not hasattr(tokenizer, "special_tokens"):  # a tokenizer that only parses markers
        ids = tokenizer.encode(token, special=True)
        idx = ids[0] if len(ids) == 1 else None
    if idx is None:
        raise UserError(
            f"template token {token}: not a special token of this tokenizer; choose a template the model was "
            "trained with (--template auto uses the model's own)"
        )
    return idx


def stop_token_ids(template: Template, tokenizer) -> tuple[int, ...]:
    """Ids of the template's end-of-answer special tokens that the tokenizer has."""
    specials = getattr(tokenizer, "special_tokens", {})
    return tuple(specials[t] for t in template.stop_tokens if t in specials)


def get_template(name: str) -> Template:
    if name in SPECIAL_NAMES:
        names = ", ".join(template_names())
        raise UserError(f"--template {name}: this command needs a template name ({names})")
    cls = registry.load("templates", name)
    return cls() if isinstance(cls, type) else cls


def check_template_name(name: str) -> None:
    """Fail on an unknown --template before a slow model load."""
    if name not in SPECIAL_NAMES:
        get_template(name)


def resolve_template(name: str, tokenizer) -> Template:
    """`auto`: the model's own chat template, else llama2-zh; `hf`: the model's own; else a plugin."""
    own = getattr(tokenizer, "chat_template", None)
    if name == "hf" or (name == "auto" and own):
        if not own:
            raise UserError(
                "--template hf: the model has no chat template (tokenizer_config.json chat_template, "
                "chat_template.jinja or GGUF tokenizer.chat_template); give a template name"
            )
        return ChatTemplate(own, getattr(tokenizer, "special_tokens_map", {}), tokenizer)
    if name == "auto":
        console.log("the model has no chat template: using --template llama2-zh")
        return get_template("llama2-zh")
    return get_template(name)


def template_names() -> list[str]:
    return registry.names("templates")


SPECIAL_NAMES = ("auto", "hf")
ANSWER_PROBE = "\x00zhllama-answer\x00"


class ChatTemplate(Template):
    """A model's own Jinja chat template, rendered exactly as transformers' `apply_chat_template`.

    The rendered text is tokenized with its special-token strings read as tokens (markup segments),
    so a prompt's ids equal `tokenizer.apply_chat_template(messages, add_generation_prompt=True)`.
    For training, each answer is the text a rendering with that answer adds to the rendering that
    ends in the generation prompt (templates whose earlier turns change later are refused).
    """

    name = "hf"
    description = "the model's own chat template (tokenizer_config.json / chat_template.jinja / GGUF)"

    def __init__(self, source: str, variables: dict[str, str] | None = None, tokenizer=None):
        self.source = source
        self.variables = dict(variables or {})
        self.stop_tokens = self._end_tokens(tokenizer) if tokenizer is not None else ()

    def render(self, messages: Sequence[dict], add_generation_prompt: bool) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        try:
            rendered, _ = render_jinja_template(
                conversations=[list(messages)],
                chat_template=self.source,
                add_generation_prompt=add_generation_prompt,
                **self.variables,
            )
        except Exception as exc:  # jinja raises its own errors (raise_exception in templates)
            raise UserError(f"chat template: {exc}") from None
        return rendered[0]

    def _end_tokens(self, tokenizer) -> tuple[str, ...]:
        """The special token that closes an assistant turn (ChatML: <|im_end|>), found by rendering one."""
        specials = getattr(tokenizer, "special_tokens", {})
        try:
            text = self.render(
                [{"role": "user", "content": "q"}, {"role": "assistant", "content": ANSWER_PROBE}], False
            )
        except UserError:
            return ()
        after = text[text.find(ANSWER_PROBE) + len(ANSWER_PROBE) :] if ANSWER_PROBE in text else ""
        found = [(after.find(t), t) for t in specials if t and t in after]
        return (min(found)[1],) if found else ()

    def segments(self, messages: Sequence[Message], system=None, add_generation_prompt=False):
        for i, m in enumerate(messages):
            if m.role not in ROLES:
                raise UserError(f"message {i}: unknown role '{m.role}' (expected one of {', '.join(ROLES)})")
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if system is not None and not (chat and chat[0]["role"] == "system"):
            chat.insert(0, {"role": "system", "content": system})
        segs: list[Segment] = []
        done = ""
        for i, m in enumerate(chat):
            if m["role"] != "assistant":
                continue
            before = self.render(chat[:i], add_generation_prompt=True)
            after = self.render(chat[: i + 1], add_generation_prompt=False)
            if not (before.startswith(done) and after.startswith(before)):
                raise UserError("chat template: an answer changes the text before it; cannot mark answers for training")
            segs += [Segment(before[len(done) :], markup=True), Segment(after[len(before) :], markup=True, train=True)]
            done = after
        if not chat or chat[-1]["role"] != "assistant":
            full = self.render(chat, add_generation_prompt=add_generation_prompt)
            if not full.startswith(done):
                raise UserError("chat template: the rendering of a conversation is not stable turn by turn")
            segs.append(Segment(full[len(done) :], markup=True))
        return [s for s in segs if s.text]
