"""K-quants and i-quants by llama.cpp itself, from an F16 GGUF written by `gguf_export`.

Without an importance matrix the binding's `llama_model_quantize` does it in-process; with one,
llama.cpp's `llama-quantize` tool (`llamacpp_tools`), since the binding takes the imatrix only as
a C++ map pointer. Both are the same llama.cpp source (the llama-cpp-python sdist's vendor folder).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from zhllama.core.errors import MissingDependencyError, UserError
from zhllama.core.quantize.gguf_types import LLAMA_CPP_TYPES, TYPES


def quantize_f16(f16: Path, output: Path, qtype: str, imatrix: Path | None = None, threads: int | None = None) -> str:
    """Quantize the GGUF `f16` into `output`; returns llama-quantize's log ('' for the binding)."""
    if imatrix is not None:
        from zhllama.core.quantize.llamacpp_tools import run_tool

        args = ["--imatrix", str(imatrix), str(f16), str(output), qtype]
        if threads:
            args.append(str(threads))
        return run_tool("llama-quantize", args, f"--type {qtype} with an imatrix")
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError(
            f"--type {qtype} (quantized by llama.cpp) needs llama-cpp-python; install it with: pip install 'zhllama[llamacpp]'"
        ) from exc
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
    if threads:
        params.nthread = threads
    status = llama_cpp.llama_model_quantize(str(f16).encode(), str(output).encode(), params)
    if status != 0:
        raise UserError(f"llama.cpp failed to quantize to {qtype} (status {status})")
    return ""


def write_quantized(model_dir: Path, output: Path, qtype: str, imatrix: Path | None = None, progress=None) -> str:
    """An HF folder as a GGUF of `qtype` (gguf-py's types directly unless an imatrix is used)."""
    from zhllama.core.quantize.gguf_export import write_gguf

    if qtype in TYPES and imatrix is None:
        write_gguf(model_dir, output, qtype, progress=progress)
        return ""
    if qtype not in LLAMA_CPP_TYPES + TYPES:
        raise UserError(f"--type: '{qtype}' is not a GGUF type")
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".zhllama-f16-") as tmp:
        f16 = Path(tmp) / "f16.gguf"
        write_gguf(model_dir, f16, "F16", progress=progress)
        return quantize_f16(f16, output, qtype, imatrix)
