"""The datasets-based data pipeline: identical to the previous list implementation, to CLA2's
tokenize + group_texts (run by `datasets` itself, over N worker processes), lines split as
`datasets`' text loader, per-file cache reuse, streaming, incremental JSON."""

from __future__ import annotations

import io
import json
import re
from itertools import chain

import pytest

from zhllama.core.assets import data_path
from zhllama.core.errors import UserError
from zhllama.core.templates import encode, get_template
from zhllama.core.tokenizer import ZhTokenizer
from zhllama.core.training import data


def text_loader_lines(path):
    r"""Lines as `datasets`' `text` loader reads them: the file opened in text mode (universal
    newlines turn '\r\n' and '\r' into '\n'), `StringIO(...).readlines()` (splits on '\n' only),
    each line's '\n' stripped."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in io.StringIO(f.read()).readlines()]


# ---- the previous implementation (zhllama before the datasets pipeline), kept as the reference ----
def legacy_read_documents(files):
    docs = []
    for f in files:
        lines = text_loader_lines(f)
        if f.suffix == ".jsonl":
            docs += [json.loads(line)["text"] for line in lines if line.strip()]
        else:
            docs += [line for line in lines if line.strip()]
    return docs


def legacy_pretrain_blocks(tokenizer, docs, block_size):
    stream = []
    for doc in docs:
        stream += tokenizer.encode(doc, bos=True, eos=True)
    return [stream[i : i + block_size] for i in range(0, len(stream) - block_size + 1, block_size)]


def legacy_sft_examples(tokenizer, template, files, max_length):
    records = []
    for f in files:
        text = f.read_text(encoding="utf-8")
        if f.suffix == ".jsonl":
            records += [(str(f), n, json.loads(line)) for n, line in enumerate(text.splitlines()) if line.strip()]
        else:
            records += [(str(f), n, r) for n, r in enumerate(json.loads(text))]
    ids_all, labels_all = [], []
    for source, index, record in records:
        ids, labels = encode(tokenizer, template.segments(data.record_messages(source, index, record)), max_length)
        if all(label == -100 for label in labels):
            continue
        ids_all.append(ids)
        labels_all.append(labels)
    return {"input_ids": ids_all, "labels": labels_all}


# ---- an independent reimplementation of CLA2's run_clm_pt_with_peft.py data step ----------------
def cla2_blocks(sp_tokenizer: ZhTokenizer, files, block_size, add_eos):
    """datasets' `text` loader (every line, blank ones too), LlamaTokenizer(text) = [BOS] + sp ids
    (+ [EOS] since `tokenizer.add_eos_token = True`), map(batched=True) batches of 1000 lines,
    group_texts per batch: full blocks, or the whole batch when it is shorter than one block."""
    sp = sp_tokenizer.sp
    out = []
    for f in files:
        lines = text_loader_lines(f)
        for start in range(0, len(lines), 1000):
            batch = [
                [sp.bos_id(), *sp.encode(t), *([sp.eos_id()] if add_eos else [])] for t in lines[start : start + 1000]
            ]
            concatenated = list(chain(*batch))
            total = len(concatenated)
            if total >= block_size:
                total = (total // block_size) * block_size
            out += [concatenated[i : i + block_size] for i in range(0, total, block_size)]
    return out


@pytest.fixture
def tok(merged_tokenizer):
    return ZhTokenizer(merged_tokenizer)


@pytest.fixture
def corpus(tmp_path):
    """Three text files: the corpus, one with blank lines / CRLF / U+2028 / spaces, and JSONL."""
    zh = data_path("corpus_zh.txt")
    odd = tmp_path / "odd.txt"
    odd.write_bytes("第一行\r\n\r\n  \n第二段\u2028同一行的下半\n中文 English 混合\r最后一行没有换行".encode())
    jsonl = tmp_path / "docs.jsonl"
    lines = data_path("corpus_en.txt").read_text(encoding="utf-8").splitlines()[:40]
    jsonl.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False) for t in lines) + "\n\n", encoding="utf-8")
    return [zh, odd, jsonl]


def rows(dataset, column="input_ids"):
    return [list(r) for r in dataset[column]]


@pytest.mark.parametrize("block_size", [32, 7])
def test_pretrain_blocks_identical_to_previous_implementation(tmp_path, tok, corpus, block_size):
    blocks, stats = data.pretrain_dataset(tok, corpus, block_size, tmp_path / "cache", workers=1)
    assert rows(blocks) == legacy_pretrain_blocks(tok, legacy_read_documents(corpus), block_size)
    assert stats == {"tokenized_files": 3, "reused_files": 0}


def test_workers_and_chunks_do_not_change_blocks(tmp_path, tok, corpus, monkeypatch):
    one, _ = data.pretrain_dataset(tok, corpus, 16, tmp_path / "c1", workers=1)
    monkeypatch.setattr(data.cache, "CHUNK_BYTES", 3000)  # many chunks per file, each mapped by 2 processes
    two, _ = data.pretrain_dataset(tok, corpus, 16, tmp_path / "c2", workers=2)
    assert rows(one) == rows(two)
    assert len(list((tmp_path / "c2" / "docs").glob("*/docs-*_of_00002.arrow"))) > 2  # really 2 processes


def test_adding_a_file_tokenizes_only_that_file(tmp_path, tok, corpus, monkeypatch):
    cache = tmp_path / "cache"
    calls = []
    real = data.tokenize_text_file
    monkeypatch.setattr(
        data.pretrain, "tokenize_text_file", lambda path, *a, **k: calls.append(path.name) or real(path, *a, **k)
    )
    data.pretrain_dataset(tok, corpus[:2], 32, cache)
    assert calls == [corpus[0].name, corpus[1].name]
    blocks, stats = data.pretrain_dataset(tok, corpus, 32, cache)
    assert calls[2:] == [corpus[2].name] and stats == {"tokenized_files": 1, "reused_files": 2}
    assert rows(blocks) == legacy_pretrain_blocks(tok, legacy_read_documents(corpus), 32)
    # a changed file (same name) gets a new key; other settings get their own keys
    corpus[1].write_text("改过的内容\n", encoding="utf-8")
    _, stats = data.pretrain_dataset(tok, corpus, 32, cache)
    assert stats == {"tokenized_files": 1, "reused_files": 2}
    _, stats = data.pretrain_dataset(tok, corpus, 32, cache, separator="none")
    assert stats["tokenized_files"] == 3
    _, stats = data.pretrain_dataset(tok, corpus, 64, cache)
    assert stats["tokenized_files"] == 0  # the block size only re-groups


@pytest.mark.parametrize("separator", ["eos", "none"])
def test_cla2_grouping_equals_reference_reimplementation(tmp_path, tok, separator):
    lines = data_path("corpus_zh.txt").read_text(encoding="utf-8").splitlines()
    big = tmp_path / "big.txt"  # 2400 lines with blank ones: batches of 1000 and a short tail batch
    big.write_text("\n".join(lines[i % len(lines)] if i % 7 else "" for i in range(2400)) + "\n", encoding="utf-8")
    small = tmp_path / "small.txt"  # one batch shorter than a block: CLA2 keeps it as a short block
    small.write_text("短\n", encoding="utf-8")
    files = [big, small]
    got, _ = data.pretrain_dataset(tok, files, 256, tmp_path / "cache", separator, "cla2", workers=1)
    expected = cla2_blocks(tok, files, 256, add_eos=separator == "eos")
    assert rows(got) == expected
    assert len(expected[-1]) < 256 and (separator == "eos") == (expected[-1][-1] == tok.eos_id)


# ---- CLA2 run by `datasets` itself: load_dataset("text") + map(tokenize) + map(group_texts, num_proc=N) ----
def reference_llama_ids(sp, text: str) -> list[int]:
    """transformers 4.x LlamaTokenizer(legacy=True)(text) with add_eos_token: BOS, the text cut at
    '<s>' / '</s>' / '<unk>' (each its id, spaces left in the neighbouring chunks), every other chunk
    encoded by sentencepiece on its own, EOS."""
    ids = [sp.bos_id()]
    for chunk in re.split(r"(<s>|</s>|<unk>)", text):
        if chunk in ("<s>", "</s>", "<unk>"):
            ids.append(sp.piece_to_id(chunk))
        elif chunk:
            ids += sp.encode(chunk)
    return ids + [sp.eos_id()]


def cla2_reference_with_datasets(sp, path, block_size: int, num_proc: int, cache):
    """`run_clm_pt_with_peft.py`'s data step, run by `datasets` as the script runs it."""
    from datasets import load_dataset

    def tokenize_function(examples):
        return {"input_ids": [reference_llama_ids(sp, t) for t in examples["text"]]}

    # the reference's group_texts, as written in scripts/training/run_clm_pt_with_peft.py
    def group_texts(examples):
        # Concatenate all texts.
        concatenated_examples = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated_examples[list(examples.keys())[0]])
        # We drop the small remainder, we could add padding if the model supported it instead of this drop, you can
        # customize this part to your needs.
        if total_length >= block_size:
            total_length = (total_length // block_size) * block_size
        # Split by chunks of max_len.
        result = {
            k: [t[i : i + block_size] for i in range(0, total_length, block_size)]
            for k, t in concatenated_examples.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    raw = load_dataset("text", data_files=str(path), cache_dir=str(cache), keep_in_memory=False)
    tokenized = raw.map(tokenize_function, batched=True, num_proc=num_proc, remove_columns="text")
    grouped = tokenized.map(group_texts, batched=True, num_proc=num_proc)
    return [list(r) for r in grouped["train"]["input_ids"]]


@pytest.fixture
def odd_corpus(tmp_path):
    """2600 lines (blank ones, '</s>' inside lines) with U+2028 / \\x85 / \\x0c inside lines and
    '\\r\\n' / '\\r' line ends: three shards of 867 lines with 3 workers, 8 of 325 with 8."""
    lines = data_path("corpus_zh.txt").read_text(encoding="utf-8").splitlines()
    out = []
    for i in range(2600):
        line = lines[i % len(lines)] if i % 7 else ""
        if i % 11 == 3:
            line = f'{line[:20]} if x == "</s>": <unk> {line[20:40]}'
        if i % 13 == 5:
            line = line[:10] + "\u2028" + line[10:30] + "\x85" + line[30:40] + "\x0c" + line[40:]
        out.append(line + ("\r\n" if i % 17 == 1 else "\r" if i % 19 == 2 else "\n"))
    path = tmp_path / "odd_big.txt"
    path.write_bytes("".join(out).encode("utf-8"))
    return path


@pytest.mark.parametrize("workers", [1, 3, pytest.param(8, marks=pytest.mark.slow)])
def test_cla2_grouping_equals_datasets_map_with_num_proc(tmp_path, tok, odd_corpus, workers):
    expected = cla2_reference_with_datasets(tok.sp, odd_corpus, 128, workers, tmp_path / "hf")
    got, _ = data.pretrain_dataset(tok, [odd_corpus], 128, tmp_path / "c", "eos", "cla2", workers=workers)
    assert rows(got) == expected
    if workers > 1:  # each worker's shard is batched from its own start: other blocks than one process
        one, _ = data.pretrain_dataset(tok, [odd_corpus], 128, tmp_path / "c", "eos", "cla2", workers=1)
        assert rows(got) != rows(one) and rows(got)[:5] == rows(one)[:5]
    flat = list(chain(*expected))
    assert flat.count(tok.eos_id) > flat.count(tok.bos_id)  # '</s>' inside lines became EOS tokens


def test_cla2_batch_rows_are_datasets_contiguous_shards():
    from datasets import Dataset

    for rows_, workers in ((2600, 3), (2600, 8), (5, 8), (1000, 1), (2001, 2)):
        table = Dataset.from_dict({"i": list(range(rows_))})
        seen = table.map(lambda b: {"n": [len(b["i"])] * len(b["i"])}, batched=True, num_proc=min(workers, rows_))
        sizes, i = [], 0
        while i < rows_:
            sizes.append(seen[i]["n"])
            i += seen[i]["n"]
        assert data.cla2_batch_rows(rows_, workers) == sizes


def test_lines_split_as_datasets_text_loader(tmp_path):
    from datasets import load_dataset

    f = tmp_path / "lines.txt"
    text = "a\u2028b\x85c\x0cd\x0be\x1cf\u2029g\rh\r\ni\n\n  \n\r\rj\r\n\r\nk"
    f.write_bytes(text.encode("utf-8"))
    loaded = load_dataset("text", data_files=str(f), cache_dir=str(tmp_path / "hf"))["train"]["text"]
    assert loaded == ["a\u2028b\x85c\x0cd\x0be\x1cf\u2029g", "h", "i", "", "  ", "", "", "j", "", "k"]
    assert [d for d, _ in data.iter_documents(f, keep_blank=True)] == loaded
    assert [d for d, _ in data.iter_documents(f) if d is not None] == [t for t in loaded if t.strip()]
    assert sum(n for _, n in data.iter_documents(f, keep_blank=True)) == f.stat().st_size
    assert [data.split_lines(x) for x in ("a\r\n", "a\r", "\r\n", "a\u2028b\n")] == [["a"], ["a"], [""], ["a\u2028b"]]
    # a JSONL record whose string holds a raw U+2028 / \\x85 is one record, not two broken lines
    records = tmp_path / "r.jsonl"
    records.write_text(json.dumps({"instruction": "问\u2028题\x85", "output": "答"}, ensure_ascii=False) + "\r\n")
    assert [r for _, r, _ in data.iter_records(records)] == [{"instruction": "问\u2028题\x85", "output": "答"}]


def test_doc_separator_none_has_no_eos(tmp_path, tok):
    blocks, _ = data.pretrain_dataset(tok, [data_path("corpus_zh.txt")], 32, tmp_path / "c", separator="none")
    flat = list(chain(*rows(blocks)))
    assert tok.eos_id not in flat and flat.count(tok.bos_id) > 100


def test_streaming_yields_the_cached_blocks_per_file(tmp_path, tok, corpus):
    stream = data.pretrain_stream(tok, corpus, 32)
    assert stream.n_shards == 3  # one shard per file: accelerate gives each rank its own files
    # each shard (file) is its own token stream: its remainder is dropped at the end of the file
    per_file = [rows(data.pretrain_dataset(tok, [f], 32, tmp_path / "c")[0]) for f in corpus]
    assert [r["input_ids"] for r in stream] == list(chain(*per_file))
    cla2 = data.pretrain_stream(tok, corpus, 32, grouping="cla2")
    assert [r["input_ids"] for r in cla2] == rows(
        data.pretrain_dataset(tok, corpus, 32, tmp_path / "c", grouping="cla2")[0]
    )


def test_sft_examples_identical_to_previous_implementation(tmp_path, tok, monkeypatch):
    template = get_template("llama2-zh")
    files = [data_path("instructions.json"), data_path("conversations.jsonl")]
    expected = legacy_sft_examples(tok, template, files, 96)
    got, stats = data.sft_dataset(tok, template, files, 96, None, tmp_path / "c1", workers=1)
    assert rows(got) == expected["input_ids"] and rows(got, "labels") == expected["labels"]
    monkeypatch.setattr(data.cache, "CHUNK_BYTES", 2000)
    two, _ = data.sft_dataset(tok, template, files, 96, None, tmp_path / "c2", workers=2)
    assert rows(two) == expected["input_ids"] and rows(two, "labels") == expected["labels"]
    again, stats = data.sft_dataset(tok, template, files, 96, None, tmp_path / "c1", workers=1)
    assert stats == {"tokenized_files": 0, "reused_files": 2}


def test_packed_dataset_equals_pack(tmp_path, tok):
    from zhllama.core.training.collate import pack

    template = get_template("llama2-zh")
    files = [data_path("instructions.json")]
    examples, _ = data.sft_dataset(tok, template, files, 128, None, tmp_path / "c")
    expected = pack({"input_ids": rows(examples), "labels": rows(examples, "labels")}, 300)
    got = data.packed(examples, 300, tmp_path / "c", "train")
    for key in ("input_ids", "labels", "position_ids"):
        assert rows(got, key) == expected[key]


@pytest.mark.parametrize("read_size", [1, 7, 1 << 20])
def test_json_array_read_incrementally(tmp_path, read_size):
    records = [
        {"instruction": "问题" * i, "input": "", "output": str(i), "n": 12345 * i, "x": [1.5, True, None]}
        for i in range(30)
    ]
    f = tmp_path / "a.json"
    f.write_text(json.dumps(records, ensure_ascii=False, indent=1), encoding="utf-8")
    got = [(i, r) for i, r, _ in data.iter_json_array(f, read_size=read_size)]
    assert got == list(enumerate(records))
    assert sum(n for _, _, n in data.iter_json_array(f, read_size=read_size)) <= f.stat().st_size


@pytest.mark.parametrize(
    "content",
    ["", "[1, 2", '[{"a": 1}\n\n {"b": 2}]', "[1] 2", "[1, 2, 3 4]", "[1,\n 22 3]", '[{"a": 1},\n {"b": 2,, "c": 3}]'],
)
@pytest.mark.parametrize("read_size", [3, 1 << 20])
def test_json_array_errors_name_the_place_json_names(tmp_path, content, read_size):
    """Read in 3-byte pieces or at once, the streaming parser reports the line and column that
    `json.loads` reports for the whole text, in `paths.read_json`'s one wording."""
    f = tmp_path / "bad.json"
    f.write_text(content, encoding="utf-8")
    with pytest.raises(json.JSONDecodeError) as reference:
        json.loads(content)
    e = reference.value
    with pytest.raises(UserError) as got:
        list(data.iter_json_array(f, read_size=read_size))
    assert str(got.value) == f"{f}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})"


def test_json_array_of_something_else(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text('{"a": 1}', encoding="utf-8")
    with pytest.raises(UserError, match=r"bad\.json: expected a JSON array of records$"):
        list(data.iter_json_array(f, read_size=3))


def test_non_utf8_and_json_inputs_are_user_errors(tmp_path, tok):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("好\n".encode() + b"\xff\xfe\n")
    with pytest.raises(UserError, match=r"bad.txt:2: not UTF-8"):
        data.pretrain_dataset(tok, [bad], 8, tmp_path / "c")
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("一段文字\n", encoding="utf-8")
    (folder / "records.json").write_text('[{"instruction": "x"}]', encoding="utf-8")
    assert data.expand_files([folder], data.TEXT_SUFFIXES) == [folder / "a.txt"]
    from zhllama.core.training.tasks import PRETRAIN_REFUSED

    with pytest.raises(UserError, match="records.json: pretrain reads plain text"):
        data.expand_files([folder / "records.json"], data.TEXT_SUFFIXES, refuse=PRETRAIN_REFUSED)


def test_conversation_turn_not_an_object(tmp_path, tok):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"conversations": ["hi", {"from": "gpt", "value": "x"}]}) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"c.jsonl: record 0: turn 0 is not a JSON object"):
        data.sft_dataset(tok, get_template("llama2-zh"), [f], 64, None, tmp_path / "c")
