"""SFT data: records rendered by the template and tokenised per file (cached), packed rows, or an
IterableDataset of examples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.paths import sha256_file
from zhllama.core.templates import Message, Template, encode, get_template
from zhllama.core.tokenizer import ZhTokenizer
from zhllama.core.training.data import cache
from zhllama.core.training.data.cache import (
    MAP_BATCH,
    ArrowParts,
    cache_key,
    cached_parts,
    copy_parts,
    default_cache_dir,
    map_batches,
    register_tokenizer,
    tokenize_files,
    tokenizer_hash,
    worker_tokenizer,
)
from zhllama.core.training.data.readers import chunks, iter_records, record_messages


def iter_conversations(path: Path, template: Template, system: str | None) -> Iterator[tuple[dict | None, int]]:
    """({roles, contents} or None, bytes) per record, validated (template included) with its location."""
    for index, record, size in iter_records(path):
        if record is None:
            yield None, size
            continue
        messages = record_messages(str(path), index, record)
        try:
            template.segments(messages, system=system)
        except UserError as exc:
            raise UserError(f"{path}: record {index}: {exc}") from exc
        yield {"roles": [m.role for m in messages], "contents": [m.content for m in messages]}, size


def encode_conversations(batch: dict, tokenizer: ZhTokenizer, template: Template, system, max_len: int) -> dict:
    """Token ids and labels per conversation; conversations with no answer token left are dropped."""
    out = {"input_ids": [], "labels": []}
    for roles, contents in zip(batch["roles"], batch["contents"], strict=True):
        messages = [Message(r, c) for r, c in zip(roles, contents, strict=True)]
        ids, labels = encode(tokenizer, template.segments(messages, system=system), max_len)
        if all(label == -100 for label in labels):
            continue  # the prompt alone fills max_len: nothing to learn from this record
        out["input_ids"].append(ids)
        out["labels"].append(labels)
    return out


def _encode_conversation_batch(batch: dict, tokenizer_path: str, template: str, system, max_len: int) -> dict:
    return encode_conversations(batch, worker_tokenizer(tokenizer_path), get_template(template), system, max_len)


def tokenize_record_file(
    path: Path, tokenizer: ZhTokenizer, template: Template, system, max_len: int, folder: Path, workers: int, progress
) -> list[str]:
    from datasets import Dataset

    kwargs = {"tokenizer_path": register_tokenizer(tokenizer), "template": template.name, "system": system}
    parts = ArrowParts(folder, ("input_ids", "labels"))
    for i, (rows, size) in enumerate(chunks(iter_conversations(path, template, system), cache.CHUNK_BYTES)):
        if rows:
            chunk = Dataset.from_dict({"roles": [r["roles"] for r in rows], "contents": [r["contents"] for r in rows]})
            mapped = map_batches(
                chunk,
                _encode_conversation_batch,
                {**kwargs, "max_len": max_len},
                workers,
                folder / f"examples-{i:05d}.arrow",
                cache_key(folder.name, i)[:20],
                ("input_ids", "labels"),
            )
            copy_parts(mapped, folder, parts)
            del chunk, mapped
        if progress is not None:
            progress.advance(size)
    return parts.names


def sft_dataset(
    tokenizer: ZhTokenizer,
    template: Template,
    files: list[Path],
    max_len: int,
    system: str | None,
    cache_dir: Path | None,
    workers: int = 1,
) -> tuple[object, dict]:
    """Examples (`input_ids`, `labels`) of every file in order, cached per file."""
    from datasets import concatenate_datasets

    store = Path(cache_dir or default_cache_dir())
    tok_hash = tokenizer_hash(tokenizer)
    keys = [cache_key("sft", tok_hash, template.name, system, max_len, sha256_file(f)) for f in files]
    stored, tokenized = tokenize_files(
        store / "sft",
        files,
        keys,
        lambda f, tmp, progress: tokenize_record_file(f, tokenizer, template, system, max_len, tmp, workers, progress),
    )
    sets = [s for _, s in stored if s is not None and len(s)]
    if not sets:
        if not any(_has_records(f) for f in files):
            raise UserError(f"{', '.join(map(str, files))}: no records (empty data)")
        raise UserError(f"no record has answer tokens within --max-seq-length {max_len}")
    dataset = sets[0] if len(sets) == 1 else concatenate_datasets(sets)
    return dataset, {"tokenized_files": tokenized, "reused_files": len(files) - tokenized}


def _has_records(path: Path) -> bool:
    return any(record is not None for _, record, _ in iter_records(path))


def sft_stream(
    tokenizer: ZhTokenizer, template: Template, files: list[Path], max_len: int, system, packing: bool = False
):
    """An IterableDataset of SFT examples (packed rows with `packing`), tokenised on the fly; one shard per file."""
    from datasets import IterableDataset

    for f in files:
        next(iter_conversations(f, template, system), None)
    return IterableDataset.from_generator(
        _stream_examples,
        gen_kwargs={
            "files": [str(f) for f in files],
            "tokenizer_path": register_tokenizer(tokenizer),
            "template": template.name,
            "system": system,
            "max_len": max_len,
            "packing": packing,
        },
    )


def _stream_examples(files: list[str], tokenizer_path: str, template: str, system, max_len: int, packing: bool):
    from zhllama.core.training.collate import Packer

    tokenizer, tpl = worker_tokenizer(tokenizer_path), get_template(template)
    packer = Packer(max_len) if packing else None

    def rows(out):
        if packer is None:
            yield from ({"input_ids": i, "labels": lab} for i, lab in zip(out["input_ids"], out["labels"], strict=True))
            return
        done = packer.add(out["input_ids"], out["labels"])
        yield from (dict(zip(Packer.KEYS, r, strict=True)) for r in zip(*(done[k] for k in Packer.KEYS), strict=True))

    for path in files:
        for row, _ in iter_conversations(Path(path), tpl, system):
            if row is not None:
                yield from rows(encode_conversations({k: [v] for k, v in row.items()}, tokenizer, tpl, system, max_len))
    if packer is not None:
        last = packer.finish()
        yield from (dict(zip(Packer.KEYS, r, strict=True)) for r in zip(*(last[k] for k in Packer.KEYS), strict=True))


def pack_dataset(dataset, max_len: int, folder: Path) -> list[str]:
    """Greedy in-order packing (see `collate.Packer`) over Arrow batches; parts in `folder`."""
    import pyarrow as pa

    from zhllama.core.training.collate import Packer

    parts = ArrowParts(folder, ("input_ids", "labels", "position_ids"))
    packer = Packer(max_len)
    for batch in dataset.iter(batch_size=MAP_BATCH):
        rows = packer.add(batch["input_ids"], batch["labels"])
        if rows["input_ids"]:
            parts.add_table(pa.table(rows))
    rows = packer.finish()
    if rows["input_ids"]:
        parts.add_table(pa.table(rows))
    return parts.names


def packed(dataset, max_len: int, cache_dir: Path | None, tag) -> object:
    """`dataset` packed into rows of at most `max_len` tokens, cached (key: the dataset's fingerprint)."""
    store = Path(cache_dir or default_cache_dir())
    key = cache_key("packed", dataset._fingerprint, max_len, tag)
    rows, _ = cached_parts(store / "packed" / key, lambda tmp: pack_dataset(dataset, max_len, tmp))
    return rows
