r"""Training data built with `datasets` end to end: the corpus never sits in Python lists.

Four modules, one job each: `readers` (data files, text documents and record files, read and
validated in one streaming pass), `cache` (the Arrow part store keyed by content, tokenisation in
worker processes, progress), `pretrain` (documents -> blocks), `sft` (records -> examples, packing).

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

from zhllama.core.training.data.cache import default_workers, main_process_first
from zhllama.core.training.data.pretrain import (
    DOC_SEPARATORS,
    GROUPINGS,
    cla2_batch_rows,
    encode_documents,
    pretrain_dataset,
    pretrain_stream,
    tokenize_text_file,
)
from zhllama.core.training.data.readers import (
    RECORD_SUFFIXES,
    TEXT_SUFFIXES,
    expand_files,
    iter_documents,
    iter_json_array,
    iter_records,
    record_messages,
    split_lines,
)
from zhllama.core.training.data.sft import encode_conversations, packed, sft_dataset, sft_stream

__all__ = [
    "DOC_SEPARATORS",
    "GROUPINGS",
    "RECORD_SUFFIXES",
    "TEXT_SUFFIXES",
    "cla2_batch_rows",
    "default_workers",
    "encode_conversations",
    "encode_documents",
    "expand_files",
    "iter_documents",
    "iter_json_array",
    "iter_records",
    "main_process_first",
    "packed",
    "pretrain_dataset",
    "pretrain_stream",
    "record_messages",
    "sft_dataset",
    "sft_stream",
    "split_lines",
    "tokenize_text_file",
]
