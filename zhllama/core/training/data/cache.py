"""The Arrow part store: datasets cached under content keys (tokenizer files, settings, file sha256),
written as ordered Arrow files into a temp sibling and renamed; tokenisation by batched `Dataset.map`
over worker processes; the MB/s progress bar over input bytes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path

from zhllama.core.paths import sha256_file
from zhllama.core.tokenizer import TOKENIZER_FILES, ZhTokenizer

CHUNK_BYTES = 16 << 20  # text read (and tokenised by one `map`) at a time
MAP_BATCH = 1000  # rows per `map` batch (also CLA2's group_texts batch)
FORMAT_VERSION = 3  # part of every cache key: bump when the cached layout or semantics change
# 3: lines split as datasets' text loader (not str.splitlines); cla2 grouping reads special-token strings


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


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


_TOKENIZERS: dict[str, ZhTokenizer] = {}


def worker_tokenizer(path: str) -> ZhTokenizer:
    """The process's tokenizer for `path` (forked workers inherit the parent's, others load it)."""
    tok = _TOKENIZERS.get(path)
    if tok is None:
        tok = _TOKENIZERS[path] = ZhTokenizer(path)
    return tok


def register_tokenizer(tokenizer: ZhTokenizer) -> str:
    _TOKENIZERS[str(tokenizer.path)] = tokenizer
    return str(tokenizer.path)


def text_dataset(texts: list[str]):
    """An in-memory Dataset with one `text` column, built without datasets' per-row type inference."""
    import pyarrow as pa
    from datasets import Dataset
    from datasets.table import InMemoryTable

    return Dataset(InMemoryTable(pa.table({"text": pa.array(texts, type=pa.string())})))


def map_batches(
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


def copy_parts(mapped, folder: Path, parts: ArrowParts) -> None:
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
