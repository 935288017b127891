"""Preference pairs and RL prompts: reading, validation and tokenization shared by rm, dpo and ppo.

Accepted record shapes (JSON array or JSONL, one record per object):

- `{"prompt": ..., "chosen": ..., "rejected": ...}` (optional `system`); `prompt` is a string or a
  list of messages (`role`/`content` or `from`/`value`), answers are strings, one message, or a
  one-message list (TRL's conversational shape);
- `{"conversations": [...], "chosen": ..., "rejected": ...}` (LLaMA-Factory's ranking shape): the
  conversation ends with the user turn the answers reply to;
- `{"instruction": ..., "input": ..., "chosen": ..., "rejected": ...}` (Alpaca-style ranking).

Tokenization is exactly `sft`'s: the template renders the conversation into segments and
`templates.encode` turns them into ids with sentencepiece semantics. The prompt is everything the
template emits before the final answer (earlier assistant turns included); the completion is the
answer's trained segments, which end with EOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.templates import IGNORE_INDEX, Message, Template, encode
from zhllama.core.tokenizer import ZhTokenizer
from zhllama.core.training.data import iter_records, record_messages


@dataclass(frozen=True)
class PreferencePair:
    source: str
    index: int
    prompt: tuple[Message, ...]  # ends with the user turn the answers reply to
    chosen: str
    rejected: str


def read_records(files: list[Path]) -> list[tuple[str, int, object]]:
    """(file, record index, record) of JSON arrays / JSONL files (sft's reader; blank lines skipped)."""
    out = [(str(f), index, record) for f in files for index, record, _ in iter_records(f) if record is not None]
    if not out:
        raise UserError(f"{', '.join(map(str, files))}: no records (empty data)")
    return out


def _where(source: str, index: int) -> str:
    return f"{source}: record {index}"


def _answer_text(where: str, key: str, value) -> str:
    """An answer given as text, one message, or a one-message list."""
    if isinstance(value, list):
        if len(value) != 1:
            raise UserError(f"{where}: '{key}' must hold exactly one assistant message, got {len(value)}")
        value = value[0]
    if isinstance(value, dict):
        value = value.get("value", value.get("content"))
    if not isinstance(value, str):
        raise UserError(f"{where}: '{key}' must be a string (or an assistant message)")
    if not value.strip():
        raise UserError(f"{where}: '{key}' is empty")
    return value


def prompt_messages(source: str, index: int, record, system_key: bool = True) -> tuple[Message, ...]:
    """The conversation a record's answers reply to, ending with a user message."""
    where = _where(source, index)
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a JSON object")
    turns = record.get("conversations", record.get("messages"))
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        turns, prompt = prompt, None
    if turns is not None:
        if not isinstance(turns, list) or not turns:
            raise UserError(f"{where}: 'conversations' must be a non-empty list")
        if any(not isinstance(t, dict) for t in turns):
            raise UserError(f"{where}: every turn of 'conversations' must be an object")
        # sft's reader validates roles and text; a placeholder answer makes the turns a complete conversation
        messages = record_messages(source, index, {"conversations": [*turns, {"role": "assistant", "content": ""}]})
        messages = messages[:-1]
    elif prompt is not None or "instruction" in record:
        if prompt is None:
            if not isinstance(record.get("instruction"), str):
                raise UserError(f"{where}: 'instruction' must be a string")
            prompt = record["instruction"] + (f"\n{record['input']}" if record.get("input") else "")
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(f"{where}: 'prompt' must be a non-empty string or a list of messages")
        messages = [Message("user", prompt)]
    else:
        raise UserError(f"{where}: missing 'prompt' (or 'conversations' / 'instruction')")
    if not messages or messages[-1].role != "user":
        raise UserError(f"{where}: the prompt must end with a user turn")
    system = record.get("system") if system_key else None
    if system is not None:
        if not isinstance(system, str):
            raise UserError(f"{where}: 'system' must be a string")
        if messages[0].role != "system":
            messages = [Message("system", system), *messages]
    return tuple(messages)


def read_pairs(files: list[Path]) -> list[PreferencePair]:
    """Every preference pair in `files`; a bad record raises a UserError naming file and record."""
    pairs = []
    for source, index, record in read_records(files):
        where = _where(source, index)
        prompt = prompt_messages(source, index, record)
        for key in ("chosen", "rejected"):
            if key not in record:
                raise UserError(f"{where}: missing '{key}'")
        chosen = _answer_text(where, "chosen", record["chosen"])
        rejected = _answer_text(where, "rejected", record["rejected"])
        if chosen == rejected:
            raise UserError(f"{where}: 'chosen' and 'rejected' are identical (nothing to prefer)")
        pairs.append(PreferencePair(source, index, prompt, chosen, rejected))
    return pairs


def read_prompts(files: list[Path]) -> list[tuple[str, int, tuple[Message, ...]]]:
    """Prompts for RL: any record shape above (answers, if present, are ignored)."""
    return [(s, i, prompt_messages(s, i, r)) for s, i, r in read_records(files)]


def encode_prompt(tokenizer: ZhTokenizer, template: Template, prompt, system: str | None) -> list[int]:
    ids, _ = encode(tokenizer, template.segments(list(prompt), system=system, add_generation_prompt=True))
    return ids


def encode_completion(
    tokenizer: ZhTokenizer, template: Template, prompt, answer: str, system: str | None, prompt_ids: list[int]
) -> list[int]:
    """The answer's ids as the template renders them after `prompt` (ends with EOS)."""
    ids, labels = encode(tokenizer, template.segments([*prompt, Message("assistant", answer)], system=system))
    n = len(prompt_ids)
    if ids[:n] != prompt_ids or any(label == IGNORE_INDEX for label in labels[n:]):
        raise UserError(f"template '{template.name}' does not render the prompt as a prefix of prompt + answer")
    return ids[n:]


def preference_examples(
    tokenizer: ZhTokenizer, template: Template, pairs: list[PreferencePair], max_length: int, system: str | None
) -> tuple[dict[str, list[list[int]]], int]:
    """TRL's tokenized preference columns (`prompt_ids`, `chosen_ids`, `rejected_ids`) and the number
    of pairs dropped because prompt + answer exceeds `max_length` (truncating would cut the EOS)."""
    columns: dict[str, list[list[int]]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    dropped = 0
    for pair in pairs:
        prompt_ids = encode_prompt(tokenizer, template, pair.prompt, system)
        chosen = encode_completion(tokenizer, template, pair.prompt, pair.chosen, system, prompt_ids)
        rejected = encode_completion(tokenizer, template, pair.prompt, pair.rejected, system, prompt_ids)
        if len(prompt_ids) + max(len(chosen), len(rejected)) > max_length:
            dropped += 1
            continue
        columns["prompt_ids"].append(prompt_ids)
        columns["chosen_ids"].append(chosen)
        columns["rejected_ids"].append(rejected)
    if not columns["prompt_ids"]:
        raise UserError(f"no preference pair fits in --max-seq-length {max_length} (prompt + longer answer)")
    return columns, dropped


def reward_examples(columns: dict[str, list[list[int]]]) -> dict[str, list[list[int]]]:
    """RewardTrainer's tokenized columns: whole sequences, prompt + chosen and prompt + rejected."""
    return {
        "chosen_ids": [p + c for p, c in zip(columns["prompt_ids"], columns["chosen_ids"], strict=True)],
        "rejected_ids": [p + r for p, r in zip(columns["prompt_ids"], columns["rejected_ids"], strict=True)],
    }
