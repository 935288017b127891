"""`zhllama quantize compare`: the table's figures against an independent computation.

The reference re-scores each GGUF file with llama-cpp-python's high-level API (`Llama.eval` with
`logits_all`, one window at a time, as a user would) and computes PPL, KL(base || quantized) and
top-1 agreement with torch in float64; the command uses the C API and numpy in float32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import shared
from zhllama.core.quantize import llamacpp_tools

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'zhllama[llamacpp]')")

TEXT = (
    "中国的首都是北京。长江是中国第一长河，黄河被称为母亲河。" * 6
    + "The river runs through the old town. " * 3
    + "The end."
)


def _reference(base_file, other_file, text: str, context: int) -> dict:
    from zhllama.core.loading.llamacpp import new_llama

    def window_logits(path):
        llm = new_llama(str(path), n_ctx=context, logits_all=True, verbose=False)
        try:
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True)
            out = []
            for begin in range(0, len(ids), context):
                chunk = ids[begin : begin + context]
                if len(chunk) < 2:
                    continue
                llm.reset()
                llm.eval(chunk)
                out.append((torch.tensor(chunk[1:]), torch.tensor(np.asarray(llm.scores[: len(chunk) - 1]))))
            return ids, out
        finally:
            llm.close()

    ids, base = window_logits(base_file)
    ids2, other = window_logits(other_file)
    assert ids == ids2
    nll = kld = same = count = 0.0
    for (targets, p_logits), (_, q_logits) in zip(base, other, strict=True):
        log_p = torch.log_softmax(p_logits.double(), -1)
        log_q = torch.log_softmax(q_logits.double(), -1)
        kld += float((log_p.exp() * (log_p - log_q)).sum())
        nll -= float(log_q.gather(1, targets[:, None]).sum())
        same += int((p_logits.argmax(-1) == q_logits.argmax(-1)).sum())
        count += len(targets)
    return {"ppl": float(np.exp(nll / count)), "kld": kld / count, "top1": same / count, "count": count}


def test_compare_table_matches_an_independent_computation(tmp_path, tiny_zh_model, run_cli):
    from gguf import GGML_QUANT_SIZES, GGUFReader

    data = tmp_path / "zh.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(
        "--json",
        "quantize",
        "compare",
        "--model",
        tiny_zh_model,
        "--types",
        "Q8_0,Q4_0,q4_k_m",
        "--data",
        data,
        "--context",
        "32",
        "--keep-files",
        "-o",
        out,
    )
    assert code == 0, err
    result = json.loads(stdout)
    assert result == json.loads((out / "compare.json").read_text())
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {row["type"]: row for row in result["rows"]}
    assert list(rows) == ["F16", "Q8_0", "Q4_0", "Q4_K_M"]
    base = rows["F16"]
    assert base["mean_kld"] == pytest.approx(0.0, abs=1e-9) and base["top1_agreement"] == 1.0
    for qtype, row in rows.items():
        path = out / f"model-{qtype}.gguf"
        ref = _reference(out / "model-F16.gguf", path, TEXT, 32)
        assert result["tokens_scored"] == ref["count"]
        assert row["ppl"] == pytest.approx(ref["ppl"], rel=1e-4)
        assert row["mean_kld"] == pytest.approx(ref["kld"], rel=1e-3, abs=1e-7)
        assert row["top1_agreement"] == pytest.approx(ref["top1"], abs=1e-9)
        # bits per weight from the ggml block sizes of each tensor's type
        tensors = GGUFReader(str(path)).tensors
        size = sum(
            int(t.n_elements) // GGML_QUANT_SIZES[t.tensor_type][0] * GGML_QUANT_SIZES[t.tensor_type][1]
            for t in tensors
        )
        assert row["tensor_bytes"] == size and row["file_bytes"] == path.stat().st_size
        assert row["bits_per_weight"] == pytest.approx(8 * size / sum(int(t.n_elements) for t in tensors))
    assert rows["Q8_0"]["mean_kld"] < rows["Q4_0"]["mean_kld"]
    assert rows["Q8_0"]["bits_per_weight"] > rows["Q4_K_M"]["bits_per_weight"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--types", "Q4_K_M,Q9"], "'Q9' is not one of"),
        (["--types", "IQ2_XS"], "needs an importance matrix for IQ2_XS; write IQ2_XS+imatrix"),
        (["--types", "F16+imatrix"], "not used by unquantized F16"),
        (["--types", "Q8_0,q8_0"], "listed twice"),
        (["--types", "Q8_0", "--base", "Q4_0"], "--base: 'Q4_0'"),
        (["--types", "Q8_0", "--imatrix-data", "builtin"], "no type in --types uses it"),
        (["--types", "Q8_0", "--max-tokens", "1"], "--max-tokens"),
        (["--types", "Q8_0", "--context", "1"], "--context"),
        (["--types", "Q8_0", "--empty-data"], "text file is empty"),
        (["--types", "Q4_K_M+imatrix", "--imatrix-data", "EMPTY"], "--imatrix-data"),
    ],
)
def test_compare_bad_input(tmp_path, tiny_zh_model, run_cli, extra, message):
    data = tmp_path / "zh.txt"
    data.write_text(TEXT, encoding="utf-8")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n", encoding="utf-8")
    if "--empty-data" in extra:
        extra = [e for e in extra if e != "--empty-data"]
        data = empty
    extra = [str(empty) if e == "EMPTY" else e for e in extra]
    out = tmp_path / "cmp"
    code, _, err = run_cli("quantize", "compare", "--model", tiny_zh_model, "--data", data, *extra, "-o", out)
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_compare_imatrix_of_another_model_is_refused(tmp_path, tiny_zh_model, run_cli):
    """An imatrix (llama.cpp's legacy .dat layout) naming a layer the 2-layer model lacks: one line, nothing written."""
    import struct

    name = b"blk.7.ffn_down.weight"
    matrix = tmp_path / "other.dat"
    entry = struct.pack("<i", len(name)) + name + struct.pack("<ii", 1, 64) + np.ones(64, "<f4").tobytes()
    matrix.write_bytes(struct.pack("<i", 1) + entry + struct.pack("<ii", 1, 4) + b"x.tx")
    data = tmp_path / "zh.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "cmp"
    code, _, err = run_cli(
        "quantize", "compare", "--model", tiny_zh_model, "--types", "Q4_K_M+imatrix", "--imatrix", matrix,
        "--data", data, "-o", out,
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1, err
    assert "other.dat: entry 'blk.7.ffn_down.weight' is not a tensor" in err and "another model" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.dat", "zh.txt"]


@pytest.mark.slow
@pytest.mark.skipif(not llamacpp_tools.available(), reason="llama.cpp's tools are not built")
def test_imatrix_lowers_kl_divergence_on_smollm2(tmp_path, smollm2_folder_real, run_cli):
    """The issue's figure: on SmolLM2-135M and the shared Wikipedia corpus, Q4_K_M with an imatrix
    (from the shipped zh+en text, not the scored text) is closer to F16 than Q4_K_M without."""
    corpus = shared("corpus", "zh_wiki_cmrc2018_contexts.txt")
    data = tmp_path / "wiki.txt"
    data.write_text("\n".join(corpus.read_text(encoding="utf-8").splitlines()[:40]), encoding="utf-8")
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(
        "--json",
        "quantize",
        "compare",
        "--model",
        smollm2_folder_real,
        "--types",
        "Q4_K_M,Q4_K_M+imatrix",
        "--data",
        data,
        "--max-tokens",
        "4096",
        "-o",
        out,
    )
    assert code == 0, err
    rows = {(r["type"], r["imatrix"]): r for r in json.loads(stdout)["rows"]}
    assert rows[("Q4_K_M", True)]["mean_kld"] < rows[("Q4_K_M", False)]["mean_kld"]
    assert rows[("Q4_K_M", True)]["top1_agreement"] >= rows[("Q4_K_M", False)]["top1_agreement"] - 0.005
