"""GGUF for llama.cpp: F16/BF16/Q8_0/Q4_0/... with the gguf package; K- and i-quants by llama.cpp.

`--imatrix-data FILE` (or `builtin`: the Chinese + English text shipped with zhllama) computes an
importance matrix with llama.cpp's `llama-imatrix` on the F16 file and quantizes with it through
`llama-quantize`; `--imatrix FILE` reuses one (llama.cpp's format, checked against the model first).
Types that llama.cpp refuses without an imatrix (`imatrix.NEEDS_IMATRIX`) are refused up front.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import UserError
from zhllama.core.plugin_api import QuantizerPlugin
from zhllama.core.quantize.gguf_types import ALL_TYPES, LLAMA_CPP_TYPES, TYPES
from zhllama.core.schema import option

BUILTIN = "builtin"


@dataclass
class GGUFOptions:
    type: str = option(
        "Q8_0", "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, a K-quant (Q4_K_M, ...) or an i-quant (IQ4_XS, ...)."
    )
    imatrix_data: Path | None = option(
        None,
        "Calibration text: compute an importance matrix with llama.cpp's llama-imatrix and quantize with it "
        "('builtin': the Chinese + English text shipped with zhllama).",
    )
    imatrix: Path | None = option(None, "Quantize with this importance matrix (llama.cpp's imatrix file).")
    imatrix_output: Path | None = option(None, "Keep the importance matrix computed from --imatrix-data here.")


class GGUF(QuantizerPlugin):
    name = "gguf"
    description = "llama.cpp GGUF file (F16, Q8_0, Q4_0, ...; K-/i-quants and imatrix by llama.cpp)"
    requires = ("gguf",)
    install_hint = (
        "pip install 'zhllama[gguf]' (K-/i-quants: pip install 'zhllama[llamacpp]'; --imatrix/--imatrix-data: "
        "llama.cpp's tools, built once with: python -m zhllama.core.quantize.llamacpp_tools)"
    )
    output_is_file = True
    Options = GGUFOptions

    def __init__(self) -> None:
        self.imatrix_info: dict = {}

    def settings(self, options: GGUFOptions) -> dict:
        data = options.imatrix_data
        return {
            "type": options.type.upper(),
            "imatrix": str(options.imatrix) if options.imatrix else None,
            "imatrix_data": (None if data is None else "builtin" if str(data) == BUILTIN else str(data)),
            **self.imatrix_info,
        }

    def _calibration_path(self, options: GGUFOptions) -> Path | None:
        return None if str(options.imatrix_data) == BUILTIN else options.imatrix_data

    def validate(self, model: Path, options: GGUFOptions) -> None:
        from zhllama.core.quantize.imatrix import NEEDS_IMATRIX

        qtype = options.type.upper()
        if qtype not in ALL_TYPES:
            raise UserError(f"--type: '{options.type}' is not one of {', '.join(ALL_TYPES)}")
        with_imatrix = options.imatrix is not None or options.imatrix_data is not None
        if options.imatrix is not None and options.imatrix_data is not None:
            raise UserError("--imatrix and --imatrix-data: give one (a ready imatrix, or text to compute one)")
        if options.imatrix_output is not None and options.imatrix_data is None:
            raise UserError("--imatrix-output: only with --imatrix-data (the imatrix computed from it)")
        if qtype in NEEDS_IMATRIX and not with_imatrix:
            raise UserError(
                f"--type {qtype}: llama.cpp needs an importance matrix for it; add --imatrix-data FILE "
                "(calibration text, or 'builtin') or --imatrix FILE"
            )
        if with_imatrix and qtype in ("F32", "F16", "BF16"):
            raise UserError(f"--imatrix/--imatrix-data: not used by --type {qtype} (unquantized)")
        if options.imatrix_output is not None and options.imatrix_output.is_dir():
            raise UserError(f"--imatrix-output: {options.imatrix_output} is a folder, expected a file")
        from zhllama.core.quantize.gguf_export import check_model

        check_model(model)  # every shard and tokenizer file, before the output exists
        if qtype in LLAMA_CPP_TYPES and not with_imatrix:
            import importlib.util

            if importlib.util.find_spec("llama_cpp") is None:
                raise UserError(
                    f"--type {qtype} (quantized by llama.cpp) needs llama-cpp-python; "
                    "install it with: pip install 'zhllama[llamacpp]'"
                )
        if with_imatrix:  # the inputs first, then the tools that will read them
            from zhllama.core.quantize import imatrix
            from zhllama.core.quantize.llamacpp_tools import find_tool

            if options.imatrix is not None:
                imatrix.check_imatrix(options.imatrix, model)
            else:
                imatrix.check_calibration(self._calibration_path(options), model)
                find_tool("llama-imatrix", "--imatrix-data")
            find_tool("llama-quantize", "--imatrix")

    def quantize(self, model: Path, output: Path, options: GGUFOptions) -> None:
        from zhllama.core.quantize.gguf_export import write_gguf
        from zhllama.core.quantize.gguf_quantize import quantize_f16

        qtype = options.type.upper()
        if options.imatrix is None and options.imatrix_data is None:
            if qtype in TYPES:
                with console.progress_task(f"writing GGUF {qtype}", None) as advance:
                    write_gguf(model, output, qtype, progress=advance)
                return
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=".zhllama-f16-") as tmp:
            f16 = Path(tmp) / "f16.gguf"
            with console.progress_task("writing GGUF F16", None) as advance:
                write_gguf(model, f16, "F16", progress=advance)
            matrix = options.imatrix
            if options.imatrix_data is not None:
                matrix = self._compute_imatrix(model, f16, Path(tmp) / "imatrix.gguf", options)
            elif matrix is not None:
                self.imatrix_info = {"imatrix_entries": len(self._check(matrix, model))}
            with console.progress_task(f"llama.cpp: quantizing to {qtype}", None):
                quantize_f16(f16, output, qtype, matrix)

    @staticmethod
    def _check(matrix: Path, model: Path) -> dict:
        from zhllama.core.quantize.imatrix import check_imatrix

        return check_imatrix(matrix, model)

    def _compute_imatrix(self, model: Path, f16: Path, target: Path, options: GGUFOptions) -> Path:
        from zhllama.core.atomic import atomic_path
        from zhllama.core.quantize.imatrix import check_calibration, compute_imatrix, read_imatrix

        calibration = check_calibration(self._calibration_path(options), model)
        with console.progress_task(f"llama.cpp: importance matrix ({calibration.tokens} tokens)", None):
            compute_imatrix(f16, calibration, target)
        self.imatrix_info = {
            "imatrix_entries": len(read_imatrix(target)),
            "imatrix_tokens": calibration.tokens,
            "imatrix_context": calibration.context,
        }
        if options.imatrix_output is not None:
            with atomic_path(options.imatrix_output, force=True) as tmp:
                shutil.copyfile(target, tmp)
            self.imatrix_info["imatrix_output"] = str(options.imatrix_output)
        return target
