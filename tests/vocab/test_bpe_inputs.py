"""Byte-level BPE bases of other shapes (Llama-3 style: ignore_merges, special tokens after the vocab)
and bad input: one line naming the file, exit 2, nothing written. Runs without shared data."""

from __future__ import annotations

import json

import pytest

from zhllama.core.assets import data_path

LLAMA3_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def _train(texts, vocab_size, pre, specials=()):
    from tokenizers import Tokenizer, decoders, models, trainers

    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.ByteLevel()
    from tokenizers import pre_tokenizers

    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(list(specials))
    return tok


@pytest.fixture(scope="module")
def llama3_like(tmp_path_factory):
    """A Llama-3-shaped byte-level BPE: Llama-3's split regex, ignore_merges, BOS post-processor and
    special tokens with ids after the model vocabulary."""
    from tokenizers import Regex, pre_tokenizers, processors

    en = data_path("corpus_en.txt").read_text(encoding="utf-8").splitlines()
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    tok = _train(en, 600, pre, LLAMA3_SPECIALS)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A",
        pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    folder = tmp_path_factory.mktemp("llama3") / "base"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>",
        "model_max_length": 8192,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    zh = tmp_path_factory.mktemp("llama3zh") / "zh.json"
    _train(data_path("corpus_zh.txt").read_text(encoding="utf-8").splitlines(), 1500, pre).save(str(zh))
    return folder, zh


def test_llama3_style_base_keeps_specials_after_its_vocab_and_ascii_ids(tmp_path, llama3_like):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    from zhllama.core import bpe

    base_dir, zh = llama3_like
    report = bpe.merge(base_dir, [zh], tmp_path / "m")
    base = Tokenizer.from_file(str(base_dir / "tokenizer.json"))
    merged = Tokenizer.from_file(str(tmp_path / "m" / "tokenizer.json"))
    assert json.loads((tmp_path / "m" / "tokenizer.json").read_text())["model"]["ignore_merges"] is True
    specials = {t: base.token_to_id(t) for t in LLAMA3_SPECIALS}
    assert specials == {t: merged.token_to_id(t) for t in LLAMA3_SPECIALS}
    assert min(specials.values()) == 600 and report.base_size == 605
    new_ids = [i for t, i in merged.get_vocab().items() if base.token_to_id(t) is None]
    assert min(new_ids) == 605 and max(new_ids) == report.final_size - 1 and report.added > 500
    en = data_path("corpus_en.txt").read_text(encoding="utf-8").splitlines()
    zh = data_path("corpus_zh.txt").read_text(encoding="utf-8").splitlines()
    for line in en + ["<|begin_of_text|>hi<|eot_id|>", "x = 1234567 + 89"]:
        assert merged.encode(line).ids == base.encode(line).ids
    hf = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    assert len(hf) == report.final_size
    shorter = 0
    for line in zh:
        ids = hf.encode(line, add_special_tokens=False)
        assert hf.decode(ids) == line
        shorter += len(ids) < len(base.encode(line, add_special_tokens=False).ids)
    assert shorter > 0.9 * len([z for z in zh if z.strip()])
    assert hf.encode("你好")[0] == specials["<|begin_of_text|>"]  # BOS post-processor carried over


def _write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", ["WordPiece", "Unigram", "metaspace-BPE"])
def test_a_base_that_is_not_byte_level_bpe_is_refused(run_cli, tmp_path, llama3_like, kind):
    from tokenizers import Tokenizer, models, pre_tokenizers

    if kind == "WordPiece":
        tok = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    elif kind == "Unigram":
        tok = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0)], 0))
    else:
        tok = Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2}, [("a", "b")]))
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
    bad = tmp_path / "bad" / "tokenizer.json"
    bad.parent.mkdir()
    tok.save(str(bad))
    _, zh = llama3_like
    for base in (bad, bad.parent):
        code, out, err = run_cli("vocab", "merge", "--base", base, "--add", zh, "-o", tmp_path / "o")
        assert code == 2 and out == ""
        assert err.startswith("zhllama: error: ") and err.count("\n") == 1 and str(bad) in err, err
        assert ("byte-level" in err) and not (tmp_path / "o").exists()


def test_sentencepiece_base_with_byte_level_additions_is_refused(run_cli, tmp_path, base_tokenizer, llama3_like):
    _, zh = llama3_like
    words = tmp_path / "words.txt"
    words.write_text("北京\n", encoding="utf-8")
    for add in (zh, words):
        code, _, err = run_cli("vocab", "merge", "--base", base_tokenizer, "--add", add, "-o", tmp_path / "o")
        assert code == 2 and err.count("\n") == 1 and str(add) in err and "SentencePiece base" in err, err
        assert not (tmp_path / "o").exists()
    code, _, err = run_cli(
        "vocab",
        "merge",
        "--base",
        base_tokenizer,
        "--add",
        base_tokenizer,
        "--pad-to-multiple-of",
        "64",
        "-o",
        tmp_path / "o",
    )
    assert code == 2 and "--pad-to-multiple-of" in err and not (tmp_path / "o").exists()


def test_bad_additions_to_a_byte_level_base(run_cli, tmp_path, llama3_like):
    base, zh = llama3_like
    cases = {
        "empty.txt": ("\n  \n", "word list is empty"),
        "broken.json": ("{not json", "not valid JSON"),
        "latin1.txt": (None, "not UTF-8"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / name
        if content is None:
            path.write_bytes(b"caf\xe9\n")
        else:
            path.write_text(content, encoding="utf-8")
        code, _, err = run_cli("vocab", "merge", "--base", base, "--add", zh, "--add", path, "-o", tmp_path / "o")
        assert code == 2 and err.count("\n") == 1 and str(path) in err and expected in err, err
        assert not (tmp_path / "o").exists()
    code, _, err = run_cli("vocab", "merge", "--base", base, "--add", zh, "--pad-token", "<pad>", "-o", tmp_path / "o")
    assert code == 2 and "--pad-token" in err
    code, _, err = run_cli(
        "vocab", "merge", "--base", base, "--add", zh, "--pad-to-multiple-of", "0", "-o", tmp_path / "o"
    )
    assert code == 2 and "--pad-to-multiple-of" in err and not (tmp_path / "o").exists()


def test_train_byte_bpe_cli_and_its_bad_input(run_cli, tmp_path, llama3_like):
    from tokenizers import Tokenizer

    base, _ = llama3_like
    out = tmp_path / "zh.json"
    zh_text = data_path("corpus_zh.txt")
    code, stdout, err = run_cli(
        "--json",
        "vocab",
        "train",
        "--kind",
        "byte-bpe",
        "--base",
        base,
        "-i",
        zh_text,
        "--vocab-size",
        "700",
        "-o",
        out,
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result["kind"] == "byte-bpe" and result["pieces"] == 700 and result["mb_per_second"] > 0
    assert result["megabytes"] == pytest.approx(zh_text.stat().st_size / 1e6)
    trained = Tokenizer.from_file(str(out))
    assert trained.get_vocab_size() == 700
    assert (
        json.loads(out.read_text())["pre_tokenizer"]
        == json.loads((base / "tokenizer.json").read_text())["pre_tokenizer"]
    )
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    for args, expected in [
        (["-i", empty, "--vocab-size", "700"], f"{empty}: corpus is empty"),
        (["-i", zh_text, "--vocab-size", "200"], "--vocab-size: 200"),
        (["-i", zh_text, "--vocab-size", "700", "--model-type", "unigram"], "--model-type"),
        (["-i", tmp_path / "nope.txt", "--vocab-size", "700"], "nope.txt"),
    ]:
        code, _, err = run_cli("vocab", "train", "--kind", "byte-bpe", *args, "-o", tmp_path / "x.json")
        assert code == 2 and err.startswith("zhllama: error: ") and expected in err, err
        assert not (tmp_path / "x.json").exists()
    code, _, err = run_cli("vocab", "train", "--kind", "wordpiece", "-i", zh_text, "--vocab-size", "700", "-o", out)
    assert code == 2 and "--kind" in err


def test_new_tokens_on_unused_rows_of_a_padded_matrix_are_initialised(tmp_path, llama3_like):
    """Qwen-style: the matrix has rows past the tokenizer; new ids land there and get the mean of the
    base rows of their text (no resize); past the matrix, it grows and those rows are set too."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zhllama.core import bpe
    from zhllama.core.tiny import build_tiny_llama
    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training.embeddings import resize_for_tokenizer

    base_dir, zh = llama3_like
    words = tmp_path / "words.txt"
    words.write_text("北京大学\n人工智能\n", encoding="utf-8")
    bpe.merge(base_dir, [words], tmp_path / "small")
    bpe.merge(base_dir, [zh], tmp_path / "large")
    model_dir = build_tiny_llama(tmp_path / "m", tokenizer=base_dir, vocab_size=640, seed=0)
    base_hf = AutoTokenizer.from_pretrained(str(base_dir))
    base = ZhTokenizer(base_dir)
    for name in ("small", "large"):
        model = AutoModelForCausalLM.from_pretrained(str(model_dir))
        before = model.get_input_embeddings().weight.detach().clone()
        tok = ZhTokenizer(tmp_path / name)
        assert resize_for_tokenizer(model, tok, base)
        emb = model.get_input_embeddings().weight.detach()
        assert torch.equal(emb[:605], before[:605])
        if name == "small":
            assert emb.shape[0] == 640 and torch.equal(emb[len(tok) :], before[len(tok) :])  # padding rows untouched
            for word in ("北京大学", "人工智能"):
                idx = tok.hf.convert_tokens_to_ids(bpe.to_byte_level(word.encode()))
                assert 605 <= idx < 640
                expected = base_hf.encode(word, add_special_tokens=False)
                assert torch.allclose(emb[idx], before[expected].mean(0), atol=1e-6)
        else:
            assert emb.shape[0] >= len(tok) > 640
            checked = 0
            for token, idx in tok.hf.get_vocab().items():
                try:
                    text = bpe.token_bytes(token).decode("utf-8")
                except UnicodeDecodeError:
                    continue
                if idx >= 605 and len(base_hf.encode(text, add_special_tokens=False)) > 1:
                    expected = before[base_hf.encode(text, add_special_tokens=False)].mean(0)
                    assert torch.allclose(emb[idx], expected, atol=1e-6), token
                    checked += 1
            assert checked > 100
