"""`ZhTokenizer(..., legacy=True)`: text and ids as the reference scripts' tokenizer reads and writes them.

The reference is transformers 4.x's slow `LlamaTokenizer.from_pretrained(dir, legacy=True)` (what
Chinese-LLaMA-Alpaca-2's scripts ran, v4.35). Its rules, written out here from
`tokenization_utils.py` (`PreTrainedTokenizer.tokenize`, `_decode`) and
`models/llama/tokenization_llama.py` (`_tokenize`, `convert_tokens_to_string`) of v4.35:

- encode: a trie of the added tokens (BOS, EOS, UNK and the special_tokens_map's PAD) cuts the
  text at each of their strings; those AddedTokens neither lstrip nor rstrip, so the spaces next to
  them stay in the neighbouring chunks; each other non-empty chunk is
  `sp_model.encode(chunk, out_type=str)` (with legacy=True: no prefix handling, so every chunk gets
  its own dummy '▁'), each piece then `piece_to_id`; BOS in front (`add_bos_token`).
- decode(skip_special_tokens=True): special ids are dropped; `convert_tokens_to_string` cuts one
  '▁' off the first token and hands the tokens to `sp_model.decode`.

The default (`legacy=False`) reads special-token strings as plain text.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import shared
from zhllama.core.tokenizer import ZhTokenizer, reference_decode, reference_encode

TEXTS = [
    "Hello <s>.",
    "a</s>b",
    " x <unk> y ",
    "中文<pad>结束",
    "<<s>>",
    "</s></s>",
    "  <s>  x  ",
    'if tok == "</s>":\n    break',
    "<s",
    "</s >",
    "<unk><s></s><pad>",
    "",
    "plain text without markers",
    "人工智能是计算机科学的一个分支。",
]


def reference_tokenize(sp, added: dict[str, int], text: str) -> list[int]:
    """The v4.35 slow tokenizer, step for step: scan left to right; where an added token's string
    starts (the longest one if several), close the chunk before it; chunks -> sentencepiece pieces."""
    chunks: list[str] = []
    start = i = 0
    while i < len(text):
        found = max((t for t in added if text.startswith(t, i)), key=len, default=None)
        if found is None:
            i += 1
            continue
        chunks += [text[start:i], found]
        i = start = i + len(found)
    chunks.append(text[start:])
    ids: list[int] = []
    for chunk in chunks:
        if chunk in added:
            ids.append(added[chunk])
        elif chunk:  # fully empty chunks are skipped
            ids += [sp.piece_to_id(piece) for piece in sp.encode(chunk, out_type=str)]
    return ids


def reference_detokenize(sp, special_ids: set[int], ids: list[int]) -> str:
    """v4.35 `decode(ids, skip_special_tokens=True)` for a tokenizer without non-special added tokens."""
    tokens = [sp.id_to_piece(i) for i in ids if i not in special_ids]
    if not tokens:
        return ""
    if tokens[0].startswith("▁"):
        tokens[0] = tokens[0][1:]
    return sp.decode(tokens)


@pytest.fixture(scope="module")
def cla2_dir(tmp_path_factory):
    """The Chinese-LLaMA-2 tokenizer folder as CLA2 ships it (tokenizer.model, its config and special_tokens_map)."""
    folder = tmp_path_factory.mktemp("cla2_tokenizer")
    shutil.copyfile(shared("tokenizers", "chinese_llama2_tokenizer.model"), folder / "tokenizer.model")
    shutil.copyfile(shared("tokenizers", "chinese_llama2_tokenizer_config.json"), folder / "tokenizer_config.json")
    shutil.copyfile(shared("tokenizers", "chinese_llama2_special_tokens_map.json"), folder / "special_tokens_map.json")
    return folder


@pytest.fixture(scope="module")
def cla2(cla2_dir):
    return ZhTokenizer(cla2_dir)


CLA2_ADDED = {"<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 32000}  # CLA2's special_tokens_map; <pad> is piece 32000


@pytest.mark.shared_data
def test_cla2_special_tokens_are_the_reference_added_tokens(cla2):
    assert cla2.legacy_special_tokens == CLA2_ADDED
    assert cla2.sp.id_to_piece(32000) == "<pad>" and not cla2.sp.is_control(32000)


@pytest.mark.shared_data
@pytest.mark.parametrize("text", TEXTS)
def test_legacy_encode_follows_the_reference_rule(cla2, text):
    assert cla2.encode(text, bos=True, legacy=True) == [1, *reference_tokenize(cla2.sp, CLA2_ADDED, text)]
    assert reference_encode(cla2, text, bos=True) == cla2.encode(text, bos=True, legacy=True)


@pytest.mark.shared_data
def test_legacy_encode_hand_checked_values(cla2):
    # transformers' own LlamaTokenizer docstring: legacy=True gives [1, 15043, 29871, 1, 869] ('▁.' after <s>)
    assert cla2.encode("Hello <s>.", bos=True, legacy=True) == [1, 15043, 29871, 1, 869]
    # spaces beside a special token stay in the neighbouring chunks, each chunk gets its own '▁'
    assert [cla2.id_to_piece(i) for i in cla2.encode("  <s>  x  ", legacy=True)] == [
        "▁▁▁",
        "<s>",
        "▁▁",
        "▁x",
        "▁▁",
    ]
    assert cla2.encode("中文<pad>结束", legacy=True) == [29871, 33728, 32000, 29871, 33048]


@pytest.mark.shared_data
def test_default_reads_special_strings_as_text(cla2):
    plain = cla2.encode('x = "</s>"')
    assert 2 not in plain and plain == cla2.sp.encode('x = "</s>"')
    assert 2 in cla2.encode('x = "</s>"', legacy=True)
    batch = ['x = "</s>"', "no marker", "<pad>"]
    assert cla2.encode_batch(batch, legacy=True) == [cla2.encode(t, legacy=True) for t in batch]
    assert cla2.encode_batch(batch) == [cla2.encode(t) for t in batch]


@pytest.mark.shared_data
def test_bare_llama_model_has_bos_eos_unk_only():
    tok = ZhTokenizer(shared("tokenizers", "llama_tokenizer.model"))
    assert tok.legacy_special_tokens == {"<s>": 1, "</s>": 2, "<unk>": 0}
    added = {"<s>": 1, "</s>": 2, "<unk>": 0}
    for text in TEXTS:
        assert tok.encode(text, legacy=True) == reference_tokenize(tok.sp, added, text)


def test_tiny_tokenizer_follows_the_rule(merged_tokenizer):
    tok = ZhTokenizer(merged_tokenizer)
    added = dict(tok.legacy_special_tokens)
    assert {"<s>", "</s>", "<unk>"} <= set(added)
    for text in TEXTS:
        assert tok.encode(text, legacy=True) == reference_tokenize(tok.sp, added, text)


# ---- decoding: one leading '▁' off each decoded piece sequence ---------------------------------
@pytest.mark.shared_data
def test_legacy_decode_hand_checked_values(cla2):
    sp = cla2.sp
    pieces = ["▁▁▁", "▁return", "▁a", "▁+", "▁b"]  # an answer that starts with indentation
    ids = [sp.piece_to_id(p) for p in pieces]
    assert cla2.decode(ids) == "   return a + b"  # sentencepiece's own decode
    assert cla2.decode(ids, legacy=True) == "  return a + b"  # the reference: one space fewer
    assert reference_decode(cla2, [2, *ids, 2]) == "  return a + b"  # special ids skipped
    seven = sp.piece_to_id("▁▁▁▁▁▁▁")
    assert cla2.decode([seven, sp.piece_to_id("▁x")], legacy=True) == "      x"  # 7 + 1 spaces -> 6
    # a lone '▁' first: cut to '', and sentencepiece then drops the next piece's space too
    assert cla2.decode([29871, sp.piece_to_id("▁x")], legacy=True) == "x"
    assert cla2.decode([29871, sp.piece_to_id("▁x")]) == " x"
    assert cla2.decode([1, 0, 32000], legacy=True) == ""  # <s> <unk> <pad>: all special, all skipped
    assert cla2.decode([], legacy=True) == ""


@pytest.mark.shared_data
def test_legacy_decode_follows_the_reference_rule_on_slices(cla2):
    corpus = shared("corpus", "zh_wiki_cmrc2018_contexts.txt").read_text(encoding="utf-8").splitlines()[:40]
    code = "def add(a, b):\n        return a + b\n\n\n    x = [1,  2,   3]\t# 注释\n"
    special = set(CLA2_ADDED.values())
    checked = 0
    for text in [*corpus, code * 5]:
        ids = cla2.encode(text, legacy=True)
        for start in range(0, len(ids), 7):
            for end in (start + 1, start + 5, start + 33, len(ids)):
                cut = ids[start:end]
                assert cla2.decode(cut, legacy=True) == reference_detokenize(cla2.sp, special, cut), (start, end)
                checked += 1
    assert checked > 1000


# ---- against transformers 4.35 itself, where an install of it is named ----------------------
REFERENCE = os.environ.get("ZHLLAMA_REFERENCE_TRANSFORMERS")  # a `pip install --target` of transformers 4.35


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.skipif(not REFERENCE, reason="set ZHLLAMA_REFERENCE_TRANSFORMERS to a transformers 4.35 --target dir")
def test_equal_to_transformers_4_35(cla2, cla2_dir, tmp_path):
    corpus = shared("corpus", "zh_wiki_cmrc2018_contexts.txt").read_text(encoding="utf-8").splitlines()[:30]
    texts = TEXTS + corpus + ["def f():\n" + "    " * k + "return '</s>'" for k in range(4)]
    script = (
        "import json, sys\n"
        f"sys.path.insert(0, {REFERENCE!r})\n"
        "from transformers import LlamaTokenizer\n"
        "tok = LlamaTokenizer.from_pretrained(sys.argv[1], legacy=True)\n"
        "texts = json.load(open(sys.argv[2]))\n"
        "ids = [tok(t).input_ids for t in texts]\n"
        "cuts = [i[s:s + 9] for i in ids for s in range(0, len(i), 5)]\n"
        "print(json.dumps({'ids': ids, 'cuts': cuts,"
        " 'decoded': [tok.decode(c, skip_special_tokens=True) for c in cuts]}))\n"
    )
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    out = subprocess.run(
        [sys.executable, "-c", script, str(cla2_dir), str(tmp_path / "texts.json")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": ""},
    )
    ref = json.loads(out.stdout)
    assert [cla2.encode(t, bos=True, legacy=True) for t in texts] == ref["ids"]
    assert [cla2.decode(c, legacy=True) for c in ref["cuts"]] == ref["decoded"]
