"""Perplexity: both backends agree on multi-window text; the quantize report uses one backend."""

from __future__ import annotations

import math

import pytest

from zhllama.core.perplexity import perplexity

TEXT = "中国的首都是北京。长江是中国第一长河，黄河被称为母亲河。" * 3


@pytest.fixture(scope="module")
def f32_gguf(tmp_path_factory, tiny_zh_model):
    pytest.importorskip("llama_cpp")
    from zhllama.core.quantize.gguf_export import write_gguf

    out = tmp_path_factory.mktemp("gguf") / "m.gguf"
    write_gguf(tiny_zh_model, out, "F32")
    return out


@pytest.mark.parametrize("context, stride", [(8, None), (16, 5), (1000, None)])
def test_llamacpp_equals_transformers_on_every_window_layout(tmp_path, tiny_zh_model, f32_gguf, context, stride):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    hf = perplexity(tiny_zh_model, text, context=context, stride=stride, progress=False)
    cpp = perplexity(f32_gguf, text, context=context, stride=stride, progress=False)
    assert (hf.backend, cpp.backend) == ("transformers", "llamacpp")
    assert cpp.tokens_scored == hf.tokens_scored
    assert cpp.perplexity == pytest.approx(hf.perplexity, rel=1e-3)
    assert math.isfinite(hf.perplexity) and hf.tokens_per_second > 0


def test_default_context_is_the_models(tmp_path, tiny_zh_model):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    result = perplexity(tiny_zh_model, text, progress=False)
    assert result.context == 2048 and result.stride == 2048


def test_quantize_report_measures_both_sides_through_one_backend(tmp_path, tiny_zh_model, f32_gguf):
    from zhllama.core.quantize.report import QuantizeReport, measure_ppl

    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    report = QuantizeReport("gguf", str(tiny_zh_model), str(f32_gguf), {}, 1, 1, 0.0)
    measure_ppl(report, tiny_zh_model, f32_gguf, text, 16)
    # an F32 conversion is lossless: through one backend, before == after
    assert report.ppl_after == pytest.approx(report.ppl_before, rel=1e-4)
    assert report.ppl_backend == "transformers" and ("PPL backend", "transformers (before and after)") in report.rows()
