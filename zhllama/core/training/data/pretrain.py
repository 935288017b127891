"""Pre-training data: documents tokenised per file (cached), then grouped into blocks (`stream` or
CLA2's `cla2` grouping), or streamed as an IterableDataset."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.paths import sha256_file
from zhllama.core.tokenizer import ZhTokenizer
from zhllama.core.training.data import cache
from zhllama.core.training.data.cache import (
    MAP_BATCH,
    ArrowParts,
    cache_key,
    cached_parts,
    copy_parts,
    default_cache_dir,
    list_array,
    load_parts,
    map_batches,
    read_id_batches,
    register_tokenizer,
    text_dataset,
    tokenize_files,
    tokenizer_hash,
    worker_tokenizer,
)
from zhllama.core.training.data.readers import chunks, iter_documents

DOC_SEPARATORS = ("eos", "none")
GROUPINGS = ("stream", "cla2")


def encode_documents(texts: list[str], tokenizer: ZhTokenizer, eos: bool, legacy: bool = False) -> list[list[int]]:
    """BOS + text (+ EOS): exactly `tokenizer.encode(text, bos=True, eos=eos, legacy=legacy)` per document
    (`legacy`: special-token strings read as the reference's LlamaTokenizer does, for `cla2`)."""
    bos_ids = [tokenizer.bos_id] if tokenizer.bos_id is not None else []
    eos_ids = [tokenizer.eos_id] if eos and tokenizer.eos_id is not None else []
    return [bos_ids + ids + eos_ids for ids in tokenizer.encode_batch(texts, legacy=legacy)]


def _encode_text_batch(batch, tokenizer_path: str, eos: bool, legacy: bool = False):
    """A pyarrow batch of texts -> a pyarrow table of token ids (the dataset is in arrow format)."""
    import numpy as np
    import pyarrow as pa

    tokenizer = worker_tokenizer(tokenizer_path)
    raw = tokenizer.encode_batch(batch.column("text").to_pylist(), legacy=legacy)
    # BOS + ids (+ EOS) per document, as `encode_documents`, placed with numpy instead of list copies
    bos = tokenizer.bos_id
    end = tokenizer.eos_id if eos else None
    counts = np.fromiter(map(len, raw), dtype=np.int64, count=len(raw))
    lengths = counts + (bos is not None) + (end is not None)
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    out = np.empty(int(offsets[-1]), dtype=np.int32)
    body = np.ones(len(out), dtype=bool)
    if bos is not None:
        out[offsets[:-1]] = bos
        body[offsets[:-1]] = False
    if end is not None:
        out[offsets[1:] - 1] = end
        body[offsets[1:] - 1] = False
    out[body] = np.fromiter(chain.from_iterable(raw), dtype=np.int32, count=int(counts.sum()))
    return pa.table({"input_ids": list_array(out, lengths)})


def pretrain_file_key(tok_hash: str, path: Path, separator: str, grouping: str) -> str:
    return cache_key("pretrain-docs", tok_hash, separator, grouping == "cla2", sha256_file(path))


def tokenize_text_file(
    path: Path,
    tokenizer: ZhTokenizer,
    eos: bool,
    keep_blank: bool,
    folder: Path,
    workers: int,
    progress=None,
    legacy: bool = False,
) -> list[str]:
    """Tokenise one text file into Arrow parts in `folder` (one row per document); part names.
    `legacy`: special-token strings in the text become those tokens, as CLA2's LlamaTokenizer reads them."""

    tok_path = register_tokenizer(tokenizer)
    parts = ArrowParts(folder)
    for i, (texts, size) in enumerate(chunks(iter_documents(path, keep_blank), cache.CHUNK_BYTES)):
        if texts:
            chunk = text_dataset(texts)
            mapped = map_batches(
                chunk,
                _encode_text_batch,
                {"tokenizer_path": tok_path, "eos": eos, "legacy": legacy},
                workers,
                folder / f"docs-{i:05d}.arrow",
                cache_key(folder.name, i)[:20],
                ("input_ids",),
                arrow=True,
            )
            copy_parts(mapped, folder, parts)
            del chunk, mapped
        if progress is not None:
            progress.advance(size)
    return parts.names


def group_stream(batches: Iterator, block_size: int, carry=None):
    """Yield (blocks as a 2-D numpy array, carry) over id batches; the final carry is dropped."""
    import numpy as np

    carry = np.zeros(0, dtype=np.int32) if carry is None else carry
    for flat in batches:
        buf = np.concatenate([carry, flat]) if len(carry) else flat
        n = len(buf) // block_size
        yield buf[: n * block_size].reshape(n, block_size)
        carry = buf[n * block_size :]


def group_cla2(flat, block_size: int):
    """CLA2's group_texts on one batch: full blocks, or the whole batch when shorter than a block."""
    import numpy as np

    total = len(flat)
    if total >= block_size:
        total = (total // block_size) * block_size
    lengths = [block_size] * (total // block_size) + ([total % block_size] if total % block_size else [])
    return flat[:total], np.array(lengths, dtype=np.int64)


def cla2_batch_rows(rows: int, workers: int) -> list[int]:
    """Row counts of the batches CLA2's `group_texts` sees over one file of `rows` lines, run by
    `datasets.map(batched=True, num_proc=workers)`: the rows are cut into `workers` contiguous
    shards (fewer when the file has fewer rows; the first `rows % n` shards one row longer), and
    each shard is mapped in batches of 1000 from its own start, its last batch shorter."""
    shards = max(1, min(workers, rows))
    out = []
    for i in range(shards):
        size = rows // shards + (1 if i < rows % shards else 0)
        out += [MAP_BATCH] * (size // MAP_BATCH) + ([size % MAP_BATCH] if size % MAP_BATCH else [])
    return out


def write_blocks(doc_folders: list[Path], block_size: int, grouping: str, folder: Path, workers: int = 1) -> list[str]:
    """Group per-file document stores into blocks; Arrow parts in `folder`. With `cla2` grouping
    each file's lines are batched as CLA2's `group_texts` over `workers` processes sees them."""
    import numpy as np
    import pyarrow as pa

    parts = ArrowParts(folder)

    def emit(flat, lengths):
        if len(lengths):
            parts.add_table(pa.table({"input_ids": list_array(flat, lengths)}))

    if grouping == "cla2":
        for docs in doc_folders:
            sizes = cla2_batch_rows(len(load_parts(docs)), workers)
            for flat, _ in read_id_batches(docs, rows=sizes):
                emit(*group_cla2(flat, block_size))
        return parts.names

    def batches():
        for docs in doc_folders:
            for flat, _ in read_id_batches(docs):
                yield flat

    pending, pending_rows = [], 0
    for blocks in group_stream(batches(), block_size):
        if len(blocks):
            pending.append(blocks)
            pending_rows += len(blocks)
        if pending_rows * block_size >= cache.CHUNK_BYTES // 4:
            stacked = np.concatenate(pending)
            emit(stacked.reshape(-1), np.full(len(stacked), block_size))
            pending, pending_rows = [], 0
    if pending:
        stacked = np.concatenate(pending)
        emit(stacked.reshape(-1), np.full(len(stacked), block_size))
    return parts.names


def pretrain_dataset(
    tokenizer: ZhTokenizer,
    files: list[Path],
    block_size: int,
    cache_dir: Path | None,
    separator: str = "eos",
    grouping: str = "stream",
    workers: int = 1,
) -> tuple[object, dict]:
    """The cached block dataset (column `input_ids`) and stats {blocks, tokenized_files, reused_files}."""
    store = Path(cache_dir or default_cache_dir())
    tok_hash = tokenizer_hash(tokenizer)
    keys = [pretrain_file_key(tok_hash, f, separator, grouping) for f in files]
    stored, tokenized = tokenize_files(
        store / "docs",
        files,
        keys,
        lambda f, tmp, progress: tokenize_text_file(
            f, tokenizer, separator == "eos", grouping == "cla2", tmp, workers, progress, legacy=grouping == "cla2"
        ),
    )
    doc_folders = [folder for folder, docs in stored if docs is not None and len(docs)]
    if not doc_folders:
        raise UserError(f"{', '.join(map(str, files))}: no text found (empty data)")
    shards = workers if grouping == "cla2" else None  # CLA2's blocks depend on its worker count
    block_key = cache_key("pretrain-blocks", keys, block_size, grouping, shards)
    blocks, _ = cached_parts(
        store / "blocks" / block_key, lambda tmp: write_blocks(doc_folders, block_size, grouping, tmp, workers)
    )
    if blocks is None:
        total = sum(len(flat) for folder in doc_folders for flat, _ in read_id_batches(folder))
        raise UserError(f"data has {total} tokens, fewer than one block of --block-size {block_size}")
    return blocks, {"tokenized_files": tokenized, "reused_files": len(files) - tokenized}


def pretrain_stream(
    tokenizer: ZhTokenizer, files: list[Path], block_size: int, separator: str = "eos", grouping: str = "stream"
):
    """An IterableDataset of blocks, tokenised on the fly (no cache); one shard per file."""
    from datasets import IterableDataset

    for f in files:  # fail before training starts, not in the middle
        next(iter_documents(f), None)
    return IterableDataset.from_generator(
        _stream_blocks,
        gen_kwargs={
            "files": [str(f) for f in files],
            "tokenizer_path": register_tokenizer(tokenizer),
            "block_size": block_size,
            "eos": separator == "eos",
            "grouping": grouping,
        },
    )


def _stream_blocks(files: list[str], tokenizer_path: str, block_size: int, eos: bool, grouping: str):
    import numpy as np

    tokenizer = worker_tokenizer(tokenizer_path)

    def id_batches(path):
        batch: list[str] = []
        for doc, _ in iter_documents(Path(path), keep_blank=grouping == "cla2"):
            if doc is not None:
                batch.append(doc)
            if len(batch) == MAP_BATCH:
                yield batch
                batch = []
        if batch:
            yield batch

    def flat(texts):
        ids = encode_documents(texts, tokenizer, eos, legacy=grouping == "cla2")
        return np.fromiter((i for row in ids for i in row), dtype=np.int32)

    if grouping == "cla2":
        for path in files:
            for texts in id_batches(path):
                ids, lengths = group_cla2(flat(texts), block_size)
                for start, n in zip(np.cumsum(lengths) - lengths, lengths, strict=True):
                    yield {"input_ids": ids[start : start + n].tolist()}
        return
    for blocks in group_stream((flat(t) for path in files for t in id_batches(path)), block_size):
        for row in blocks:
            yield {"input_ids": row.tolist()}
