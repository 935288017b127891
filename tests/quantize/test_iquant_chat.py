"""IQ4_XS and IQ3_M of the real SmolLM2-135M-Instruct, quantized with an importance matrix, chat in llama.cpp.

The issue's "IQ4_XS and IQ3_M files load and chat in llama.cpp": both files come from
`quantize gguf` with one imatrix (computed once by llama-imatrix from the shipped zh+en text for
IQ4_XS, kept with `--imatrix-output` and reused by `--imatrix` for IQ3_M), then `zhllama chat`
answers through the llama.cpp engine (greedy, the model's own ChatML template).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from zhllama.core.quantize import imatrix as im
from zhllama.core.quantize import llamacpp_tools

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (pip install 'zhllama[llamacpp]')")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not llamacpp_tools.available(), reason=f"llama.cpp's tools are not built ({llamacpp_tools.BUILD_HINT})"
    ),
]

QUESTION = "What is the capital of France?"
FILE_TYPES = {"IQ4_XS": 30, "IQ3_M": 27}  # LLAMA_FTYPE_MOSTLY_*
# llama.cpp's per-tensor choice for SmolLM2 (272 tensors): rows 576 wide are not multiples of 256,
# so only ffn_down (1536 wide) keeps an i-quant; the others fall back (IQ4_NL, Q5_0), as llama.cpp rules
TENSOR_TYPES = {
    "IQ4_XS": Counter({"F32": 61, "Q8_0": 1, "IQ4_NL": 180, "IQ4_XS": 30}),
    "IQ3_M": Counter({"F32": 61, "Q8_0": 1, "IQ4_NL": 120, "Q5_0": 60, "IQ3_S": 27, "Q4_K": 3}),
}


@pytest.fixture(scope="module")
def iquants(tmp_path_factory, smollm2_folder_real):
    """(imatrix file, {type: GGUF file}): one imatrix for both types."""
    from zhllama.cli.app import run

    root = tmp_path_factory.mktemp("iquants")
    matrix = root / "smollm2.imatrix.gguf"
    files = {qtype: root / f"smollm2-{qtype.lower()}.gguf" for qtype in FILE_TYPES}
    common = ["quantize", "gguf", "--model", str(smollm2_folder_real)]
    first = ["--type", "IQ4_XS", "--imatrix-data", "builtin", "--imatrix-output", str(matrix)]
    assert run([*common, *first, "-o", str(files["IQ4_XS"])]) == 0
    assert run([*common, "--type", "IQ3_M", "--imatrix", str(matrix), "-o", str(files["IQ3_M"])]) == 0
    return matrix, files


@pytest.mark.parametrize("qtype", list(FILE_TYPES))
def test_iquant_file_is_that_type_made_with_the_imatrix(iquants, smollm2_folder_real, qtype):
    from gguf import GGMLQuantizationType, GGUFReader

    matrix, files = iquants
    reader = GGUFReader(str(files[qtype]))
    fields = reader.fields
    assert int(fields["general.file_type"].parts[-1][0]) == FILE_TYPES[qtype]
    entries = im.check_imatrix(matrix, smollm2_folder_real)  # the model's own matrices, every one of them
    assert len(entries) == 30 * 7
    assert int(fields["quantize.imatrix.entries_count"].parts[-1][0]) == len(entries)
    kinds = Counter(GGMLQuantizationType(int(t.tensor_type)).name for t in reader.tensors)
    assert kinds == TENSOR_TYPES[qtype]
    report = json.loads(files[qtype].with_name(files[qtype].name + ".quantize_report.json").read_text())
    assert report["settings"]["type"] == qtype and report["settings"]["imatrix_entries"] == len(entries)
    if qtype == "IQ3_M":  # made with --imatrix: llama-quantize records that file
        assert bytes(fields["quantize.imatrix.file"].parts[-1]).decode() == str(matrix)
        assert report["settings"]["imatrix"] == str(matrix)


@pytest.mark.parametrize("qtype", list(FILE_TYPES))
def test_iquant_file_chats_in_llama_cpp(iquants, run_cli, qtype):
    """Greedy, through the llama.cpp engine and the model's ChatML template: the right fact, twice alike."""
    _, files = iquants
    args = ("chat", "--engine", "llamacpp", "--model", files[qtype], "--prompt", QUESTION, "--greedy")
    code, first, err = run_cli(*args, "--max-new-tokens", "16")
    assert code == 0, err
    # measured (AVX-512 CPU): IQ4_XS "The capital of France is Paris. It's a city that has been a beacon",
    # IQ3_M "The capital of France is Paris. It's not actually a city in France but"
    assert "Paris" in first, first
    code, again, err = run_cli(*args, "--max-new-tokens", "16")
    assert code == 0 and again == first, err  # greedy decoding: the same answer again
