"""GPTQ through GPTQModel on a tiny model, when the `gptq` extra is installed (its own venv: it pins numpy)."""

from __future__ import annotations

import json
import os

import pytest

from zhllama.core.assets import data_path
from zhllama.core.tiny import TinyShape, build_tiny_llama

if os.environ.get("ZHLLAMA_REQUIRE_GPTQ") == "1":  # `make test-gptq` (CI): a missing gptqmodel is a failure
    import gptqmodel  # noqa: F401
else:
    pytest.importorskip("gptqmodel", reason="gptqmodel not installed (pip install 'zhllama[gptq]'; make test-gptq)")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # first use compiles GPTQModel's CPU pack kernel
def test_gptq_4bit_quantizes_and_scores(tmp_path, merged_tokenizer, run_cli, monkeypatch):
    monkeypatch.setitem(os.environ, "GPTQMODEL_CPU_WORKERS", "2")
    # GPTQ's CPU kernel needs every in-feature count divisible by the group size
    model = build_tiny_llama(tmp_path / "m", tokenizer=merged_tokenizer, shape=TinyShape(intermediate_size=192))
    out = tmp_path / "gptq"
    code, stdout, err = run_cli(
        "--json",
        "quantize",
        "gptq",
        "--model",
        model,
        "--bits",
        "4",
        "--group-size",
        "32",
        "--calibration",
        data_path("corpus_zh.txt"),
        "--samples",
        "16",
        "--output",
        out,
        "--eval-ppl",
        data_path("corpus_zh.txt"),
        "--ppl-context",
        "128",
    )
    assert code == 0, err
    report = json.loads((out / "quantize_report.json").read_text())
    assert report["ratio"] < 0.6 and report["ppl_after"] == pytest.approx(report["ppl_before"], rel=0.2)
    assert json.loads((out / "quantize_config.json").read_text())["bits"] == 4
