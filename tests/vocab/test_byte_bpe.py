"""Byte-level BPE vocabularies end to end on SmolLM2's real tokenizer and the shared Wikipedia corpus.

Independent references: the base `tokenizers.Tokenizer` (what the base gives), transformers'
`AutoTokenizer` on the merged folder (what users get), and the bytes of the text itself.
"""

from __future__ import annotations

import json
import random

import pytest

from tests.vocab.conftest import ENGLISH

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def tokenizers_pair(smollm2_tokenizer, merged_smollm2):
    from tokenizers import Tokenizer

    return (
        Tokenizer.from_file(str(smollm2_tokenizer / "tokenizer.json")),
        Tokenizer.from_file(str(merged_smollm2 / "tokenizer.json")),
    )


@pytest.fixture(scope="module")
def merged_hf(merged_smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(merged_smollm2))


def _ids(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def test_trained_vocabulary_has_8000_tokens_and_the_base_pre_tokenizer(zh_bpe, smollm2_tokenizer):
    data = json.loads(zh_bpe.read_text(encoding="utf-8"))
    base = json.loads((smollm2_tokenizer / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["model"]["type"] == "BPE" and len(data["model"]["vocab"]) == 8000
    assert len(data["model"]["merges"]) == 8000 - 256  # every token past the byte alphabet is one merge
    assert data["pre_tokenizer"] == base["pre_tokenizer"] and data["normalizer"] == base["normalizer"]
    from zhllama.core.bpe import token_bytes

    assert max(len(token_bytes(t)) for t in data["model"]["vocab"]) <= 24  # --max-token-length default


def test_base_ids_merges_and_special_tokens_never_move(smollm2_tokenizer, merged_smollm2):
    base = json.loads((smollm2_tokenizer / "tokenizer.json").read_text(encoding="utf-8"))
    merged = json.loads((merged_smollm2 / "tokenizer.json").read_text(encoding="utf-8"))
    bv, mv = base["model"]["vocab"], merged["model"]["vocab"]
    assert all(mv[t] == i for t, i in bv.items())
    n = len(base["model"]["merges"])
    assert merged["model"]["merges"][:n] == base["model"]["merges"]
    assert merged["added_tokens"][: len(base["added_tokens"])] == base["added_tokens"]
    for key in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        assert merged[key] == base[key], key
    new = {t: i for t, i in mv.items() if t not in bv}
    assert sorted(new.values()) == list(range(len(bv), len(bv) + len(new)))  # appended, contiguous
    from zhllama.core.bpe import token_bytes

    assert all(any(b >= 0x80 for b in token_bytes(t)) for t in new)  # only non-ASCII tokens are added
    assert (merged_smollm2 / "chat_template.jinja").read_bytes() == (
        smollm2_tokenizer / "chat_template.jinja"
    ).read_bytes()


def test_every_added_merge_joins_tokens_that_exist(merged_smollm2):
    merged = json.loads((merged_smollm2 / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = merged["model"]["vocab"]
    for merge in merged["model"]["merges"]:
        a, b = merge.split(" ") if isinstance(merge, str) else merge
        assert a in vocab and b in vocab and a + b in vocab


def test_ascii_text_encodes_to_the_base_ids(tokenizers_pair, corpus_lines):
    base, merged = tokenizers_pair
    rng = random.Random(0)
    texts = list(ENGLISH)
    texts += ["".join(rng.choice([chr(c) for c in range(128)]) for _ in range(200)) for _ in range(50)]
    texts += ["".join(c for c in line if ord(c) < 128) for line in corpus_lines[:200]]  # the ASCII of the corpus
    for text in texts:
        assert _ids(merged, text) == _ids(base, text), repr(text)
        assert merged.encode(text).ids == base.encode(text).ids  # post-processor (BOS handling) kept


def test_special_tokens_keep_ids_and_behaviour(tokenizers_pair, merged_hf, smollm2_tokenizer):
    from transformers import AutoTokenizer

    base, merged = tokenizers_pair
    chat = "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    assert _ids(merged, chat) == _ids(base, chat)
    base_hf = AutoTokenizer.from_pretrained(str(smollm2_tokenizer))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        assert getattr(merged_hf, name) == getattr(base_hf, name), name
    messages = [{"role": "user", "content": "Hello"}]
    kw = dict(add_generation_prompt=True, tokenize=True, return_dict=False)
    assert merged_hf.apply_chat_template(messages, **kw) == base_hf.apply_chat_template(messages, **kw)


def test_merged_tokens_only_join_base_tokens(tokenizers_pair, corpus_lines):
    """Base merges rank first, so the merged split coarsens the base's: every merged token boundary
    is a base token boundary (in bytes)."""
    base, merged = tokenizers_pair

    from zhllama.core.bpe import token_bytes

    def cuts(enc):
        ends, pos = set(), 0
        for token in enc.tokens:
            pos += len(token_bytes(token))
            ends.add(pos)
        return ends

    for line in corpus_lines[:100]:
        b, m = base.encode(line, add_special_tokens=False), merged.encode(line, add_special_tokens=False)
        assert len(m.ids) <= len(b.ids)
        assert cuts(m) <= cuts(b)


@pytest.mark.slow
def test_at_least_30_percent_fewer_tokens_on_the_corpus(run_cli, smollm2_tokenizer, merged_smollm2, corpus_file):
    code, out, err = run_cli(
        "--json", "vocab", "stats", "-t", smollm2_tokenizer, "-t", merged_smollm2, "--text", corpus_file
    )
    assert code == 0, err
    base, merged = json.loads(out)["tokenizers"]
    assert merged["relative_length"] <= 0.70, merged
    assert merged["tokens_per_char"] < base["tokens_per_char"]
    assert merged["byte_fallback_rate"] < base["byte_fallback_rate"]  # fewer pieces of characters


@pytest.mark.slow
def test_every_corpus_line_round_trips(merged_hf, tokenizers_pair, corpus_lines):
    _, merged = tokenizers_pair
    for line in corpus_lines:
        ids = merged_hf.encode(line, add_special_tokens=False)
        assert merged_hf.decode(ids) == line
        assert ids == _ids(merged, line)


def test_arbitrary_text_round_trips_and_invalid_text_fails_as_in_the_base(tokenizers_pair, merged_hf):
    base, merged = tokenizers_pair
    rng = random.Random(1)
    ranges = [(0x20, 0x7F), (0x4E00, 0x9FFF), (0x3040, 0x30FF), (0xAC00, 0xD7A3), (0x0400, 0x04FF), (0x1F300, 0x1F6FF)]
    for _ in range(200):
        text = "".join(chr(rng.randint(*rng.choice(ranges))) for _ in range(rng.randint(1, 40)))
        ids = merged_hf.encode(text, add_special_tokens=False)
        assert merged_hf.decode(ids) == text
    for text in ("🦙🚀 👨‍👩‍👧 مرحبا שלום नमस्ते ไทย 中文 한국어", "\u200d\ufeff\x00\x7f"):
        assert merged_hf.decode(merged_hf.encode(text, add_special_tokens=False)) == text
    lone = "中\ud800文"  # a lone surrogate is not UTF-8: both refuse it alike
    outcomes = []
    for tok in (base, merged):
        try:
            tok.encode(lone)
            outcomes.append("ok")
        except Exception as exc:  # noqa: BLE001 - comparing the two libraries' behaviour
            outcomes.append(type(exc).__name__)
    assert outcomes[0] == outcomes[1]


@pytest.mark.slow
def test_merge_cli_report_json_and_padding(run_cli, tmp_path, smollm2_tokenizer, zh_bpe):
    from transformers import AutoTokenizer

    out = tmp_path / "m"
    code, stdout, err = run_cli(
        "--json",
        "vocab",
        "merge",
        "--base",
        smollm2_tokenizer,
        "--add",
        zh_bpe,
        "--pad-to-multiple-of",
        "64",
        "-o",
        out,
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["kind"] == "byte-bpe" and report["base_size"] == 49152
    assert report["final_size"] % 64 == 0
    assert report["final_size"] == report["base_size"] + report["added"] + report["intermediate"] + report["padding"]
    assert report["llama_cpp_pre"] == "smollm"
    assert report["added"] > 5000
    assert json.loads((out / "merge_report.json").read_text()) == report
    hf = AutoTokenizer.from_pretrained(str(out))
    assert len(hf) == report["final_size"]
    pads = [t for t in hf.added_tokens_decoder.values() if t.content.startswith("<|zh_reserved_")]
    assert len(pads) == report["padding"] and all(t.special for t in pads)
    code, stdout, _ = run_cli("vocab", "merge", "--base", smollm2_tokenizer, "--add", zh_bpe, "-o", tmp_path / "t")
    assert code == 0 and "new vocab size" in stdout and "skipped ASCII" in stdout


@pytest.mark.slow
def test_sentencepiece_and_word_list_additions(tmp_path, smollm2_tokenizer, corpus_lines):
    from tokenizers import Tokenizer

    from zhllama.core import bpe

    words = tmp_path / "words.txt"
    words.write_text("北京大学\n人工智能\nqzxvkjw\n\n上海 交通\n", encoding="utf-8")
    sp_model = shared_sp()
    report = bpe.merge(smollm2_tokenizer, [words, sp_model], tmp_path / "m")
    per = {p["kind"]: p for p in report.per_model}
    assert per["words"]["added"] == 2 and per["words"]["ascii"] == 1 and per["words"]["unreachable"] == 1
    assert per["sentencepiece"]["added"] > 10000
    base = Tokenizer.from_file(str(smollm2_tokenizer / "tokenizer.json"))
    merged = Tokenizer.from_file(str(tmp_path / "m" / "tokenizer.json"))
    for word in ("北京大学", "人工智能"):
        assert len(_ids(merged, word)) == 1 and len(_ids(base, word)) > 1
    for text in ENGLISH:
        assert _ids(merged, text) == _ids(base, text)
    for line in corpus_lines[:200]:
        assert merged.decode(_ids(merged, line)) == line


def shared_sp():
    from tests.conftest import shared

    return shared("tokenizers", "chinese_sp.model")
