"""A `.gguf` is a full citizen: the same command on the GGUF and on the HF folder it came from agrees.

F32 GGUF of the tiny model (llama.cpp and transformers then compute the same function): C-Eval
predictions, greedy chat answers and perplexity through the real commands.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from zhllama.core.assets import data_path

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python not installed"),
]


@pytest.fixture(scope="module")
def both(tiny_zh_model, tmp_path_factory):
    from zhllama.core.quantize.gguf_export import write_gguf

    gguf = tmp_path_factory.mktemp("parity") / "tiny-f32.gguf"
    write_gguf(tiny_zh_model, gguf, "F32")
    return {"hf": tiny_zh_model, "gguf": gguf}


def test_ceval_predictions_are_the_same(both, run_cli, tmp_path):
    answers = {}
    for kind, model in both.items():
        out = tmp_path / kind
        code, stdout, err = run_cli(
            "--json",
            "eval",
            "ceval",
            "--model",
            model,
            "--data-dir",
            data_path("ceval"),
            "--shots",
            "1",
            "--output",
            out,
        )
        assert code == 0, err
        rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
        answers[kind] = {(r["subject"], str(r["id"])): r["prediction"] for r in rows}
        answers[f"{kind}-summary"] = json.loads(stdout)["overall"]
    assert len(answers["hf"]) == 24 and answers["hf"] == answers["gguf"]
    assert answers["hf-summary"] == answers["gguf-summary"]


def test_greedy_chat_answers_are_the_same(both, run_cli):
    replies = {}
    for kind, model in both.items():
        code, stdout, err = run_cli(
            "--json", "chat", "--model", model, "--template", "none", "--greedy", "--max-new-tokens", "12",
            "--prompt", "北京是",
        )  # fmt: skip
        assert code == 0, err
        replies[kind] = json.loads(stdout)["answer"]
    assert replies["hf"] and replies["hf"] == replies["gguf"]


def test_perplexity_is_the_same(both, run_cli, tmp_path):
    text = tmp_path / "zh.txt"
    text.write_text(data_path("corpus_zh.txt").read_text(encoding="utf-8")[:1500], encoding="utf-8")
    ppl = {}
    for kind, model in both.items():
        code, stdout, err = run_cli("--json", "eval", "ppl", "--model", model, "--data", text, "--context", "128")
        assert code == 0, err
        ppl[kind] = json.loads(stdout)
    assert ppl["hf"]["tokens_scored"] == ppl["gguf"]["tokens_scored"] > 100
    assert ppl["gguf"]["perplexity"] == pytest.approx(ppl["hf"]["perplexity"], rel=1e-3)
