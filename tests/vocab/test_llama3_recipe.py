"""The Chinese-LLaMA-Alpaca-3 recipe of the README (Llama-3 without vocabulary extension, its
instruction template) end to end on a tiny model built from a byte-level BPE tokenizer."""

from __future__ import annotations

import json

import pytest

from zhllama.core.assets import data_path


@pytest.mark.slow
def test_llama3_recipe_end_to_end(tmp_path, run_cli):
    from transformers import AutoTokenizer

    from zhllama.core.templates import Message, encode, get_template
    from zhllama.core.tokenizer import ZhTokenizer

    corpus = data_path("corpus_zh.txt")
    tok = tmp_path / "tok"
    code, _, err = run_cli(
        "vocab", "train", "--kind", "byte-bpe", "--special-tokens", "llama3", "-i", corpus, "--vocab-size", "600",
        "-o", tok,
    )  # fmt: skip
    assert code == 0, err
    hf = AutoTokenizer.from_pretrained(str(tok))
    assert len(hf) == 605 and hf.bos_token == "<|begin_of_text|>" and hf.encode("你")[0] == hf.bos_token_id
    model = tmp_path / "tiny_llama3"
    code, _, err = run_cli("tiny-model", "--tokenizer", tok, "--output", model, "--seed", "0")
    assert code == 0, err
    common = ["--max-steps", "2", "--lora-rank", "4", "--lora-alpha", "8", "--save-steps", "1000", "--seed", "1"]
    code, _, err = run_cli(
        "pretrain", "--model", model, "--data", corpus, "--output", tmp_path / "pt", "--block-size", "32",
        "--cache-dir", tmp_path / "c1", *common,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli("merge", "--base", model, "--lora", tmp_path / "pt", "--output", tmp_path / "zh")
    assert code == 0, err
    code, _, err = run_cli(
        "sft", "--model", tmp_path / "zh", "--data", data_path("instructions.json"), "--template", "llama3",
        "--output", tmp_path / "sft", "--max-seq-length", "256", "--cache-dir", tmp_path / "c2", *common,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(
        "merge", "--base", tmp_path / "zh", "--lora", tmp_path / "sft", "--output", tmp_path / "inst"
    )
    assert code == 0, err
    final = ZhTokenizer(tmp_path / "inst")
    assert len(final) == 605  # no vocabulary extension: the Llama-3 vocabulary is kept
    ids, _ = encode(final, get_template("llama3").segments([Message("user", "你好")], add_generation_prompt=True))
    header = final.special_tokens["<|start_header_id|>"]
    assert ids[0] == final.bos_id and ids.count(header) == 3  # system, user, assistant headers
    code, out, err = run_cli(
        "--json", "chat", "--model", tmp_path / "inst", "--template", "llama3", "--greedy", "--max-new-tokens", "4",
        "--prompt", "你好",
    )  # fmt: skip
    assert code == 0, err
    assert isinstance(json.loads(out.strip().splitlines()[-1]), dict)
