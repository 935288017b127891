r"""Training data built with `datasets` end to end: the corpus never sits in Python lists.

Pre-training (`pretrain_dataset`):
1. every input file is read line by line in chunks of about `CHUNK_BYTES`; each chunk's documents
   are tokenised by a batched `Dataset.map` over `workers` processes and written as Arrow;
   the per-file result (one row of token ids per document) is cached under a key made of the
   tokenizer files' sha256, the settings that change the ids, and the file's sha256, so adding
   a file to a corpus tokenises only that file;
2. the cached documents are grouped into blocks on Arrow/numpy batches and cached too (key: the
   per-file keys, block size, grouping).

Lines are split as `datasets`' `text` loader splits them: only '\n', '\r\n' and '\r' end a line.

Two groupings: `stream` (default) concatenates every document of every file into one stream and
cuts it into full blocks (only the final remainder is dropped); `cla2` reproduces
Chinese-LLaMA-Alpaca-2's `run_clm_pt_with_peft.py` exactly: each file on its own, blank lines
kept as (empty) documents, special-token strings in the text read as its LlamaTokenizer reads
them (`</s>` in a line is EOS), `group_texts` over each batch of 1000 lines (its remainder
dropped, a batch shorter than one block kept as one short block), the batches laid out as
`datasets.map(num_proc=workers)` lays them out: each worker's contiguous shard batched from its
own start, so each shard drops its own remainders (`--preprocessing-workers` plays the part of
CLA2's `--preprocessing_num_workers`; 1 is the script's default, its run_pt.sh uses 8).
`--doc-separator eos|none` decides whether a document ends with EOS (every document starts with BOS).

SFT (`sft_dataset`): JSONL is streamed line by line and JSON arrays are decoded incrementally
(one record at a time); records are validated in that pass (errors name file and record), then
rendered by the template and tokenised by a batched `map`; cached per file like pre-training.

`--streaming` builds `datasets.IterableDataset`s from the same readers and encoders instead: no
cache, one shard per file (so with `stream` grouping each file's remainder is dropped at its end),
sharded by rank by accelerate (whole files per rank when there are at least as many files as
ranks, else every rank reads the stream and keeps its own batches).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain, repeat
from pathlib import Path

from zhllama.core.errors import UserError
from zhllama.core.paths import sha256_file
from zhllama.core.templates import Message, Template, encode, get_template
from zhllama.core.tokenizer import TOKENIZER_FILES, ZhTokenizer

TEXT_SUFFIXES = (".txt", ".jsonl")
RECORD_SUFFIXES = (".json", ".jsonl")
CHUNK_BYTES = 16 << 20  # text read (and tokenised by one `map`) at a time
MAP_BATCH = 1000  # rows per `map` batch (also CLA2's group_texts batch)
FORMAT_VERSION = 3  # part of every cache key: bump when the cached layout or semantics change
# 3: lines split as datasets' text loader (not str.splitlines); cla2 grouping reads special-token strings
DOC_SEPARATORS = ("eos", "none")
GROUPINGS = ("stream", "cla2")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ---- files ---------------------------------------------------------------------------------------
def expand_files(
    paths: Iterable[str | Path], suffixes: tuple[str, ...], refuse: dict[str, str] | None = None
) -> list[Path]:
    """Files named, plus the `suffixes` files found (recursively, sorted) in folders named.

    `refuse` maps a suffix to the reason a file named explicitly with it cannot be read.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in suffixes)
            if not found:
                raise UserError(f"{p}: folder holds no {'/'.join(suffixes)} files")
            files += found
        elif p.is_file():
            if refuse and p.suffix in refuse:
                raise UserError(f"{p}: {refuse[p.suffix]}")
            files.append(p)
        else:
            raise UserError(f"{p}: no such file or folder")
    if not files:
        raise UserError("--data: give at least one data file")
    return files


def tokenizer_hash(tokenizer: ZhTokenizer) -> str:
    h = hashlib.sha256()
    if tokenizer.path.is_file():
        h.update(sha256_file(tokenizer.path).encode())
    else:
        for name in TOKENIZER_FILES:
            if (tokenizer.path / name).is_file():
                h.update(name.encode() + sha256_file(tokenizer.path / name).encode())
    return h.hexdigest()


def cache_key(*parts) -> str:
    """sha256 over JSON-encoded parts (settings, tokenizer hash, file hashes, ...), 24 hex digits."""
    text = json.dumps([FORMAT_VERSION, *parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    return Path(os.environ.get("ZHLLAMA_CACHE", Path.home() / ".cache" / "zhllama")) / "datasets"


# ---- the Arrow part store ------------------------------------------------------------------------
PARTS_FILE = "parts.json"


def load_parts(folder: Path):
    """The dataset stored in `folder` as ordered Arrow files (memory-mapped, nothing loaded)."""
    from datasets import Dataset, concatenate_datasets

    names = json.loads((folder / PARTS_FILE).read_text())["parts"]
    parts = [Dataset.from_file(str(folder / n), in_memory=False) for n in names]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def cached_parts(folder: Path, build) -> tuple[object, bool]:
    """Load the part store at `folder`, or run `build(tmp) -> [file names]` into a temp sibling first."""
    from zhllama.core.atomic import atomic_dir

    if (folder / PARTS_FILE).is_file():
        return load_parts(folder), True
    with atomic_dir(folder, force=True) as tmp:
        names = build(tmp)
        (tmp / PARTS_FILE).write_text(json.dumps({"parts": names}) + "\n")
    return load_parts(folder), False


class ArrowParts:
    """Write rows of token-id lists as one Arrow file per `add` (lists of int32)."""

    def __init__(self, folder: Path, columns: tuple[str, ...] = ("input_ids",)):
        self.folder, self.columns, self.names, self.rows = folder, columns, [], 0

    def add_table(self, table) -> None:
        from datasets import Features, Sequence, Value
        from datasets.arrow_writer import ArrowWriter

        if table.num_rows == 0:
            return
        name = f"part-{len(self.names):05d}.arrow"
        features = Features({c: Sequence(Value("int32")) for c in self.columns})
        with ArrowWriter(path=str(self.folder / name), features=features) as writer:
            writer.write_table(table.cast(features.arrow_schema))
            writer.finalize()
        self.names.append(name)
        self.rows += table.num_rows


def list_array(flat, lengths):
    """A pyarrow list<int32> array from a flat numpy array and row lengths."""
    import numpy as np
    import pyarrow as pa

    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(np.int32, copy=False)))


def flat_ids(column):
    """The concatenated token ids of a list column (pyarrow) as numpy int32, zero-copy where possible."""
    import numpy as np
    import pyarrow.compute as pc

    return np.asarray(pc.list_flatten(column).to_numpy(), dtype=np.int32)


# ---- reading -------------------------------------------------------------------------------------
def _utf8_lines(path: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, text without the newline, bytes) for each line; non-UTF-8 is a UserError."""
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8"), len(raw)
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}:{n}: not UTF-8 text") from exc


def split_lines(line: str) -> list[str]:
    r"""One line as read from a file (ending in '\n' or at the end of the file), split into lines
    as `datasets`' `text` loader splits a file: only '\n', '\r\n' and a lone '\r' end a line
    (universal newlines); U+2028, U+2029, '\x85', '\x0b', '\x0c', '\x1c'-'\x1e' stay inside it."""
    if line.endswith("\n"):
        line = line[:-1]
    if line.endswith("\r"):
        line = line[:-1]
    return line.split("\r")


def iter_documents(path: Path, keep_blank: bool = False) -> Iterator[tuple[str, int]]:
    r"""(document, bytes read) for a .txt (one per line) or .jsonl (`text` field) file.

    Lines split as `datasets`' `text` loader does (`split_lines`: '\n', '\r\n', '\r' only);
    blank lines are skipped unless `keep_blank` (CLA2's `text` loader keeps them).
    """
    jsonl = path.suffix == ".jsonl"
    for n, line, size in _utf8_lines(path):
        if jsonl:
            if not line.strip():
                yield None, size
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path}:{n}: malformed JSON ({exc.msg})") from exc
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise UserError(f"{path}:{n}: record has no string field 'text'")
            yield record["text"], size
            continue
        first = True
        for piece in split_lines(line):
            if keep_blank or piece.strip():
                yield piece, size if first else 0
            elif first:
                yield None, size
            first = False


def _chunks(docs: Iterator[tuple[str | None, int]], chunk_bytes: int) -> Iterator[tuple[list[str], int]]:
    batch: list[str] = []
    size = 0
    for doc, n in docs:
        size += n
        if doc is not None:
            batch.append(doc)
        if size >= chunk_bytes:
            yield batch, size
            batch, size = [], 0
    if batch or size:
        yield batch, size


# ---- encoding in worker processes ----------------------------------------------------------------
_TOKENIZERS: dict[str, ZhTokenizer] = {}


def _tokenizer(path: str) -> ZhTokenizer:
    """The process's tokenizer for `path` (forked workers inherit the parent's, others load it)."""
    tok = _TOKENIZERS.get(path)
    if tok is None:
        tok = _TOKENIZERS[path] = ZhTokenizer(path)
    return tok


def register_tokenizer(tokenizer: ZhTokenizer) -> str:
    _TOKENIZERS[str(tokenizer.path)] = tokenizer
    return str(tokenizer.path)


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

    tokenizer = _tokenizer(tokenizer_path)
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


def text_dataset(texts: list[str]):
    """An in-memory Dataset with one `text` column, built without datasets' per-row type inference."""
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    return Dataset(InMemoryTable(pa.table({"text": pa.array(texts, type=pa.string())})))


def _map(
    dataset, function, fn_kwargs: dict, workers: int, out_file: Path | None, fingerprint: str, columns, arrow=False
):
    import datasets
    from datasets import Features, Sequence, Value

    datasets.disable_progress_bars()  # ByteProgress shows MB/s over the whole corpus instead
    if arrow:
        dataset = dataset.with_format("arrow")
    return dataset.map(
        function,
        batched=True,
        batch_size=MAP_BATCH,
        num_proc=workers if workers > 1 and len(dataset) > 1 else None,
        fn_kwargs=fn_kwargs,
        remove_columns=dataset.column_names,
        features=Features({c: Sequence(Value("int32")) for c in columns}),
        cache_file_name=str(out_file) if out_file is not None else None,
        keep_in_memory=out_file is None,
        new_fingerprint=fingerprint,
        desc=None,
    )


def _copy_parts(mapped, folder: Path, parts: ArrowParts) -> None:
    """Register the Arrow files `map` wrote for one chunk (in shard order) as parts of `folder`."""
    for cache in mapped.cache_files:
        name = Path(cache["filename"]).name
        if Path(cache["filename"]).parent != folder:
            shutil.move(cache["filename"], folder / name)
        parts.names.append(name)
    parts.rows += len(mapped)


class ByteProgress:
    """A Rich bar over input bytes with MB/s and ETA (a no-op under --quiet or without a TTY)."""

    def __init__(self, description: str, total: int):
        from rich.progress import TransferSpeedColumn

        from zhllama.core import console

        self.progress = console.make_progress(TransferSpeedColumn())
        self.task = self.progress.add_task(description, total=total)

    def __enter__(self):
        self.progress.start()
        return self

    def advance(self, n: int) -> None:
        self.progress.update(self.task, advance=n)

    def __exit__(self, *exc):
        self.progress.stop()


def tokenize_files(store: Path, files: list[Path], keys: list[str], build) -> tuple[list[tuple[Path, object]], int]:
    """[(cache folder, dataset or None)] per file, tokenizing (`build(file, tmp, progress)`) only the
    files whose key is not cached yet, under one MB/s progress bar; and how many were tokenized."""
    todo = [f for f, k in zip(files, keys, strict=True) if not (store / k / PARTS_FILE).is_file()]
    stored = []
    with ByteProgress("tokenizing", sum(f.stat().st_size for f in todo)) as progress:
        for f, key in zip(files, keys, strict=True):
            dataset, _ = cached_parts(store / key, lambda tmp, f=f: build(f, tmp, progress))
            stored.append((store / key, dataset))
    return stored, len(todo)


# ---- pre-training --------------------------------------------------------------------------------
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
    for i, (texts, size) in enumerate(_chunks(iter_documents(path, keep_blank), CHUNK_BYTES)):
        if texts:
            chunk = text_dataset(texts)
            mapped = _map(
                chunk,
                _encode_text_batch,
                {"tokenizer_path": tok_path, "eos": eos, "legacy": legacy},
                workers,
                folder / f"docs-{i:05d}.arrow",
                cache_key(folder.name, i)[:20],
                ("input_ids",),
                arrow=True,
            )
            _copy_parts(mapped, folder, parts)
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


def read_id_batches(folder: Path, rows: int | Iterable[int] | None = None, column: str = "input_ids"):
    """(flat ids, row lengths) numpy pairs of a part store, read with plain file reads (no mmap: the
    pages of a corpus-sized cache never count toward this process's RSS); `rows`: exactly that many
    rows per batch (the last one shorter), or the row count of each batch in turn."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    def raw():
        for name in json.loads((folder / PARTS_FILE).read_text())["parts"]:
            with pa.OSFile(str(folder / name)) as f:
                for batch in pa.ipc.open_stream(f):
                    col = batch.column(column)
                    yield flat_ids(col), np.asarray(pc.list_value_length(col).to_numpy(), dtype=np.int64)

    if rows is None:
        yield from raw()
        return
    sizes = repeat(rows) if isinstance(rows, int) else iter(rows)
    want = next(sizes, None)
    flats, lens, held = [], [], 0
    for flat, lengths in raw():
        flats.append(flat)
        lens.append(lengths)
        held += len(lengths)
        while want is not None and held >= want:
            flat, lengths = np.concatenate(flats), np.concatenate(lens)
            cut = int(lengths[:want].sum())
            yield flat[:cut], lengths[:want]
            flats, lens, held = [flat[cut:]], [lengths[want:]], held - want
            want = next(sizes, None)
    if held:
        yield np.concatenate(flats), np.concatenate(lens)


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
        if pending_rows * block_size >= CHUNK_BYTES // 4:
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
    cache = Path(cache_dir or default_cache_dir())
    tok_hash = tokenizer_hash(tokenizer)
    keys = [pretrain_file_key(tok_hash, f, separator, grouping) for f in files]
    stored, tokenized = tokenize_files(
        cache / "docs",
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
        cache / "blocks" / block_key, lambda tmp: write_blocks(doc_folders, block_size, grouping, tmp, workers)
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

    tokenizer = _tokenizer(tokenizer_path)

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


# ---- SFT -----------------------------------------------------------------------------------------
ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def iter_json_array(path: Path, read_size: int = 1 << 20) -> Iterator[tuple[int, object, int]]:
    """(index, record, bytes read) of a JSON array file, decoded one element at a time."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    buf, pos, eof, consumed_lines = "", 0, False, 0

    def more(fh) -> bool:
        nonlocal buf, pos, eof, consumed_lines
        if eof:
            return False
        raw = fh.read(read_size)
        try:
            text = utf8.decode(raw, final=not raw)
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text") from exc
        consumed_lines += buf.count("\n", 0, pos)
        buf, pos = buf[pos:] + text, 0
        eof = not raw
        return True

    def malformed(msg: str):
        line = consumed_lines + buf.count("\n", 0, pos) + 1
        return UserError(f"{path}: malformed JSON at line {line} ({msg})")

    def skip_ws(fh) -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not more(fh):
                return ""

    with open(path, "rb") as fh:
        first = skip_ws(fh)
        if first == "":
            raise malformed("Expecting value")
        if first != "[":
            try:  # a complete JSON value that is not an array, or not JSON at all
                while more(fh):
                    pass
                json.loads(buf[pos:])
            except json.JSONDecodeError as exc:
                raise malformed(exc.msg) from exc
            raise UserError(f"{path}: expected a JSON array of records")
        pos += 1
        index, last = 0, 0
        if skip_ws(fh) == "]":
            pos += 1
        else:
            while True:
                skip_ws(fh)
                while True:
                    try:
                        value, end = decoder.raw_decode(buf, pos)
                        if end == len(buf) and not eof and isinstance(value, (int, float)):
                            raise json.JSONDecodeError("number may continue", buf, end)
                        break
                    except json.JSONDecodeError as exc:
                        if not more(fh):
                            raise malformed(exc.msg) from exc
                pos = end
                done = fh.tell()
                yield index, value, done - last
                last = done
                index += 1
                sep = skip_ws(fh)
                if sep == ",":
                    pos += 1
                    continue
                if sep == "]":
                    pos += 1
                    break
                raise malformed("Expecting ',' delimiter" if sep else "Expecting ',' delimiter or ']'")
        if skip_ws(fh) != "":
            raise malformed("Extra data")


def iter_records(path: Path) -> Iterator[tuple[int, object, int]]:
    """(index, record, bytes) of an Alpaca JSON array or a JSONL file, streamed."""
    if path.suffix != ".jsonl":
        yield from iter_json_array(path)
        return
    index = 0
    for _, line, size in _utf8_lines(path):
        for piece in split_lines(line):  # a raw U+2028 inside a JSON string is not a line break
            if piece.strip():
                try:
                    yield index, json.loads(piece), size
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}: record {index}: malformed JSON ({exc.msg})") from exc
            else:
                yield index, None, size
            size = 0
            index += 1


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
            if not isinstance(turn, dict):
                raise UserError(f"{where}: turn {t} is not a JSON object")
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
    return encode_conversations(batch, _tokenizer(tokenizer_path), get_template(template), system, max_len)


def tokenize_record_file(
    path: Path, tokenizer: ZhTokenizer, template: Template, system, max_len: int, folder: Path, workers: int, progress
) -> list[str]:
    from datasets import Dataset

    kwargs = {"tokenizer_path": register_tokenizer(tokenizer), "template": template.name, "system": system}
    parts = ArrowParts(folder, ("input_ids", "labels"))
    for i, (rows, size) in enumerate(_chunks(iter_conversations(path, template, system), CHUNK_BYTES)):
        if rows:
            chunk = Dataset.from_dict({"roles": [r["roles"] for r in rows], "contents": [r["contents"] for r in rows]})
            mapped = _map(
                chunk,
                _encode_conversation_batch,
                {**kwargs, "max_len": max_len},
                workers,
                folder / f"examples-{i:05d}.arrow",
                cache_key(folder.name, i)[:20],
                ("input_ids", "labels"),
            )
            _copy_parts(mapped, folder, parts)
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

    cache = Path(cache_dir or default_cache_dir())
    tok_hash = tokenizer_hash(tokenizer)
    keys = [cache_key("sft", tok_hash, template.name, system, max_len, sha256_file(f)) for f in files]
    stored, tokenized = tokenize_files(
        cache / "sft",
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

    tokenizer, tpl = _tokenizer(tokenizer_path), get_template(template)
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
    cache = Path(cache_dir or default_cache_dir())
    key = cache_key("packed", dataset._fingerprint, max_len, tag)
    rows, _ = cached_parts(cache / "packed" / key, lambda tmp: pack_dataset(dataset, max_len, tmp))
    return rows


@contextmanager
def main_process_first(args):
    """Global rank 0 tokenizes first, then each node's local main, then every other rank (which
    then reads the cache). With a cache folder shared by all nodes only rank 0 tokenizes; with
    node-local caches one process per node does. No-op without TrainingArguments."""
    if args is None:
        yield
        return
    with (
        args.main_process_first(local=False, desc="tokenizing"),
        args.main_process_first(local=True, desc="tokenizing"),
    ):
        yield
