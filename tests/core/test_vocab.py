"""`zhllama vocab`: merge semantics, exactness of the written tokenizer.json, length stats, errors."""

from __future__ import annotations

import json
import shutil

import pytest
import sentencepiece as spm_lib
from transformers import AutoTokenizer

from tests.conftest import shared
from zhllama.core import spm, vocab
from zhllama.core.tokenizer import ZhTokenizer

MIXED = [
    "我爱北京天安门，hello world 123",
    "  leading and  double  spaces ",
    "混合English和数字3.14159以及emoji😀",
    "（Victorian时代）的伦敦",
    "GPU加速的LLaMA-2模型，训练了1000步。",
    "\t制表符\t和\n换行",
]


@pytest.fixture(scope="module")
def real_merged(tmp_path_factory):
    out = tmp_path_factory.mktemp("vocab") / "merged"
    report = vocab.merge(shared("tokenizers", "llama_tokenizer.model"), [shared("tokenizers", "chinese_sp.model")], out)
    return out, report


@pytest.fixture(scope="module")
def corpus_lines():
    return shared("corpus", "zh_wiki_cmrc2018_contexts.txt").read_text(encoding="utf-8").splitlines()


@pytest.mark.shared_data
def test_real_merge_keeps_base_pieces_and_ids(real_merged):
    out, report = real_merged
    base = spm.load_proto(shared("tokenizers", "llama_tokenizer.model"))
    merged = spm.load_proto(out / "tokenizer.model")
    assert report.base_size == 32000
    assert report.final_size == len(merged.pieces) == 49953  # the reference's merged size
    assert report.added == 17953 and report.skipped_duplicates == 2047
    for i, (a, b) in enumerate(zip(base.pieces, merged.pieces, strict=False)):
        assert (a.piece, a.score, a.type) == (b.piece, b.score, b.type), i
    assert merged.normalizer_spec == base.normalizer_spec
    assert merged.trainer_spec == base.trainer_spec
    new_scores = [p.score for p in merged.pieces[32000:]]
    assert len(set(new_scores)) == len(new_scores)
    assert new_scores == sorted(new_scores, reverse=True)
    assert min(new_scores) > max(p.score for p in base.pieces)
    assert report.hf_matches_sentencepiece and not report.score_ties
    on_disk = json.loads((out / "merge_report.json").read_text())
    assert on_disk["final_size"] == 49953


@pytest.mark.shared_data
def test_real_merge_shortens_chinese_to_at_most_55_percent(real_merged):
    out, _ = real_merged
    text = shared("corpus", "zh_wiki_cmrc2018_contexts.txt")
    base, merged = vocab.stats([shared("tokenizers", "llama_tokenizer.model"), out], text)
    assert merged.tokens <= 0.55 * base.tokens
    assert merged.relative_length == pytest.approx(merged.tokens / base.tokens)
    assert merged.byte_fallback_rate < base.byte_fallback_rate


@pytest.mark.shared_data
def test_autotokenizer_equals_sentencepiece_on_every_corpus_line(real_merged, corpus_lines):
    out, _ = real_merged
    sp = spm_lib.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.bos_token_id == 1 and hf.eos_token_id == 2
    mismatches = [line for line in corpus_lines + MIXED if hf(line)["input_ids"] != [1, *sp.encode(line)]]
    assert mismatches == []


@pytest.mark.shared_data
def test_decode_round_trips(real_merged, corpus_lines):
    out, _ = real_merged
    tok = ZhTokenizer(out)
    hf = AutoTokenizer.from_pretrained(str(out))
    for line in corpus_lines[:200] + MIXED:
        assert tok.decode(tok.encode(line)) == line
        assert hf.decode(hf(line)["input_ids"], skip_special_tokens=True) == line


@pytest.mark.shared_data
def test_zhllama_encoder_equals_sentencepiece_on_chinese_llama2(tmp_path, corpus_lines):
    folder = tmp_path / "chinese_llama2"
    folder.mkdir()
    shutil.copyfile(shared("tokenizers", "chinese_llama2_tokenizer.model"), folder / "tokenizer.model")
    shutil.copyfile(shared("tokenizers", "chinese_llama2_tokenizer_config.json"), folder / "tokenizer_config.json")
    shutil.copyfile(shared("tokenizers", "chinese_llama2_special_tokens_map.json"), folder / "special_tokens_map.json")
    sp = spm_lib.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    tok = ZhTokenizer(folder)
    assert len(tok) == 55296
    for line in corpus_lines + MIXED:
        assert tok.encode(line, bos=True) == [1, *sp.encode(line)]
    assert spm.has_score_ties(spm.load_proto(folder))


@pytest.mark.shared_data
def test_reference_scores_reproduce_the_reference_and_warn(tmp_path, run_cli):
    out = tmp_path / "ref"
    code, stdout, err = run_cli(
        "--json",
        "vocab",
        "merge",
        "--base",
        shared("tokenizers", "llama_tokenizer.model"),
        "--add",
        shared("tokenizers", "chinese_sp.model"),
        "--output",
        out,
        "--reference-scores",
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["score_ties"] is True and report["hf_matches_sentencepiece"] is False
    assert "AutoTokenizer" in err and "warning" in err
    merged = spm.load_proto(out / "tokenizer.model")
    assert {p.score for p in merged.pieces[32000:]} == {0.0}


@pytest.mark.shared_data
def test_pad_token_follows_base_pieces(tmp_path):
    out = tmp_path / "pad"
    report = vocab.merge(
        shared("tokenizers", "llama_tokenizer.model"),
        [shared("tokenizers", "chinese_sp.model")],
        out,
        pad_token="<pad>",
    )
    assert report.pad_id == 32000 and report.final_size == 49954
    hf = AutoTokenizer.from_pretrained(str(out))
    assert hf.pad_token == "<pad>" and hf.pad_token_id == 32000
    assert ZhTokenizer(out).pad_id == 32000
    sp = spm_lib.SentencePieceProcessor(model_file=str(out / "tokenizer.model"))
    assert sp.pad_id() == 32000 and sp.is_control(32000)
    assert "<pad>" not in sp.encode("<pad>", out_type=str)


def test_tiny_chain_merge_and_autotokenizer_agree(merged_tokenizer, base_tokenizer):
    base = spm.load_proto(base_tokenizer)
    merged = spm.load_proto(merged_tokenizer)
    assert [p.piece for p in merged.pieces[: len(base.pieces)]] == [p.piece for p in base.pieces]
    report = json.loads((merged_tokenizer / "merge_report.json").read_text())
    assert report["hf_matches_sentencepiece"] is True
    hf = AutoTokenizer.from_pretrained(str(merged_tokenizer))
    tok = ZhTokenizer(merged_tokenizer)
    for line in MIXED:
        assert hf(line)["input_ids"] == tok.encode(line, bos=True)


def test_train_cli_reports_pieces(run_cli, tmp_path):
    from zhllama.core.assets import data_path

    out = tmp_path / "zh.model"
    code, stdout, err = run_cli(
        "--json",
        "vocab",
        "train",
        "--input",
        data_path("corpus_zh.txt"),
        "--vocab-size",
        "1000",
        "--output",
        out,
        "--model-type",
        "unigram",
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["pieces"] == 1000 == len(spm.load_proto(out).pieces)
    assert spm.load_proto(out).trainer_spec.model_type == spm.UNIGRAM


def test_stats_cli_table_and_json(run_cli, base_tokenizer, merged_tokenizer):
    from zhllama.core.assets import data_path

    code, stdout, err = run_cli(
        "--json", "vocab", "stats", "-t", base_tokenizer, "-t", merged_tokenizer, "--text", data_path("corpus_zh.txt")
    )
    assert code == 0, err
    rows = json.loads(stdout)["tokenizers"]
    assert rows[0]["relative_length"] == 1.0
    assert rows[1]["tokens"] < rows[0]["tokens"]
    code, stdout, _ = run_cli("vocab", "stats", "-t", base_tokenizer, "--text", data_path("corpus_zh.txt"))
    assert code == 0 and "tokens/char" in stdout


@pytest.mark.parametrize(
    "case, expected",
    [
        ("not_sp", "not a SentencePiece model"),
        ("missing", "no such file"),
        ("dir_without_model", "no tokenizer.model"),
    ],
)
def test_merge_bad_inputs(run_cli, tmp_path, base_tokenizer, case, expected):
    bad = {"not_sp": tmp_path / "x.model", "missing": tmp_path / "nope.model", "dir_without_model": tmp_path / "d"}[
        case
    ]
    if case == "not_sp":
        bad.write_text("this is not a protobuf\n" * 10)
    if case == "dir_without_model":
        bad.mkdir()
    code, _, err = run_cli("vocab", "merge", "--base", base_tokenizer, "--add", bad, "--output", tmp_path / "o")
    assert code == 2
    assert err.startswith("zhllama: error: ") and expected in err and str(bad) in err
    assert not (tmp_path / "o").exists()


def test_train_vocab_smaller_than_characters(run_cli, tmp_path):
    from zhllama.core.assets import data_path

    code, _, err = run_cli(
        "vocab",
        "train",
        "--input",
        data_path("corpus_zh.txt"),
        "--vocab-size",
        "100",
        "--model-type",
        "unigram",
        "--output",
        tmp_path / "u.model",
    )
    assert code == 2 and "--vocab-size: 100 is smaller than" in err


def test_train_empty_corpus_and_too_large_vocab(run_cli, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    code, _, err = run_cli("vocab", "train", "--input", empty, "--vocab-size", "100", "--output", tmp_path / "a.model")
    assert code == 2 and "corpus is empty" in err
    small = tmp_path / "small.txt"
    small.write_text("天地玄黄宇宙洪荒\n日月盈昃辰宿列张\n", encoding="utf-8")
    code, _, err = run_cli("vocab", "train", "--input", small, "--vocab-size", "5000", "--output", tmp_path / "b.model")
    assert code == 2 and "--vocab-size" in err and "at most" in err
    assert not (tmp_path / "b.model").exists()
    code, _, err = run_cli(
        "vocab", "train", "--input", tmp_path / "nope.txt", "--vocab-size", "100", "--output", tmp_path / "c.model"
    )
    assert code == 2 and "nope.txt" in err


def test_merge_refuses_existing_output(run_cli, tmp_path, base_tokenizer, zh_sp_model):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep").write_text("x")
    code, _, err = run_cli("vocab", "merge", "--base", base_tokenizer, "--add", zh_sp_model, "--output", out)
    assert code == 2 and "--force" in err
    assert (out / "keep").exists()


def test_library_calls_never_overwrite_their_inputs(tmp_path, base_tokenizer, zh_sp_model):
    """The guards live in core (vocab.train / vocab.merge), not only in the CLI."""
    from zhllama.core.assets import data_path
    from zhllama.core.errors import UserError

    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(data_path("corpus_en.txt").read_bytes())
    before = corpus.read_bytes()
    with pytest.raises(UserError, match="the output is the input"):
        vocab.train([corpus], 300, corpus, force=True)
    assert corpus.read_bytes() == before
    base = tmp_path / "base"
    shutil.copytree(base_tokenizer, base)
    with pytest.raises(UserError, match="the output is the input"):
        vocab.merge(base, [zh_sp_model], base, force=True)
    with pytest.raises(UserError, match="the output sits inside the input"):
        vocab.merge(base, [zh_sp_model], base / "merged")
    with pytest.raises(UserError, match="--pad-token: '</s>' is already the eos token"):
        vocab.merge(base, [zh_sp_model], tmp_path / "m", pad_token="</s>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "corpus.txt"]


def test_stats_reads_its_text_as_strict_utf8(tmp_path, base_tokenizer):
    from zhllama.core.errors import UserError

    text = tmp_path / "t.txt"
    text.write_bytes("中文\n".encode() + b"\x80\n")
    with pytest.raises(UserError, match=r"t\.txt: not UTF-8 text \(byte 7: invalid start byte\)"):
        vocab.stats([base_tokenizer], text)
