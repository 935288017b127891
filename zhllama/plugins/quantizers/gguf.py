"""GGUF for llama.cpp: F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 with the gguf package, K-quants via llama.cpp."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from zhllama.core import console
from zhllama.core.errors import MissingDependencyError, UserError
from zhllama.core.plugin_api import QuantizerPlugin
from zhllama.core.quantize.gguf_types import K_QUANTS, TYPES
from zhllama.core.schema import option


@dataclass
class GGUFOptions:
    type: str = option("Q8_0", "F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, or a K-quant (Q4_K_M, ...).")


class GGUF(QuantizerPlugin):
    name = "gguf"
    description = "llama.cpp GGUF file (F16, Q8_0, Q4_0, ...; K-quants with llama-cpp-python)"
    requires = ("gguf",)
    install_hint = "pip install 'zhllama[gguf]' (K-quants: pip install 'zhllama[llamacpp]')"
    output_is_file = True
    Options = GGUFOptions

    def settings(self, options: GGUFOptions) -> dict:
        return {"type": options.type.upper()}

    def validate(self, model: Path, options: GGUFOptions) -> None:
        if options.type.upper() not in TYPES + K_QUANTS:
            raise UserError(f"--type: '{options.type}' is not one of {', '.join(TYPES + K_QUANTS)}")
        from zhllama.core.quantize.gguf_export import check_model

        check_model(model)  # every shard and tokenizer file, before the output exists

    def quantize(self, model: Path, output: Path, options: GGUFOptions) -> None:
        from zhllama.core.quantize.gguf_export import write_gguf

        qtype = options.type.upper()
        if qtype in TYPES:
            with console.progress_task(f"writing GGUF {qtype}", None) as advance:
                write_gguf(model, output, qtype, progress=advance)
            return
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingDependencyError(
                f"--type {qtype} (a K-quant) needs llama-cpp-python; install it with: pip install 'zhllama[llamacpp]'"
            ) from exc
        with tempfile.TemporaryDirectory(dir=output.parent) as tmp:
            f16 = Path(tmp) / "f16.gguf"
            write_gguf(model, f16, "F16")
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{qtype}")
            status = llama_cpp.llama_model_quantize(str(f16).encode(), str(output).encode(), params)
            if status != 0:
                raise UserError(f"llama.cpp failed to quantize to {qtype} (status {status})")
