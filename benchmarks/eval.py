"""Questions/s of the batched C-Eval scorer vs one question per forward pass (goal >= 3x).

Same model and questions in one process; the predictions must be identical, else the speed-up
would mean nothing. Uses the real C-Eval val set when ../shared/data is present, else the shipped
C-Eval-format questions.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from zhllama.core.assets import data_path
from zhllama.core.tiny import TinyShape, build_tiny_llama

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHAPE = TinyShape(
    hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4
)
SUBJECTS = "computer_network,high_school_physics,law,college_chemistry,modern_chinese_history"


def main() -> dict:
    from zhllama.core import console, vocab
    from zhllama.core.engine import LoadOptions, open_model
    from zhllama.core.evaluation.runner import McqSettings, run_mcq
    from zhllama.plugins.benchmarks.ceval import CEval

    console.SETTINGS.quiet = True
    real = (SHARED / "ceval").is_dir()
    data = SHARED / "ceval" if real else data_path("ceval")
    subjects = SUBJECTS if real else None
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        vocab.train([data_path("corpus_en.txt")], 400, w / "base.model", byte_fallback=True)
        vocab.train([data_path("corpus_zh.txt")], 1200, w / "zh.model")
        vocab.merge(w / "base.model", [w / "zh.model"], w / "tok")
        model_dir = build_tiny_llama(w / "model", tokenizer=w / "tok", shape=SHAPE)
        model = open_model(model_dir, None, LoadOptions())
        timings, predictions = {}, {}
        for name, batch in (("one_per_forward", "1"), ("batched", "auto")):
            start = time.perf_counter()
            summary = run_mcq(CEval(), model, data, w / name, McqSettings(shots=5, batch_size=batch, subjects=subjects))
            timings[name] = time.perf_counter() - start
            rows = [json.loads(x) for x in (w / name / "predictions.jsonl").read_text().splitlines()]
            predictions[name] = {(r["subject"], r["id"]): r["prediction"] for r in rows}
        model.close()
    questions = summary["overall"]["total"]
    identical = predictions["one_per_forward"] == predictions["batched"]
    ratio = timings["one_per_forward"] / timings["batched"]
    result = {
        "questions": questions,
        "identical_predictions": identical,
        "one_per_forward_q_per_s": questions / timings["one_per_forward"],
        "batched_q_per_s": questions / timings["batched"],
        "speedup": ratio,
    }
    print(
        f"C-Eval 5-shot, {questions} questions ({'real val' if real else 'shipped'}): batched "
        f"{result['batched_q_per_s']:.1f} q/s vs one-per-forward {result['one_per_forward_q_per_s']:.1f} q/s -> "
        f"{ratio:.2f}x (goal >= 3x); identical predictions: {identical}"
    )
    return result


if __name__ == "__main__":
    main()
