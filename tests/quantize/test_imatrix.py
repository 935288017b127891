"""`quantize gguf --imatrix-data/--imatrix` and the i-quants, through llama.cpp itself.

Tests that run llama.cpp's tools (llama-imatrix, llama-quantize) skip when they are not built
(`python -m zhllama.core.quantize.llamacpp_tools`, which .ci/run does); the checks of bad input run
everywhere, since they happen before any tool is called.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from zhllama.core.quantize import imatrix as im
from zhllama.core.quantize import llamacpp_tools
from zhllama.core.quantize.gguf_types import IQ_QUANTS, K_QUANTS
from zhllama.core.tiny import TinyShape, build_tiny_llama

needs_tools = pytest.mark.skipif(
    not llamacpp_tools.available(),
    reason=f"llama.cpp's tools are not built ({llamacpp_tools.BUILD_HINT})",
)


def _one_line_error(code: int, err: str, *parts: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("zhllama: error: "), err
    for part in parts:
        assert part in err, err


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory, merged_tokenizer):
    """A tiny LLaMA whose matrices are all multiples of 256 wide (so no i-quant falls back)."""
    shape = TinyShape(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2)
    return build_tiny_llama(tmp_path_factory.mktemp("wide") / "m", tokenizer=merged_tokenizer, shape=shape, seed=1)


def _legacy_imatrix(path, entries: dict[str, int]) -> None:
    """An imatrix in llama.cpp's legacy .dat layout (as `save_imatrix_legacy` writes it)."""
    out = struct.pack("<i", len(entries))
    for name, size in entries.items():
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", 1, size) + np.ones(size, "<f4").tobytes()
    out += struct.pack("<i", 1) + struct.pack("<i", 4) + b"x.tx"
    path.write_bytes(out)


def test_needs_imatrix_table_is_llama_cpps_own_rule(tmp_path, wide_model):
    """Every K-/i-quant without an imatrix: llama.cpp refuses exactly the types in NEEDS_IMATRIX."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed")
    from zhllama.core.quantize.gguf_export import write_gguf

    f16 = tmp_path / "f16.gguf"
    write_gguf(wide_model, f16, "F16")
    refused = []
    for qtype in K_QUANTS + IQ_QUANTS:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
        out = tmp_path / f"{qtype}.gguf"
        if llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), params) != 0:
            refused.append(qtype)
    assert sorted(refused) == sorted(im.NEEDS_IMATRIX)


@pytest.mark.parametrize("qtype", ["IQ2_XS", "IQ1_S", "Q2_K_S", "IQ3_XS"])
def test_type_that_needs_an_imatrix_is_refused_without_one(tmp_path, tiny_zh_model, run_cli, qtype):
    out = tmp_path / "m.gguf"
    code, _, err = run_cli("quantize", "gguf", "--model", tiny_zh_model, "--type", qtype, "--output", out)
    _one_line_error(code, err, f"--type {qtype}", "importance matrix", "--imatrix-data")
    assert list(tmp_path.iterdir()) == []


def test_empty_calibration_file_is_refused(tmp_path, tiny_zh_model, run_cli):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n\n", encoding="utf-8")
    out = tmp_path / "m.gguf"
    args = ("quantize", "gguf", "--model", tiny_zh_model, "--type", "Q4_K_M", "--imatrix-data", empty, "-o", out)
    code, _, err = run_cli(*args)
    _one_line_error(code, err, "--imatrix-data", str(empty), "empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt"]


def test_too_short_calibration_text_is_refused(tmp_path, tiny_zh_model, run_cli):
    short = tmp_path / "short.txt"
    short.write_text("中国", encoding="utf-8")
    out = tmp_path / "m.gguf"
    args = ("quantize", "gguf", "--model", tiny_zh_model, "--type", "IQ4_XS", "--imatrix-data", short, "-o", out)
    code, _, err = run_cli(*args)
    _one_line_error(code, err, "--imatrix-data", "tokens", "at least 16")
    assert not out.exists()


def test_imatrix_of_another_model_is_refused(tmp_path, tiny_zh_model, wide_model, run_cli):
    """Names of another model's tensors, or the right names with another width: one line, nothing written."""
    other = {"blk.5.ffn_down.weight": 512}  # a layer the 2-layer model does not have
    other |= {f"blk.{i}.{t}.weight": 256 for i in range(2) for t in ("attn_q", "attn_k", "ffn_up")}
    _legacy_imatrix(tmp_path / "other.dat", other)
    wide = {f"blk.{i}.attn_q.weight": 256 for i in range(2)}  # right names, wide_model's widths
    _legacy_imatrix(tmp_path / "wide.dat", wide)
    out = tmp_path / "m.gguf"
    for name, message in (("other.dat", "entry 'blk.5.ffn_down.weight' is not a tensor"), ("wide.dat", "256 values")):
        code, _, err = run_cli(
            "quantize", "gguf", "--model", tiny_zh_model, "--type", "Q4_K_M", "--imatrix", tmp_path / name, "-o", out
        )
        _one_line_error(code, err, "--imatrix", name, message, "another model")
        assert not out.exists()
    assert im.check_imatrix(tmp_path / "wide.dat", wide_model) == wide  # the same file fits its own model


@pytest.mark.parametrize(
    "content, message",
    [(b"", "neither a GGUF nor"), (b"\x05\x00\x00\x00garbage", "neither a GGUF nor"), (b"GGUF\x03", "not a readable")],
)
def test_damaged_imatrix_file_is_refused(tmp_path, tiny_zh_model, run_cli, content, message):
    bad = tmp_path / "bad.imatrix"
    bad.write_bytes(content)
    out = tmp_path / "m.gguf"
    code, _, err = run_cli(
        "quantize", "gguf", "--model", tiny_zh_model, "--type", "Q4_K_M", "--imatrix", bad, "-o", out
    )
    _one_line_error(code, err, str(bad), message)
    assert not out.exists()


def test_imatrix_flags_that_contradict(tmp_path, tiny_zh_model, run_cli):
    matrix = tmp_path / "x.dat"
    _legacy_imatrix(matrix, {"blk.0.attn_q.weight": 64})
    cases = [
        (["--type", "Q4_K_M", "--imatrix", matrix, "--imatrix-data", "builtin"], "give one"),
        (["--type", "F16", "--imatrix", matrix], "not used by --type F16"),
        (
            ["--type", "Q4_K_M", "--imatrix", matrix, "--imatrix-output", tmp_path / "y.gguf"],
            "only with --imatrix-data",
        ),
    ]
    for extra, message in cases:
        code, _, err = run_cli("quantize", "gguf", "--model", tiny_zh_model, *extra, "-o", tmp_path / "m.gguf")
        _one_line_error(code, err, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.dat"]


def test_missing_tools_name_the_build_step(tmp_path, tiny_zh_model, run_cli, monkeypatch):
    monkeypatch.setenv("ZHLLAMA_LLAMACPP_TOOLS", str(tmp_path / "none"))
    out = tmp_path / "m.gguf"
    code, _, err = run_cli(
        "quantize", "gguf", "--model", tiny_zh_model, "--type", "IQ4_XS", "--imatrix-data", "builtin", "-o", out
    )
    _one_line_error(code, err, "llama-imatrix", "python -m zhllama.core.quantize.llamacpp_tools")
    assert not out.exists()


def test_repack_switch_follows_new_llama(monkeypatch):
    monkeypatch.setenv("ZHLLAMA_LLAMACPP_REPACK", "0")
    assert llamacpp_tools.repack_args() == ["--no-repack"]
    monkeypatch.setenv("ZHLLAMA_LLAMACPP_REPACK", "1")
    assert llamacpp_tools.repack_args() == []
    monkeypatch.delenv("ZHLLAMA_LLAMACPP_REPACK")
    amx = " amx_int8" in open("/proc/cpuinfo").read()
    assert llamacpp_tools.repack_args() == (["--no-repack"] if amx else [])


@needs_tools
def test_imatrix_computed_kept_and_reused(tmp_path, wide_model, run_cli):
    """llama-imatrix on the builtin text -> a GGUF imatrix covering every matrix; reused by --imatrix."""
    from gguf import GGUFReader

    matrix = tmp_path / "wide.imatrix.gguf"
    out = tmp_path / "m-iq4.gguf"
    code, stdout, err = run_cli(
        "--json",
        "quantize",
        "gguf",
        "--model",
        wide_model,
        "--type",
        "IQ2_XS",
        "--imatrix-data",
        "builtin",
        "--imatrix-output",
        matrix,
        "-o",
        out,
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["settings"]["imatrix_data"] == "builtin" and report["settings"]["imatrix_output"] == str(matrix)
    entries = im.read_imatrix(matrix)
    matrices = im.model_matrices(wide_model)
    del matrices["token_embd.weight"]  # a lookup, not a matrix product: llama-imatrix has nothing for it
    matrices.pop("output.weight")  # collected only with --process-output
    assert entries == matrices
    fields = GGUFReader(str(out)).fields
    assert int(fields["general.file_type"].parts[-1][0]) == 20  # LLAMA_FTYPE_MOSTLY_IQ2_XS
    assert int(fields["quantize.imatrix.entries_count"].parts[-1][0]) == len(entries)
    # reuse: the same imatrix again gives the same file bytes (quantization is deterministic)
    again = tmp_path / "again.gguf"
    args = ("quantize", "gguf", "--model", wide_model, "--type", "IQ2_XS", "--imatrix", matrix, "-o", again)
    code, _, err = run_cli(*args)
    assert code == 0, err
    tensors = {t.name: bytes(t.data) for t in GGUFReader(str(out)).tensors}
    assert {t.name: bytes(t.data) for t in GGUFReader(str(again)).tensors} == tensors


@needs_tools
def test_real_imatrix_of_another_model_is_refused(tmp_path, tiny_zh_model, wide_model, run_cli):
    matrix = tmp_path / "wide.imatrix.gguf"
    code, _, err = run_cli(
        "quantize",
        "gguf",
        "--model",
        wide_model,
        "--type",
        "Q4_K_M",
        "--imatrix-data",
        "builtin",
        "--imatrix-output",
        matrix,
        "-o",
        tmp_path / "wide.gguf",
    )
    assert code == 0, err
    out = tmp_path / "m.gguf"
    code, _, err = run_cli(
        "quantize", "gguf", "--model", tiny_zh_model, "--type", "Q4_K_M", "--imatrix", matrix, "-o", out
    )
    _one_line_error(code, err, str(matrix), "256 values", "64 inputs")
    assert not out.exists()
