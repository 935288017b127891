"""GGUF perplexity tokens/s: `zhllama eval ppl` (llama.cpp backend) vs a llama-perplexity-style loop (goal >= 0.8x).

The baseline is written here as llama.cpp's `llama-perplexity` works: one decode per window of
`context` tokens, then log-softmax in float32 over the scored rows. For reference the previous
implementation's cost is also measured (float64 `logaddexp.reduce` over every row of the window).
All three must give the same perplexity. Model: SmolLM2-135M-Instruct Q4_1 (see benchmarks/eval.py)
or, without it, a tiny GGUF written by `quantize gguf`. Text: the shared Chinese Wikipedia corpus.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

from benchmarks.eval import SHARED, smollm2_gguf
from zhllama.core.assets import data_path

CONTEXT = 512
CHARS = 1000
ROUNDS = 2


def baseline_nll(llm, ids: list[int], context: int, float64_all_rows: bool = False) -> tuple[float, int]:
    """Disjoint windows; every token after the first of each window is scored."""
    import numpy as np

    total, count = 0.0, 0
    for begin in range(0, len(ids), context):
        window = ids[begin : begin + context]
        if begin == 0 and len(window) < 2:
            break
        llm.reset()
        llm.eval(window)
        n = len(window)  # tokens 1..n-1 of each window are scored (as zhllama with stride == context)
        if float64_all_rows:
            logits = np.asarray(llm.scores[:n], dtype=np.float64)
            logp = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
            rows = logp[: n - 1]
        else:
            rows = np.asarray(llm.scores[: n - 1], dtype=np.float32)
            top = rows.max(axis=1, keepdims=True)
            rows = rows - (np.log(np.exp(rows - top).sum(axis=1, keepdims=True, dtype=np.float32)) + top)
        targets = np.asarray(window[1:])
        total -= float(rows[np.arange(n - 1), targets].sum(dtype=np.float64))
        count += n - 1
    return total, count


def main() -> dict:

    from zhllama.core import console
    from zhllama.core.loading.llamacpp import new_llama
    from zhllama.core.perplexity import perplexity

    console.SETTINGS.quiet = True
    corpus = SHARED / "corpus" / "zh_wiki_cmrc2018_contexts.txt"
    source = corpus if corpus.is_file() else data_path("corpus_zh.txt")
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "text.txt"
        text_file.write_text(source.read_text(encoding="utf-8")[:CHARS], encoding="utf-8")
        gguf = smollm2_gguf()
        if gguf is None:
            from benchmarks.eval import tiny_folder
            from zhllama.core.quantize.gguf_export import write_gguf

            gguf = Path(tmp) / "tiny.gguf"
            write_gguf(tiny_folder(Path(tmp)), gguf, "Q8_0")
        # the same AMX-safe construction as zhllama (see zhllama/core/loading/llamacpp.py)
        llm = new_llama(str(gguf), n_ctx=CONTEXT, n_batch=CONTEXT, logits_all=True, verbose=False)
        try:
            ids = llm.tokenize(text_file.read_text(encoding="utf-8").strip().encode("utf-8"), add_bos=True)
            seconds: dict[str, list[float]] = {"zhllama": [], "llama_perplexity_style": []}
            for _ in range(ROUNDS):  # alternate, best of each: the machine's load changes over time
                ours = perplexity(gguf, text_file, context=CONTEXT, progress=False)
                seconds["zhllama"].append(ours.seconds)
                start = time.perf_counter()
                nll = baseline_nll(llm, ids, CONTEXT)
                seconds["llama_perplexity_style"].append(time.perf_counter() - start)
            start = time.perf_counter()
            old = baseline_nll(llm, ids, CONTEXT, float64_all_rows=True)
            seconds["previous"] = [time.perf_counter() - start]
        finally:
            llm.close()
    tokens = ours.tokens_scored
    rate = {name: tokens / min(values) for name, values in seconds.items()}
    result = {
        "model": gguf.name,
        "tokens_scored": tokens,
        "context": CONTEXT,
        "zhllama_tok_per_s": rate["zhllama"],
        "llama_perplexity_style_tok_per_s": rate["llama_perplexity_style"],
        "previous_tok_per_s": rate["previous"],
        "ratio": rate["zhllama"] / rate["llama_perplexity_style"],
        "perplexity": ours.perplexity,
        "baseline_perplexity": math.exp(nll[0] / nll[1]),
        "previous_perplexity": math.exp(old[0] / old[1]),
        "same_tokens": tokens == nll[1],
    }
    print(
        f"GGUF perplexity ({gguf.name}, {tokens} tokens, context {CONTEXT}): zhllama {rate['zhllama']:.0f} tok/s vs "
        f"llama-perplexity-style loop {rate['llama_perplexity_style']:.0f} tok/s -> {result['ratio']:.2f}x "
        f"(goal >= 0.8x); previous implementation {rate['previous']:.0f} tok/s; "
        f"PPL {ours.perplexity:.4f} / {result['baseline_perplexity']:.4f} / {result['previous_perplexity']:.4f}"
    )
    return result


if __name__ == "__main__":
    main()
