"""Pre-training data step at corpus scale: zhllama's datasets pipeline vs the CLA2-style baseline.

Corpora of 100 MB and 1 GB (`BENCH_DATA_SIZES_MB`, default "100,1000") are generated under /tmp
from the shared Chinese Wikipedia file (its lines repeated, shuffled with a fixed seed). Each
pipeline runs in its own fresh subprocess with a cold cache and reports its wall time and peak
RSS: VmHWM of the process itself, and ru_maxrss of its largest child (datasets' map workers).

- baseline, written here as Chinese-LLaMA-Alpaca-2's run_clm_pt_with_peft.py does it: datasets'
  `text` loader, the HF fast tokenizer, `map(batched=True, num_proc=2)`, `group_texts` map;
- zhllama: `zhllama.core.training.data.pretrain_dataset` (sentencepiece-exact tokenization,
  per-file Arrow cache, 2 workers, stream grouping).

Results: MB/s ratio zhllama/baseline, peak RSS of both at each size, and zhllama's RSS growth
from the smallest to the largest corpus (goal: <= 1.5 GB at 1 GB, within 1.2x between sizes,
throughput >= 1.5x the baseline). `BENCH_DATA_ONLY=zhllama` measures zhllama alone (for 1 GB on a
slow machine).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(os.environ.get("ZHLLAMA_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"
WIKI = SHARED / "corpus" / "zh_wiki_cmrc2018_contexts.txt"
TOKENIZER_FILES = {
    "tokenizer.model": "chinese_llama2_tokenizer.model",
    "special_tokens_map.json": "chinese_llama2_special_tokens_map.json",
    "tokenizer_config.json": "chinese_llama2_tokenizer_config.json",
}
WORK = Path(os.environ.get("BENCH_DATA_DIR", "/tmp/zhllama-bench-data"))
BLOCK = 512
WORKERS = 2


def make_corpus(size_mb: int) -> Path:
    """`size_mb` MB of Wikipedia paragraphs: the file's lines repeated, each pass shuffled (seeded)."""
    out = WORK / f"wiki_{size_mb}mb.txt"
    if out.is_file() and out.stat().st_size >= size_mb << 20:
        return out
    lines = [line for line in WIKI.read_text(encoding="utf-8").splitlines() if line.strip()]
    rng = random.Random(size_mb)
    WORK.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    written = 0
    with open(tmp, "w", encoding="utf-8") as f:
        while written < size_mb << 20:
            rng.shuffle(lines)
            chunk = "\n".join(lines) + "\n"
            f.write(chunk)
            written += len(chunk.encode("utf-8"))
    os.replace(tmp, out)
    return out


def tokenizer_dir() -> Path:
    out = WORK / "chinese_llama2_tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    for name, source in TOKENIZER_FILES.items():
        if not (out / name).is_file():
            shutil.copyfile(SHARED / "tokenizers" / source, out / name)
    return out


# ---- the two pipelines (run inside a fresh subprocess) ------------------------------------------
def baseline(corpus: Path, tokenizer: Path, cache: Path) -> int:
    """CLA2's data step: text loader, fast tokenizer (+EOS as CLA2 sets add_eos_token), group_texts."""
    from itertools import chain

    from datasets import load_dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer))
    eos = tok.eos_token_id

    def tokenize(examples):
        ids = tok(examples["text"])["input_ids"]
        return {"input_ids": [x + [eos] for x in ids]}

    def group_texts(examples):
        concatenated = list(chain(*examples["input_ids"]))
        total = len(concatenated)
        if total >= BLOCK:
            total = (total // BLOCK) * BLOCK
        return {"input_ids": [concatenated[i : i + BLOCK] for i in range(0, total, BLOCK)]}

    raw = load_dataset("text", data_files=str(corpus), cache_dir=str(cache / "hf"), keep_in_memory=False)["train"]
    tokenized = raw.map(tokenize, batched=True, num_proc=WORKERS, remove_columns="text")
    grouped = tokenized.map(group_texts, batched=True, num_proc=WORKERS)
    grouped.save_to_disk(str(cache / "saved"))
    return len(grouped)


def zhllama_pipeline(corpus: Path, tokenizer: Path, cache: Path) -> int:
    from zhllama.core.tokenizer import ZhTokenizer
    from zhllama.core.training.data import pretrain_dataset

    blocks, _ = pretrain_dataset(ZhTokenizer(tokenizer), [corpus], BLOCK, cache, workers=WORKERS)
    return len(blocks)


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(which: str, corpus: str, tokenizer: str, cache: str) -> None:
    import resource

    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    blocks = {"baseline": baseline, "zhllama": zhllama_pipeline}[which](Path(corpus), Path(tokenizer), Path(cache))
    seconds = time.perf_counter() - start
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"blocks": blocks, "seconds": seconds, "rss_main_mb": _vm_hwm_mb(), "rss_worker_mb": children}))


def measure(which: str, corpus: Path, tokenizer: Path) -> dict:
    cache = Path(tempfile.mkdtemp(prefix=f"bench-{which}-", dir=WORK))
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.data", "--child", which, str(corpus), str(tokenizer), str(cache)],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{which} failed: {proc.stderr[-2000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    size_mb = corpus.stat().st_size / (1 << 20)
    result["mb_per_s"] = size_mb / result["seconds"]
    return result


def main() -> dict:
    if not WIKI.is_file():
        print(f"skipped: {WIKI} not found")
        return {"skipped": True}
    sizes = [int(s) for s in os.environ.get("BENCH_DATA_SIZES_MB", "100,1000").split(",")]
    tok = tokenizer_dir()
    results = {}
    for size in sizes:
        corpus = make_corpus(size)
        ours = measure("zhllama", corpus, tok)
        if os.environ.get("BENCH_DATA_ONLY") == "zhllama":  # the baseline is ~2.5x slower: skip it at 1 GB
            results[f"{size}MB"] = {"zhllama": ours}
            print(
                f"{size:>5} MB  zhllama {ours['mb_per_s']:.2f} MB/s, RSS main {ours['rss_main_mb']:.0f} MB / "
                f"worker {ours['rss_worker_mb']:.0f} MB  (baseline skipped)",
                flush=True,
            )
            continue
        base = measure("baseline", corpus, tok)
        results[f"{size}MB"] = {
            "zhllama": ours,
            "baseline": base,
            "throughput_ratio": ours["mb_per_s"] / base["mb_per_s"],
        }
        print(
            f"{size:>5} MB  zhllama {ours['mb_per_s']:.2f} MB/s, RSS main {ours['rss_main_mb']:.0f} MB / "
            f"worker {ours['rss_worker_mb']:.0f} MB  |  baseline {base['mb_per_s']:.2f} MB/s, RSS main "
            f"{base['rss_main_mb']:.0f} MB / worker {base['rss_worker_mb']:.0f} MB  |  "
            f"throughput {results[f'{size}MB']['throughput_ratio']:.2f}x",
            flush=True,
        )
    if len(sizes) > 1:
        lo, hi = results[f"{sizes[0]}MB"]["zhllama"], results[f"{sizes[-1]}MB"]["zhllama"]
        peak = lambda r: max(r["rss_main_mb"], r["rss_worker_mb"])  # noqa: E731
        results["rss_growth"] = peak(hi) / peak(lo)
        print(f"zhllama peak RSS growth {sizes[0]} MB -> {sizes[-1]} MB: {results['rss_growth']:.2f}x")
    return results


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
