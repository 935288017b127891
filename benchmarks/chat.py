"""Decode speed of `zhllama chat`'s one-shot path vs raw `model.generate`, speculative vs plain, and
`zhllama predict`'s batched decoding vs one prompt at a time.

Same tiny random model, same greedy settings (repetition penalty 1.1), same prompt; the best of a
few runs each. Goals: chat >= 0.95x raw generate. Speculative decoding is reported with two
drafts that bracket what a real pair does: the target itself (every proposal accepted: the upper
bound) and an unrelated random model (nothing accepted: the overhead). The >= 1.3x goal needs a
GPU and a trained draft/target pair; a CPU and random models can only show the bounds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

NEW_TOKENS = 200
REPEATS = 3
TARGET = {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 6,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
}
DRAFT = {
    "hidden_size": 64,
    "intermediate_size": 176,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _best(fn) -> tuple[float, int]:
    """(seconds, tokens) of the fastest of REPEATS runs of fn() -> tokens."""
    best = None
    for _ in range(REPEATS):
        start = time.perf_counter()
        tokens = fn()
        seconds = time.perf_counter() - start
        if best is None or seconds / tokens < best[0] / best[1]:
            best = (seconds, tokens)
    return best


def _models(work: Path) -> tuple[Path, Path]:
    from zhllama.core import spm, vocab
    from zhllama.core.assets import data_path
    from zhllama.core.tiny import TinyShape, build_tiny_llama

    sp_model = work / "sp.model"
    vocab.train([data_path("corpus_en.txt")], 400, sp_model, model_type="bpe", byte_fallback=True)
    spm.write_tokenizer_dir(spm.load_proto(sp_model), work / "tok", model_file=sp_model)
    target = build_tiny_llama(work / "target", tokenizer=work / "tok", seed=0, shape=TinyShape(**TARGET))
    draft = build_tiny_llama(work / "draft", tokenizer=work / "tok", seed=1, shape=TinyShape(**DRAFT))
    return target, draft


def main() -> dict:
    import torch

    from zhllama.core.engine import GenerationParams, open_model
    from zhllama.core.generation.runtime import load_runtime
    from zhllama.core.loading.options import ModelOptions
    from zhllama.core.templates import Message

    with tempfile.TemporaryDirectory() as tmp:
        target_dir, draft_dir = _models(Path(tmp))
        runtime = load_runtime(ModelOptions(model=str(target_dir)), template="none")
        ids = runtime.prompt_ids([Message("user", "The history of the city begins")])
        params = GenerationParams(max_new_tokens=NEW_TOKENS, greedy=True, repetition_penalty=1.1)
        model = runtime.model.model

        def raw() -> int:
            with torch.inference_mode():
                out = model.generate(
                    torch.tensor([ids]), max_new_tokens=NEW_TOKENS, do_sample=False, repetition_penalty=1.1
                )
            return out.shape[1] - len(ids)  # both paths produce the same greedy ids, EOS included

        def chat() -> int:
            reply = runtime.reply(ids, params)
            reply.run()
            return len(reply.token_ids)

        raw_s, raw_n = _best(raw)
        chat_s, chat_n = _best(chat)
        results = {"raw_generate_tokens_per_s": raw_n / raw_s, "chat_tokens_per_s": chat_n / chat_s}
        results["chat_vs_raw"] = results["chat_tokens_per_s"] / results["raw_generate_tokens_per_s"]

        from zhllama.core.generation.speculative import SpeculativeDecoder

        for label, draft_path in (("self_draft", target_dir), ("random_draft", draft_dir)):
            draft = open_model(draft_path)
            decoder = SpeculativeDecoder(runtime.model, draft, "auto")
            runtime.decoder = decoder
            spec_s, spec_n = _best(chat)
            runtime.decoder = None
            results[f"speculative_{label}_tokens_per_s"] = spec_n / spec_s
            results[f"speculative_{label}_vs_plain"] = (spec_n / spec_s) / results["chat_tokens_per_s"]
            results[f"speculative_{label}_acceptance"] = decoder.stats.acceptance_rate
            results[f"speculative_{label}_tokens_per_target_pass"] = decoder.stats.tokens_per_pass
        results.update(_predict_batching(runtime))
        runtime.close()
    for key, value in results.items():
        print(f"{key:42s} {value:10.3f}")
    print(f"chat one-shot vs raw model.generate: {results['chat_vs_raw']:.2f}x (goal >= 0.95x)")
    print(f"predict batched (x{PREDICT_BATCH}) vs one by one: {results['predict_batched_vs_sequential']:.2f}x")
    return results


PREDICT_PROMPTS = 8
PREDICT_BATCH = 8
PREDICT_TOKENS = 32


def _predict_batching(runtime) -> dict:
    """`zhllama predict`'s batched decoding vs answering the same prompts one by one (sampled, seeded)."""
    from dataclasses import replace

    from zhllama.core.engine import GenerationParams
    from zhllama.core.generation.batch import answer_batch
    from zhllama.core.templates import Message

    words = "The history of the city begins with a small village by the river".split()
    prompts = [runtime.prompt_ids([Message("user", " ".join(words[: 3 + i % 10]))]) for i in range(PREDICT_PROMPTS)]
    base = GenerationParams(max_new_tokens=PREDICT_TOKENS, temperature=0.8, repetition_penalty=1.1)
    params = [replace(base, seed=i) for i in range(PREDICT_PROMPTS)]
    order = sorted(range(PREDICT_PROMPTS), key=lambda i: len(prompts[i]))

    def sequential() -> int:
        return sum(len(answer_batch(runtime, [prompts[i]], [params[i]])[0].token_ids) for i in order)

    def batched() -> int:
        total = 0
        for start in range(0, PREDICT_PROMPTS, PREDICT_BATCH):
            rows = order[start : start + PREDICT_BATCH]
            total += sum(
                len(a.token_ids) for a in answer_batch(runtime, [prompts[i] for i in rows], [params[i] for i in rows])
            )
        return total

    seq_s, seq_n = _best(sequential)
    bat_s, bat_n = _best(batched)
    return {
        "predict_sequential_tokens_per_s": seq_n / seq_s,
        "predict_batched_tokens_per_s": bat_n / bat_s,
        "predict_batched_vs_sequential": (bat_n / bat_s) / (seq_n / seq_s),
    }


if __name__ == "__main__":
    main()
