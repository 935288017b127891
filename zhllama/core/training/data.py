"""Training data: plain-text documents for pre-training, instruction records for SFT.

Tokenised datasets are cached with `datasets.save_to_disk`, keyed by the tokenizer files, the
settings that change the result, and the input files' sha256, so a rerun does not re-tokenise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.templates import Message, Template, encode
from zhllama.core.tokenizer import TOKENIZER_FILES, ZhTokenizer

TEXT_SUFFIXES = (".txt", ".jsonl", ".json")


def expand_files(paths: Iterable[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in suffixes)
            if not found:
                raise UserError(f"{p}: folder holds no {'/'.join(suffixes)} files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    if not files:
        raise UserError("--data: give at least one data file")
    return files


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_key(tokenizer: ZhTokenizer, files: list[Path], settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    folder = tokenizer.path if tokenizer.path.is_dir() else tokenizer.path.parent
    for name in TOKENIZER_FILES:
        if (folder / name).is_file():
            h.update(sha256_file(folder / name).encode())
    for f in files:
        h.update(sha256_file(f).encode())
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("ZHLLAMA_CACHE", Path.home() / ".cache" / "zhllama")) / "datasets"


def cached(key: str, cache_dir: Path | None, build):
    """Load dataset `key` from the cache, or build and save it (atomically) first."""
    from datasets import load_from_disk

    from zhllama.core.atomic import atomic_dir

    folder = (cache_dir or default_cache_dir()) / key
    if folder.is_dir():
        return load_from_disk(str(folder)), True
    dataset = build()
    with atomic_dir(folder, force=True) as tmp:
        dataset.save_to_disk(str(tmp))
    return load_from_disk(str(folder)), False


# ---- pre-training ------------------------------------------------------------------------------
def read_documents(files: list[Path]) -> list[str]:
    """One document per non-empty line of .txt files; the `text` field of .jsonl records."""
    docs: list[str] = []
    for f in files:
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise UserError(f"{f}: not UTF-8 text") from exc
        if f.suffix == ".jsonl":
            for n, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"{f}:{n}: malformed JSON ({exc.msg})") from exc
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise UserError(f"{f}:{n}: record has no string field 'text'")
                docs.append(record["text"])
        else:
            docs += [line for line in lines if line.strip()]
    if not docs:
        raise UserError(f"{', '.join(map(str, files))}: no text found (empty data)")
    return docs


def pretrain_blocks(tokenizer: ZhTokenizer, docs: list[str], block_size: int) -> list[list[int]]:
    """BOS + document + EOS, concatenated, cut into full blocks (the remainder is dropped)."""
    stream: list[int] = []
    for doc in docs:
        stream += tokenizer.encode(doc, bos=True, eos=True)
    blocks = [stream[i : i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]
    if not blocks:
        raise UserError(f"data has {len(stream)} tokens, fewer than one block of --block-size {block_size}")
    return blocks


# ---- SFT -------------------------------------------------------------------------------------
ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def read_records(files: list[Path]) -> list[tuple[str, int, dict]]:
    """(file, index, record) for Alpaca JSON arrays and JSONL files."""
    out: list[tuple[str, int, dict]] = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        if f.suffix == ".jsonl":
            for n, line in enumerate(text.splitlines()):
                if line.strip():
                    try:
                        out.append((str(f), n, json.loads(line)))
                    except json.JSONDecodeError as exc:
                        raise UserError(f"{f}: record {n}: malformed JSON ({exc.msg})") from exc
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UserError(f"{f}: malformed JSON at line {exc.lineno} ({exc.msg})") from exc
            if not isinstance(data, list):
                raise UserError(f"{f}: expected a JSON array of records")
            out += [(str(f), n, r) for n, r in enumerate(data)]
    if not out:
        raise UserError(f"{', '.join(map(str, files))}: no records (empty data)")
    return out


def record_messages(source: str, index: int, record) -> list[Message]:
    """Alpaca (`instruction`, `input`, `output`) or multi-turn (`conversations` / `messages`)."""
    where = f"{source}: record {index}"
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a JSON object")
    turns = record.get("conversations", record.get("messages"))
    if turns is not None:
        if not isinstance(turns, list) or not turns:
            raise UserError(f"{where}: 'conversations' must be a non-empty list")
        messages = []
        for t, turn in enumerate(turns):
            role = ROLE_NAMES.get(str(turn.get("from", turn.get("role"))))
            content = turn.get("value", turn.get("content"))
            if role is None or not isinstance(content, str):
                raise UserError(f"{where}: turn {t} needs a role (from/role) and text (value/content)")
            messages.append(Message(role, content))
        if messages[-1].role != "assistant":
            raise UserError(f"{where}: the last turn must be the assistant's answer")
        return messages
    for key in ("instruction", "output"):
        if not isinstance(record.get(key), str):
            raise UserError(f"{where}: missing string field '{key}'")
    prompt = record["instruction"]
    if record.get("input"):
        prompt = f"{prompt}\n{record['input']}"
    return [Message("user", prompt), Message("assistant", record["output"])]


def sft_examples(
    tokenizer: ZhTokenizer, template: Template, records, max_length: int, system: str | None
) -> dict[str, list[list[int]]]:
    ids_all, labels_all = [], []
    for source, index, record in records:
        ids, labels = encode(
            tokenizer, template.segments(record_messages(source, index, record), system=system), max_length
        )
        if all(label == -100 for label in labels):
            continue  # the prompt alone fills max_length: nothing to learn from this record
        ids_all.append(ids)
        labels_all.append(labels)
    if not ids_all:
        raise UserError(f"no record has answer tokens within --max-seq-length {max_length}")
    return {"input_ids": ids_all, "labels": labels_all}
