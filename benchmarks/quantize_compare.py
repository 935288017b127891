"""`zhllama quantize compare` on SmolLM2-135M and the shared Wikipedia corpus: the README's table.

Types without an importance matrix need only llama-cpp-python; the `+imatrix` rows need llama.cpp's
tools (`make llamacpp-tools`) and use the Chinese + English text shipped with zhllama as calibration
(never the scored text). Every row is scored through llama.cpp on the same token ids against F16.
`ZHLLAMA_COMPARE_TYPES` overrides the type list, `ZHLLAMA_COMPARE_TOKENS` the scored tokens.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from benchmarks.quantize import SHARED, smollm2

# the README's table: F16 (the base row) vs Q8_0, Q4_K_M without and with an imatrix, the i-quants both ways
TYPES = "Q8_0,Q4_K_M,Q4_K_M+imatrix,IQ4_XS,IQ4_XS+imatrix,IQ3_M,IQ3_M+imatrix"
NO_TOOLS_TYPES = "Q8_0,Q4_K_M,IQ4_XS,IQ3_M"
TOKENS = "4096"  # ~10 min on 2 busy cores for TYPES (each row decodes the base and the type side by side)


def main() -> dict:
    from zhllama.cli.app import run
    from zhllama.core.quantize import llamacpp_tools

    model = smollm2()
    types = os.environ.get("ZHLLAMA_COMPARE_TYPES") or (TYPES if llamacpp_tools.available() else NO_TOOLS_TYPES)
    tokens = os.environ.get("ZHLLAMA_COMPARE_TOKENS", TOKENS)
    out = Path(".bench") / "quantize-compare"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "wiki.txt"
        lines = SHARED.read_text(encoding="utf-8").splitlines()
        data.write_text("\n".join(lines[:200]), encoding="utf-8")
        args = ["quantize", "compare", "--model", str(model), "--types", types, "--data", str(data)]
        args += ["--max-tokens", tokens, "--keep-files", "--output", str(out), "--force"]
        assert run(args) == 0
    result = json.loads((out / "compare.json").read_text())
    print(f"plot: {out / 'compare.png'}")
    return result


if __name__ == "__main__":
    main()
